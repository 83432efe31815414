"""Reads a table the engine wrote with a reader the engine does not share code with, and prints
what it sees as JSON lines: first {"rows": n, "version": v, "files": k}, then one object per
row (timestamps as milliseconds since the Unix epoch, dates as ISO text).

Usage: read_table.py delta|parquet s3://bucket/prefix
  delta    the deltalake package (delta-rs), latest version, through pyarrow
  parquet  pyarrow's dataset with Hive partitioning (files under `_` and `.` folders ignored)

The S3 server comes from S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION
(the local stack's defaults when unset).
"""

import os
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

import table_output

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")
KEY = os.environ.get("AWS_ACCESS_KEY_ID", "minioadmin")
SECRET = os.environ.get("AWS_SECRET_ACCESS_KEY", "minioadmin")
REGION = os.environ.get("AWS_REGION", "us-east-1")


def read_delta(url):
    from deltalake import DeltaTable

    table = DeltaTable(
        url,
        storage_options={
            "AWS_ENDPOINT_URL": ENDPOINT,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        },
    )
    return table.to_pyarrow_table(), table.version(), len(table.file_uris())


def read_parquet(url):
    u = urlparse(url)
    endpoint = urlparse(ENDPOINT)
    fs = pafs.S3FileSystem(
        access_key=KEY,
        secret_key=SECRET,
        region=REGION,
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
    )
    dataset = ds.dataset(
        f"{u.netloc}{u.path}", filesystem=fs, format="parquet", partitioning="hive"
    )
    return dataset.to_table(), None, len(dataset.files)


def main():
    kind, url = table_output.usage_and_args("read_table.py")
    table, version, files = (read_delta if kind == "delta" else read_parquet)(url)
    table_output.write(table.to_pylist(), version, files)
    # Leave without the interpreter's teardown: the readers' native thread pools sometimes abort
    # it ("terminate called without an active exception") after everything was read.
    os._exit(0)


if __name__ == "__main__":
    main()
