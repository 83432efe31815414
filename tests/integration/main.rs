//! Integration tests against a real Kafka broker and a real S3 server (the local stack:
//! `scripts/stack up`, which `make test` runs first).
//!
//! Each test uses its own topic and its own prefix in the `bronze` bucket, runs the shipped
//! pipelines through the `engine` binary, and checks what a reader finds in the object store
//! against what the broker acknowledged: every message exactly once, by (partition, offset),
//! with its values.

mod churn;
mod delta;
mod file_source;
mod gold;
mod interop;
mod metrics;
mod partitioned;
mod pipeline_tests;
mod preflight;
mod report;
mod scaleout;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use test_support::*;

/// The engine binary built for this test.
pub const ENGINE: Engine = Engine(env!("CARGO_BIN_EXE_engine"));

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

/// Orders of 30 customers with 0 to 3 lines of 5 products at drawn prices, in every status.
const ORDERS: OrderShape = OrderShape {
    customer_prefix: "cust-",
    customers: 30,
    lines: 0..4,
    products: &["alpha", "beta", "gamma", "delta", "epsilon"],
    prices: Prices::Drawn {
        min_cents: 0.0,
        max_cents: 1000.0,
    },
    quantity: 1..10,
    statuses: &["paid", "shipped", "cancelled"],
    time: iso_seconds,
};

/// `n` [`ORDERS`], one a second from 2026-03-01T10:00:00Z.
fn orders(n: usize, seed: u64, first_id: i64) -> Vec<(Option<String>, Vec<u8>)> {
    by_customer(&ORDERS.values(n, seed, first_id, ms("2026-03-01T10:00:00Z"), 1_000))
}

