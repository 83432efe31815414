#!/usr/bin/env python3
"""The engine's `pipelines/orders.toml` job, written with Spark Structured Streaming.

Reads the orders topic from Kafka, parses it with from_json and writes, as Parquet on the local
S3 server (S3A):

  bronze/bench-spark/<run>/commandes             one row per order, without `items`, plus topic,
                                                 partition, offset, kafka_timestamp, key (append)
  bronze/bench-spark/<run>/items                 one row per item (posexplode), append
  gold/bench-spark/<run>/product_sales           per (product_id, product_name): nb_ventes,
                                                 quantite_totale, ca_total; complete mode, the
                                                 whole table replaced at each micro-batch
  gold/bench-spark/<run>/customer_orders_1min    per customer and 1-minute window on the order's
                                                 own timestamp, watermark 2 minutes: nb_commandes,
                                                 total_commandes; append (closed windows only)

The columns are the engine's (see `engine graph pipelines/orders.toml`). Like the engine, a run
is four outputs of one topic; the notebook and tuned variants run them as four streaming queries,
each reading the topic and parsing the JSON itself (that is how Structured Streaming is written:
one writeStream per sink); the expert variant as three (see below).

Variants (--variant):
  notebook  written as the course notebook would: Spark's defaults (spark.sql.shuffle.partitions
            = 200, the UI on, no maxOffsetsPerTrigger, local[*]).
  tuned     the same four queries and outputs, with settings sized for a 2-core machine and this
            volume: spark.sql.shuffle.partitions = 2 x cores (4 here), the UI and its listeners
            off, maxOffsetsPerTrigger bounded (default 500000 per query and trigger), the
            state store's maintenance less frequent, and product_sales written as one file.
  expert    the strongest Spark we know how to write for this job on this machine: THREE queries.
            `bronze` reads the topic once per micro-batch and, in foreachBatch, persists the parsed
            batch (MEMORY_ONLY, uncompressed columnar cache) and writes both commandes and items
            from it (each batch into its own directory batch_id=N, replaced if the batch is
            replayed); then
            product_sales (complete) and customer_orders_1min (append, watermark), each parsing
            only the fields it needs. local[cores], 2 shuffle partitions (= cores), no
            maxOffsetsPerTrigger, driver heap 2g with ParallelGC, larger Kafka fetches... see
            variant_conf() and README.md ("The expert variant").

Modes:
  --batch              Trigger.AvailableNow: read everything up to the offsets seen at start,
                       then stop (like `engine run --batch`).
  --trigger "5 seconds" processing-time trigger, runs until --duration seconds have passed or
                       SIGTERM/SIGINT (a clean stop: the queries are stopped, then the summary).

--bronze-only: only the bronze tables commandes and items (notebook/tuned: their two queries;
expert: the one foreachBatch query).

Steady state: the summary's `steady` is computed from the queries' StreamingQueryProgress
(bench/steady.py): orders done by every query after each query's first micro-batch with data,
over the time from then to the end of the last batch. It needs several micro-batches per query:
with --batch give --max-offsets-per-trigger (make bench does).

Checkpoints: by default in a local temporary directory (--checkpoint local), see README.md
("Checkpoints") for why; --checkpoint s3 puts them under
s3a://bronze/bench-spark/<run>/_checkpoints like the engine's.

The last line on stdout is a one-line JSON summary (rows per table, wall seconds, per-query
batches and input rows, versions...). The rows per table are read back with pyarrow after Spark
has stopped (committed files only; --no-readback skips it): wall_seconds is taken before that,
readback_seconds says how long it took. Spark is given its extra jars with spark.jars from the
directory bench/spark/install fills; nothing is downloaded at run time.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # verify.py, for the read-back
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/steady.py
import steady as steady_mod  # noqa: E402

T0 = time.monotonic()
T0_WALL = time.time()

TABLES = ("commandes", "items", "product_sales", "customer_orders_1min")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("notebook", "tuned", "expert"), default="tuned")
    p.add_argument("--bronze-only", action="store_true",
                   help="only the bronze tables commandes and items (no product_sales, no windows)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--batch", action="store_true", help="Trigger.AvailableNow: read all, then stop (default)")
    mode.add_argument("--trigger", metavar="INTERVAL", help='processing-time trigger, e.g. "5 seconds"; streams')
    p.add_argument("--duration", type=float, default=0.0,
                   help="streaming only: stop after this many seconds (0: until SIGTERM/SIGINT)")
    p.add_argument("--topic", default=os.environ.get("ORDERS_TOPIC", "commandes-json"))
    p.add_argument("--brokers", default=os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"))
    p.add_argument("--run", default=None,
                   help="run name: output goes to s3a://{bronze,gold}/bench-spark/<run>/ (default: <variant>-<utc time>-<random>)")
    p.add_argument("--bronze", default=os.environ.get("SPARK_BENCH_BRONZE", "s3a://bronze/bench-spark"))
    p.add_argument("--gold", default=os.environ.get("SPARK_BENCH_GOLD", "s3a://gold/bench-spark"))
    p.add_argument("--checkpoint", default="local",
                   help="'local' (a temporary directory, removed at the end unless --keep-checkpoint), "
                        "'s3' (s3a://bronze/bench-spark/<run>/_checkpoints), or a path/URL")
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--master", default=None, help="Spark master (default local[*]; expert: local[<cores>])")
    p.add_argument("--shuffle-partitions", type=int, default=None, help="override the variant's value")
    p.add_argument("--max-offsets-per-trigger", type=int, default=None,
                   help="override the variant's value (tuned: 500000; notebook, expert: unbounded); 0 = unbounded")
    p.add_argument("--min-partitions", type=int, default=None,
                   help="Kafka source minPartitions (default unset: one task per Kafka partition); 0 = unset")
    p.add_argument("--driver-memory", default=None, help="e.g. 2g (default: Spark's 1g; expert: 2g)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra Spark setting, over the variant's (repeatable; for experiments)")
    p.add_argument("--java-options", default=None,
                   help="extra JVM options for the driver (e.g. a Flight Recorder profile), added to the variant's")
    p.add_argument("--jars-dir", default=None,
                   help="directory of the extra jars (default: $ENGINE_TOOLS_DIR/spark-jars-<pyspark version>)")
    p.add_argument("--progress-file", default=None,
                   help="append one JSON line per micro-batch progress event (for latency work)")
    p.add_argument("--no-readback", action="store_true",
                   help="do not read the tables back with pyarrow at the end to count their rows")
    p.add_argument("--log-level", default="WARN")
    a = p.parse_args(argv)
    if not a.trigger:
        a.batch = True
    return a


def log(msg):
    print(f"[orders_job +{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def find_jars(args, pyspark_version):
    d = args.jars_dir or os.path.join(
        os.environ.get("ENGINE_TOOLS_DIR", os.path.expanduser("~/.cache/engine-tools")),
        f"spark-jars-{pyspark_version}")
    if not os.path.isfile(os.path.join(d, ".complete")):
        sys.exit(f"orders_job: no complete jar directory at {d}; run bench/spark/install "
                 f"(SPARK_VERSION={pyspark_version}) first")
    jars = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jar"))
    names = " ".join(os.path.basename(j) for j in jars)
    for need in ("spark-sql-kafka-0-10", "hadoop-aws", "bundle-", "kafka-clients"):
        if need not in names:
            sys.exit(f"orders_job: {d} has no {need}*.jar; rerun bench/spark/install")
    return jars


def s3a_conf():
    """S3A settings for the local S3 server. The credentials are not put in the Spark conf (it
    ends up on the JVM's command line): S3A reads them from the environment, which the JVM
    inherits from this process (defaults: the local stack's minioadmin/minioadmin)."""
    endpoint = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")
    u = urlparse(endpoint)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "minioadmin")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "minioadmin")
    return {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": os.environ.get("AWS_REGION", "us-east-1"),
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "true" if u.scheme == "https" else "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
        # Nothing else is needed for SeaweedFS (see README.md "S3A on SeaweedFS").
    }


