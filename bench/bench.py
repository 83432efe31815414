#!/usr/bin/env python3
"""`make bench`: side-by-side throughput of the raw Kafka read rate, the engine and (when
installed) Spark, on the same topic data, in one run; median of N runs.

Results go to bench/results/<UTC time>.md (with the command that made them) and a PNG chart
beside it. Not part of the tests: nothing here asserts, it measures.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "engine")
KAFKA_READ = os.path.join(ROOT, "target", "release", "examples", "kafka_read")
TOOLS = os.environ.get("ENGINE_TOOLS_DIR", os.path.expanduser("~/.cache/engine-tools"))
KAFKA_LIBS = os.path.join(TOOLS, "kafka-4.1.1", "libs", "*")
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (stdout, wall s, cpu s, peak RSS MiB)."""
    full = ["/usr/bin/time", "-f", "TIME %e %U %S %M"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(full, env=e, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    line = [l for l in p.stderr.splitlines() if l.startswith("TIME ")][-1]
    _, wall, user, sys_, rss_kb = line.split()
    return p.stdout, float(wall), float(user) + float(sys_), int(rss_kb) / 1024


def topic_size(topic):
    """Messages in a topic (sum of end offsets), or None if it does not exist."""
    p = subprocess.run(
        ["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", BROKERS,
         "--topic", topic, "--time", "-1"],
        capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return sum(int(l.rsplit(":", 1)[1]) for l in p.stdout.split() if l.count(":") >= 2)


def ensure_topic(topic, kind, count, seed=1):
    have = topic_size(topic)
    if have == count:
        log(f"{topic}: {count} messages already there")
        return
    if have is not None:
        subprocess.run(["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                        BROKERS, "--delete", "--topic", topic], check=True, capture_output=True)
        time.sleep(3)
    subprocess.run(["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS,
                    "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1"],
                   check=True, capture_output=True)
    log(f"{topic}: producing {count} {kind} messages (fixed seed)")
    subprocess.run([ENGINE, "produce", "--topic", topic, "--kind", kind, "--count", str(count), "--seed", str(seed)],
                   check=True)


def payload_bytes(topic):
    out, *_ = timed([KAFKA_READ, BROKERS, topic])
    return json.loads(out)["bytes"]


def measure(name, runs, make_cmd, messages, nbytes, note=""):
    rows = []
    for i in range(runs):
        cmd, env = make_cmd(i)
        _, wall, cpu, rss = timed(cmd, env)
        rows.append((wall, cpu, rss))
        log(f"{name} run {i + 1}/{runs}: {wall:.2f} s, {messages / wall:,.0f} msg/s, cpu {cpu:.2f} s, rss {rss:.0f} MiB")
    wall = statistics.median(r[0] for r in rows)
    cpu = statistics.median(r[1] for r in rows)
    rss = max(r[2] for r in rows)
    return {"name": name, "messages": messages, "wall_s": wall, "msgs_per_s": messages / wall,
            "mb_per_s": nbytes / wall / 1e6, "cpu_s_per_million": cpu / messages * 1e6, "peak_rss_mib": rss,
            "note": note}


def engine_cmd(pipeline, topic_var, topic):
    def make(i):
        run = f"bench/{datetime.datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        env = {topic_var: topic, "BRONZE_URL": f"s3://bronze/{run}", "GOLD_URL": f"s3://gold/{run}",
               "CHECKPOINT_URL": f"s3://bronze/{run}/_checkpoints", "RUST_LOG": "warn"}
        return [ENGINE, "run", os.path.join(ROOT, "pipelines", pipeline), "--batch"], env
    return make


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart")
        return False
    names = [r["name"] for r in results]
    rates = [r["msgs_per_s"] / 1000 for r in results]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    ax.barh(names[::-1], rates[::-1], color="#3b7dd8")
    for y, v in enumerate(rates[::-1]):
        ax.text(v, y, f" {v:,.0f}k", va="center")
    ax.set_xlabel("thousand messages per second (median)")
    ax.set_title("Throughput on the same Kafka data, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--logs", type=int, default=1_000_000)
    ap.add_argument("--metrics", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--spark", choices=["auto", "no"], default="auto",
                    help="run the Spark job too when bench/spark/install has installed it")
    args = ap.parse_args()

    orders_topic = f"bench-orders-{args.orders}"
    logs_topic = f"bench-logs-{args.logs}"
    metrics_topic = f"bench-metrics-{args.metrics}"
    ensure_topic(orders_topic, "orders", args.orders)
    ensure_topic(logs_topic, "logs", args.logs)
    ensure_topic(metrics_topic, "metrics", args.metrics)
    obytes = payload_bytes(orders_topic)
    log(f"{orders_topic}: {obytes / 1e6:.0f} MB of payload, {obytes / args.orders:.0f} B per order")

    results = []
    results.append(measure(
        "(a) Kafka consumer perf tool", args.runs,
        lambda i: (["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
                    BROKERS, "--topic", orders_topic, "--messages", str(args.orders), "--group",
                    f"bench-perf-{uuid.uuid4().hex[:8]}"], {}),
        args.orders, obytes, "JVM consumer, no processing"))
    results.append(measure(
        "(a) rdkafka read loop", args.runs, lambda i: ([KAFKA_READ, BROKERS, orders_topic], {}),
        args.orders, obytes, "touches every payload"))
    results.append(measure(
        "(b) engine: orders.toml --batch", args.runs, engine_cmd("orders.toml", "ORDERS_TOPIC", orders_topic),
        args.orders, obytes, "bronze orders + items + quarantine, gold product_sales + 1-min windows"))

    spark_install = os.path.join(ROOT, "bench", "spark", "install")
    spark_job = os.path.join(ROOT, "bench", "spark", "orders_job.py")
    if args.spark == "auto" and os.path.exists(spark_install) and os.path.exists(spark_job):
        env_out = subprocess.run([spark_install, "--print-env"], capture_output=True, text=True)
        if env_out.returncode == 0:
            spark_env = dict(l.split("=", 1) for l in env_out.stdout.split() if "=" in l)
            python = spark_env.get("SPARK_PYTHON", "python3")
            for variant in ["notebook", "tuned"]:
                def make(i, variant=variant):
                    run = f"make-bench-{uuid.uuid4().hex[:8]}"
                    return ([python, spark_job, "--variant", variant, "--batch", "--topic", orders_topic,
                             "--run", run], spark_env)
                try:
                    results.append(measure(f"(c) Spark, {variant}", args.runs, make, args.orders, obytes,
                                           "same job: orders + items Parquet, product sales, windows"))
                except RuntimeError as e:
                    log(f"Spark {variant} failed: {e}")
        else:
            log("bench/spark/install --print-env failed: skipping Spark")
    else:
        log("Spark is not set up (bench/spark/install): skipping it")

    lbytes = payload_bytes(logs_topic)
    results.append(measure("(d) engine: logs.toml --batch", args.runs,
                           engine_cmd("logs.toml", "LOGS_TOPIC", logs_topic), args.logs, lbytes,
                           "bronze logs + 3 gold tables"))
    mbytes = payload_bytes(metrics_topic)
    results.append(measure("(d) engine: metrics.toml --batch", args.runs,
                           engine_cmd("metrics.toml", "METRICS_TOPIC", metrics_topic), args.metrics, mbytes,
                           "bronze metrics + 3 gold tables"))

    by = {r["name"]: r for r in results}
    eng = by["(b) engine: orders.toml --batch"]["msgs_per_s"]
    ratios = [f"- (b)/(a) rdkafka read loop: {eng / by['(a) rdkafka read loop']['msgs_per_s']:.2f}",
              f"- (b)/(a) Kafka perf tool: {eng / by['(a) Kafka consumer perf tool']['msgs_per_s']:.2f}"]
    for k in by:
        if k.startswith("(c)"):
            ratios.append(f"- (b)/{k}: {eng / by[k]['msgs_per_s']:.2f}")

    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    md_path = os.path.join(ROOT, "bench", "results", f"{stamp}.md")
    png_path = md_path[:-3] + ".png"
    has_chart = chart(results, png_path)
    lines = [
        f"# Benchmark {stamp}",
        "",
        f"Command: `{' '.join(['python3', 'bench/bench.py'] + sys.argv[1:])}` (via `make bench`)",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; Kafka and the S3 server on the same machine.",
        f"Data: {args.orders:,} orders ({obytes / args.orders:.0f} B each), {args.logs:,} log lines, "
        f"{args.metrics:,} metrics, 3 partitions each. Median of {args.runs} runs; peak RSS is the largest.",
        "",
        "| run | messages/s | MB/s | CPU-s per million | peak RSS (MiB) | what it does |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r['name']} | {r['msgs_per_s']:,.0f} | {r['mb_per_s']:.1f} | "
                     f"{r['cpu_s_per_million']:.2f} | {r['peak_rss_mib']:.0f} | {r['note']} |")
    lines += ["", "Ratios (throughput):", *ratios]
    if has_chart:
        lines += ["", f"![throughput]({os.path.basename(png_path)})"]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {md_path}")


if __name__ == "__main__":
    if not shutil.which("java") or not os.path.exists(ENGINE):
        sys.exit("bench: needs java and target/release/engine (make build)")
    main()
