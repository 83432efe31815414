//! Fault tests: the engine is killed (`kill -9`, and aborts at failpoints between staging and
//! commit), then recovers; every scenario checks the invariant:
//! - the acknowledged (topic, partition, offset) set equals what a reader finds in bronze and
//!   quarantine, each exactly once;
//! - the gold tables equal an independent computation;
//! - no staged object or incomplete multipart upload is left behind after recovery.
//!
//! `make test-faults` runs them all; `make test` runs them too (they are bounded: `FAULT_KILLS`,
//! default 10).

#[path = "../integration/support.rs"]
mod support;

mod scenarios;
mod security;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const MINUTE: i64 = 60_000;

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A burst of orders within 20 s of event time, starting at `start_ms`.
pub fn burst(n: usize, seed: u64, first_id: i64, start_ms: i64) -> Vec<(Option<String>, Vec<u8>)> {
    let mut r = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let customer = format!("c{}", r.u8(0..6));
            let items: Vec<Value> = (0..r.usize(1..3))
                .map(|_| {
                    let pid = r.i32(1..4);
                    let qty = r.i32(1..4);
                    json!({"product_id": pid, "product_name": format!("p{pid}"), "quantity": qty,
                           "unit_price": 1.5 * pid as f64, "subtotal": 1.5 * (pid * qty) as f64})
                })
                .collect();
            let total: f64 = items.iter().map(|it| it["subtotal"].as_f64().unwrap()).sum();
            let v = json!({"order_id": first_id + i as i64, "customer_id": customer,
                "timestamp": iso(start_ms + i as i64 * 100), "items": items, "total": total, "status": "paid"});
            (Some(customer), serde_json::to_vec(&v).unwrap())
        })
        .collect()
}

/// Incomplete multipart uploads under `prefix` in `bucket`, as S3's ListMultipartUploads says.
pub fn incomplete_uploads(bucket: &str, prefix: &str) -> usize {
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "minioadmin".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "minioadmin".into());
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let url = format!(
        "{}/{bucket}?prefix={}&uploads=",
        s3_endpoint(),
        prefix.replace('/', "%2F")
    );
    let out = Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            &format!("aws:amz:{region}:s3"),
            "--user",
            &format!("{key}:{secret}"),
            &url,
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("ListMultipartUploadsResult"),
        "unexpected answer: {body}"
    );
    body.matches("<Upload>").count()
}