def variant_conf(args, cores):
    """Spark settings of each variant. Returns (spark conf dict, kafka reader options dict)."""
    conf = {}
    kafka = {}
    min_partitions = None
    if args.variant == "notebook":
        shuffle = None                      # Spark's default: 200
        max_offsets = None
    elif args.variant == "tuned":
        shuffle = 2 * cores
        max_offsets = 500_000
        conf.update({
            "spark.ui.enabled": "false",
            "spark.sql.streaming.ui.enabled": "false",
            # Snapshots and cleanup of the state store every 10 batches (default: every 10
            # deltas / 60 s maintenance); fewer small files per batch.
            "spark.sql.streaming.stateStore.minDeltasForSnapshot": "20",
            "spark.sql.streaming.stateStore.maintenanceInterval": "120s",
            # No compression codec fuss: Spark's default snappy, same as the notebook.
        })
    else:  # expert
        # One task slot per core and one shuffle partition per slot: the two stateful queries'
        # state (12 products, a few hundred open windows) is tiny, more partitions only mean
        # more tasks and more state-store files per batch.
        shuffle = cores
        max_offsets = None                  # no per-trigger limit: a backlog is one batch
        # minPartitions stays unset: one task per Kafka partition. Splitting each partition in
        # two (6 tasks, even waves on 2 slots) was slower: every write task commits its own
        # file through S3A (HEAD, LIST, COPY, DELETE), which cost more than the 2 + 1 waves
        # lose (README.md, "The expert variant").
        conf.update({
            "spark.ui.enabled": "false",
            "spark.sql.streaming.ui.enabled": "false",
            "spark.sql.streaming.stateStore.minDeltasForSnapshot": "20",
            "spark.sql.streaming.stateStore.maintenanceInterval": "120s",
            # The parsed batch is cached between the two bronze writes: plain columnar buffers,
            # no compression pass for data read back once, a moment later.
            "spark.sql.inMemoryColumnarStorage.compressed": "false",
            # Driver = executor in local mode; these two must reach the JVM's command line, which
            # pyspark builds from this conf when it launches the JVM (getOrCreate below).
            "spark.driver.memory": "2g",
            "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
            # foreachBatch writes go through Hadoop's FileOutputCommitter, whose v1 job commit
            # renames every file a second time (on S3A a rename is a copy); v2 commits each task's
            # files straight into the batch's directory. Neither is atomic on S3, and a replayed
            # batch replaces its directory (see write_bronze).
            "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
        })
        kafka.update({
            # Fetches sized to the tasks: each task reads one offset range of one partition
            # (a few thousand to tens of thousands of ~370-byte orders), so 2 MiB per partition
            # and request (default 1 MiB) and a 1 MiB socket buffer (default 64 KiB) read it in
            # a few round trips without fetching far past the range's end (what a task does not
            # use is fetched and decoded for nothing). max.poll.records stays at 500: a poll is
            # served from the fetched buffer, and larger polls decode records past the range too.
            "kafka.max.partition.fetch.bytes": str(2 << 20),
            "kafka.receive.buffer.bytes": str(1 << 20),
        })
    if args.shuffle_partitions is not None:
        shuffle = args.shuffle_partitions
    if args.max_offsets_per_trigger is not None:
        max_offsets = args.max_offsets_per_trigger or None
    if args.min_partitions is not None:
        min_partitions = args.min_partitions or None
    if shuffle is not None:
        conf["spark.sql.shuffle.partitions"] = str(shuffle)
    if max_offsets is not None:
        kafka["maxOffsetsPerTrigger"] = str(max_offsets)
    if min_partitions is not None:
        kafka["minPartitions"] = str(min_partitions)
    if args.driver_memory:
        conf["spark.driver.memory"] = args.driver_memory
    for kv in args.conf:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"orders_job: --conf {kv!r}: expected KEY=VALUE")
        conf[k.strip()] = v.strip()
    if args.java_options:
        conf["spark.driver.extraJavaOptions"] = (
            conf.get("spark.driver.extraJavaOptions", "") + " " + args.java_options).strip()
    return conf, kafka


