"""What every reader of tests/interop prints, so that their outputs compare line for line:
a header {"rows": n, "version": v, "files": k}, then one JSON object per row, with timestamps
as milliseconds since the Unix epoch (naive ones taken as UTC), dates as ISO text and bytes as
UTF-8 text."""

import datetime
import decimal
import json
import sys
import uuid


def usage_and_args(reader):
    """The (kind, url) of the command line, or the usage line and exit status 2."""
    if len(sys.argv) != 3 or sys.argv[1] not in ("delta", "parquet"):
        print(f"usage: {reader} delta|parquet s3://bucket/prefix", file=sys.stderr)
        sys.exit(2)
    return sys.argv[1], sys.argv[2]


def plain(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (uuid.UUID, decimal.Decimal, datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def write(rows, version, files):
    """Prints the header and `rows` (dicts of column to value) to standard output."""
    out = sys.stdout
    out.write(json.dumps({"rows": len(rows), "version": version, "files": files}) + "\n")
    for row in rows:
        out.write(json.dumps({k: plain(v) for k, v in row.items()}) + "\n")
    out.flush()