/// Checks the `commandes` and `items` tables against exactly what was acknowledged.
pub(crate) async fn check_orders_tables(paths: &EnginePaths, topic: &str, sent: &Acked) {
    let commandes = table_rows(&paths.table("commandes")).await;
    let mut by_coord = BTreeMap::new();
    for r in &commandes {
        let k = coord(r);
        assert!(
            by_coord.insert(k, r).is_none(),
            "duplicate row for {k:?} in commandes"
        );
    }
    if by_coord.len() != sent.len() {
        let q = table_rows(&paths.table(&format!("_quarantine/{topic}"))).await;
        let first: Vec<_> = q
            .iter()
            .take(3)
            .map(|r| (&r["reason"], &r["detail"], &r["raw_value"]))
            .collect();
        panic!(
            "commandes has {} rows for {} messages; {} quarantined, such as {first:?}",
            by_coord.len(),
            sent.len(),
            q.len()
        );
    }
    assert_eq!(
        by_coord.keys().collect::<BTreeSet<_>>(),
        sent.keys().collect::<BTreeSet<_>>(),
        "commandes must hold exactly the acknowledged messages"
    );
    let mut expected_items = 0;
    for (k, s) in sent {
        let v: Value = serde_json::from_slice(&s.value).unwrap();
        let row = by_coord[k];
        assert_eq!(row["topic"], json!(topic));
        assert_eq!(row["key"], json!(s.key));
        for f in ["order_id", "customer_id", "timestamp", "total", "status"] {
            assert!(
                close(&row[f], &v[f]),
                "{f} of {k:?}: table has {}, produced {}",
                row[f],
                v[f]
            );
        }
        assert!(
            !row.contains_key("items"),
            "commandes must not keep the items list"
        );
        expected_items += v["items"].as_array().unwrap().len();
    }

    let items = table_rows(&paths.table("items")).await;
    assert_eq!(items.len(), expected_items, "one items row per order line");
    let mut seen = BTreeSet::new();
    for r in &items {
        let k = coord(r);
        let idx = r["item_index"].as_i64().unwrap() as usize;
        assert!(seen.insert((k, idx)), "duplicate item {k:?}#{idx}");
        let v: Value = serde_json::from_slice(&sent[&k].value).unwrap();
        let item = &v["items"][idx];
        for f in [
            "product_id",
            "product_name",
            "quantity",
            "unit_price",
            "subtotal",
        ] {
            assert!(
                close(&r[f], &item[f]),
                "{f} of item {k:?}#{idx}: {} vs {}",
                r[f],
                item[f]
            );
        }
        assert_eq!(r["order_id"], v["order_id"]);
        assert_eq!(r["customer_id"], v["customer_id"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_batch_lands_every_message_once_and_a_second_run_takes_only_new_ones() {
    let topic = unique("it-orders");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("orders");
    let env = paths.env(&[("ORDERS_TOPIC", &topic)]);

    let mut sent = produce(&topic, orders(600, 1, 1)).await;
    let out = ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env);
    assert_success(&out);
    check_orders_tables(&paths, &topic, &sent).await;

    // A second batch run with nothing new changes nothing.
    let files_before = list_table_files(&paths.table("commandes")).await.len();
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    assert_eq!(
        list_table_files(&paths.table("commandes")).await.len(),
        files_before
    );
    check_orders_tables(&paths, &topic, &sent).await;

    // New messages: the next batch run takes exactly those.
    sent.extend(produce(&topic, orders(250, 2, 10_000)).await);
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    check_orders_tables(&paths, &topic, &sent).await;
    let quarantine = read_table(&paths.table(&format!("_quarantine/{topic}"))).await;
    assert!(
        quarantine.is_empty(),
        "valid orders must not be quarantined"
    );
}

/// Runs the shipped `pipeline_file` in batch and returns the rows of the bronze table at
/// `table_url`, each with its (partition, offset) and the message it came from, after checking
/// that the table holds one row per acknowledged message and none twice.
async fn landed(
    pipeline_file: &str,
    env: &[(&str, &str)],
    table_url: &str,
    sent: &Acked,
) -> Vec<((i32, i64), Row, Value)> {
    assert_success(&ENGINE.run(&["run", &pipeline(pipeline_file), "--batch"], env));
    let table = table_rows(table_url).await;
    assert_eq!(table.len(), sent.len());
    let mut seen = BTreeSet::new();
    table
        .into_iter()
        .map(|row| {
            let k = coord(&row);
            assert!(seen.insert(k), "duplicate {k:?}");
            let v: Value = serde_json::from_slice(&sent[&k].value).unwrap();
            (k, row, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_metrics_land_with_their_values() {
    let mut r = fastrand::Rng::with_seed(7);
    // Logs.
    let topic = unique("it-logs");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("logs");
    let msgs: Vec<_> = (0..300)
        .map(|i| {
            let module = ["auth", "payment", "search"][r.usize(0..3)];
            let v = json!({"timestamp": format!("2026-03-01T11:00:{:02}Z", i % 60),
                "level": (["INFO", "WARN", "ERROR"][r.usize(0..3)]), "module": module,
                "message": format!("message {i}"), "request_id": format!("r{i}"),
                "user_id": format!("u{}", r.u8(..)), "duration_ms": r.i32(0..5000)});
            (Some(module.to_string()), serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let sent = produce(&topic, msgs).await;
    let env = paths.env(&[("LOGS_TOPIC", &topic)]);
    for (k, row, v) in landed("logs.toml", &env, &paths.table("logs"), &sent).await {
        for f in [
            "timestamp",
            "level",
            "module",
            "message",
            "request_id",
            "user_id",
            "duration_ms",
        ] {
            assert_eq!(row[f], v[f], "{f} of {k:?}");
        }
    }

    // Metrics.
    let topic = unique("it-metrics");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("metrics");
    let msgs: Vec<_> = (0..200)
        .map(|i| {
            let server = format!("srv-{}", r.u8(0..5));
            let v = json!({"timestamp": format!("2026-03-01T12:00:{:02}Z", i % 60), "server_id": server,
                "cpu_percent": r.f64() * 100.0, "memory_percent": r.f64() * 100.0, "disk_percent": r.f64() * 100.0});
            (Some(server), serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let sent = produce(&topic, msgs).await;
    let env = paths.env(&[("METRICS_TOPIC", &topic)]);
    for (k, row, v) in landed("metrics.toml", &env, &paths.table("metrics"), &sent).await {
        for f in [
            "timestamp",
            "server_id",
            "cpu_percent",
            "memory_percent",
            "disk_percent",
        ] {
            assert!(
                close(&row[f], &v[f]),
                "{f} of {k:?}: {} vs {}",
                row[f],
                v[f]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_go_to_quarantine_with_their_reason_and_nothing_is_lost() {
    let topic = unique("it-bad");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("bad");
    let mut msgs = orders(100, 3, 1);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "not_json",
            br#"{"order_id": 1, "customer_id": "x""#.to_vec(),
        ),
        ("not_json", b"\xff\xfe not utf-8".to_vec()),
        ("not_object", b"[1, 2, 3]".to_vec()),
        (
            "wrong_type",
            br#"{"order_id": "abc", "customer_id": "c", "timestamp": "t"}"#.to_vec(),
        ),
        // The windows need an event time: an order without one, or with one that is not a time,
        // is set aside.
        (
            "missing_field",
            br#"{"order_id": 6, "customer_id": "c", "items": [], "total": 1.0}"#.to_vec(),
        ),
        ("empty_value", b"".to_vec()),
        ("rule_broken", br#"{"order_id": 9, "customer_id": "c", "timestamp": "the day before yesterday", "items": [], "total": 1.0}"#.to_vec()),
    ];
    // Unusual but faithful orders: a refund, a zero-quantity line, no order id, a Python-style
    // timestamp. They land in bronze as written.
    let unusual: Vec<Value> = vec![
        json!({"order_id": 7, "customer_id": "c", "timestamp": "2026-03-01T10:00:00Z", "items": [], "total": -1.0, "status": "refunded"}),
        json!({"order_id": 8, "customer_id": "c", "timestamp": "2026-03-01T10:00:00Z",
               "items": [{"product_id": 1, "product_name": "p", "quantity": 0, "unit_price": 2.5, "subtotal": 0.0},
                         {"product_id": 2, "product_name": "q", "quantity": -1, "unit_price": 4.0, "subtotal": -4.0}],
               "total": -4.0}),
        json!({"customer_id": "c", "timestamp": "2026-03-01 10:00:00,250", "items": [], "total": 3.0}),
    ];
    for (reason, v) in &bad {
        msgs.push((Some(format!("bad-{reason}")), v.clone()));
    }
    for v in &unusual {
        msgs.push((Some("unusual".into()), serde_json::to_vec(v).unwrap()));
    }
    let mut sent = produce(&topic, msgs).await;
    let tombstones = produce_tombstones(&topic, 2).await;
    sent.extend(tombstones.clone());

    assert_success(&ENGINE.run(
        &["run", &pipeline("orders.toml"), "--batch"],
        &paths.env(&[("ORDERS_TOPIC", &topic)]),
    ));

    let good = table_rows(&paths.table("commandes")).await;
    let quarantined = table_rows(&paths.table(&format!("_quarantine/{topic}"))).await;
    let good_set: BTreeSet<_> = good.iter().map(coord).collect();
    let bad_set: BTreeSet<_> = quarantined.iter().map(coord).collect();
    assert_eq!(good.len(), good_set.len(), "no duplicates in bronze");
    assert_eq!(
        quarantined.len(),
        bad_set.len(),
        "no duplicates in quarantine"
    );
    assert!(
        good_set.is_disjoint(&bad_set),
        "a record is in both bronze and quarantine"
    );
    assert_eq!(
        good.len() + quarantined.len(),
        sent.len(),
        "every record lands somewhere"
    );
    assert_eq!(
        good_set.union(&bad_set).copied().collect::<BTreeSet<_>>(),
        sent.keys().copied().collect()
    );
    assert_eq!(good.len(), 100 + unusual.len());

    // The unusual orders are in bronze with their values (null where a field was missing), and
    // their lines in `items`.
    let items = table_rows(&paths.table("items")).await;
    for v in &unusual {
        let (k, _) = sent
            .iter()
            .find(|(_, s)| s.value == serde_json::to_vec(v).unwrap())
            .unwrap();
        let row = good
            .iter()
            .find(|r| coord(r) == *k)
            .unwrap_or_else(|| panic!("{v} is not in bronze"));
        for f in ["order_id", "customer_id", "timestamp", "total", "status"] {
            assert!(close(&row[f], &v[f]), "{f} of {v}: {}", row[f]);
        }
        let mut lines: Vec<_> = items.iter().filter(|r| coord(r) == *k).collect();
        lines.sort_by_key(|r| r["item_index"].as_i64().unwrap());
        let written = v["items"].as_array().unwrap();
        assert_eq!(lines.len(), written.len(), "item lines of {v}");
        for (line, item) in lines.iter().zip(written) {
            for f in ["product_id", "quantity", "unit_price", "subtotal"] {
                assert!(close(&line[f], &item[f]), "{f} of {item}: {}", line[f]);
            }
        }
    }

    // Each bad record is there with its reason and raw value.
    for q in &quarantined {
        let k = coord(q);
        let s = &sent[&k];
        let reason = q["reason"].as_str().unwrap();
        if tombstones.contains_key(&k) {
            assert_eq!(reason, "null_value");
            assert_eq!(q["raw_value"], Value::Null);
            continue;
        }
        let expected = bad
            .iter()
            .find(|(_, v)| *v == s.value)
            .map(|(r, _)| *r)
            .expect("only bad records");
        assert_eq!(
            reason,
            expected,
            "reason for {:?}",
            String::from_utf8_lossy(&s.value)
        );
        match std::str::from_utf8(&s.value) {
            Ok(text) => assert_eq!(q["raw_value"], json!(text)),
            Err(_) => assert_eq!(q["raw_encoding"], json!("base64")),
        }
        assert_eq!(q["key"], json!(s.key));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_one_clear_line_and_exit_code_2() {
    let paths = EnginePaths::new("missing");
    let topic = unique("does-not-exist");
    let out = ENGINE.run(
        &["run", &pipeline("orders.toml"), "--batch"],
        &paths.env(&[("ORDERS_TOPIC", &topic)]),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains(&format!("topic `{topic}` does not exist")),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&brokers()),
        "names the broker: {}",
        errors[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker_and_s3_fail_within_30s() {
    let paths = EnginePaths::new("unreachable");
    for (var, value, needle) in [
        ("KAFKA_BROKERS", "127.0.0.1:1", "cannot reach Kafka"),
        (
            "S3_ENDPOINT",
            "http://127.0.0.1:1",
            "cannot reach the object store",
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wrong-secret",
            "rejected the credentials",
        ),
    ] {
        let t0 = std::time::Instant::now();
        let env = paths.env(&[("ORDERS_TOPIC", "commandes-json"), (var, value)]);
        let out = ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{var}: {stderr}");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{var}: took {:?}",
            t0.elapsed()
        );
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{var}: {}", errors[0]);
        assert!(
            !stderr.contains("wrong-secret"),
            "the secret leaked: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_picks_up_new_messages_and_stops_cleanly_on_sigterm() {
    let topic = unique("it-stream");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("stream");
    let mut sent = produce(&topic, orders(50, 11, 1)).await;
    let env = paths.env(&[("ORDERS_TOPIC", &topic), ("TRIGGER", "1s")]);
    let child = ENGINE.spawn(&pipeline("orders.toml"), &env);

    for burst in 0..3 {
        let want = sent.len();
        wait_rows(
            &format!("{want} orders visible after burst {burst}"),
            &paths.table("commandes"),
            want,
        )
        .await;
        sent.extend(produce(&topic, orders(40, 20 + burst, 1000 * (burst as i64 + 1))).await);
    }

    // SIGTERM: a clean stop with a final checkpoint, exit 0.
    let (status, stderr) = sigterm(child).await;
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    // The last burst was either read before the stop or is read by the next run: nothing lost.
    assert_success(&ENGINE.run(
        &["run", &pipeline("orders.toml"), "--batch"],
        &paths.env(&[("ORDERS_TOPIC", &topic)]),
    ));
    check_orders_tables(&paths, &topic, &sent).await;
}

/// Two pipelines with their own checkpoints writing the same tables (a mistake, but a possible
/// one): a run of the second must not abort the uploads the first has in flight, because recovery
/// cleans only its own pipeline's staging.
#[tokio::test(flavor = "multi_thread")]
async fn two_pipelines_writing_one_table_leave_each_others_uploads_alone() {
    let (topic_a, topic_b) = (unique("it-share-a"), unique("it-share-b"));
    create_topic(&topic_a, 1).await;
    create_topic(&topic_b, 1).await;
    let sent_a = produce(&topic_a, orders(30, 31, 1)).await;
    let sent_b = produce(&topic_b, orders(20, 32, 5_000)).await;
    let shared = EnginePaths::new("share");
    let (ck_a, ck_b) = (
        format!("{}/_checkpoints/a", shared.bronze),
        format!("{}/_checkpoints/b", shared.bronze),
    );
    let env_b = shared.env(&[("ORDERS_TOPIC", &topic_b), ("CHECKPOINT_URL", &ck_b)]);
    // A streams with an hour-long trigger: its multipart uploads stay open until it stops.
    let env_a = shared.env(&[
        ("ORDERS_TOPIC", &topic_a),
        ("CHECKPOINT_URL", &ck_a),
        ("TRIGGER", "1h"),
    ]);
    let child = ENGINE.spawn(&pipeline("orders.toml"), &env_a);
    let staging = format!("{}/_staging", shared.table("commandes"));
    eventually("A's upload open", Duration::from_secs(60), || {
        let staging = staging.clone();
        async move { (!list_all(&staging).await.is_empty()).then_some(()) }
    })
    .await;
    // B runs to the end with its own checkpoint; its start-up recovery runs meanwhile.
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env_b));
    // A stops cleanly: its final epoch completes the uploads B must not have aborted.
    let (status, stderr) = sigterm(child).await;
    assert!(status.success(), "A failed: {stderr}");
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for r in table_rows(&shared.table("commandes")).await {
        let k = (
            r["topic"].as_str().unwrap().to_string(),
            r["offset"].as_i64().unwrap(),
        );
        *seen.entry(k).or_default() += 1;
    }
    let want: BTreeMap<(String, i64), usize> = sent_a
        .keys()
        .map(|(_, o)| ((topic_a.to_string(), *o), 1))
        .chain(sent_b.keys().map(|(_, o)| ((topic_b.to_string(), *o), 1)))
        .collect();
    assert_eq!(seen, want, "every order of both pipelines, once");
}

#[test]
fn validate_rejects_an_output_mode_the_sink_cannot_take() {
    let dir = std::env::temp_dir().join(unique("validate"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(pipeline("orders.toml"))
        .unwrap()
        .replace("output_mode = \"append\"", "output_mode = \"update\"");
    let file = dir.join("orders-update.toml");
    std::fs::write(&file, text).unwrap();
    let out = ENGINE.run(&["validate", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node `customer_orders_1min` (parquet): cannot write update-mode output of `customer_windows`"), "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");

    // The shipped pipelines all validate.
    for p in [
        "orders.toml",
        "orders_console.toml",
        "logs.toml",
        "metrics.toml",
    ] {
        assert_success(&ENGINE.run(&["validate", &pipeline(p)], &[]));
    }
}

/// `engine validate` checks every file it is given, prints one line per error, exits non-zero
/// if any fails, and writes nothing, even for `file://` tables and checkpoints that do not exist
/// yet. `--connect` then asks the services: the broker and topic, the buckets, the credentials.
#[tokio::test(flavor = "multi_thread")]
async fn validate_checks_every_file_writes_nothing_and_connect_asks_the_services() {
    let topic = unique("it-validate");
    create_topic(&topic, 1).await;
    let dir = std::env::temp_dir().join(unique("engine-validate"));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("lake");
    let local_url = format!("file://{}", local.display());
    let orders = std::fs::read_to_string(pipeline("orders.toml")).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, &orders).unwrap();
    let bad_type = dir.join("bad_type.toml");
    std::fs::write(
        &bad_type,
        orders.replace(
            "[nodes.source]\n",
            "[nodes.source]\nbatch_size = \"many\"\n",
        ),
    )
    .unwrap();
    let bad_scheme = dir.join("bad_scheme.toml");
    std::fs::write(
        &bad_scheme,
        orders.replace(
            "checkpoint = \"${CHECKPOINT_URL:-s3://bronze/_checkpoints}/orders\"",
            "checkpoint = \"hdfs://namenode/checkpoints\"",
        ),
    )
    .unwrap();
    let files = [&good, &bad_type, &good, &bad_scheme];
    let mut args = vec!["validate"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let env = [
        ("ORDERS_TOPIC", topic.as_str()),
        ("BRONZE_URL", local_url.as_str()),
        ("GOLD_URL", local_url.as_str()),
        ("CHECKPOINT_URL", local_url.as_str()),
    ];
    let out = ENGINE.run(&args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let oks: Vec<_> = stdout.lines().filter(|l| l.contains(": ok (")).collect();
    assert_eq!(oks.len(), 2, "both good files checked: {stdout}");
    assert!(
        oks.iter().all(|l| l.starts_with(good.to_str().unwrap())),
        "{stdout}"
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 2, "one line per bad file: {stderr}");
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(
        errors[0].starts_with(&format!(
            "error: {}:{}: node `source` (kafka): `batch_size`: expected usize",
            bad_type.display(),
            line_of(
                &std::fs::read_to_string(&bad_type).unwrap(),
                "batch_size = \"many\""
            )
        )),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with(&format!(
            "error: {}:{}: `pipeline.checkpoint`: unsupported URL scheme",
            bad_scheme.display(),
            line_of(&orders, "checkpoint = ")
        )),
        "{}",
        errors[1]
    );
    assert!(!local.exists(), "validate created {}", local.display());

    // --connect, against the real stack.
    let paths = EnginePaths::new("validate");
    let connect = |topic: &str, extra: &[(&'static str, &'static str)]| {
        let mut env = paths.env(&[("ORDERS_TOPIC", topic)]);
        for (name, value) in extra {
            set_env(&mut env, name, value);
        }
        ENGINE.run(&["validate", "--connect", good.to_str().unwrap()], &env)
    };
    let out = connect(&topic, &[]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("services answered"));
    let missing = unique("no-such-topic");
    for (what, out, code, needle) in [
        (
            "missing topic",
            connect(&missing, &[]),
            2,
            format!("topic `{missing}` does not exist"),
        ),
        (
            "missing bucket",
            connect(&topic, &[("GOLD_URL", "s3://no-such-bucket-for-validate")]),
            2,
            "bucket `no-such-bucket-for-validate` does not exist".to_string(),
        ),
        (
            "wrong S3 secret",
            connect(&topic, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]),
            3,
            "rejected the credentials".to_string(),
        ),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(errors[0].contains(&needle), "{what}: {}", errors[0]);
        assert!(!stderr.contains("not-the-secret"), "{what}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
