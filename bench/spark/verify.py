#!/usr/bin/env python3
"""Reads back what bench/spark/orders_job.py wrote, with pyarrow (not Spark), and checks it.

Usage: verify.py RUN [--expect-orders N] [--bronze-only] [--bronze s3://bronze/bench-spark] [--gold s3://gold/bench-spark]

For the run's four tables it prints the row count and checks:
  - commandes: N rows (if --expect-orders), no null order_id, no duplicate (partition, offset);
  - items: no duplicate (partition, offset, item_index); its row count equals the sum of
    product_sales.nb_ventes, and its quantity/subtotal sums equal product_sales' sums;
  - customer_orders_1min: sum of nb_commandes <= orders (windows the watermark has not closed yet
    are not emitted), every window 1 minute long, no duplicate (customer_id, window_start).
Only committed files count for the append tables: the files listed in the file sink's
_spark_metadata log (files of a failed, uncommitted batch would not be listed). A table without
that log (the expert variant's bronze tables, written by foreachBatch into one batch_id=N
directory per batch, replaced when a batch is replayed) is read whole. --bronze-only checks
commandes and items only (orders_job.py --bronze-only).
Prints one JSON line with the counts; exits 1 if a check fails.
"""

import argparse
import json
import os
import sys
import time
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def s3():
    endpoint = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")
    u = urlparse(endpoint)
    return pafs.S3FileSystem(
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", "minioadmin"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "minioadmin"),
        region=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_override=u.netloc, scheme=u.scheme or "http",
        force_virtual_addressing=False)


def bucket_path(url):
    u = urlparse(url)
    return f"{u.netloc}{u.path}".rstrip("/")


def committed_files(fs, path):
    """Files listed in the file sink's _spark_metadata log (latest compact + later deltas)."""
    meta = f"{path}/_spark_metadata"
    try:
        entries = fs.get_file_info(pafs.FileSelector(meta))
    except FileNotFoundError:
        return None
    logs = {}
    for e in entries:
        name = e.base_name
        if name.startswith(".") or e.type != pafs.FileType.File:
            continue
        n = name.split(".")[0]
        if n.isdigit():
            logs[int(n)] = (name, name.endswith(".compact"))
    if not logs:
        return []
    compacts = [b for b, (_, c) in logs.items() if c]
    first = max(compacts) if compacts else min(logs)
    files, deleted = [], set()
    for b in sorted(k for k in logs if k >= first):
        with fs.open_input_stream(f"{meta}/{logs[b][0]}") as f:
            lines = f.read().decode().splitlines()[1:]  # line 1 is the version ("v1")
        for line in lines:
            rec = json.loads(line)
            p = urlparse(rec["path"])
            key = f"{p.netloc}{p.path}"
            if rec.get("action") == "delete":
                deleted.add(key)
            else:
                files.append(key)
    return [f for f in files if f not in deleted]


def read(fs, path, committed=True):
    files = committed_files(fs, path) if committed else None
    if files is None:
        return ds.dataset(path, filesystem=fs, format="parquet").to_table()
    if not files:
        return None
    return ds.dataset(files, filesystem=fs, format="parquet").to_table()


def dup_count(t, cols):
    g = t.group_by(cols).aggregate([([], "count_all")])
    return t.num_rows - g.num_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--expect-orders", type=int, default=None)
    ap.add_argument("--bronze-only", action="store_true", help="no gold tables to check")
    ap.add_argument("--bronze", default="s3://bronze/bench-spark")
    ap.add_argument("--gold", default="s3://gold/bench-spark")
    a = ap.parse_args()
    t0 = time.monotonic()
    fs = s3()
    b = f"{bucket_path(a.bronze)}/{a.run}"
    g = f"{bucket_path(a.gold)}/{a.run}"
    orders = read(fs, f"{b}/commandes")
    items = read(fs, f"{b}/items")
    sales = None if a.bronze_only else read(fs, f"{g}/product_sales", committed=False)
    wins = None if a.bronze_only else read(fs, f"{g}/customer_orders_1min")
    empty = pa.table({})
    orders, items, wins = (x if x is not None else empty for x in (orders, items, wins))
    problems = []

    def check(cond, msg):
        if not cond:
            problems.append(msg)

    n_orders = orders.num_rows
    if a.expect_orders is not None:
        check(n_orders == a.expect_orders, f"commandes has {n_orders} rows, expected {a.expect_orders}")
    if n_orders:
        check(orders["order_id"].null_count == 0, f"{orders['order_id'].null_count} orders without order_id")
        d = dup_count(orders, ["partition", "offset"])
        check(d == 0, f"{d} duplicate (partition, offset) in commandes")
        check("items" not in orders.column_names, "commandes still has an items column")
    if items.num_rows:
        d = dup_count(items, ["partition", "offset", "item_index"])
        check(d == 0, f"{d} duplicate (partition, offset, item_index) in items")
    sums = {}
    if sales is not None and items.num_rows:
        sums = {
            "nb_ventes": pc.sum(sales["nb_ventes"]).as_py(),
            "quantite_totale": pc.sum(sales["quantite_totale"]).as_py(),
            "ca_total": pc.sum(sales["ca_total"]).as_py(),
        }
        check(sums["nb_ventes"] == items.num_rows,
              f"product_sales.nb_ventes sums to {sums['nb_ventes']}, items has {items.num_rows} rows")
        check(sums["quantite_totale"] == pc.sum(items["quantity"]).as_py(), "quantity sums differ")
        check(abs(sums["ca_total"] - pc.sum(items["subtotal"]).as_py()) < 1e-3 * max(1.0, sums["ca_total"]),
              "subtotal sums differ")
    win_orders = 0
    if wins.num_rows:
        win_orders = pc.sum(wins["nb_commandes"]).as_py()
        check(win_orders <= n_orders, f"windows count {win_orders} orders, more than the {n_orders} orders")
        lens = pc.unique(pc.subtract(wins["window_end"], wins["window_start"])).to_pylist()
        check(all(x.total_seconds() == 60 for x in lens), f"window lengths {lens}")
        d = dup_count(wins, ["customer_id", "window_start"])
        check(d == 0, f"{d} duplicate (customer_id, window_start) in customer_orders_1min")
    out = {
        "run": a.run,
        "rows": {"commandes": n_orders, "items": items.num_rows,
                 "product_sales": sales.num_rows if sales is not None else 0,
                 "customer_orders_1min": wins.num_rows},
        "orders_in_closed_windows": win_orders,
        "last_window_end": str(pc.max(wins["window_end"]).as_py()) if wins.num_rows else None,
        "product_sales_sums": sums,
        "ok": not problems, "problems": problems,
        "seconds": round(time.monotonic() - t0, 2),
    }
    print(json.dumps(out, separators=(",", ":"), default=str))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
