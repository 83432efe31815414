//! Tables read by readers that share no code with the engine or with this crate: delta-rs (the
//! `deltalake` Python package) and pyarrow, run as `tests/interop/read_table.py` with the
//! interpreter `scripts/install-readers` installs (it installs it when absent).

use crate::stack::{env_or, repo_root, s3_endpoint};
use crate::tables::Row;
use serde_json::Value;
use std::process::Command;
use std::sync::OnceLock;

/// The reader to use: delta-rs through its log, or pyarrow's Hive-partitioned dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyReader {
    Delta,
    HiveParquet,
}

/// The query engines of `make test-interop`, installed by `scripts/install-interop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryEngine {
    DuckDb,
    Spark,
}

/// What a reader saw of a table: its rows, and for Delta the version read and its file count.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub rows: Vec<Row>,
    pub version: Option<i64>,
    pub files: usize,
}

/// What an install script of `scripts/` prints with `arg` (installing first when needed).
fn install(script: &str, arg: &str) -> String {
    let out = Command::new(repo_root().join("scripts").join(script))
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The delta-rs and pyarrow interpreter of `scripts/install-readers`.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        install("install-readers", "--print-python")
            .trim()
            .to_string()
    })
}

/// The interpreters `scripts/install-interop --print-env` names.
fn interop_env() -> &'static std::collections::BTreeMap<String, String> {
    static ENV: OnceLock<std::collections::BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        install("install-interop", "--print-env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// Reads the table at `url` with DuckDB or Spark, as a Delta table (`delta`) or as
/// Hive-partitioned Parquet.
pub fn read_with_engine(engine: QueryEngine, delta: bool, url: &str) -> ReadBack {
    let env = interop_env();
    let (python, script) = match engine {
        QueryEngine::DuckDb => (&env["DUCKDB_PYTHON"], "tests/interop/read_table_duckdb.py"),
        QueryEngine::Spark => (&env["SPARK_PYTHON"], "tests/interop/read_table_spark.py"),
    };
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join(script));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_reader(cmd, if delta { "delta" } else { "parquet" }, url)
}

/// Reads the table at `url` (`s3://...`) with `reader`. Timestamps come back as milliseconds
/// since the Unix epoch, as [`crate::rows`] gives them.
pub fn read_with(reader: PyReader, url: &str) -> ReadBack {
    let kind = match reader {
        PyReader::Delta => "delta",
        PyReader::HiveParquet => "parquet",
    };
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop/read_table.py"));
    run_reader(cmd, kind, url)
}

fn run_reader(mut cmd: Command, kind: &str, url: &str) -> ReadBack {
    let out = cmd
        .args([kind, url])
        .env("S3_ENDPOINT", s3_endpoint())
        .env(
            "AWS_ACCESS_KEY_ID",
            env_or("AWS_ACCESS_KEY_ID", "minioadmin"),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            env_or("AWS_SECRET_ACCESS_KEY", "minioadmin"),
        )
        .env("AWS_REGION", env_or("AWS_REGION", "us-east-1"))
        .output()
        .expect("run tests/interop/read_table.py");
    assert!(
        out.status.success(),
        "{kind} reader failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let meta: Value = serde_json::from_slice(lines.next().expect("a header line")).unwrap();
    let rows: Vec<Row> = lines
        .map(|l| serde_json::from_slice(l).expect("a JSON row"))
        .collect();
    assert_eq!(meta["rows"].as_u64(), Some(rows.len() as u64), "{meta}");
    ReadBack {
        rows,
        version: meta["version"].as_i64(),
        files: meta["files"].as_u64().unwrap_or(0) as usize,
    }
}
