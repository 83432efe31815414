//! Helpers for the integration tests: a real Kafka broker and a real S3 server, reached at the
//! addresses the local stack uses (`KAFKA_BROKERS`, `S3_ENDPOINT`, `AWS_*`).
//!
//! The tests produce their own messages (not with `engine produce`), remember what the broker
//! acknowledged, and read the tables back with the parquet crate's reader over object_store:
//! nothing here shares code with the engine's sinks.

#![allow(dead_code)]

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn s3_endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.into())
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

pub fn engine_bin() -> &'static str {
    env!("CARGO_BIN_EXE_engine")
}

pub fn pipeline(name: &str) -> String {
    format!("{}/../pipelines/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Creates a topic with `partitions` partitions, failing clearly when the stack is not up.
pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "Kafka at {} did not answer: is the stack up? run `scripts/stack up`",
            brokers()
        )
    })
    .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    // Let metadata settle so the engine sees every partition.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// One acknowledged message: where the broker put it, and what it was.
#[derive(Debug, Clone)]
pub struct Sent {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
}

/// Produces messages and returns what the broker acknowledged, keyed by (partition, offset).
pub async fn produce(
    topic: &str,
    messages: Vec<(Option<String>, Vec<u8>)>,
) -> BTreeMap<(i32, i64), Sent> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut futures = Vec::new();
    for (key, value) in messages {
        let p = producer.clone();
        let topic = topic.to_string();
        futures.push(async move {
            let mut rec: FutureRecord<'_, String, Vec<u8>> =
                FutureRecord::to(&topic).payload(&value);
            if let Some(k) = &key {
                rec = rec.key(k);
            }
            let delivery = p
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
            Sent {
                partition: delivery.partition,
                offset: delivery.offset,
                key,
                value,
            }
        });
    }
    let sent = futures::future::join_all(futures).await;
    sent.into_iter()
        .map(|s| ((s.partition, s.offset), s))
        .collect()
}

/// Produces tombstones (null values) and returns their coordinates.
pub async fn produce_tombstones(topic: &str, n: usize) -> BTreeMap<(i32, i64), Sent> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let mut out = BTreeMap::new();
    for i in 0..n {
        let key = format!("tomb-{i}");
        let rec: FutureRecord<'_, String, ()> = FutureRecord::to(topic).key(&key);
        let d = producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        out.insert(
            (d.partition, d.offset),
            Sent {
                partition: d.partition,
                offset: d.offset,
                key: Some(key),
                value: Vec::new(),
            },
        );
    }
    out
}

pub struct EnginePaths {
    pub bronze: String,
    pub checkpoints: String,
    /// The test's own gold prefix: tests never write the default `s3://gold` tables, which
    /// `make demo` reads.
    pub gold: String,
}

impl EnginePaths {
    /// A fresh prefix in the bronze bucket (and one in the gold bucket) for one test.
    pub fn new(test: &str) -> Self {
        let id = unique(test);
        let root = format!("s3://bronze/it/{id}");
        EnginePaths {
            bronze: root.clone(),
            checkpoints: format!("{root}/_checkpoints"),
            gold: format!("s3://gold/it/{id}"),
        }
    }

    pub fn table(&self, t: &str) -> String {
        format!("{}/kafka/{t}", self.bronze)
    }
}

/// Runs `engine <args>` with the test's topic and paths in the environment.
pub fn engine(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(engine_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run engine")
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "engine failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn store_for(url: &str) -> (Arc<dyn ObjectStore>, Path) {
    let rest = url.strip_prefix("s3://").expect("s3 url");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(s3_endpoint())
        .with_region(env_or("AWS_REGION", "us-east-1"))
        .with_access_key_id(env_or("AWS_ACCESS_KEY_ID", "minioadmin"))
        .with_secret_access_key(env_or("AWS_SECRET_ACCESS_KEY", "minioadmin"))
        .with_allow_http(true)
        .build()
        .expect("s3 client");
    (Arc::new(s3), Path::from(prefix))
}

/// Every object under a prefix, hidden folders included.
pub async fn list_all(url: &str) -> Vec<Path> {
    let (store, prefix) = store_for(url);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas.into_iter().map(|m| m.location).collect()
}

/// Lists a table as a reader would: every object under the prefix, skipping `_`/`.` folders.
pub async fn list_table_files(url: &str) -> Vec<Path> {
    let (store, prefix) = store_for(url);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas
        .into_iter()
        .filter(|m| {
            let rel = m
                .location
                .as_ref()
                .strip_prefix(prefix.as_ref())
                .unwrap_or(m.location.as_ref());
            !rel.split('/')
                .any(|p| p.starts_with('_') || p.starts_with('.'))
        })
        .map(|m| m.location)
        .collect()
}

/// Reads every committed Parquet file of a table.
pub async fn read_table(url: &str) -> Vec<RecordBatch> {
    let (store, _) = store_for(url);
    let mut out = Vec::new();
    for path in list_table_files(url).await {
        assert!(
            path.as_ref().ends_with(".parquet"),
            "unexpected object in table {url}: {path}"
        );
        let bytes = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            out.push(b.expect("batch"));
        }
    }
    out
}

/// A table's rows as JSON-like maps from column name to value, for easy comparison.
pub fn rows(batches: &[RecordBatch]) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (f, col) in b.schema().fields().iter().zip(b.columns()) {
                row.insert(f.name().clone(), cell(col.as_ref(), i));
            }
            out.push(row);
        }
    }
    out
}

fn cell(col: &dyn Array, i: usize) -> serde_json::Value {
    use arrow::datatypes::DataType::*;
    if col.is_null(i) {
        return serde_json::Value::Null;
    }
    match col.data_type() {
        Utf8 => col.as_string::<i32>().value(i).into(),
        Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        Float64 => col.as_primitive::<Float64Type>().value(i).into(),
        Timestamp(_, _) => col
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .value(i)
            .into(),
        other => serde_json::Value::String(format!("<{other}>")),
    }
}

/// Polls until `f` returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces messages to one partition and returns what the broker acknowledged.
pub async fn produce_to(
    topic: &str,
    partition: i32,
    values: Vec<Vec<u8>>,
) -> BTreeMap<(i32, i64), Sent> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let mut out = BTreeMap::new();
    for value in values {
        let rec: FutureRecord<'_, (), Vec<u8>> =
            FutureRecord::to(topic).partition(partition).payload(&value);
        let d = producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        out.insert(
            (d.partition, d.offset),
            Sent {
                partition: d.partition,
                offset: d.offset,
                key: None,
                value,
            },
        );
    }
    out
}

/// The repository's root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Stops one service of the local stack (`kafka`, `weed-s3`, `weed-master`) by its pid file.
pub fn stop_service(name: &str) {
    let dir = std::env::var("STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".stack"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        repo_root().join(dir)
    };
    let pid = std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
        .expect("pid file of the stack");
    let pid = pid.trim().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} (pid {pid}) did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts whatever of the local stack is not running, and waits until it is healthy.
pub fn start_stack() {
    let out = Command::new(repo_root().join("scripts/stack"))
        .arg("up")
        .output()
        .expect("scripts/stack up");
    assert!(
        out.status.success(),
        "scripts/stack up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `engine run <pipeline_file>` as a stream, with its stderr captured.
pub fn spawn_engine(pipeline_file: &str, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(engine_bin())
        .args(["run", pipeline_file])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engine")
}

/// Sends SIGTERM and returns the exit status and stderr; fails if it takes over 60 s.
pub async fn sigterm(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let waited = tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).ok();
        }
        (child.wait().unwrap(), err)
    });
    tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("stops within 60 s")
        .unwrap()
}
