//! Delta Lake tables: the shipped orders pipeline with `TABLE_FORMAT=delta`, read back by
//! delta-rs (the `deltalake` Python package, through pyarrow), never by the engine's code.
//! Bronze holds exactly the acknowledged orders, once each, with its partition values; gold
//! equals a computation made here; the complete-mode table is replaced by one commit that
//! removes the old file and adds the new one; a second run appends only what is new.

use crate::gold::{
    TIMED, check_customer_windows, check_product_sales, expected_customer_windows, gold_env,
};
use crate::{ENGINE, check_orders_tables};
use serde_json::Value;
use test_support::*;

/// The log entry of `version` of the Delta table at `url`, one action per line.
async fn log_entry(url: &str, version: u64) -> Vec<Value> {
    let (store, prefix) = store_for(&format!("{url}/_delta_log/{version:020}.json"));
    let bytes = object_store::ObjectStoreExt::get(&store, &prefix)
        .await
        .unwrap_or_else(|e| panic!("{url} has no log version {version}: {e}"))
        .bytes()
        .await
        .unwrap();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn count(actions: &[Value], kind: &str) -> usize {
    actions.iter().filter(|a| a.get(kind).is_some()).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_tables_read_by_delta_rs_equal_an_independent_computation() {
    let topic = unique("it-delta");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("delta");
    let gold = &paths.gold;
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TABLE_FORMAT", "delta");
    let t0 = ms("2026-03-01T22:00:00Z");

    // The shipped pipeline, with `items` partitioned by customer: values a folder cannot hold
    // as they are go into the log unescaped.
    let shipped = std::fs::read_to_string(pipeline("orders.toml")).unwrap();
    let by_date = "path = \"${BRONZE_URL:-s3://bronze}/kafka/items\"\n# One folder per event date (Hive style: dt=2026-03-01/), as Spark's partitionBy writes.\npartition_by = { time = \"timestamp\", format = \"dt=%Y-%m-%d\" }\n";
    assert!(shipped.contains(by_date), "items is partitioned by date");
    let text = shipped.replacen(
        by_date,
        "path = \"${BRONZE_URL:-s3://bronze}/kafka/items\"\npartition_by = [\"customer_id\"]\n",
        1,
    );
    let file = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();

    // 4 hours of orders, one every 60 s, across midnight, with two awkward customers.
    let mut orders = TIMED.values(240, 17, 1, t0, 60_000);
    for (o, customer) in orders.iter_mut().zip(["x/y", "50%=half"]) {
        o["customer_id"] = Value::from(customer);
    }
    let mut sent = produce(&topic, by_customer(&orders)).await;
    assert_success(&ENGINE.run(&["run", file, "--batch"], &env));
    check_orders_tables(&paths, &topic, &sent).await;
    check_product_sales(gold, &sent).await;
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;

    // commandes: the partition column `dt`, from the log, is each order's UTC date.
    let commandes = read_with(PyReader::Delta, &paths.table("commandes"));
    // Each Kafka partition's owner commits its own rows, under its own app id.
    let partitions: std::collections::BTreeSet<i32> = sent.keys().map(|(p, _)| *p).collect();
    assert_eq!(partitions.len(), 3, "orders in every partition");
    assert_eq!(
        commandes.version,
        Some(3),
        "created, then a commit per partition"
    );
    let mut apps = std::collections::BTreeSet::new();
    for v in 1..=3 {
        let entry = log_entry(&paths.table("commandes"), v).await;
        let txn = entry
            .iter()
            .find_map(|a| a.get("txn"))
            .expect("a txn action");
        apps.insert(txn["appId"].as_str().unwrap().to_string());
    }
    assert_eq!(apps.len(), 3, "one app id per partition: {apps:?}");
    let mut dates = std::collections::BTreeSet::new();
    for r in &commandes.rows {
        let o: Value = serde_json::from_slice(&sent[&coord(r)].value).unwrap();
        let date = utc(ms(o["timestamp"].as_str().unwrap()), "%Y-%m-%d");
        assert_eq!(r["dt"], Value::from(date.clone()), "{r:?}");
        dates.insert(date);
    }
    assert_eq!(dates.len(), 2, "the orders span midnight: {dates:?}");
    let items = read_with(PyReader::Delta, &paths.table("items"));
    for special in ["x/y", "50%=half"] {
        assert!(
            items
                .rows
                .iter()
                .any(|r| r["customer_id"] == Value::from(special)),
            "{special} comes back from the partition values"
        );
    }

    // A second run: only the new orders are appended; the complete table is replaced.
    let more = produce(
        &topic,
        by_customer(&TIMED.values(120, 18, 10_000, t0 + 4 * 3_600_000, 60_000)),
    )
    .await;
    sent.extend(more);
    assert_success(&ENGINE.run(&["run", file, "--batch"], &env));
    check_orders_tables(&paths, &topic, &sent).await;
    check_product_sales(gold, &sent).await;
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;

    let sales_url = format!("{gold}/product_sales");
    let sales = read_with(PyReader::Delta, &sales_url);
    assert_eq!(sales.version, Some(2), "one commit per run");
    assert_eq!(sales.files, 1, "the latest version is one file");
    let replaced = log_entry(&sales_url, 2).await;
    assert_eq!(
        (count(&replaced, "remove"), count(&replaced, "add")),
        (1, 1),
        "one commit removes the old result and adds the new one: {replaced:?}"
    );
    let first = log_entry(&sales_url, 1).await;
    let txn = first
        .iter()
        .find_map(|a| a.get("txn"))
        .expect("a txn action");
    assert!(
        txn["appId"].as_str().unwrap().starts_with("engine/orders/"),
        "{txn}"
    );
    let _ = std::fs::remove_file(file);
}

/// A pipeline of the test's own: orders into one Delta table, partitioned by event date, with
/// maintenance every 10 s.
pub(crate) const COMPACTED: &str = r#"
[pipeline]
name = "delta_compaction"
trigger = "300ms"
checkpoint = "${CHECKPOINT_URL}/delta_compaction"

[storage]
endpoint = "${S3_ENDPOINT:-http://127.0.0.1:9000}"
access_key_id = "${AWS_ACCESS_KEY_ID:-minioadmin}"
secret_access_key = "${AWS_SECRET_ACCESS_KEY:-minioadmin}"

[nodes.source]
type = "kafka"
brokers = "${KAFKA_BROKERS:-127.0.0.1:9092}"
topic = "${ORDERS_TOPIC}"
starting_offsets = "earliest"

[nodes.parse]
type = "json_parse"
inputs = ["source"]
on_error = "drop"
[nodes.parse.schema]
order_id = "int"
customer_id = "string"
timestamp = "string"
total = "double"

[nodes.orders]
type = "delta"
inputs = ["parse"]
path = "${BRONZE_URL}/kafka/orders"
partition_by = { time = "timestamp", format = "dt=%Y-%m-%d" }
maintenance_every = "10s"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn compaction_under_a_stream_never_shows_a_reader_a_row_twice_or_loses_one() {
    let topic = unique("it-delta-compact");
    create_topic(&topic, 2).await;
    let paths = EnginePaths::new("delta-compact");
    let env = paths.env(&[("ORDERS_TOPIC", &topic)]);
    let file = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(&file, COMPACTED).unwrap();
    let table = paths.table("orders");
    let t0 = ms("2026-06-01T23:59:00Z");

    let mut child = ENGINE.spawn(file.to_str().unwrap(), &env);
    let mut sent = Acked::new();
    let mut reads = 0;
    let mut compacted = false;
    let started = std::time::Instant::now();
    // Small bursts, each its own epoch's files, while a reader reads the table over and over:
    // every read holds each row at most once, and never fewer rows than the one before.
    let mut last = 0;
    let mut i = 0i64;
    // Until a few reads after the first compaction.
    let mut after = 0;
    while after < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "no compaction within 90 s"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the engine stopped ({status}): {}", spawned_stderr(&child));
        }
        sent.extend(produce(&topic, burst(10, i as u64, i * 100, t0 + i * 20_000)).await);
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let t = table.clone();
        let read = tokio::task::spawn_blocking(move || {
            let log = list_table_log(&t);
            let read = (!log.is_empty()).then(|| read_with(PyReader::Delta, &t));
            (log, read)
        })
        .await
        .unwrap();
        let (log, Some(read)) = read else {
            continue;
        };
        reads += 1;
        let coords: std::collections::BTreeSet<_> = read.rows.iter().map(coord).collect();
        assert_eq!(
            coords.len(),
            read.rows.len(),
            "a row twice in version {:?}",
            read.version
        );
        assert!(
            read.rows.len() >= last,
            "version {:?} lost rows",
            read.version
        );
        last = read.rows.len();
        compacted |= log.iter().any(|text| text.contains("OPTIMIZE"));
        after += usize::from(compacted);
    }
    let (status, stderr) = sigterm(child).await;
    assert!(status.success(), "{stderr}");
    assert!(reads > 10, "{reads} reads");

    let read = read_with(PyReader::Delta, &table);
    let got: std::collections::BTreeSet<_> = read.rows.iter().map(coord).collect();
    assert_eq!(got.len(), read.rows.len(), "a row twice after compaction");
    assert_eq!(
        got,
        sent.keys().copied().collect(),
        "exactly the acknowledged orders"
    );
    // Fewer live files than epochs wrote; the lease is given back.
    let written = list_all(&table)
        .await
        .iter()
        .filter(|p| p.as_ref().ends_with(".parquet") && !p.as_ref().contains("/_"))
        .count();
    assert!(
        read.files < written,
        "{} live files of {written} written",
        read.files
    );
    assert!(list_all(&format!("{table}/_engine")).await.is_empty());
    let _ = std::fs::remove_file(file);
}

/// The text of every log entry of the Delta table at `url` (blocking: for a reader thread).
fn list_table_log(url: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for (name, bytes) in all_objects(&format!("{url}/_delta_log")).await {
            if name.ends_with(".json") {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        out
    })
}
