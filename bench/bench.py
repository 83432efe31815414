#!/usr/bin/env python3
"""`make bench`: side-by-side throughput of the raw Kafka read rate, the engine and (when
installed) Spark, on the same topic data, in one run; median of N runs.

Every throughput row has two figures from the same run: with start-up (messages / the whole
process's wall time) and in steady state (from the system's own progress events, after its first
micro-batch or epoch; bench/steady.py and the notes printed under the table).

Results go to bench/results/<UTC time>.md (with the command that made them) and a PNG chart
beside it. Not part of the tests: nothing here asserts, it measures.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import steady  # noqa: E402  bench/steady.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "engine")
KAFKA_READ = os.path.join(ROOT, "target", "release", "examples", "kafka_read")
TOOLS = os.environ.get("ENGINE_TOOLS_DIR", os.path.expanduser("~/.cache/engine-tools"))
KAFKA_LIBS = os.path.join(TOOLS, "kafka-4.1.1", "libs", "*")
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
S3_ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (stdout, wall s, cpu s, peak RSS MiB)."""
    out, _, wall, cpu, rss = timed_full(cmd, env)
    return out, wall, cpu, rss


def timed_full(cmd, env=None):
    """Runs cmd under GNU time; returns (stdout, stderr, wall s, cpu s, peak RSS MiB)."""
    full = ["/usr/bin/time", "-f", "TIME %e %U %S %M"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(full, env=e, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    line = [l for l in p.stderr.splitlines() if l.startswith("TIME ")][-1]
    _, wall, user, sys_, rss_kb = line.split()
    return p.stdout, p.stderr, float(wall), float(user) + float(sys_), int(rss_kb) / 1024


def topic_size(topic):
    """Messages in a topic (sum of end offsets), or None if it does not exist."""
    p = subprocess.run(
        ["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", BROKERS,
         "--topic", topic, "--time", "-1"],
        capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return sum(int(l.rsplit(":", 1)[1]) for l in p.stdout.split() if l.count(":") >= 2)


def topic_command(*args, check=True):
    subprocess.run(["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS,
                    *args], check=check, capture_output=True)


def create_topic(topic, partitions=3):
    topic_command("--create", "--topic", topic, "--partitions", str(partitions), "--replication-factor", "1")


def delete_topic(topic, check=False):
    topic_command("--delete", "--topic", topic, check=check)


def ensure_topic(topic, kind, count, seed=1, partitions=3):
    have = topic_size(topic)
    if have == count:
        log(f"{topic}: {count} messages already there")
        return
    if have is not None:
        delete_topic(topic, check=True)
        time.sleep(3)
    create_topic(topic, partitions)
    log(f"{topic}: producing {count} {kind} messages (fixed seed)")
    subprocess.run([ENGINE, "produce", "--topic", topic, "--kind", kind, "--count", str(count), "--seed", str(seed)],
                   check=True)


def payload_bytes(topic):
    out, *_ = timed([KAFKA_READ, BROKERS, topic])
    return json.loads(out)["bytes"]


def measure(name, runs, make_cmd, messages, nbytes, note="", steady_of=None):
    rows = []
    for i in range(runs):
        rows.append(measure_once(name, i, runs, make_cmd, messages, steady_of=steady_of))
    return summary(name, rows, messages, nbytes, note)


def measure_once(name, i, runs, make_cmd, messages, extra_env=None, steady_of=None):
    """One run: (wall s, cpu s, peak RSS MiB, steady-state msg/s or None). steady_of(stdout,
    stderr) reads the steady-state rate from the run's own output."""
    cmd, env = make_cmd(i)
    out, err, wall, cpu, rss = timed_full(cmd, {**env, **(extra_env or {})})
    rate = None
    if steady_of is not None:
        try:
            rate = steady_of(out, err)
        except Exception as e:  # noqa: BLE001 - a figure missing, not a failed run
            log(f"{name} run {i + 1}/{runs}: no steady-state figure ({e})")
    log(f"{name} run {i + 1}/{runs}: {wall:.2f} s, {messages / wall:,.0f} msg/s with start-up, "
        f"{'-' if rate is None else f'{rate:,.0f}'} msg/s steady, cpu {cpu:.2f} s, rss {rss:.0f} MiB")
    return wall, cpu, rss, rate


# Steady-state figures, each from the system's own report of its progress.

def steady_engine(out, err):
    """The engine's `epoch progress` events (json log): records after the first epoch over the time
    from the run's first commit (epoch 1 of the per-partition part) to its last (bench/steady.py)."""
    res = steady.steady_state(steady.engine_streams(err))
    if res.get("records_per_s") is None:
        raise ValueError(res.get("why", "no epochs in the log"))
    return res["records_per_s"]


def steady_spark(out, err):
    """orders_job.py's summary (last line on stdout): its `steady`, from StreamingQueryProgress."""
    s = json.loads(out.strip().splitlines()[-1])
    if s.get("orders_per_second_steady") is None:
        raise ValueError((s.get("steady") or {}).get("why", "no steady figure in the summary"))
    return s["orders_per_second_steady"]


def steady_kafka_read(out, err):
    """kafka_read's own clock: from assigning the partitions to the last message (no process
    start, no metadata look-up)."""
    return float(json.loads(out.strip().splitlines()[-1])["messages_per_s"])


def steady_perf_tool(out, err):
    """ConsumerPerformance's fetch.nMsg.sec: messages over the fetch time, which leaves out the
    JVM start and the consumer group's join (rebalance.time.ms)."""
    lines = [l for l in out.splitlines() if l.strip()]
    head = [h.strip() for h in lines[-2].split(",")]
    vals = [v.strip() for v in lines[-1].split(",")]
    return float(vals[head.index("fetch.nMsg.sec")])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENGINE_B = "(b) engine: orders.toml --batch"
ENGINE_B_METRICS = "(b) engine: orders.toml --batch, metrics endpoint on"
ENGINE_BRONZE = "(b) engine: orders_bronze.toml --batch"
RDKAFKA = "(a) rdkafka read loop"
PERF_TOOL = "(a) Kafka consumer perf tool"
SPARK_EXPERT = "(c) Spark, expert"
SPARK_EXPERT_BRONZE = "(c) Spark, expert, bronze only"
# --spark-variants name -> (row name, orders_job.py arguments, note)
SPARK_ROWS = {
    "notebook": ("(c) Spark, notebook", ["--variant", "notebook"],
                 "4 queries (Spark defaults): orders + items Parquet, product sales, windows"),
    "tuned": ("(c) Spark, tuned", ["--variant", "tuned"],
              "4 queries, tuned: orders + items Parquet, product sales, windows"),
    "expert": (SPARK_EXPERT, ["--variant", "expert"],
               "3 queries: one foreachBatch for orders + items (one read and parse), product sales, windows"),
    "expert-bronze": (SPARK_EXPERT_BRONZE, ["--variant", "expert", "--bronze-only"],
                      "1 foreachBatch query: orders + items"),
}


def engine_with_and_without_metrics(args, topic, nbytes):
    """(b) without and with --metrics-address, runs interleaved (off, on, off, on, ...) so that
    the machine's drift hits both alike."""
    make = engine_cmd("orders.toml", "ORDERS_TOPIC", topic, args.engine_trigger)
    off, on = [], []
    for i in range(args.runs):
        off.append(measure_once(ENGINE_B, i, args.runs, make, args.orders, steady_of=steady_engine))
        on.append(measure_once(ENGINE_B_METRICS, i, args.runs, make, args.orders,
                               {"ENGINE_METRICS_ADDRESS": f"127.0.0.1:{free_port()}"}, steady_of=steady_engine))
    return [summary(ENGINE_B, off, args.orders, nbytes,
                    "bronze orders + items + quarantine, gold product_sales + 1-min windows"),
            summary(ENGINE_B_METRICS, on, args.orders, nbytes,
                    "the same, serving /metrics (runs interleaved with the line above)")]


def summary(name, rows, messages, nbytes, note):
    wall = statistics.median(r[0] for r in rows)
    cpu = statistics.median(r[1] for r in rows)
    rss = max(r[2] for r in rows)
    rates = [r[3] for r in rows if len(r) > 3 and r[3] is not None]
    return {"name": name, "messages": messages, "wall_s": wall, "msgs_per_s": messages / wall,
            "steady_msgs_per_s": statistics.median(rates) if rates else None,
            "mb_per_s": nbytes / wall / 1e6, "cpu_s_per_million": cpu / messages * 1e6, "peak_rss_mib": rss,
            "note": note}


def engine_cmd(pipeline, topic_var, topic, trigger=None):
    """`engine run <pipeline> --batch` on a new output and checkpoint location. With a trigger, the
    pipeline's TRIGGER is set (a --batch run commits one epoch per trigger, so a backfill becomes
    several epochs) and its epochs are logged as json, for the steady-state figure."""
    def make(i):
        run = f"bench/{datetime.datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        env = {topic_var: topic, "BRONZE_URL": f"s3://bronze/{run}", "GOLD_URL": f"s3://gold/{run}",
               "CHECKPOINT_URL": f"s3://bronze/{run}/_checkpoints", "RUST_LOG": "warn"}
        if trigger:
            env.update({"TRIGGER": trigger, "RUST_LOG": "warn,engine::progress=info", "ENGINE_LOG_FORMAT": "json"})
        return [ENGINE, "run", os.path.join(ROOT, "pipelines", pipeline), "--batch"], env
    return make


LATENCY_PROBE = os.path.join(ROOT, "target", "release", "examples", "latency_probe")
GROUP_WAIT = os.path.join(ROOT, "target", "release", "examples", "group_wait")


def cpu_seconds(pid):
    """utime + stime of a running process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned_cpus(instance, cores):
    """The CPUs instance `instance` is pinned to when each instance gets `cores` of them: the
    next `cores` CPUs in turn, wrapping around, so instances share CPUs only once every CPU
    has one."""
    n = os.cpu_count()
    return sorted({(instance * cores + j) % n for j in range(cores)})


def scaleout_run(pipeline, topic, instances, messages, cores=None):
    """`instances` streaming engines started together on one new checkpoint, each pinned to
    `cores` CPUs with taskset (all CPUs when None); the wall time from their start until their
    consumer group has committed every message, their CPU time, and the largest peak RSS."""
    run = f"bench/{datetime.datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update({"ORDERS_TOPIC": topic, "BRONZE_URL": f"s3://bronze/{run}", "GOLD_URL": f"s3://gold/{run}",
                "CHECKPOINT_URL": f"s3://bronze/{run}/_checkpoints", "TRIGGER": "1s", "RUST_LOG": "info",
                "ENGINE_LOG_FORMAT": "json"})
    logs = [open(f"/tmp/{run.replace('/', '-')}-{i}.log", "w+") for i in range(instances)]
    t0 = time.monotonic()
    def pin(i):
        if cores is None:
            return []
        return ["taskset", "-c", ",".join(str(c) for c in pinned_cpus(i, cores))]

    procs = [subprocess.Popen([*pin(i), ENGINE, "run", os.path.join(ROOT, "pipelines", pipeline)], env=env,
                              stdout=subprocess.DEVNULL, stderr=logs[i]) for i in range(instances)]
    try:
        group = None
        while group is None and time.monotonic() - t0 < 60:
            time.sleep(0.1)
            logs[0].seek(0)
            for line in logs[0]:
                if '"group"' in line:
                    event = json.loads(line)
                    group = event.get("fields", {}).get("group") or event.get("group")
                    if group:
                        break
        if group is None:
            raise RuntimeError(f"no consumer group in the first instance's log ({logs[0].name})")
        out = subprocess.run([GROUP_WAIT, BROKERS, group, topic, str(messages), "600"], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{pipeline} x{instances}: {out.stderr.strip()}")
        wall = time.monotonic() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs)
        rss = max(peak_rss_mib(p.pid) for p in procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=90)
    for p in procs:
        if p.returncode != 0:
            raise RuntimeError(f"{pipeline} x{instances}: an instance exited with {p.returncode}")
    return wall, cpu, rss


def scaleout_section(args):
    """One, two and three instances of the orders job, full and bronze-only, on a 6-partition
    topic, unpinned and with each instance pinned to each of `args.cores` CPU counts; median of
    `args.runs` runs each."""
    topic = f"bench-orders6-{args.orders}"
    ensure_topic(topic, "orders", args.orders, partitions=6)
    shapes = [None] + [int(c) for c in args.cores.split(",") if c.strip()]
    if len(shapes) > 1 and shutil.which("taskset") is None:
        sys.exit("bench: --cores pins instances with taskset (util-linux), which is not installed; "
                 "install it, or pass --cores '' to run unpinned only")
    rows = []
    for pipeline in ["orders.toml", "orders_bronze.toml"]:
        for k in [1, 2, 3]:
            for cores in shapes:
                runs = []
                for i in range(args.runs):
                    wall, cpu, rss = scaleout_run(pipeline, topic, k, args.orders, cores)
                    log(f"{pipeline} x{k} cores {cores or 'all'} run {i + 1}/{args.runs}: {wall:.2f} s, "
                        f"{args.orders / wall:,.0f} msg/s, cpu {cpu:.2f} s, rss {rss:.0f} MiB")
                    runs.append((wall, cpu, rss))
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                used = len({c for i in range(k) for c in pinned_cpus(i, cores)}) if cores else os.cpu_count()
                rows.append({"pipeline": pipeline, "instances": k, "cores": cores, "cpus_used": used,
                             "wall_s": wall, "msgs_per_s": args.orders / wall,
                             "cpu_s_per_million": cpu / args.orders * 1e6,
                             "per_core": args.orders / cpu, "per_cpu_used": args.orders / wall / used,
                             "peak_rss_mib": max(r[2] for r in runs)})
    return rows


def now_ms():
    return int(time.time() * 1000)


READERS_PYTHON = None


def delta_files(table):
    """(live files of the latest version, every .parquet object under the table) of a Delta table,
    read with delta-rs (scripts/install-readers) and by listing."""
    global READERS_PYTHON
    if READERS_PYTHON is None:
        READERS_PYTHON = subprocess.run([os.path.join(ROOT, "scripts", "install-readers"), "--print-python"],
                                        check=True, capture_output=True, text=True).stdout.strip()
    out = subprocess.run([READERS_PYTHON, os.path.join(ROOT, "tests", "interop", "read_table.py"), "delta", table],
                         check=True, capture_output=True, text=True)
    live = json.loads(out.stdout.splitlines()[0])["files"]
    count = (
        "import sys, pyarrow.fs as fs\n"
        "s3 = fs.S3FileSystem(access_key='minioadmin', secret_key='minioadmin', region='us-east-1',"
        f" endpoint_override='{urllib.parse.urlparse(S3_ENDPOINT).netloc}', scheme='http')\n"
        "root = sys.argv[1]\n"
        "infos = s3.get_file_info(fs.FileSelector(root, recursive=True))\n"
        "print(sum(1 for i in infos if i.path.endswith('.parquet') and '/_' not in i.path[len(root):]))\n"
    )
    out = subprocess.run([READERS_PYTHON, "-c", count, table[len("s3://"):]], check=True, capture_output=True,
                         text=True)
    return live, int(out.stdout.strip())


def compaction_run(every, seconds, rate):
    """A streaming run of bench/pipelines/delta_stream.toml (trigger 1 s) fed `rate` orders/s for
    `seconds`, with maintenance every `every` ("off": none). Returns the epochs committed, the live
    and written data files, the engine's CPU seconds and the maintenance runs' own wall ms."""
    run = f"bench/{datetime.datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    topic = f"bench-compaction-{uuid.uuid4().hex[:8]}"
    create_topic(topic, 3)
    env = dict(os.environ)
    env.update({"ORDERS_TOPIC": topic, "BRONZE_URL": f"s3://bronze/{run}",
                "CHECKPOINT_URL": f"s3://bronze/{run}/_checkpoints", "MAINTENANCE_EVERY": every,
                "RUST_LOG": "info", "ENGINE_LOG_FORMAT": "json"})
    log_path = f"/tmp/{run.replace('/', '-')}.log"
    with open(log_path, "w+") as err:
        proc = subprocess.Popen([ENGINE, "run", os.path.join(ROOT, "bench", "pipelines", "delta_stream.toml")],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            produce_paced(topic, int(seconds * rate), rate)
            time.sleep(3)
            cpu = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
        err.seek(0)
        epochs, maintenance_ms, compacted = 0, 0, 0
        for line in err:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            fields = event.get("fields", {})
            message = fields.get("message", "")
            if message == "epoch progress":
                epochs += 1
            elif message == "delta maintenance":
                maintenance_ms += int(fields.get("ms", 0))
                compacted += int(fields.get("compacted", 0))
    delete_topic(topic)
    live, written = delta_files(f"s3://bronze/{run}/commandes")
    return {"maintenance": every, "seconds": seconds, "epochs": epochs, "live_files": live,
            "written_files": written, "compacted": compacted, "cpu_s": cpu, "maintenance_ms": maintenance_ms}


def compaction_section(args):
    rows = []
    for every in ["off", args.maintenance_every]:
        r = compaction_run(every, args.compaction_seconds, args.compaction_rate)
        log(f"maintenance {every}: {r}")
        rows.append(r)
    return rows


def write_compaction(args, rows):
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    md_path = os.path.join(ROOT, "bench", "results", f"{stamp}-compaction.md")
    lines = [
        f"# Delta compaction benchmark {stamp}",
        "",
        f"Command: `{' '.join(['python3', 'bench/bench.py'] + sys.argv[1:])}` (via `make bench-compaction`)",
        f"Machine: {platform.node()}, {os.cpu_count()} cores; Kafka and the S3 server on the same machine.",
        f"Each run streams `bench/pipelines/delta_stream.toml` (one Delta table partitioned by event date, trigger 1 s) "
        f"on a new 3-partition topic fed {args.compaction_rate:g} orders/s for {args.compaction_seconds} s "
        "(`engine produce --rate`), then stops it with SIGTERM. Live files: the latest version's, read by delta-rs; "
        "written: every data file under the table (vacuum keeps removed files for `file_retention`, 7 days). "
        "Per hour: scaled by 3,600 s / the run's length. CPU: the engine's user + system seconds; maintenance ms: "
        "the wall time of its maintenance runs, from its log.",
        "",
        "| maintenance | run s | epochs | live files at the end | data files written | files compacted | engine CPU-s | maintenance wall ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['maintenance']} | {r['seconds']} | {r['epochs']} | {r['live_files']} | {r['written_files']} | "
                     f"{r['compacted']} | {r['cpu_s']:.2f} | {r['maintenance_ms']} |")
    off = rows[0]
    scale = 3600 / off["seconds"]
    lines += ["", f"- One hour at this rate: without compaction the table grows by {off['live_files'] * scale:,.0f} live "
                  f"files ({off['live_files']} in {off['seconds']} s, scaled), one per Kafka partition and date folder "
                  "per trigger."]
    if len(rows) == 2:
        on = rows[1]
        lines += [f"- With maintenance every {on['maintenance']}, the live files stay bounded by what one interval "
                  f"writes plus one compacted file per folder ({on['live_files']} at the end), however long the "
                  "stream runs; the files compaction removed stay until vacuum (after `file_retention`).",
                  f"- Cost: {on['cpu_s'] - off['cpu_s']:.2f} engine CPU-s more over {on['seconds']} s "
                  f"({(on['cpu_s'] - off['cpu_s']) * 3600 / on['seconds']:.1f} per hour), "
                  f"{on['maintenance_ms'] / 1000:.2f} s of maintenance wall time."]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {md_path}")


def produce_paced(topic, count, rate):
    """Open-loop producer: message i is due at start + i/rate and carries that intended send time
    as its event time and Kafka timestamp. Returns the wall seconds it took."""
    t = time.monotonic()
    subprocess.run([ENGINE, "produce", "--topic", topic, "--kind", "orders", "--count", str(count),
                    "--rate", str(rate), "--stamp-send-time"], check=True, capture_output=True)
    return time.monotonic() - t


def probe(table, layout, since, expect, timeout):
    return subprocess.Popen([LATENCY_PROBE, "--table", table, "--layout", layout, "--since-ms", str(since),
                             "--expect", str(expect), "--timeout-s", str(int(timeout))],
                            stdout=subprocess.PIPE, text=True)


def peak_rss_mib(pid):
    """VmHWM of a running process and of its descendants (the largest), in MiB."""
    best = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        best = max(best, int(line.split()[1]))
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return best / 1024


def latency_run(system, rate, seconds, trigger, spark_env=None, warmup_s=0):
    """One produce-to-visible measurement: starts the system streaming on a new topic, waits until
    a warm-up burst is visible, then produces `rate` x `seconds` orders open-loop while
    latency_probe watches the committed `commandes` table. Returns the probe's figures."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-latency-{tag}"
    create_topic(topic)
    if system == "engine":
        run = f"bench/latency-{tag}"
        env = dict(os.environ, ORDERS_TOPIC=topic, BRONZE_URL=f"s3://bronze/{run}", GOLD_URL=f"s3://gold/{run}",
                   CHECKPOINT_URL=f"s3://bronze/{run}/_checkpoints", TRIGGER=trigger, RUST_LOG="warn")
        cmd = [ENGINE, "run", os.path.join(ROOT, "pipelines", "orders.toml")]
        table, layout, ready_timeout = f"s3://bronze/{run}/kafka/commandes", "engine", 60
    else:
        run = f"latency-{tag}"
        env = dict(os.environ, **spark_env)
        cmd = [spark_env.get("SPARK_PYTHON", "python3"), os.path.join(ROOT, "bench", "spark", "orders_job.py"),
               "--variant", "tuned", "--trigger", trigger, "--topic", topic, "--run", run, "--no-readback"]
        table, layout, ready_timeout = f"s3://bronze/bench-spark/{run}/commandes", "spark", 300
    # Its own process group, so that Spark's JVM (a grandchild) can be stopped with it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # Warm-up: 200 orders over 2 s must be visible before the measured run starts.
        since = now_ms()
        warm = probe(table, layout, since, 200, ready_timeout)
        produce_paced(topic, 200, 100)
        out, _ = warm.communicate()
        if not json.loads(out)["complete"]:
            raise RuntimeError(f"{system} ({trigger}) did not show the warm-up orders within {ready_timeout} s")
        if warmup_s > 0:
            # Optionally, a spell at the measured rate first (not measured): caches, files and
            # the S3 server's volumes settle before the clock starts.
            produce_paced(topic, int(rate * warmup_s), rate)
        since = now_ms()
        count = int(rate * seconds)
        # Keeping up means every order is visible within 15 s of the last one's intended send time.
        p = probe(table, layout, since, count, seconds + 15)
        sent_s = produce_paced(topic, count, rate)
        out, _ = p.communicate()
        res = json.loads(out)
        res.update(system=system, trigger=trigger, rate=rate, seconds=seconds, producer_seconds=round(sent_s, 1),
                   peak_rss_mib=round(peak_rss_mib(proc.pid)))
        # Keeping up: every order became visible, and the latency did not grow during the run
        # (a backlog shows as a last quarter much slower than the first).
        first, last = res.get("p95_first_quarter_ms"), res.get("p95_last_quarter_ms")
        res["keeps_up"] = bool(res["complete"]) and first is not None and last <= 2 * first + 1000
        log(f"latency {system} trigger {trigger} at {rate:,.0f}/s: {res}")
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Spark finishing a large backlogged micro-batch: the figures are taken already.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        delete_topic(topic)


def lowest_keeping_up(system, rate, seconds, triggers, spark_env=None, warmup_s=0):
    """Tries the triggers from the lowest up; returns the first run that keeps up, or the last."""
    res = None
    for trigger in triggers:
        try:
            res = latency_run(system, rate, seconds, trigger, spark_env, warmup_s)
        except RuntimeError as e:
            log(f"latency {system} trigger {trigger}: {e}")
            continue
        if res["keeps_up"]:
            break
    return res


def pyplot():
    """matplotlib's pyplot without a display, or None (and a log line) when it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart")
        return None
    return plt


def chart(results, path):
    plt = pyplot()
    if plt is None:
        return False
    names = [r["name"] for r in results]
    fig, ax = plt.subplots(figsize=(9, 0.8 * len(names) + 1.5))
    ys = range(len(names))
    for k, (key, label, color) in enumerate([("msgs_per_s", "with start-up", "#9cc3f0"),
                                             ("steady_msgs_per_s", "steady state", "#3b7dd8")]):
        vals = [(r.get(key) or 0) / 1000 for r in results]
        pos = [y + (k - 0.5) * 0.38 for y in ys]
        ax.barh(pos, vals, height=0.38, color=color, label=label)
        for y, v in zip(pos, vals):
            if v:
                ax.text(v, y, f" {v:,.0f}k", va="center", fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
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
    ap.add_argument("--spark-variants", default="notebook,tuned,expert,expert-bronze",
                    help=f"Spark rows of the throughput section, among {','.join(SPARK_ROWS)}")
    ap.add_argument("--spark-batch-orders", type=int, default=None,
                    help="orders per Spark micro-batch (maxOffsetsPerTrigger under AvailableNow), so that a "
                         "run has several batches for its steady state; default --orders / 10; 0: no limit "
                         "(each variant's own setting: one batch, no steady state)")
    ap.add_argument("--engine-trigger", default="1s",
                    help="TRIGGER of the engine's throughput runs (--batch commits one epoch per trigger, so the "
                         "backfill is several epochs for the steady state); empty: the pipeline's own (10s)")
    ap.add_argument("--cores", default="1,2",
                    help="--only scaleout: besides unpinned, pin each instance to each of these CPU counts (taskset)")
    ap.add_argument("--compaction-seconds", type=int, default=300,
                    help="length of each run of --only compaction")
    ap.add_argument("--compaction-rate", type=float, default=200, help="orders/s of --only compaction")
    ap.add_argument("--maintenance-every", default="1m", help="maintenance interval of --only compaction's second run")
    ap.add_argument("--only", choices=["all", "throughput", "latency", "scaleout", "metrics", "compaction"], default="all",
                    help="scaleout: 1, 2 and 3 streaming instances on a 6-partition topic (make bench-scaleout); "
                         "metrics: the orders backfill with and without the metrics endpoint, interleaved")
    ap.add_argument("--latency-seconds", type=int, default=120,
                    help="length of each open-loop latency run (the issue asks for at least 120)")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="input rate of the latency runs; default: 50%% of (b)'s measured throughput")
    ap.add_argument("--low-rate", type=float, default=2000,
                    help="a second, lower input rate that Spark can sustain, to compare both at equal load (0: skip)")
    ap.add_argument("--warmup-seconds", type=float, default=0,
                    help="before each measured latency run, produce this long at its rate, unmeasured")
    ap.add_argument("--engine-triggers", default="250ms,500ms,1s,2s",
                    help="engine triggers to try, lowest first; the first that keeps up is reported")
    ap.add_argument("--spark-triggers", default="1 second,2 seconds,5 seconds",
                    help="Spark triggers to try, lowest first")
    args = ap.parse_args()

    if args.only == "scaleout":
        write_scaleout(args, scaleout_section(args))
        return
    if args.only == "compaction":
        write_compaction(args, compaction_section(args))
        return
    orders_topic = f"bench-orders-{args.orders}"
    logs_topic = f"bench-logs-{args.logs}"
    metrics_topic = f"bench-metrics-{args.metrics}"
    ensure_topic(orders_topic, "orders", args.orders)
    ensure_topic(logs_topic, "logs", args.logs)
    ensure_topic(metrics_topic, "metrics", args.metrics)
    obytes = payload_bytes(orders_topic)
    log(f"{orders_topic}: {obytes / 1e6:.0f} MB of payload, {obytes / args.orders:.0f} B per order")

    spark_env = None
    spark_install = os.path.join(ROOT, "bench", "spark", "install")
    spark_job = os.path.join(ROOT, "bench", "spark", "orders_job.py")
    if args.spark == "auto" and os.path.exists(spark_install) and os.path.exists(spark_job):
        env_out = subprocess.run([spark_install, "--print-env"], capture_output=True, text=True)
        if env_out.returncode == 0:
            spark_env = dict(l.split("=", 1) for l in env_out.stdout.split() if "=" in l)
        else:
            log("bench/spark/install --print-env failed: skipping Spark")
    else:
        log("Spark is not set up (bench/spark/install): skipping it")

    results = []
    if args.only == "metrics":
        write_results(args, obytes, engine_with_and_without_metrics(args, orders_topic, obytes), None)
        return
    if args.only == "latency":
        eng_rate = None
        if args.latency_rate is None:
            r = measure("(b) engine: orders.toml --batch", 1, engine_cmd("orders.toml", "ORDERS_TOPIC", orders_topic),
                        args.orders, obytes, "to set the latency runs' input rate")
            eng_rate = r["msgs_per_s"]
        write_results(args, obytes, [], latency_section(args, eng_rate, spark_env))
        return
    results.append(measure(
        PERF_TOOL, args.runs,
        lambda i: (["java", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
                    BROKERS, "--topic", orders_topic, "--messages", str(args.orders), "--group",
                    f"bench-perf-{uuid.uuid4().hex[:8]}"], {}),
        args.orders, obytes, "JVM consumer, no processing", steady_of=steady_perf_tool))
    results.append(measure(
        RDKAFKA, args.runs, lambda i: ([KAFKA_READ, BROKERS, orders_topic], {}),
        args.orders, obytes, "touches every payload", steady_of=steady_kafka_read))
    results.extend(engine_with_and_without_metrics(args, orders_topic, obytes))
    results.append(measure(ENGINE_BRONZE, args.runs,
                           engine_cmd("orders_bronze.toml", "ORDERS_TOPIC", orders_topic, args.engine_trigger),
                           args.orders, obytes, "bronze only: orders + items + quarantine", steady_of=steady_engine))

    if spark_env is not None:
        python = spark_env.get("SPARK_PYTHON", "python3")
        batch = args.orders // 10 if args.spark_batch_orders is None else args.spark_batch_orders
        for key in [v.strip() for v in args.spark_variants.split(",") if v.strip()]:
            if key not in SPARK_ROWS:
                sys.exit(f"bench: unknown Spark variant {key!r} (--spark-variants: {', '.join(SPARK_ROWS)})")
            name, job_args, note = SPARK_ROWS[key]

            def make(i, job_args=job_args):
                run = f"make-bench-{uuid.uuid4().hex[:8]}"
                # --no-readback: the row counts are read back with pyarrow after the JVM has stopped;
                # that is not the job's time.
                limit = ["--max-offsets-per-trigger", str(batch)] if batch else []
                return ([python, spark_job, *job_args, "--batch", "--topic", orders_topic, "--run", run,
                         "--no-readback", *limit], spark_env)
            try:
                results.append(measure(name, args.runs, make, args.orders, obytes, note, steady_of=steady_spark))
            except RuntimeError as e:
                log(f"{name} failed: {e}")

    lbytes = payload_bytes(logs_topic)
    results.append(measure("(d) engine: logs.toml --batch", args.runs,
                           engine_cmd("logs.toml", "LOGS_TOPIC", logs_topic, args.engine_trigger), args.logs, lbytes,
                           "bronze logs + 3 gold tables", steady_of=steady_engine))
    mbytes = payload_bytes(metrics_topic)
    results.append(measure("(d) engine: metrics.toml --batch", args.runs,
                           engine_cmd("metrics.toml", "METRICS_TOPIC", metrics_topic, args.engine_trigger),
                           args.metrics, mbytes, "bronze metrics + 3 gold tables", steady_of=steady_engine))

    by = {r["name"]: r for r in results}
    eng = by["(b) engine: orders.toml --batch"]["msgs_per_s"]
    latency = latency_section(args, eng, spark_env) if args.only == "all" and args.latency_seconds > 0 else None
    write_results(args, obytes, results, latency)


def latency_section(args, eng_rate, spark_env):
    """Produce-to-visible latency at 50% of the engine's throughput (engine and Spark), and at a
    low rate Spark sustains (both). Returns the rows for the results file."""
    rate = args.latency_rate or round(eng_rate * 0.5, -3)
    seconds = args.latency_seconds
    engine_triggers = [t.strip() for t in args.engine_triggers.split(",") if t.strip()]
    spark_triggers = [t.strip() for t in args.spark_triggers.split(",") if t.strip()]
    rows = []
    for r, label in [(rate, "50% of (b)"), (args.low_rate, "low rate")]:
        if r <= 0:
            continue
        res = lowest_keeping_up("engine", r, seconds, engine_triggers, warmup_s=args.warmup_seconds)
        if res:
            rows.append(dict(res, load=label))
        if spark_env is not None:
            # At 50% of the engine's rate Spark falls behind whatever the trigger: one try is enough.
            tries = spark_triggers[:1] if label != "low rate" else spark_triggers
            res = lowest_keeping_up("spark", r, seconds, tries, spark_env, args.warmup_seconds)
            if res:
                rows.append(dict(res, load=label))
    return rows


def latency_chart(rows, path):
    plt = pyplot()
    if plt is None:
        return False
    kept = [r for r in rows if r.get("p99_ms") is not None]
    if not kept:
        return False
    names = [f"{r['system']} {r['rate']:,.0f}/s ({r['trigger']})" for r in kept]
    fig, ax = plt.subplots(figsize=(9, 0.8 * len(kept) + 1.5))
    ys = range(len(kept))
    for k, (key, color) in enumerate([("p50_ms", "#9cc3f0"), ("p95_ms", "#3b7dd8"), ("p99_ms", "#1b3f7a")]):
        ax.barh([y + (k - 1) * 0.27 for y in ys], [r[key] / 1000 for r in kept], height=0.27, color=color,
                label=key[:3])
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("produce-to-visible latency, seconds (log scale)")
    ax.legend()
    ax.set_title("Latency at a fixed open-loop input rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_scaleout(args, rows):
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    md_path = os.path.join(ROOT, "bench", "results", f"{stamp}-scaleout.md")
    lines = [
        f"# Scale-out benchmark {stamp}",
        "",
        f"Command: `{' '.join(['python3', 'bench/bench.py'] + sys.argv[1:])}` (via `make bench-scaleout`)",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; Kafka and the S3 server on the same machine.",
        f"Data: {args.orders:,} orders on a 6-partition topic. Each run starts N streaming instances (trigger 1s) together "
        "on a new checkpoint and stops when their consumer group has committed every offset (the engine commits "
        "offsets to its group after each epoch; `group_wait` polls them every 100 ms), so the time includes "
        f"start-up, the group's rebalances and the last trigger. Median of {args.runs} runs; CPU is the instances' "
        "user + system time, summed; peak RSS is the largest instance's. *Cores per instance*: each instance "
        "pinned with `taskset` to that many CPUs, the next ones in turn (`all`: not pinned); *CPUs used*: how many "
        "distinct CPUs the instances could run on, so *orders/s per CPU* is the per-core figure. Kafka and the "
        "S3 server are not pinned and share the same CPUs.",
        "",
        "| pipeline | instances | cores per instance | CPUs used | wall s | orders/s | orders/s per CPU | "
        "CPU-s per million | orders per CPU-second | peak RSS per instance (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {r['instances']} | {r.get('cores') or 'all'} | {r.get('cpus_used', '-')} | "
                     f"{r['wall_s']:.2f} | {r['msgs_per_s']:,.0f} | {r.get('per_cpu_used', 0):,.0f} | "
                     f"{r['cpu_s_per_million']:.2f} | {r['per_core']:,.0f} | {r['peak_rss_mib']:.0f} |")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {md_path}")


def ratio_line(by, a, b, label=None):
    """`- a / b: with start-up x, steady state y` when both rows exist."""
    if a not in by or b not in by:
        return []
    ra, rb = by[a], by[b]
    start = ra["msgs_per_s"] / rb["msgs_per_s"]
    if ra.get("steady_msgs_per_s") and rb.get("steady_msgs_per_s"):
        st = f"{ra['steady_msgs_per_s'] / rb['steady_msgs_per_s']:.2f}"
    else:
        st = "-"
    return [f"- {label or f'{a} / {b}'}: steady state **{st}**, with start-up {start:.2f}"]


def write_results(args, obytes, results, latency):
    by = {r["name"]: r for r in results}
    ratios = []
    if ENGINE_B in by and ENGINE_B_METRICS in by:
        ratios.append(f"- metrics endpoint on / off: {by[ENGINE_B_METRICS]['msgs_per_s'] / by[ENGINE_B]['msgs_per_s']:.3f} "
                      f"(CPU-s per million: {by[ENGINE_B_METRICS]['cpu_s_per_million']:.2f} on, "
                      f"{by[ENGINE_B]['cpu_s_per_million']:.2f} off)")
    ratios += ratio_line(by, ENGINE_B, SPARK_EXPERT, "engine / Spark expert, full job (b)/(c)")
    ratios += ratio_line(by, ENGINE_BRONZE, SPARK_EXPERT_BRONZE, "engine bronze / Spark expert bronze")
    ratios += ratio_line(by, ENGINE_B, RDKAFKA, "engine full job / rdkafka read loop (b)/(a)")
    ratios += ratio_line(by, ENGINE_BRONZE, RDKAFKA, "engine bronze / rdkafka read loop")
    ratios += ratio_line(by, ENGINE_B, PERF_TOOL, "engine full job / Kafka perf tool")
    for k in by:
        if k.startswith("(c)") and k not in (SPARK_EXPERT, SPARK_EXPERT_BRONZE):
            ratios += ratio_line(by, ENGINE_B, k, f"engine full job / {k}")

    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    md_path = os.path.join(ROOT, "bench", "results", f"{stamp}.md")
    png_path = md_path[:-3] + ".png"
    has_chart = bool(results) and chart(results, png_path)
    lines = [
        f"# Benchmark {stamp}",
        "",
        f"Command: `{' '.join(['python3', 'bench/bench.py'] + sys.argv[1:])}` (via `make bench`)",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; Kafka and the S3 server on the same machine.",
        (f"Data: {args.orders:,} orders ({obytes / args.orders:.0f} B each), {args.logs:,} log lines, "
         f"{args.metrics:,} metrics, 3 partitions each. Median of {args.runs} runs; peak RSS is the largest."
         if results else "Data: latency runs only, each on a new topic of 3 partitions."),
        "",
        "| run | msg/s with start-up | msg/s steady state | MB/s with start-up | CPU-s per million | peak RSS (MiB) | what it does |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        st = "-" if r.get("steady_msgs_per_s") is None else f"{r['steady_msgs_per_s']:,.0f}"
        lines.append(f"| {r['name']} | {r['msgs_per_s']:,.0f} | {st} | {r['mb_per_s']:.1f} | "
                     f"{r['cpu_s_per_million']:.2f} | {r['peak_rss_mib']:.0f} | {r['note']} |")
    if results:
        spark_batch = args.orders // 10 if args.spark_batch_orders is None else args.spark_batch_orders
        lines += [
            "",
            "With start-up: messages / wall time of the whole process (JVM or process start to exit). "
            "Steady state: from each system's own progress reports, leaving out the process start and the first "
            "micro-batch (bench/steady.py): the messages after the run's first micro-batch, over the time from its "
            "commit (the run's first) to the last commit of any part or query, when every output is written.",
            f"- engine: `epoch progress` log events; `--batch` with TRIGGER={args.engine_trigger or 'the pipeline default'} "
            "commits one epoch per trigger. The finalizer (gold) commits epoch n after the per-partition part, so "
            "its work on the first epoch falls inside the interval.",
            "- Spark: StreamingQueryProgress of every query (end = timestamp + triggerExecution), AvailableNow with "
            + (f"maxOffsetsPerTrigger {spark_batch:,} for every variant (a backfill in micro-batches)."
               if spark_batch else "each variant's own maxOffsetsPerTrigger (no steady state from a single batch).")
            + " The Spark wall time leaves out reading the tables back (`--no-readback`).",
            "- rdkafka read loop: its own clock, from assigning the partitions to the last message; Kafka perf tool: "
            "its fetch.nMsg.sec (no JVM start, no group join).",
        ]
    if ratios:
        lines += ["", "Ratios (throughput):", *ratios]
    if has_chart:
        lines += ["", f"![throughput]({os.path.basename(png_path)})"]
    if latency:
        ms = lambda v: "-" if v is None else f"{v:,}"
        lines += [
            "",
            f"## Produce-to-visible latency ({latency[0]['seconds']} s per run, open loop)",
            "",
            "Each order carries its intended send time; `latency_probe` polls the committed `commandes` table "
            "every 50 ms (the engine: listed files; Spark: files in `_spark_metadata`) and reads each new file. "
            "A run keeps up when every order is visible within 15 s of the last one's send time and the latency "
            "does not grow during the run (p95 of the last quarter of orders at most twice the first quarter's "
            "plus 1 s); the trigger is the lowest tried that keeps up, or the last tried when none does. "
            "Warm-up (start-up and 200 orders) is excluded"
            + (f", then {args.warmup_seconds:g} s at the run's rate, unmeasured." if args.warmup_seconds else "."),
            "",
            "| system | load | input rate (msg/s) | trigger | keeps up | rows visible | p50 ms | p95 ms | p99 ms | max ms | p95 first / last quarter (ms) | duplicates | peak RSS (MiB) |",
            "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in latency:
            lines.append(f"| {r['system']} | {r['load']} | {r['rate']:,.0f} | {r['trigger']} | "
                         f"{'yes' if r['keeps_up'] else 'no'} | {r['rows']:,} of {r['expected']:,} | {ms(r['p50_ms'])} | "
                         f"{ms(r['p95_ms'])} | {ms(r['p99_ms'])} | {ms(r['max_ms'])} | "
                         f"{ms(r.get('p95_first_quarter_ms'))} / {ms(r.get('p95_last_quarter_ms'))} | {r['duplicates']} | "
                         f"{r['peak_rss_mib']} |")
        lat_png = md_path[:-3] + "-latency.png"
        if latency_chart(latency, lat_png):
            lines += ["", f"![latency]({os.path.basename(lat_png)})"]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {md_path}")


if __name__ == "__main__":
    if not shutil.which("java") or not os.path.exists(ENGINE):
        sys.exit("bench: needs java and target/release/engine (make build)")
    main()
