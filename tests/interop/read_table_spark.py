"""Reads a table the engine wrote with Apache Spark (pyspark + delta-spark), and prints what it
sees in the same JSON lines as read_table.py: first {"rows": n, "version": v, "files": k}, then
one object per row (timestamps as milliseconds since the Unix epoch, dates as ISO text).

Usage: read_table_spark.py delta|parquet s3://bucket/prefix
  delta    spark.read.format("delta").load("s3a://..."); version from DESCRIBE HISTORY, files
           the live data files of the snapshot read (DataFrame.inputFiles())
  parquet  spark.read.option("basePath", ...).parquet(...): Hive partition discovery; files and
           folders starting with `_` or `.` (the engine's _staging, _checkpoints) are skipped by
           Spark's defaults. version is null, files is the number of files read.

Run it with the interpreter of the pyspark venv that scripts/install-interop prints
(SPARK_PYTHON). Jars, never resolved at run time (no --packages):
  DELTA_SPARK_JARS  folder with delta-spark and what it needs (scripts/install-interop)
  SPARK_JARS_DIR    folder with hadoop-aws and the AWS SDK bundle (bench/spark/install)
Both default to their places in $ENGINE_TOOLS_DIR (~/.cache/engine-tools).

The S3 server comes from S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION
(the local stack's defaults when unset).

Output notes for comparisons: Spark infers partition column types of plain Parquet tables
(dt=2026-03-01 becomes a DATE, printed as the same ISO text), and reads
__HIVE_DEFAULT_PARTITION__ as null.
"""

import atexit
import os
import shutil
import sys
import tempfile
import time
from urllib.parse import urlparse

import table_output

# Timestamps come back from Spark as naive datetimes in the Python process's local time zone:
# make that UTC before anything imports time-dependent code, and Spark's session zone too.
os.environ["TZ"] = "UTC"
time.tzset()

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000")
REGION = os.environ.get("AWS_REGION", "us-east-1")
# S3A reads the credentials from the environment (the JVM inherits it): they stay off the JVM's
# command line.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "minioadmin")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "minioadmin")

DELTA_VERSION = "4.4.0"
TOOLS_DIR = os.environ.get("ENGINE_TOOLS_DIR", os.path.expanduser("~/.cache/engine-tools"))


def jar_dirs(spark_version):
    delta = os.environ.get("DELTA_SPARK_JARS") or os.path.join(
        TOOLS_DIR, f"delta-spark-jars-{DELTA_VERSION}")
    s3a = os.environ.get("SPARK_JARS_DIR") or os.path.join(TOOLS_DIR, f"spark-jars-{spark_version}")
    jars = []
    for d, need in ((delta, "delta-spark_"), (s3a, "hadoop-aws-")):
        if not os.path.isfile(os.path.join(d, ".complete")):
            sys.exit(f"read_table_spark: no complete jar folder at {d}; run scripts/install-interop")
        found = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jar"))
        if not any(os.path.basename(j).startswith(need) for j in found):
            sys.exit(f"read_table_spark: {d} has no {need}*.jar; rerun scripts/install-interop")
        # The Kafka jars of bench/spark/install are not needed to read tables.
        jars += [j for j in found if "kafka" not in os.path.basename(j)]
    return jars


def session():
    import pyspark
    from pyspark.sql import SparkSession

    u = urlparse(ENDPOINT)
    warehouse = tempfile.mkdtemp(prefix="read-table-spark-")
    atexit.register(shutil.rmtree, warehouse, True)
    conf = {
        "spark.jars": ",".join(jar_dirs(pyspark.__version__)),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": warehouse,
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse} -Duser.timezone=UTC",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # Small tables on a small machine: few partitions for Delta's log replay and shuffles.
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": ENDPOINT,
        "spark.hadoop.fs.s3a.endpoint.region": REGION,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "true" if u.scheme == "https" else "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
    }
    b = SparkSession.builder.master("local[2]").appName("read-table-spark")
    for k, v in conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def s3a(url):
    u = urlparse(url)
    if u.scheme not in ("s3", "s3a"):
        sys.exit(f"read_table_spark: expected an s3:// URL, got {url}")
    return f"s3a://{u.netloc}{u.path}".rstrip("/")


def read_delta(spark, url):
    path = s3a(url)
    df = spark.read.format("delta").load(path)
    quoted = "delta.`" + path.replace("`", "``") + "`"
    version = spark.sql(f"DESCRIBE HISTORY {quoted} LIMIT 1").collect()[0]["version"]
    # The snapshot's live files (as DESCRIBE DETAIL's numFiles, without its extra ~10 s job).
    return df, int(version), len(df.inputFiles())


def read_parquet(spark, url):
    path = s3a(url)
    df = spark.read.option("basePath", path).parquet(path)
    return df, None, len(df.inputFiles())


def main():
    kind, url = table_output.usage_and_args("read_table_spark.py")
    spark = session()
    df, version, files = (read_delta if kind == "delta" else read_parquet)(spark, url)
    table_output.write([row.asDict(recursive=True) for row in df.collect()], version, files)
    spark.stop()


if __name__ == "__main__":
    main()