/// Fault tests stop and start the shared stack, so they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn coords(rows: &[BTreeMap<String, Value>]) -> Vec<(i32, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_and_at_failpoints_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let kills: usize = std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let topic = unique("fault-kill");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("fault-kill");
    let gold_prefix = format!("it/{}", unique("fault-gold"));
    let gold = format!("s3://gold/{gold_prefix}");
    let env = [
        ("ORDERS_TOPIC", topic.as_str()),
        ("BRONZE_URL", paths.bronze.as_str()),
        ("CHECKPOINT_URL", paths.checkpoints.as_str()),
        ("GOLD_URL", gold.as_str()),
        ("TRIGGER", "300ms"),
    ];
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let failpoints = [
        "",
        "before_manifest=abort@2",
        "after_manifest=abort@2",
        "mid_commit=abort@3",
    ];
    let mut sent = BTreeMap::new();
    let mut rng = fastrand::Rng::with_seed(kills as u64);
    let mut aborted = 0;
    for i in 0..kills {
        sent.extend(
            produce(
                &topic,
                burst(150, i as u64, i as i64 * 1000, t0 + i as i64 * 10 * MINUTE),
            )
            .await,
        );
        let fp = failpoints[i % failpoints.len()];
        let mut child = Command::new(engine_bin())
            .args(["run", &pipeline("orders.toml")])
            .envs(env.iter().copied())
            .env("ENGINE_FAILPOINTS", fp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start engine");
        if fp.is_empty() {
            tokio::time::sleep(Duration::from_millis(rng.u64(200..2500))).await;
        } else {
            // Wait for the failpoint to abort the process.
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(
                    !status.success(),
                    "round {i}: the engine should have aborted at {fp}"
                );
                aborted += 1;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
            }
        }
    }
    assert!(aborted >= kills / 4, "the failpoints fired {aborted} times");

    // Recover: a batch run reads what is left and finishes pending commits.
    assert_success(&engine(&["run", &pipeline("orders.toml"), "--batch"], &env));

    // Bronze: exactly the acknowledged messages, once each, with their values.
    let commandes = rows(&read_table(&paths.table("commandes")).await);
    let got = coords(&commandes);
    let unique_got: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(
        got.len(),
        unique_got.len(),
        "duplicates in bronze after {kills} kills"
    );
    assert_eq!(
        unique_got,
        sent.keys().copied().collect::<BTreeSet<_>>(),
        "lost or extra rows in bronze"
    );
    for r in &commandes {
        let v: Value = serde_json::from_slice(
            &sent[&(
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            )]
                .value,
        )
        .unwrap();
        assert_eq!(r["order_id"], v["order_id"]);
        assert_eq!(r["customer_id"], v["customer_id"]);
    }
    let items = rows(&read_table(&paths.table("items")).await);
    let expected_items: usize = sent
        .values()
        .map(|s| {
            serde_json::from_slice::<Value>(&s.value).unwrap()["items"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(items.len(), expected_items, "items after recovery");
    assert!(
        read_table(&paths.table(&format!("_quarantine/{topic}")))
            .await
            .is_empty()
    );

    // Gold: product sales (state restored across every kill) and closed windows.
    let mut sales: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut windows: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut max_t = i64::MIN;
    let orders: Vec<Value> = sent
        .values()
        .map(|s| serde_json::from_slice(&s.value).unwrap())
        .collect();
    for o in &orders {
        max_t = max_t.max(
            chrono::DateTime::parse_from_rfc3339(o["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
        );
    }
    for o in &orders {
        for it in o["items"].as_array().unwrap() {
            let e = sales.entry(it["product_id"].as_i64().unwrap()).or_default();
            e.0 += 1;
            e.1 += it["quantity"].as_i64().unwrap();
        }
        let t = chrono::DateTime::parse_from_rfc3339(o["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let start = t.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= max_t - 2 * MINUTE {
            *windows
                .entry((o["customer_id"].as_str().unwrap().to_string(), start))
                .or_default() += 1;
        }
    }
    let table = rows(&read_table(&format!("{gold}/product_sales")).await);
    let got: BTreeMap<i64, (i64, i64)> = table
        .iter()
        .map(|r| {
            (
                r["product_id"].as_i64().unwrap(),
                (
                    r["nb_ventes"].as_i64().unwrap(),
                    r["quantite_totale"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, sales, "product_sales after {kills} kills");
    let table = rows(&read_table(&format!("{gold}/customer_orders_1min")).await);
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in &table {
        let k = (
            r["customer_id"].as_str().unwrap().to_string(),
            r["window_start"].as_i64().unwrap(),
        );
        assert!(
            got.insert(k.clone(), r["nb_commandes"].as_i64().unwrap())
                .is_none(),
            "window {k:?} twice"
        );
    }
    assert_eq!(got, windows, "customer windows after {kills} kills");

    // Nothing staged or half-uploaded is left behind.
    for t in ["commandes", "items", &format!("_quarantine/{topic}")] {
        let staged = list_all(&format!("{}/_staging", paths.table(t))).await;
        assert!(staged.is_empty(), "left in {t}/_staging: {staged:?}");
    }
    let bronze_prefix = paths.bronze.trim_start_matches("s3://bronze/");
    assert_eq!(
        incomplete_uploads("bronze", bronze_prefix),
        0,
        "incomplete multipart uploads in bronze"
    );
    assert_eq!(
        incomplete_uploads("gold", &gold_prefix),
        0,
        "incomplete multipart uploads in gold"
    );
    eprintln!(
        "fault summary: kills={kills} aborted_at_failpoints={aborted} messages_checked={} lost=0 duplicated=0",
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_engine_on_the_same_checkpoint_cannot_commit_the_same_epoch() {
    let _serial = SERIAL.lock().await;
    let topic = unique("fault-fence");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("fault-fence");
    let env = [
        ("ORDERS_TOPIC", topic.as_str()),
        ("BRONZE_URL", paths.bronze.as_str()),
        ("CHECKPOINT_URL", paths.checkpoints.as_str()),
        ("GOLD_URL", paths.bronze.as_str()),
        ("TRIGGER", "300ms"),
    ];
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-05-02T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let mut sent = produce(&topic, burst(100, 1, 0, t0)).await;
    let spawn = || {
        Command::new(engine_bin())
            .args(["run", &pipeline("orders.toml")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start engine")
    };
    let mut a = spawn();
    let mut b = spawn();
    for i in 0..5 {
        sent.extend(
            produce(
                &topic,
                burst(
                    50,
                    10 + i,
                    1000 * (i as i64 + 1),
                    t0 + (i as i64 + 1) * 10 * MINUTE,
                ),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // At least one of them must have stopped, saying why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut stopped, mut running) = loop {
        if a.try_wait().unwrap().is_some() {
            break (a, b);
        }
        if b.try_wait().unwrap().is_some() {
            break (b, a);
        }
        assert!(
            Instant::now() < deadline,
            "two engines committed side by side for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = stopped.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stopped.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("is already running")
            || err.contains("another engine is running this pipeline"),
        "{err}"
    );
    running.kill().unwrap();
    running.wait().unwrap();
    assert_success(&engine(&["run", &pipeline("orders.toml"), "--batch"], &env));
    let got = coords(&rows(&read_table(&paths.table("commandes")).await));
    let set: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(got.len(), set.len(), "duplicates after two writers");
    assert_eq!(set, sent.keys().copied().collect::<BTreeSet<_>>());
}

/// Every object under a prefix (including hidden folders).
pub async fn list_all(url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let rest = url.strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(s3_endpoint())
        .with_region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()))
        .with_access_key_id(
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "minioadmin".into()),
        )
        .with_secret_access_key(
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "minioadmin".into()),
        )
        .with_allow_http(true)
        .build()
        .unwrap();
    let p = object_store::path::Path::from(prefix);
    let metas: Vec<_> = s3.list(Some(&p)).try_collect().await.unwrap();
    metas.into_iter().map(|m| m.location.to_string()).collect()
}
