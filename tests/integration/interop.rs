//! `make test-interop` (not in CI: Spark takes about a minute per table): the tables the engine
//! wrote, read by DuckDB (`delta_scan`, `read_parquet` with Hive partitioning) and by Spark
//! (delta-spark, `spark.read.parquet`), must hold exactly the rows delta-rs and pyarrow read, which
//! the same test first checks against a computation made here from the acknowledged messages:
//! Delta bronze and gold tables after `kill -9`s, after a complete-mode replacement and after a
//! compaction; plain Parquet tables partitioned by date and by an escaped column value.

use crate::delta::COMPACTED;
use crate::gold::{
    TIMED, check_customer_windows, check_product_sales, expected_customer_windows, gold_env,
};
use crate::{ENGINE, check_orders_tables};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use test_support::*;

/// A row as text that every reader gives alike: keys sorted, numbers as f64 (`-0.0` as `0.0`),
/// everything else as it is.
fn canon(row: &Row) -> String {
    fn value(v: &Value) -> Value {
        match v {
            Value::Number(n) => Value::from(n.as_f64().unwrap() + 0.0),
            Value::Array(a) => Value::Array(a.iter().map(value).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            }
            other => other.clone(),
        }
    }
    let sorted: std::collections::BTreeMap<&String, Value> =
        row.iter().map(|(k, v)| (k, value(v))).collect();
    serde_json::to_string(&sorted).unwrap()
}

fn sorted(rows: &[Row]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(canon).collect();
    v.sort();
    v
}

/// DuckDB and Spark read `url` as `reference` did (delta-rs or pyarrow), row for row.
fn same_for_every_engine(url: &str, delta: bool, reference: &ReadBack) {
    let want = sorted(&reference.rows);
    assert!(!want.is_empty(), "{url} is empty");
    for engine in [QueryEngine::DuckDb, QueryEngine::Spark] {
        let got = read_with_engine(engine, delta, url);
        assert_eq!(
            got.rows.len(),
            want.len(),
            "{engine:?} reads {} rows of {url}, the reference {}",
            got.rows.len(),
            want.len()
        );
        let got = sorted(&got.rows);
        if let Some(i) = (0..want.len()).find(|i| got[*i] != want[*i]) {
            panic!(
                "{engine:?} reads {url} differently; first difference:\n  {}\n  {}",
                got[i], want[i]
            );
        }
        eprintln!(
            "interop: {engine:?} reads {url} as the reference does ({} rows)",
            want.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "make test-interop: DuckDB and Spark readers, minutes"]
async fn duckdb_and_spark_read_the_rows_produced() {
    let topic = unique("it-interop");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("interop");
    let gold = paths.gold.clone();
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TABLE_FORMAT", "delta");
    set_env(&mut env, "TRIGGER", "300ms");
    let t0 = ms("2026-03-01T22:00:00Z");

    // Delta: three streaming runs killed with SIGKILL while bursts arrive, then a batch run.
    let mut sent = Acked::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..3i64 {
        let mut orders = TIMED.values(
            120,
            round as u64,
            round * 1000,
            t0 + round * 1_800_000,
            15_000,
        );
        if round == 0 {
            for (o, customer) in orders.iter_mut().zip(["x/y", "50%=half"]) {
                o["customer_id"] = Value::from(customer);
            }
        }
        sent.extend(produce(&topic, by_customer(&orders)).await);
        let mut child = ENGINE
            .command()
            .args(["run", &pipeline("orders.toml")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start engine");
        tokio::time::sleep(Duration::from_millis(rng.u64(1000..3000))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    // A last batch: product_sales is replaced by one more remove + add commit.
    sent.extend(
        produce(
            &topic,
            by_customer(&TIMED.values(60, 9, 9000, t0 + 6 * 3_600_000, 15_000)),
        )
        .await,
    );
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    // The reference (delta-rs) holds exactly what was acknowledged.
    check_orders_tables(&paths, &topic, &sent).await;
    check_product_sales(&gold, &sent).await;
    check_customer_windows(&gold, &expected_customer_windows(&sent)).await;
    for url in [
        paths.table("commandes"),
        paths.table("items"),
        format!("{gold}/product_sales"),
        format!("{gold}/customer_orders_1min"),
    ] {
        let reference = read_with(PyReader::Delta, &url);
        same_for_every_engine(&url, true, &reference);
    }

    // Plain Parquet, partitioned by date, from the same topic.
    let plain = EnginePaths::new("interop-plain");
    let plain_env = plain.env(&[("ORDERS_TOPIC", &topic)]);
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &plain_env));
    check_orders_tables(&plain, &topic, &sent).await;
    let url = plain.table("commandes");
    let reference = read_with(PyReader::HiveParquet, &url);
    assert_eq!(reference.rows.len(), sent.len());
    same_for_every_engine(&url, false, &reference);

    // A compacted Delta table: a stream with maintenance every 10 s, until it has compacted.
    let compact_topic = unique("it-interop-compact");
    create_topic(&compact_topic, 2).await;
    let file = std::env::temp_dir().join(format!("{compact_topic}.toml"));
    std::fs::write(&file, COMPACTED).unwrap();
    let cenv = paths.env(&[("ORDERS_TOPIC", &compact_topic)]);
    let child = ENGINE.spawn(file.to_str().unwrap(), &cenv);
    let mut csent = Acked::new();
    let table = paths.table("orders");
    let log = format!("{table}/_delta_log");
    let mut compacted = false;
    for i in 0..60i64 {
        csent.extend(
            produce(
                &compact_topic,
                burst(10, i as u64, i * 100, t0 + i * 20_000),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        compacted = all_objects(&log)
            .await
            .iter()
            .any(|(_, bytes)| String::from_utf8_lossy(bytes).contains("OPTIMIZE"));
        if compacted {
            break;
        }
    }
    let (status, stderr) = sigterm(child).await;
    assert!(status.success(), "{stderr}");
    assert!(compacted, "no compaction within a minute");
    let reference = read_with(PyReader::Delta, &table);
    let got: std::collections::BTreeSet<_> = reference.rows.iter().map(coord).collect();
    assert_eq!(got.len(), reference.rows.len());
    assert_eq!(got, csent.keys().copied().collect());
    same_for_every_engine(&table, true, &reference);
    let _ = std::fs::remove_file(file);
}