def main(argv):
    args = parse_args(argv)
    import pyspark
    from pyspark.sql import SparkSession
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.streaming import StreamingQueryListener
    from pyspark.sql.types import (ArrayType, DoubleType, IntegerType, StringType, StructField,
                                   StructType)

    cores = os.cpu_count() or 1
    run = args.run or f"{args.variant}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    bronze = f"{args.bronze.rstrip('/')}/{run}"
    gold = f"{args.gold.rstrip('/')}/{run}"
    paths = {
        "commandes": f"{bronze}/commandes",
        "items": f"{bronze}/items",
        "product_sales": f"{gold}/product_sales",
        "customer_orders_1min": f"{gold}/customer_orders_1min",
    }
    local_ckpt = None
    if args.checkpoint == "local":
        local_ckpt = tempfile.mkdtemp(prefix=f"bench-spark-ckpt-{run}-")
        ckpt_root = "file://" + local_ckpt
    elif args.checkpoint == "s3":
        ckpt_root = f"{bronze}/_checkpoints"
    else:
        ckpt_root = args.checkpoint.rstrip("/") + f"/{run}"

    # Fail fast and clearly when Kafka is not there (Spark's Kafka source would retry for long).
    import socket
    reachable = False
    for b in args.brokers.split(","):
        host, _, port = b.strip().rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            reachable = True
            break
        except (OSError, ValueError):
            pass
    if not reachable:
        sys.exit(f"orders_job: Kafka is not reachable at {args.brokers}; start the stack (make stack-up) "
                 "or set KAFKA_BROKERS / --brokers")

    jars = find_jars(args, pyspark.__version__)
    vconf, kafka_opts = variant_conf(args, cores)

    master = args.master or (f"local[{cores}]" if args.variant == "expert" else "local[*]")
    builder = (SparkSession.builder
               .appName(f"bench-spark-orders-{args.variant}")
               .master(master)
               .config("spark.jars", ",".join(jars))
               # Event-time windows and the printed times in UTC, like the engine.
               .config("spark.sql.session.timeZone", "UTC")
               # The console progress bar is display only (off in both variants: clean logs).
               .config("spark.ui.showConsoleProgress", "false")
               # Every micro-batch's progress is kept for the summary's steady state (default 100).
               .config("spark.sql.streaming.numRecentProgressUpdates", "100000"))
    for k, v in {**s3a_conf(), **vconf}.items():
        builder = builder.config(k, v)
    log(f"starting Spark (pyspark {pyspark.__version__}, variant {args.variant}, {len(jars)} extra jars)")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(args.log_level)
    t_session = time.monotonic()
    log(f"Spark {spark.version} up; run {run}; checkpoints {ckpt_root}")

    # ---- per-query progress, accumulated by a listener (recentProgress keeps only the last 100)
    stats = {}
    lock = threading.Lock()
    progress_out = open(args.progress_file, "a") if args.progress_file else None

    def codegen_count():
        try:
            return spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics \
                .METRIC_COMPILATION_TIME().getCount()
        except Exception:  # noqa: BLE001
            return None

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event):
            pass

        def onQueryProgress(self, event):
            p = event.progress
            with lock:
                s = stats.setdefault(p.name, {"batches": 0, "data_batches": 0, "input_rows": 0,
                                              "trigger_ms": 0, "max_batch_ms": 0})
                s["batches"] += 1
                s["input_rows"] += p.numInputRows
                if p.numInputRows:
                    s["data_batches"] += 1
                dur = (p.durationMs or {}).get("triggerExecution", 0)
                s["trigger_ms"] += dur
                s["max_batch_ms"] = max(s["max_batch_ms"], dur)
                n = p.sink.numOutputRows if p.sink is not None else -1
                if progress_out:
                    progress_out.write(json.dumps({
                        "query": p.name, "batch": p.batchId, "timestamp": p.timestamp,
                        "input_rows": p.numInputRows, "duration_ms": p.durationMs,
                        "watermark": (p.eventTime or {}).get("watermark"),
                        "sink_rows": n, "end_offset": p.sources[0].endOffset if p.sources else None,
                        "codegen_compilations": codegen_count(),
                    }) + "\n")
                    progress_out.flush()

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            pass

    spark.streams.addListener(Listener())

    # ---- the job
    item_schema = StructType([
        StructField("product_id", IntegerType(), True),
        StructField("product_name", StringType(), True),
        StructField("quantity", IntegerType(), True),
        StructField("unit_price", DoubleType(), True),
        StructField("subtotal", DoubleType(), True),
    ])
    order_schema = StructType([
        StructField("order_id", IntegerType(), True),
        StructField("customer_id", StringType(), True),
        StructField("timestamp", StringType(), True),
        StructField("items", ArrayType(item_schema), True),
        StructField("total", DoubleType(), True),
        StructField("status", StringType(), True),
    ])

    def kafka_stream():
        r = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", args.brokers)
             .option("subscribe", args.topic)
             .option("startingOffsets", "earliest"))
        for k, v in kafka_opts.items():
            r = r.option(k, v)
        return r.load()

    def parsed(schema=order_schema):
        """A fresh Kafka stream, parsed: one per query, as Structured Streaming is written."""
        return (kafka_stream()
                .select(
                    "topic", "partition", "offset",
                    F.col("timestamp").alias("kafka_timestamp"),
                    F.col("key").cast("string").alias("key"),
                    F.from_json(F.col("value").cast("string"), schema).alias("data"))
                .select("topic", "partition", "offset", "kafka_timestamp", "key", "data.*"))

    def items_of(df):
        return (df.select("topic", "partition", "offset", "order_id", "customer_id", "timestamp",
                          F.posexplode("items").alias("item_index", "item"))
                .select("topic", "partition", "offset", "order_id", "customer_id", "timestamp",
                        "item_index", "item.product_id", "item.product_name", "item.quantity",
                        "item.unit_price", "item.subtotal"))

    def start(df, name, **kw):
        w = df.writeStream.queryName(name).option("checkpointLocation", f"{ckpt_root}/{name}")
        w = w.trigger(availableNow=True) if args.batch else w.trigger(processingTime=args.trigger)
        if "foreach_batch" in kw:
            w = w.outputMode(kw["mode"]).foreachBatch(kw["foreach_batch"])
        else:
            w = w.outputMode(kw.get("mode", "append")).format("parquet").option("path", paths[name])
        return w.start()

    product_rows = {"last": 0}

    def write_product_sales(batch_df, batch_id):
        # Complete mode: the whole table, replaced. The Parquet file sink only appends, so this
        # goes through foreachBatch (idempotent: a replayed batch rewrites the same table).
        # persist: the batch is computed (and its state store updated) once for the two actions.
        if args.variant == "expert":
            # One action only (no row count for the summary; the read-back gives it), so no
            # persist is needed: the state store is updated once.
            batch_df.coalesce(1).write.mode("overwrite").parquet(paths["product_sales"])
            product_rows["last"] = None
            return
        df = batch_df.persist()
        out = df if args.variant == "notebook" else df.coalesce(1)
        out.write.mode("overwrite").parquet(paths["product_sales"])
        product_rows["last"] = df.count()
        df.unpersist()

    def write_bronze(batch_df, batch_id):
        # Expert: both bronze tables from one read and one parse of the batch. The parsed rows
        # are cached (uncompressed columnar, memory only) by the first write, read back by the
        # second, then dropped. foreachBatch has no commit log of its own (the file sink's
        # _spark_metadata): each batch goes to its own directory, written in overwrite mode, so
        # a batch replayed after a failure (same batch id, same offsets) replaces its own files
        # instead of adding a second copy. The directory is Hive-style, batch_id=N, because
        # Spark's reader only descends into name=value directories: Spark sees a batch_id
        # partition column (as it sees the engine's dt=), the Parquet files have the same
        # columns as the other variants'.
        df = batch_df.persist(StorageLevel.MEMORY_ONLY)
        try:
            part = f"batch_id={batch_id}"
            df.drop("items").write.mode("overwrite").parquet(f"{paths['commandes']}/{part}")
            items_of(df).write.mode("overwrite").parquet(f"{paths['items']}/{part}")
        finally:
            df.unpersist()

    # (name, dataframe, start() keywords) of each streaming query
    plan = []
    if args.variant == "expert":
        plan.append(("bronze", parsed(), {"mode": "append", "foreach_batch": write_bronze}))
    else:
        plan.append(("commandes", parsed().drop("items"), {}))
        plan.append(("items", items_of(parsed()), {}))
    if not args.bronze_only:
        if args.variant == "expert":
            # Each gold query parses only the fields it uses (Spark would prune the schema of
            # from_json itself; written out, it is plain to see).
            sales_in = (kafka_stream()
                        .select(F.from_json(F.col("value").cast("string"), StructType([
                            StructField("items", ArrayType(StructType([
                                f for f in item_schema.fields
                                if f.name in ("product_id", "product_name", "quantity", "subtotal")])), True),
                        ])).alias("data"))
                        .select(F.explode("data.items").alias("item"))
                        .select("item.product_id", "item.product_name", "item.quantity", "item.subtotal"))
            windows_in = parsed(StructType([f for f in order_schema.fields
                                            if f.name in ("customer_id", "timestamp", "total")]))
        else:
            sales_in = items_of(parsed())
            windows_in = parsed()
        product_sales = (sales_in
                         .groupBy("product_id", "product_name")
                         .agg(F.count(F.lit(1)).alias("nb_ventes"),
                              F.sum("quantity").alias("quantite_totale"),
                              F.sum("subtotal").alias("ca_total")))
        windows = (windows_in
                   .withColumn("event_time", F.col("timestamp").cast("timestamp"))
                   .withWatermark("event_time", "2 minutes")
                   .groupBy("customer_id", F.window("event_time", "1 minute"))
                   .agg(F.count(F.lit(1)).alias("nb_commandes"), F.sum("total").alias("total_commandes"))
                   .select("customer_id", F.col("window.start").alias("window_start"),
                           F.col("window.end").alias("window_end"), "nb_commandes", "total_commandes"))
        plan.append(("product_sales", product_sales,
                     {"mode": "complete", "foreach_batch": write_product_sales}))
        plan.append(("customer_orders_1min", windows, {}))

    t_start = time.monotonic()
    stop = threading.Event()
    if not args.batch:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    deadline = (t_start + args.duration) if (not args.batch and args.duration > 0) else None
    error = None
    queries = []
    try:
        for name, df, kw in plan:
            queries.append(start(df, name, **kw))
        log(f"{len(queries)} queries started ({', '.join(q.name for q in queries)}; "
            f"{'AvailableNow' if args.batch else 'trigger ' + args.trigger}) on "
            f"topic {args.topic}; shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}, "
            f"maxOffsetsPerTrigger {kafka_opts.get('maxOffsetsPerTrigger', 'unbounded')}, "
            f"minPartitions {kafka_opts.get('minPartitions', 'unset')}")
        while True:
            active = [q for q in queries if q.isActive]
            for q in queries:
                if q.exception() is not None:
                    raise RuntimeError(f"query {q.name} failed: {q.exception()}")
            if not active:
                break
            if stop.is_set() or (deadline and time.monotonic() >= deadline):
                log("stopping the queries")
                for q in active:
                    q.stop()
                break
            time.sleep(0.2)
        for q in queries:
            q.awaitTermination()
    except Exception as e:  # noqa: BLE001 - reported in the summary, then exit 1
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        # py4j errors start with "An error occurred while calling ...": keep the Java message too.
        error = " ".join(lines[:2])[:600]
        log(f"ERROR: {error}")
        for q in queries:
            try:
                q.stop()
            except Exception:  # noqa: BLE001
                pass
    t_end = time.monotonic()

    # Every micro-batch of every query, from the queries themselves: recentProgress keeps them all
    # (numRecentProgressUpdates above) and, unlike the listener, has them all once a query stopped.
    batches = {}
    try:
        for q in queries:
            batches[q.name] = [
                {"batch": p.batchId, "rows": p.numInputRows,
                 "ms": (p.durationMs or {}).get("triggerExecution", 0),
                 "start_s": datetime.datetime.fromisoformat(p.timestamp.replace("Z", "+00:00")).timestamp()}
                for p in q.recentProgress]
    except Exception as e:  # noqa: BLE001
        log(f"no recentProgress ({e}); per-query figures from the listener, no steady state")
        batches = {}
    if batches:
        per_query = {name: {"batches": len(bs), "data_batches": sum(1 for b in bs if b["rows"]),
                            "input_rows": sum(b["rows"] for b in bs), "trigger_ms": sum(b["ms"] for b in bs),
                            "max_batch_ms": max((b["ms"] for b in bs), default=0)}
                     for name, bs in batches.items()}
    else:
        with lock:
            per_query = {k: dict(v) for k, v in stats.items()}
    # Steady state (bench/steady.py): orders every query has committed after each query's first
    # micro-batch with data, over the time from then to the end of the last batch.
    steady_streams = {name: [(b["start_s"] + b["ms"] / 1000, b["rows"]) for b in bs]
                      for name, bs in batches.items()}
    steady = steady_mod.steady_state(steady_streams)
    t_first = min((b["start_s"] for bs in batches.values() for b in bs), default=0)
    progress = {name: [[b["batch"], round(b["start_s"] - t_first, 3), b["ms"], b["rows"]] for b in bs]
                for name, bs in batches.items()}
    rows = {"commandes": None, "items": None}
    if not args.bronze_only:
        rows.update({"product_sales": product_rows["last"], "customer_orders_1min": None})
    input_orders = per_query.get(plan[0][0], {}).get("input_rows", 0)
    jvm = spark.sparkContext._jvm
    try:
        heap_mb = round(jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20)
        gcs = [b.getName() for b in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()]
    except Exception:  # noqa: BLE001
        heap_mb, gcs = None, None
    try:
        # Janino compilations of generated code (whole stage, projections, ...) in this JVM, and
        # their total time: the code cache serves repeated plans, so these should stop growing
        # after the first micro-batches.
        cg = jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
        codegen = {"compilations": cg.getCount(),
                   "ms": round(cg.getSnapshot().getMean() * cg.getCount())}
    except Exception:  # noqa: BLE001
        codegen = None
    summary = {
        "tool": "spark", "variant": args.variant,
        "mode": "batch" if args.batch else f"trigger {args.trigger}",
        "run": run, "topic": args.topic, "ok": error is None, "error": error,
        "spark": spark.version, "pyspark": pyspark.__version__,
        "java": spark.sparkContext._jvm.java.lang.System.getProperty("java.version"),
        "cores": cores, "master": spark.sparkContext.master,
        "shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions")),
        "max_offsets_per_trigger": kafka_opts.get("maxOffsetsPerTrigger"),
        "checkpoint": ckpt_root,
        "input_orders": input_orders,
        "bronze_only": args.bronze_only,
        "min_partitions": kafka_opts.get("minPartitions"),
        "jvm_max_heap_mb": heap_mb, "jvm_gc": gcs, "codegen": codegen,
        "rows": rows,
        "queries": per_query,
        "steady": steady,
        "orders_per_second_steady": steady.get("records_per_s"),
        # per query: [batch id, start (s after the first batch's start), triggerExecution ms, input rows]
        "progress": progress,
        "startup_seconds": round(t_session - T0, 2),
        "processing_seconds": round(t_end - t_start, 2),
        "orders_per_second_processing": round(input_orders / (t_end - t_start), 1) if t_end > t_start else None,
        "paths": paths,
    }
    if progress_out:
        progress_out.close()

    # Stop Spark and wait for its JVM to exit, so that it is reaped by this process: then
    # `/usr/bin/time` on this process counts the JVM's CPU time too (rusage of waited-for children).
    jvm_proc = getattr(spark.sparkContext._gateway, "proc", None)
    spark.stop()
    try:
        spark.sparkContext._gateway.shutdown()
    except Exception:  # noqa: BLE001
        pass
    if jvm_proc is not None:
        try:
            jvm_proc.stdin.close()      # the PythonGatewayServer exits on EOF of its stdin
            jvm_proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            jvm_proc.kill()
            jvm_proc.wait()
    if local_ckpt and not args.keep_checkpoint:
        shutil.rmtree(local_ckpt, ignore_errors=True)

    summary["wall_seconds"] = round(time.monotonic() - T0, 2)
    summary["orders_per_second_wall"] = round(input_orders / summary["wall_seconds"], 1)

    # Rows written per table, read back from the object store with pyarrow (the Parquet file
    # sink reports no output row count in its progress). Committed files only (_spark_metadata).
    if not args.no_readback:
        t_rb = time.monotonic()
        try:
            import verify
            fs = verify.s3()
            for name in rows:
                url = paths[name]
                t = verify.read(fs, verify.bucket_path(url), committed=(name != "product_sales"))
                rows[name] = t.num_rows if t is not None else 0
            summary["rows_source"] = "read back with pyarrow"
        except Exception as e:  # noqa: BLE001
            summary["rows_source"] = f"read back failed: {e}"
        summary["readback_seconds"] = round(time.monotonic() - t_rb, 2)
    else:
        summary["rows_source"] = "not read back (--no-readback): product_sales only"
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
