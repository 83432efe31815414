//! The `file` source against the S3 server: a prefix of JSON-lines files, some gzipped, some
//! lines malformed, read by a stream that is killed with SIGKILL while new files arrive, then by
//! a batch run after lines were added to a file. Every line lands exactly once, and the tables
//! equal those the Kafka pipeline makes of the same messages.

use crate::ENGINE;
use crate::gold::{TIMED, check_product_sales};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use test_support::*;

const MINUTE: i64 = 60_000;

/// The orders as lines of JSON text.
fn lines(orders: &[Value]) -> Vec<Vec<u8>> {
    orders
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap())
        .collect()
}

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

/// Joins lines with `\n` (or `\r\n`), with a final line ending.
fn text(lines: &[Vec<u8>], crlf: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    }
    out
}

async fn put(url: &str, bytes: Vec<u8>) {
    let (store, path) = store_for(url);
    object_store::ObjectStoreExt::put(store.as_ref(), &path, bytes.into())
        .await
        .expect("put");
}

/// A row's value of `column` as text, for multisets of rows.
fn key(row: &Row, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| match &row[*c] {
            Value::Number(n) if n.is_f64() => format!("{:.6}", n.as_f64().unwrap()),
            v => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn multiset(rows: &[Row], columns: &[&str]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(key(r, columns)).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_files_land_exactly_once_across_a_kill_and_equal_the_kafka_run() {
    let files = EnginePaths::new("files");
    let landing = format!("{}/landing", files.bronze);
    let t0 = ms("2026-05-01T09:00:00Z");
    // 600 orders, one every 2 s of event time, in 6 files in time order; the files of the
    // second wave arrive while the stream runs. Malformed lines, a blank line and CRLF endings
    // are spread among them; `_SUCCESS` and `notes.txt` are not read.
    let orders = TIMED.values(600, 11, 1, t0, 2_000);
    let mut good = lines(&orders);
    let bad: Vec<Vec<u8>> = vec![
        br#"{"order_id": 9001, "customer_id": "x", "timesta"#.to_vec(),
        br#"[{"order_id": 9002}]"#.to_vec(),
        br#"{"order_id": "9003", "customer_id": "x", "timestamp": "2026-05-01T09:00:00Z"}"#
            .to_vec(),
        br#"{"order_id": 9004, "customer_id": "x"}"#.to_vec(),
    ];
    // (file name, its lines)
    let mut chunks: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (i, chunk) in good.chunks(100).enumerate() {
        let mut l = chunk.to_vec();
        if i < bad.len() {
            l.insert(50, bad[i].clone());
        }
        let name = if i == 1 || i == 3 {
            format!("orders-{i:02}.jsonl.gz")
        } else {
            format!("orders-{i:02}.jsonl")
        };
        chunks.push((name, l));
    }
    let encode = |name: &str, l: &[Vec<u8>], blank: bool| {
        let mut t = text(l, name.contains("02"));
        if blank {
            t.splice(0..0, b"\n".iter().copied());
        }
        if name.ends_with(".gz") { gzip(&t) } else { t }
    };
    put(&format!("{landing}/_SUCCESS"), Vec::new()).await;
    put(&format!("{landing}/notes.txt"), b"not an order\n".to_vec()).await;
    for (name, l) in &chunks[..3] {
        put(
            &format!("{landing}/{name}"),
            encode(name, l, name.contains("01")),
        )
        .await;
    }
    let env = files.env(&[
        ("ORDERS_FILES_URL", landing.as_str()),
        ("TRIGGER", "300ms"),
        ("FILES_POLL_INTERVAL", "200ms"),
    ]);
    let commandes = format!("{}/files/commandes", files.bronze);
    let mut child = ENGINE.spawn(&pipeline("orders_files.toml"), &env);
    wait_rows("the first wave in bronze", &commandes, 300).await;
    // A new file is picked up by the stream.
    let (name, l) = &chunks[3];
    put(&format!("{landing}/{name}"), encode(name, l, false)).await;
    wait_rows("a new file in bronze", &commandes, 400).await;
    // The last two arrive; the stream is killed before it sees them, while it reads them, while
    // it commits them, or after.
    for (name, l) in &chunks[4..] {
        put(&format!("{landing}/{name}"), encode(name, l, false)).await;
    }
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..800))).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let seen = table_rows(&commandes).await.len();
    eprintln!("{seen} of 600 orders in bronze when the stream was killed");
    // 40 more orders, later than the rest, appended to the last file (plain).
    let more = TIMED.values(40, 12, 5_000, t0 + 600 * 2_000, 2_000);
    good.extend(lines(&more));
    chunks[5].1.extend(lines(&more));
    let (name, l) = &chunks[5];
    put(&format!("{landing}/{name}"), encode(name, l, false)).await;
    let out = ENGINE.run(&["run", &pipeline("orders_files.toml"), "--batch"], &env);
    assert_success(&out);

    // Every good line exactly once, with its coordinates; every bad one in quarantine.
    let bronze = table_rows(&commandes).await;
    assert_eq!(bronze.len(), good.len(), "{seen} rows after the kill");
    let mut at: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in &bronze {
        let k = (
            r["file"].as_str().unwrap().to_string(),
            r["line"].as_i64().unwrap(),
        );
        assert!(
            at.insert(k.clone(), r["order_id"].as_i64().unwrap())
                .is_none(),
            "{k:?} twice"
        );
    }
    // Where each order is, computed from the files as written (a blank first line in file 01).
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut want_bad = BTreeMap::new();
    for (i, (name, l)) in chunks.iter().enumerate() {
        let offset = if i == 1 { 2 } else { 1 };
        for (n, line) in l.iter().enumerate() {
            let k = (format!("{landing}/{name}"), n as i64 + offset);
            let v: Result<Value, _> = serde_json::from_slice(line);
            match v
                .ok()
                .and_then(|v| v["order_id"].as_i64().filter(|id| *id < 9000))
            {
                Some(id) => {
                    want.insert(k, id);
                }
                None => {
                    want_bad.insert(k, String::from_utf8(line.clone()).unwrap());
                }
            }
        }
    }
    assert_eq!(at, want);
    let quarantine = table_rows(&format!("{}/files/_quarantine/orders", files.bronze)).await;
    let got_bad: BTreeMap<(String, i64), String> = quarantine
        .iter()
        .map(|r| {
            (
                (
                    r["file"].as_str().unwrap().to_string(),
                    r["line"].as_i64().unwrap(),
                ),
                r["raw_value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got_bad, want_bad);
    assert_eq!(quarantine.len(), bad.len());

    // The same messages through Kafka (one partition, so one watermark as for the files).
    let topic = unique("it-files-kafka");
    create_topic(&topic, 1).await;
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (_, l) in &chunks {
        all.extend(l.iter().cloned());
    }
    let acked = produce_to(&topic, 0, all).await;
    let kafka = EnginePaths::new("files-kafka");
    let kenv = kafka.env(&[("ORDERS_TOPIC", topic.as_str()), ("TRIGGER", "1h")]);
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &kenv));
    let good_acked: Acked = acked
        .into_iter()
        .filter(|(_, s)| {
            serde_json::from_slice::<Value>(&s.value)
                .ok()
                .and_then(|v| v["order_id"].as_i64())
                .is_some_and(|id| id < 9000)
        })
        .collect();
    check_product_sales(&format!("{}/files", files.gold), &good_acked).await;
    let order_cols = ["order_id", "customer_id", "timestamp", "total", "status"];
    let item_cols = [
        "order_id",
        "item_index",
        "product_id",
        "quantity",
        "subtotal",
    ];
    for (table, cols) in [("commandes", &order_cols[..]), ("items", &item_cols[..])] {
        let from_files = table_rows(&format!("{}/files/{table}", files.bronze)).await;
        let from_kafka = table_rows(&kafka.table(table)).await;
        assert!(!from_files.is_empty());
        assert_eq!(
            multiset(&from_files, cols),
            multiset(&from_kafka, cols),
            "{table}"
        );
    }
    let q_files = multiset(&quarantine, &["reason", "raw_value"]);
    let q_kafka = multiset(
        &table_rows(&format!("{}/kafka/_quarantine/{topic}", kafka.bronze)).await,
        &["reason", "raw_value"],
    );
    assert_eq!(q_files, q_kafka);
    let sales = [
        "product_id",
        "product_name",
        "nb_ventes",
        "quantite_totale",
        "ca_total",
    ];
    let windows = [
        "customer_id",
        "window_start",
        "window_end",
        "nb_commandes",
        "total_commandes",
    ];
    for (table, cols) in [
        ("product_sales", &sales[..]),
        ("customer_orders_1min", &windows[..]),
    ] {
        let from_files = table_rows(&format!("{}/files/{table}", files.gold)).await;
        let from_kafka = table_rows(&format!("{}/{table}", kafka.gold)).await;
        assert!(!from_files.is_empty());
        assert_eq!(
            multiset(&from_files, cols),
            multiset(&from_kafka, cols),
            "{table}"
        );
    }
    // Windows closed: those ending before the last order's time less 2 minutes.
    let last = t0 + 600 * 2_000 + 39 * 2_000;
    let closed = table_rows(&format!("{}/files/customer_orders_1min", files.gold)).await;
    let latest_end = closed
        .iter()
        .map(|r| r["window_end"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(latest_end, (last - 2 * MINUTE).div_euclid(MINUTE) * MINUTE);
}
