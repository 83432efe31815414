"""Steady-state throughput from a system's own progress events (shared by bench/bench.py and
bench/spark/orders_job.py; plain Python, no dependencies).

A run is one or more *streams* of micro-batches (epochs) over the same input records: Spark's
streaming queries (each reads the topic itself), or the engine's two parts (the per-partition part
and the finalizer, whose epoch n carries the records of the per-partition part's epoch n). Each
batch is (end time in seconds, input records it took); the records are counted in input messages
(orders), whatever the stream emits.

Steady state starts at T1, the end of the first batch with data (the earliest such end over the
streams: the first commit of the run), so the process or JVM start, query planning and the first
batch's warm-up are all before it; it ends at T2, the end of the last batch of any stream (Spark's
last batch without data, which writes the windows the final watermark closed, included), when
every output is committed:

    steady = (records - records of that first batch) / (T2 - T1)

With one stream this is "records after the first batch / time from the first batch's end to the
last batch's end". With several, everything the other streams still do after T1 is in the
interval, including the rest of their own first batch: the figure leans low (only work done
before T1 for later batches, such as a source reading ahead, leans the other way). (A
stream that trails, as the engine's finalizer does in a backfill, where it commits its epochs
after the per-partition part has read everything, would make a "done by every stream at its
first batch" clock start late and count the leading stream's work for free.)
"""


def steady_state(streams):
    """streams: {name: [(end_s, records), ...]} in batch order. Returns a dict with
    `records_per_s` (None, with `why`, when the first stream to commit has fewer than two batches
    with data), the interval and the per-stream figures."""
    streams = {k: sorted(v) for k, v in streams.items() if v}
    if not streams:
        return {"records_per_s": None, "why": "no progress events"}
    per_stream = {}
    firsts = {}
    for name, batches in streams.items():
        data = [b for b in batches if b[1] > 0]
        last = max(b[0] for b in batches)
        per_stream[name] = {"batches": len(batches), "data_batches": len(data),
                            "records": sum(r for _, r in batches)}
        if data:
            firsts[name] = data[0]
            after = sum(r for _, r in data[1:])
            per_stream[name].update(first_batch_records=data[0][1], records_per_s=(
                round(after / (last - data[0][0]), 1) if len(data) > 1 and last > data[0][0] else None))
    if not firsts:
        return {"records_per_s": None, "why": "no batch with data", "per_stream": per_stream}
    first = min(firsts, key=lambda k: firsts[k][0])
    t1, r1 = firsts[first]
    t2 = max(b[0] for batches in streams.values() for b in batches)
    total = min(p["records"] for p in per_stream.values())
    out = {"records": total, "first_stream": first, "first_batch_records": r1,
           "seconds": round(t2 - t1, 3), "records_per_s": None, "per_stream": per_stream}
    if per_stream[first]["data_batches"] < 2:
        out["why"] = f"{first}: one batch with data, steady state needs two or more"
    elif t2 <= t1:
        out["why"] = "the last batch ended with the first one"
    else:
        out["records_per_s"] = round((total - r1) / (t2 - t1), 1)
    return out


def engine_streams(stderr_text):
    """The engine's `epoch progress` events (json log format, RUST_LOG with engine::progress at
    info) as steady_state() streams, one per part. The finalizer's epoch n takes the records of
    the per-partition part's epoch n (its own input_rows count rows of every exchanged edge)."""
    import datetime
    import json
    parts = {}
    for line in stderr_text.splitlines():
        if not line.startswith("{") or "epoch progress" not in line:
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        f = e.get("fields", {})
        if f.get("message") != "epoch progress":
            continue
        ts = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        parts.setdefault(f.get("part", "pipeline"), []).append((int(f["epoch"]), ts, int(f["input_rows"])))
    if not parts:
        return {}
    base = parts.get("partitions") or next(iter(parts.values()))
    records = {epoch: rows for epoch, _, rows in base}
    streams = {}
    for part, events in parts.items():
        if part == "partitions" or len(parts) == 1:
            streams[part] = [(ts, rows) for _, ts, rows in events]
        else:
            streams[part] = [(ts, records.get(epoch, 0)) for epoch, ts, _ in events]
    return streams
