"""Reads a table the engine wrote with DuckDB (its delta and httpfs extensions), and prints what
it sees in the same JSON lines as read_table.py: first {"rows": n, "version": v, "files": k},
then one object per row (timestamps as milliseconds since the Unix epoch, dates as ISO text).

Usage: read_table_duckdb.py delta|parquet s3://bucket/prefix
  delta    delta_scan('s3://...') (the delta extension, on delta-kernel-rs); version is null
           (delta_scan does not tell it), files is the number of distinct data files the scan
           read rows from
  parquet  read_parquet([...], hive_partitioning = true) over the *.parquet files under the
           prefix, less those with a path component starting with `_` or `.` (the engine's
           _staging, _checkpoints); version is null, files is the number of files read

Run it with the interpreter of the DuckDB venv that scripts/install-interop prints
(DUCKDB_PYTHON). The extensions come from the duckdb-ext-delta and duckdb-ext-httpfs wheels in
that venv (site-packages/duckdb_ext/extensions/v<duckdb ver>/<platform>/*.duckdb_extension): the
connection's extension_directory points there and nothing is ever downloaded or auto-installed.

The S3 server comes from S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION
(the local stack's defaults when unset).

Output notes for comparisons: DuckDB casts Hive partition values of plain Parquet tables
(dt=2026-03-01 becomes a DATE, printed as the same ISO text; all-digit values become integers)
and keeps __HIVE_DEFAULT_PARTITION__ as text: this reader turns it into null in text
partition columns, as the other readers do.
"""

import os
import sys
from urllib.parse import urlparse

import duckdb

import table_output

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")
KEY = os.environ.get("AWS_ACCESS_KEY_ID", "minioadmin")
SECRET = os.environ.get("AWS_SECRET_ACCESS_KEY", "minioadmin")
REGION = os.environ.get("AWS_REGION", "us-east-1")


def extension_dir():
    """The duckdb_ext/extensions folder the duckdb-ext-* wheels install next to duckdb."""
    for base in sys.path:
        d = os.path.join(base, "duckdb_ext", "extensions")
        if os.path.isdir(d):
            return d
    sys.exit("read_table_duckdb: no duckdb_ext/extensions in this interpreter's site-packages; "
             "run it with the DUCKDB_PYTHON that scripts/install-interop prints")


def connect():
    con = duckdb.connect(config={
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    })
    con.execute("SET extension_directory = ?", [extension_dir()])
    for ext in ("httpfs", "delta"):
        try:
            con.execute(f"LOAD {ext}")
        except duckdb.Error as e:
            sys.exit(f"read_table_duckdb: cannot load the {ext} extension for duckdb "
                     f"{duckdb.__version__} from {extension_dir()}: {e}")
    con.execute("SET TimeZone = 'UTC'")
    u = urlparse(ENDPOINT)
    con.execute(
        "CREATE SECRET engine_s3 (TYPE S3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
        "URL_STYLE 'path', USE_SSL ?)",
        [KEY, SECRET, REGION, u.netloc, u.scheme == "https"],
    )
    return con


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def read_delta(con, url):
    url = url.rstrip("/")
    files = con.execute(
        f"SELECT count(DISTINCT filename) FROM delta_scan({quote(url)}, filename = true)"
    ).fetchone()[0]
    cur = con.execute(f"SELECT * FROM delta_scan({quote(url)})")
    return cur, None, files


def read_parquet(con, url):
    root = url.rstrip("/")
    listed = [r[0] for r in con.execute(f"SELECT file FROM glob({quote(root + '/**/*.parquet')})").fetchall()]
    files = []
    for f in listed:
        rel = f[len(root) + 1:] if f.startswith(root + "/") else f
        if any(part.startswith(("_", ".")) for part in rel.split("/")):
            continue
        files.append(f)
    if not files:
        sys.exit(f"read_table_duckdb: no Parquet files under {url}")
    listing = "[" + ", ".join(quote(f) for f in sorted(files)) + "]"
    source = f"read_parquet({listing}, hive_partitioning = true)"
    # DuckDB keeps Hive's null marker as text: make it null, as Hive, Spark and pyarrow do.
    keys = {part.split("=", 1)[0] for f in files for part in f[len(root) + 1:].split("/")[:-1]
            if "=" in part}
    text = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            if r[1] == "VARCHAR"}
    nulls = [f"NULLIF({ident(k)}, '{HIVE_NULL}') AS {ident(k)}" for k in sorted(keys & text)]
    replace = f" REPLACE ({', '.join(nulls)})" if nulls else ""
    cur = con.execute(f"SELECT *{replace} FROM {source}")
    return cur, None, len(files)


def main():
    kind, url = table_output.usage_and_args("read_table_duckdb.py")
    con = connect()
    cur, version, files = (read_delta if kind == "delta" else read_parquet)(con, url)
    names = [d[0] for d in cur.description]
    table_output.write([dict(zip(names, row)) for row in cur.fetchall()], version, files)
    con.close()


if __name__ == "__main__":
    main()
