//! Service faults and hostile input, one test each: produce, run, inject the fault, produce
//! more, recover, check that every acknowledged message is in bronze or quarantine exactly once.

use crate::{ENGINE, SERIAL};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};
use test_support::*;

const MINUTE: i64 = 60_000;

fn t0(day: u32) -> i64 {
    ms(&format!("2026-06-{day:02}T00:00:00Z"))
}

struct Run {
    topic: String,
    paths: EnginePaths,
}

impl Run {
    async fn new(name: &str, partitions: i32) -> Run {
        let topic = unique(name);
        create_topic(&topic, partitions).await;
        Run {
            topic,
            paths: EnginePaths::new(name),
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.paths
            .env(&[("ORDERS_TOPIC", &self.topic), ("TRIGGER", "500ms")])
    }

    fn spawn(&self) -> Child {
        ENGINE.spawn(&pipeline("orders.toml"), &self.env())
    }

    fn batch(&self) -> std::process::Output {
        ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &self.env())
    }

    async fn bronze(&self) -> Vec<(i32, i64)> {
        coords(&table_rows(&self.paths.table("commandes")).await)
    }

    async fn quarantine(&self) -> Vec<Row> {
        table_rows(&self.paths.table(&format!("_quarantine/{}", self.topic))).await
    }

    async fn wait_visible(&self, n: usize, what: &str) {
        eventually(what, Duration::from_secs(90), || async move {
            let got = self.bronze().await.len() + self.quarantine().await.len();
            (got >= n).then_some(())
        })
        .await;
    }

