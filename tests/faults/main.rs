//! Fault tests: the engine is killed (`kill -9`, and aborts at failpoints between staging and
//! commit), then recovers; every scenario checks the invariant:
//! - the acknowledged (topic, partition, offset) set equals what a reader finds in bronze and
//!   quarantine, each exactly once;
//! - the gold tables equal an independent computation;
//! - no staged object or incomplete multipart upload is left behind after recovery.
//!
//! `make test-faults` runs them all; `make test` runs them too (they are bounded: `FAULT_KILLS`,
//! default 10).

mod scenarios;
mod security;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::*;

/// The engine binary built for this test.
pub const ENGINE: Engine = Engine(env!("CARGO_BIN_EXE_engine"));

const MINUTE: i64 = 60_000;

/// Fault tests stop and start the shared stack, so they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `FAULT_KILLS`, 10 unless set.
fn fault_kills() -> usize {
    std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_and_at_failpoints_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    kill_loop("fault-kill", fault_kills(), &[]).await;
}

/// The same with every table of the orders pipeline a Delta table (`TABLE_FORMAT=delta`), read
/// back with delta-rs: a commit point finished again after a kill must not reach the log twice.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_and_duplicates_nothing_in_delta_tables_either() {
    let _serial = SERIAL.lock().await;
    kill_loop(
        "fault-kill-delta",
        fault_kills().div_ceil(2),
        &[("TABLE_FORMAT", "delta")],
    )
    .await;
}

/// Runs the orders pipeline `kills` times, each run killed (`kill -9` at a random moment, or
/// aborted at a failpoint) while bursts of orders arrive, then once more in batch; checks that
/// bronze and gold hold exactly what an independent computation over the acknowledged messages
/// gives.
async fn kill_loop(name: &str, kills: usize, extra_env: &[(&str, &str)]) {
    let topic = unique(name);
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new(name);
    let gold = &paths.gold;
    let gold_prefix = gold.strip_prefix("s3://gold/").unwrap();
    let mut env = paths.env(&[("ORDERS_TOPIC", &topic), ("TRIGGER", "300ms")]);
    for (k, v) in extra_env {
        set_env(&mut env, k, v);
    }
    let t0 = ms("2026-05-01T00:00:00Z");
    let failpoints = [
        "",
        "before_manifest=abort@2",
        "after_manifest=abort@2",
        "mid_commit=abort@3",
        "after_upload_created=abort@2",
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
        let mut child = ENGINE
            .command()
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
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));

    // Bronze: exactly the acknowledged messages, once each, with their values.
    let commandes = table_rows(&paths.table("commandes")).await;
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
        let v: Value = serde_json::from_slice(&sent[&coord(r)].value).unwrap();
        assert_eq!(r["order_id"], v["order_id"]);
        assert_eq!(r["customer_id"], v["customer_id"]);
    }
    let items = table_rows(&paths.table("items")).await;
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
        table_rows(&paths.table(&format!("_quarantine/{topic}")))
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
        max_t = max_t.max(ms(o["timestamp"].as_str().unwrap()));
    }
    for o in &orders {
        for it in o["items"].as_array().unwrap() {
            let e = sales.entry(it["product_id"].as_i64().unwrap()).or_default();
            e.0 += 1;
            e.1 += it["quantity"].as_i64().unwrap();
        }
        let t = ms(o["timestamp"].as_str().unwrap());
        let start = t.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= max_t - 2 * MINUTE {
            *windows
                .entry((o["customer_id"].as_str().unwrap().to_string(), start))
                .or_default() += 1;
        }
    }
    let table = table_rows(&format!("{gold}/product_sales")).await;
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
    let table = table_rows(&format!("{gold}/customer_orders_1min")).await;
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
        incomplete_uploads("gold", gold_prefix),
        0,
        "incomplete multipart uploads in gold"
    );
    eprintln!(
        "fault summary ({name}): kills={kills} aborted_at_failpoints={aborted} messages_checked={} lost=0 duplicated=0",
        sent.len()
    );
}

/// Two streaming engines on one checkpoint share the topic; one is killed with `kill -9` while
/// messages keep coming, and the other takes its partitions over (and, if it held it, the
/// finalizer's role) once the group's session timeout has passed. Nothing is lost or doubled,
/// in bronze or gold.
#[tokio::test(flavor = "multi_thread")]
async fn two_engines_on_one_checkpoint_share_it_and_a_kill_9_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let topic = unique("fault-fence");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("fault-fence");
    let env = paths.env(&[
        ("ORDERS_TOPIC", &topic),
        ("GOLD_URL", &paths.bronze),
        ("TRIGGER", "300ms"),
    ]);
    let t0 = ms("2026-05-02T00:00:00Z");
    let mut sent = produce(&topic, burst(100, 1, 0, t0)).await;
    let spawn = || ENGINE.spawn(&pipeline("orders.toml"), &env);
    let mut a = spawn();
    let b = spawn();
    for i in 0..5 {
        if i == 3 {
            a.kill().unwrap();
        }
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
    a.wait().unwrap();
    // The survivor takes everything over within the session timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = coords(&table_rows(&paths.table("commandes")).await);
        if got.len() >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} orders visible 60 s after the kill",
            got.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, stderr) = sigterm(b).await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("partitions gained"), "{stderr}");
    // A batch run afterwards finds nothing left and is not refused: the killed instance's
    // registration is of a dead process.
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    let got = coords(&table_rows(&paths.table("commandes")).await);
    let set: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(got.len(), set.len(), "duplicates after two writers");
    assert_eq!(set, sent.keys().copied().collect::<BTreeSet<_>>());
}
