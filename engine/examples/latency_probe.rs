//! Produce-to-visible latency, for `make bench`: watches a committed table on the object store
//! and, for every row whose `timestamp` (the producer's intended send time, see
//! `engine produce --stamp-send-time`) is at or after `--since-ms`, records when a reader could
//! first list and read it. Prints one JSON line with the count and p50/p95/p99/max in ms.
//!
//! "Visible" follows each writer's own commit protocol:
//! - `--layout engine`: a Parquet file listed under the table's prefix, outside its hidden
//!   folders (the engine completes a file's multipart upload only after its epoch's manifest,
//!   and keeps staged files under `_staging/`), as `engine report` reads a table;
//! - `--layout spark`: a file named in the table's `_spark_metadata` log (Spark's file sink
//!   commits a micro-batch by writing that log entry; files not in it are not part of the table).
//!
//! The visible time of a file is when the listing that first showed it was sent, so the figures
//! are exact to within one `--poll-ms` interval.
//!
//! ```text
//! cargo run --release --example latency_probe -- --table s3://bronze/run/kafka/commandes \
//!     --since-ms 1764000000000 --expect 600000 [--layout engine|spark] [--timeout-s 300]
//! ```
//! The S3 endpoint and credentials come from S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.

use arrow::array::{Array, AsArray};
use bytes::Bytes;
use connectors::store::Location;
use engine_api::{Secret, StorageConfig};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    table: String,
    layout: String,
    since_ms: i64,
    expect: usize,
    timeout: Duration,
    poll: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: latency_probe --table s3://bucket/prefix --since-ms MS --expect N [--layout engine|spark] [--timeout-s S] [--poll-ms MS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        table: String::new(),
        layout: "engine".into(),
        since_ms: 0,
        expect: 0,
        timeout: Duration::from_secs(300),
        poll: Duration::from_millis(50),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.chunks(2);
    for pair in &mut it {
        let [k, v] = pair else { usage() };
        let num = || v.parse::<u64>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--table" => a.table = v.clone(),
            "--layout" if v == "engine" || v == "spark" => a.layout = v.clone(),
            "--since-ms" => a.since_ms = num() as i64,
            "--expect" => a.expect = num() as usize,
            "--timeout-s" => a.timeout = Duration::from_secs(num()),
            "--poll-ms" => a.poll = Duration::from_millis(num()),
            _ => usage(),
        }
    }
    if a.table.is_empty() || a.expect == 0 {
        usage()
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The (`order_id`, intended send time in ms) of every row of one Parquet file.
fn stamps(data: Bytes) -> Vec<(i64, i64)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).expect("a Parquet file");
    let schema = builder.parquet_schema();
    let wanted: Vec<usize> = (0..schema.num_columns())
        .filter(|i| matches!(schema.column(*i).name(), "timestamp" | "order_id"))
        .collect();
    let mask = ProjectionMask::leaves(schema, wanted);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).build().expect("reader") {
        let batch = batch.expect("a readable batch");
        // The engine's own event-time parsing (text or timestamp column).
        let ts = operators::time::event_times(
            batch
                .column_by_name("timestamp")
                .expect("a timestamp column"),
        )
        .expect("event times");
        let ids = batch
            .column_by_name("order_id")
            .expect("an order_id column");
        let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Int64).expect("cast");
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..batch.num_rows() {
            if ts.is_valid(i) {
                out.push((ids.value(i), ts.value(i)));
            }
        }
    }
    out
}