    /// Bronze ∪ quarantine equals `sent`, each exactly once, and nothing is left half-done.
    async fn check(&self, sent: &Acked) {
        let mut all = self.bronze().await;
        all.extend(coords(&self.quarantine().await));
        let set: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(
            all.len(),
            set.len(),
            "a record is in bronze or quarantine twice"
        );
        assert_eq!(
            set,
            sent.keys().copied().collect::<BTreeSet<_>>(),
            "lost or extra records"
        );
        for t in ["commandes", "items"] {
            let staged = list_all(&format!("{}/_staging", self.paths.table(t))).await;
            assert!(staged.is_empty(), "left in {t}/_staging: {staged:?}");
        }
        assert_eq!(
            incomplete_uploads(
                "bronze",
                self.paths.bronze.trim_start_matches("s3://bronze/")
            ),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_a_clean_stop_and_a_restart_continues() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-term", 3).await;
    let mut sent = produce(&run.topic, burst(100, 1, 0, t0(1))).await;
    let child = run.spawn();
    run.wait_visible(sent.len(), "first burst").await;
    let (status, err) = sigterm(child).await;
    assert!(status.success(), "SIGTERM must exit 0: {err}");
    assert!(err.contains("finished"), "{err}");
    sent.extend(produce(&run.topic, burst(100, 2, 1000, t0(1) + 10 * MINUTE)).await);
    let child = run.spawn();
    run.wait_visible(sent.len(), "second burst after restart")
        .await;
    let (status, err) = sigterm(child).await;
    assert!(status.success(), "{err}");
    run.check(&sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_restarted_mid_stream() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-broker", 3).await;
    let mut sent = produce(&run.topic, burst(100, 3, 0, t0(2))).await;
    let child = run.spawn();
    run.wait_visible(sent.len(), "before the broker restart")
        .await;
    stop_service("kafka");
    tokio::time::sleep(Duration::from_secs(3)).await;
    start_stack();
    sent.extend(produce(&run.topic, burst(100, 4, 1000, t0(2) + 10 * MINUTE)).await);
    run.wait_visible(sent.len(), "after the broker restart")
        .await;
    let (status, err) = sigterm(child).await;
    assert!(status.success(), "{err}");
    run.check(&sent).await;
}

/// The engine retries S3 requests for 20 s, then stops with a clear error; a restart once the
/// server is back recovers: uncommitted uploads are aborted and their records read again.
#[tokio::test(flavor = "multi_thread")]
async fn the_s3_server_down_for_30_s_fails_clearly_then_recovers_on_restart() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-s3", 3).await;
    let mut sent = produce(&run.topic, burst(100, 5, 0, t0(3))).await;
    let mut child = run.spawn();
    run.wait_visible(sent.len(), "before the S3 outage").await;
    let down_at = Instant::now();
    stop_service("weed-s3");
    sent.extend(produce(&run.topic, burst(100, 6, 1000, t0(3) + 10 * MINUTE)).await);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            start_stack();
            panic!("the engine kept running for 90 s without its object store");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let err = spawned_stderr(&child);
    assert!(!status.success());
    let errors = error_lines(&err);
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("object store"), "{}", errors[0]);
    let rest = Duration::from_secs(30).saturating_sub(down_at.elapsed());
    tokio::time::sleep(rest).await;
    start_stack();
    assert_success(&run.batch());
    run.check(&sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_while_running_are_read_from_their_start() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-parts", 2).await;
    let mut sent = produce(&run.topic, burst(60, 7, 0, t0(4))).await;
    let child = run.spawn();
    run.wait_visible(sent.len(), "the first partitions").await;
    let res = admin()
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(&run.topic, 4)],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    res[0].as_ref().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in [2, 3] {
        let values = burst(20, 10 + p as u64, 1000 * p as i64, t0(4) + 10 * MINUTE)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        sent.extend(produce_to(&run.topic, p, values).await);
    }
    run.wait_visible(sent.len(), "the new partitions").await;
    let (status, err) = sigterm(child).await;
    assert!(status.success(), "{err}");
    // The group assigned the new partitions, which were claimed like the first ones.
    let gained: Vec<BTreeSet<i32>> = err
        .lines()
        .filter(|l| l.contains("partitions gained"))
        .filter_map(|l| {
            let list = l.split("partitions=[").nth(1)?.split(']').next()?;
            Some(list.split(", ").filter_map(|p| p.parse().ok()).collect())
        })
        .collect();
    assert_eq!(
        gained,
        [BTreeSet::from([0, 1]), BTreeSet::from([2, 3])],
        "{err}"
    );
    run.check(&sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_and_recreated_topic_fails_clearly() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-recreate", 3).await;
    produce(&run.topic, burst(90, 8, 0, t0(5))).await;
    assert_success(&run.batch());
    admin()
        .delete_topics(&[&run.topic], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    create_topic(&run.topic, 3).await;
    produce(&run.topic, burst(6, 9, 500, t0(5) + 10 * MINUTE)).await;
    let out = run.batch();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("deleted and recreated"), "{}", errors[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_payloads_are_parsed_as_documented_or_quarantined_while_the_stream_runs() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("fault-hostile", 3).await;
    let child = run.spawn();
    let order = |extra: &str| {
        format!(r#"{{"order_id": 1, "customer_id": "c1", "timestamp": "2026-06-06T00:00:00Z", "items": [], "total": 1.0{extra}}}"#)
            .into_bytes()
    };
    let mut deep = String::from(
        r#"{"order_id": 2, "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z", "x": "#,
    );
    deep.push_str(&"[".repeat(1000));
    deep.push_str(&"]".repeat(1000));
    deep.push('}');
    let big = format!(
        r#"{{"order_id": 3, "customer_id": "{}", "timestamp": "2026-06-06T00:00:00Z"}}"#,
        "x".repeat(900_000)
    );
    // (payload, where it must land: "bronze" or a quarantine reason)
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"order_id": 1, "customer_id": "c1""#.to_vec(), "not_json"),
        (b"\xc3\x28 invalid utf-8".to_vec(), "not_json"),
        (b"".to_vec(), "empty_value"),
        (big.into_bytes(), "bronze"),
        (deep.into_bytes(), "bronze"),
        (br#"{"order_id": 3000000000, "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z"}"#.to_vec(), "wrong_type"),
        (br#"{"order_id": 1, "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z", "total": 1e400}"#.to_vec(), "wrong_type"),
        (br#"{"order_id": "12", "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z"}"#.to_vec(), "wrong_type"),
        (order(r#", "total": 2.0"#), "bronze"),
        (order(r#", "unexpected": {"a": [1, 2]}"#), "bronze"),
        (br#"[{"order_id": 1}]"#.to_vec(), "not_object"),
        ([b"\xEF\xBB\xBF".as_slice(), &order("")].concat(), "bronze"),
        (br#"{"order_id": 1, "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z", "total": NaN}"#.to_vec(), "not_json"),
        (br#"{"order_id": 1, "customer_id": "c", "timestamp": "2026-06-06T00:00:00Z", "total": Infinity}"#.to_vec(), "not_json"),
    ];
    let mut sent = BTreeMap::new();
    let mut expected: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    for (payload, dest) in &cases {
        let got = produce(&run.topic, vec![(Some("hostile".into()), payload.clone())]).await;
        for k in got.keys() {
            expected.insert(*k, dest);
        }
        sent.extend(got);
    }
    let tomb = produce_tombstones(&run.topic, 1).await;
    for k in tomb.keys() {
        expected.insert(*k, "null_value");
    }
    sent.extend(tomb);
    // The stream keeps running: a good burst after the hostile ones lands too.
    let good = produce(&run.topic, burst(50, 12, 100, t0(6))).await;
    for k in good.keys() {
        expected.insert(*k, "bronze");
    }
    sent.extend(good);
    run.wait_visible(sent.len(), "hostile and good records")
        .await;
    let (status, err) = sigterm(child).await;
    assert!(status.success(), "{err}");
    run.check(&sent).await;
    let bronze: BTreeSet<_> = run.bronze().await.into_iter().collect();
    let quarantine: BTreeMap<(i32, i64), String> = run
        .quarantine()
        .await
        .iter()
        .map(|r| (coord(r), r["reason"].as_str().unwrap().to_string()))
        .collect();
    for (k, dest) in &expected {
        if *dest == "bronze" {
            assert!(
                bronze.contains(k),
                "{k:?} should be in bronze: {:?}",
                quarantine.get(k)
            );
        } else {
            assert_eq!(quarantine.get(k).map(String::as_str), Some(*dest), "{k:?}");
        }
    }
}

#[test]
fn a_pipeline_with_every_kind_of_mistake_gets_a_clear_error_naming_the_key() {
    let base = std::fs::read_to_string(pipeline("orders.toml")).unwrap();
    let dir = std::env::temp_dir().join(unique("toml-mistakes"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            base.replace("starting_offsets = ", "starting_offset = "),
            "starting_offset",
        ),
        (
            "bad type",
            base.replace("starting_offsets = \"earliest\"", "starting_offsets = 3"),
            "starting_offsets",
        ),
        (
            "bad enum value",
            base.replace(
                "starting_offsets = \"earliest\"",
                "starting_offsets = \"first\"",
            ),
            "`starting_offsets`: unknown value; expected one of `earliest`, `latest`",
        ),
        (
            "unknown node type",
            base.replace("type = \"explode\"", "type = \"explod\""),
            "explod",
        ),
        (
            "missing input node",
            base.replace("inputs = [\"orders\"]", "inputs = [\"ordres\"]"),
            "ordres",
        ),
        (
            "missing port",
            base.replace(
                "inputs = [\"parse.quarantine\"]",
                "inputs = [\"parse.bad\"]",
            ),
            "bad",
        ),
        (
            "unknown column",
            base.replace("column = \"items\"", "column = \"itemz\""),
            "itemz",
        ),
        (
            "bad schema type",
            base.replace("total = \"double\"", "total = \"dubble\""),
            "dubble",
        ),
        (
            "bad duration",
            base.replace("window = \"1m\"", "window = \"one minute\""),
            "window",
        ),
        (
            "bad rule",
            base.replace("\"timestamp is timestamp\"", "\"timestamp >>= 0\""),
            "timestamp >>= 0",
        ),
        (
            "unclosed table",
            base.replacen("[nodes.source]", "[nodes.source", 1),
            "expected `]`",
        ),
        (
            "missing required key",
            base.replace("topic = \"${ORDERS_TOPIC:-commandes-json}\"\n", ""),
            "topic",
        ),
        (
            "unset variable",
            base.replace(
                "${KAFKA_BROKERS:-127.0.0.1:9092}",
                "${NO_SUCH_VAR_FOR_TEST}",
            ),
            "NO_SUCH_VAR_FOR_TEST",
        ),
        (
            "duplicate key",
            base.replacen("type = \"kafka\"", "type = \"kafka\"\ntype = \"kafka\"", 1),
            "duplicate",
        ),
        (
            "cycle",
            base.replace("inputs = [\"source\"]", "inputs = [\"explode\"]"),
            "cycle",
        ),
        (
            "bad output mode",
            base.replace("output_mode = \"append\"", "output_mode = \"sometimes\""),
            "`output_mode`: unknown value; expected one of `append`, `update`, `complete`",
        ),
        ("empty file", String::new(), "pipeline"),
    ];
    // The line each error must point at: the key itself, found in the text independently.
    let marker = |what: &str| -> Option<(&'static str, usize)> {
        match what {
            "unknown key" => Some(("starting_offset = ", 1)),
            "bad type" => Some(("starting_offsets = 3", 1)),
            "bad enum value" => Some(("starting_offsets = \"first\"", 1)),
            "unknown node type" => Some(("type = \"explod\"", 1)),
            "missing input node" => Some(("inputs = [\"ordres\"]", 1)),
            "missing port" => Some(("inputs = [\"parse.bad\"]", 1)),
            "unknown column" => Some(("column = \"itemz\"", 1)),
            "bad schema type" => Some(("total = \"dubble\"", 1)),
            "bad duration" => Some(("window = \"one minute\"", 1)),
            "bad rule" => Some(("timestamp >>= 0", 1)),
            "unclosed table" => Some(("[nodes.source\n", 1)),
            "missing required key" => Some(("[nodes.source]", 1)),
            "unset variable" => Some(("${NO_SUCH_VAR_FOR_TEST}", 1)),
            "duplicate key" => Some(("type = \"kafka\"", 2)),
            "bad output mode" => Some(("output_mode = \"sometimes\"", 1)),
            _ => None,
        }
    };
    for (what, text, needle) in cases {
        let file = dir.join(format!("{}.toml", what.replace(' ', "_")));
        std::fs::write(&file, &text).unwrap();
        let out = ENGINE.run(&["validate", file.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{what}: one line: {stderr}");
        assert!(
            errors[0].contains(needle),
            "{what}: `{needle}` not in: {}",
            errors[0]
        );
        let named = format!("error: {}", file.display());
        assert!(
            errors[0].starts_with(&named),
            "{what}: names the file: {}",
            errors[0]
        );
        if let Some((m, nth)) = marker(what) {
            let at = text
                .match_indices(m)
                .nth(nth - 1)
                .unwrap_or_else(|| panic!("{what}: `{m}` is not in the test's text"))
                .0;
            let line = text[..at].matches('\n').count() + 1;
            let rest = &errors[0][named.len()..];
            assert!(
                rest.starts_with(&format!(":{line}:")),
                "{what}: should point at line {line}: {}",
                errors[0]
            );
        }
    }
}