/// Spark: the data files named by the `_spark_metadata` log entries not yet read.
async fn spark_files(
    loc: &Location,
    seen_logs: &mut BTreeSet<String>,
) -> object_store::Result<Vec<Path>> {
    let log_prefix = loc.child("_spark_metadata");
    let mut logs: Vec<_> = loc
        .store
        .list(Some(&log_prefix))
        .try_collect::<Vec<_>>()
        .await?;
    logs.sort_by(|a, b| a.location.cmp(&b.location));
    let mut files = Vec::new();
    for m in logs {
        let name = m.location.to_string();
        if name.ends_with(".tmp") || name.contains("/.") || !seen_logs.insert(name) {
            continue;
        }
        let text = loc.store.get(&m.location).await?.bytes().await?;
        for line in String::from_utf8_lossy(&text).lines().skip(1) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(url) = v["path"].as_str() {
                // s3a://bucket/key -> key
                let key = url.splitn(4, '/').nth(3).unwrap_or_default();
                files.push(Path::from(key));
            }
        }
    }
    Ok(files)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let storage = StorageConfig {
        endpoint: env("S3_ENDPOINT", "http://127.0.0.1:9000"),
        region: env("AWS_REGION", "us-east-1"),
        access_key_id: env("AWS_ACCESS_KEY_ID", "minioadmin"),
        secret_access_key: Secret::new(env("AWS_SECRET_ACCESS_KEY", "minioadmin")),
        path_style: true,
    };
    let loc = Location::open(&args.table, &storage).unwrap_or_else(|e| {
        eprintln!("latency_probe: {e}");
        std::process::exit(2)
    });
    let started = Instant::now();
    let mut read_files: HashSet<Path> = HashSet::new();
    let mut seen_logs = BTreeSet::new();
    let mut seen_ids: HashSet<i64> = HashSet::new();
    // (intended send time, latency) per row.
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let mut duplicates = 0usize;
    while seen.len() < args.expect && started.elapsed() < args.timeout {
        let listed_at = now_ms();
        let files: Vec<Path> = if args.layout == "spark" {
            spark_files(&loc, &mut seen_logs).await.unwrap_or_default()
        } else {
            match loc
                .store
                .list(Some(&loc.prefix))
                .try_collect::<Vec<_>>()
                .await
            {
                Ok(v) => v
                    .into_iter()
                    .map(|m| m.location)
                    .filter(|p| engine::report::is_table_file(&loc.prefix, p))
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        for f in files {
            if !read_files.insert(f.clone()) {
                continue;
            }
            let data = match loc.store.get(&f).await {
                Ok(r) => r.bytes().await.expect("object body"),
                // Listed but gone: a replaced object; nothing of ours.
                Err(_) => continue,
            };
            for (id, sent) in stamps(data) {
                if sent < args.since_ms {
                    continue;
                }
                if !seen_ids.insert(id) {
                    duplicates += 1;
                    continue;
                }
                seen.push((sent, listed_at - sent));
            }
        }
        tokio::time::sleep(args.poll).await;
    }
    fn pct(sorted: &[i64], p: f64) -> serde_json::Value {
        if sorted.is_empty() {
            return serde_json::Value::Null;
        }
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i].into()
    }
    // A system that keeps up has the same latency at the end of the run as at its start; one
    // that falls behind builds a backlog, and its latency grows with the send time.
    seen.sort_unstable();
    let quarter = |q: usize| -> serde_json::Value {
        let n = seen.len();
        let mut l: Vec<i64> = seen[n * q / 4..n * (q + 1) / 4]
            .iter()
            .map(|x| x.1)
            .collect();
        l.sort_unstable();
        pct(&l, 0.95)
    };
    let (first_q, last_q) = (quarter(0), quarter(3));
    let mut latencies: Vec<i64> = seen.iter().map(|x| x.1).collect();
    latencies.sort_unstable();
    let pct = |p: f64| pct(&latencies, p);
    let out = serde_json::json!({
        "rows": latencies.len(),
        "expected": args.expect,
        "complete": latencies.len() >= args.expect,
        "duplicates": duplicates,
        "files": read_files.len(),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies.last(),
        "p95_first_quarter_ms": first_q,
        "p95_last_quarter_ms": last_q,
        "poll_ms": args.poll.as_millis() as u64,
    });
    println!("{out}");
}
