//! Hive-style partitioned tables, read back file by file: every row sits in the folder its own
//! values name (the event date of the shipped bronze tables; a column's value, escaped as Hive
//! escapes it, for a table partitioned by column), and every message lands exactly once.

use crate::{ENGINE, ORDERS};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use test_support::*;

/// The folders of a file under a table: `dt=2026-03-01` (or `a=1/b=2`).
fn folder_of(table: &str, file: &object_store::path::Path) -> String {
    let (_, prefix) = store_for(table);
    let rel = file
        .as_ref()
        .strip_prefix(prefix.as_ref())
        .unwrap()
        .trim_start_matches('/');
    rel.rsplit_once('/').map_or("", |(dir, _)| dir).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_land_in_the_folder_of_their_event_date_or_their_escaped_column_value() {
    let topic = unique("it-partitioned");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("partitioned");
    // 90 orders, one every 47 minutes from 2026-03-01T22:00Z: four event dates.
    let mut orders: Vec<Value> =
        ORDERS.values(90, 7, 1, ms("2026-03-01T22:00:00Z"), 47 * 60 * 1000);
    // Customers whose names a folder cannot hold as they are, and one without a customer.
    let item = json!([{"product_id": 1, "product_name": "alpha", "quantity": 2, "unit_price": 1.5, "subtotal": 3.0}]);
    for (id, customer, ts) in [
        (1001, json!("x/y"), "2026-03-02T23:59:59+00:00"),
        (1002, json!("50%=half"), "2026-03-03T00:00:00Z"),
        (1003, Value::Null, "2026-03-04T01:30:00-03:00"),
    ] {
        orders.push(json!({"order_id": id, "customer_id": customer, "timestamp": ts, "items": item, "total": 3.0, "status": "paid"}));
    }
    // Keyed as other producers key them: by customer, or not at all.
    let messages = orders
        .iter()
        .map(|o| {
            (
                o["customer_id"].as_str().map(String::from),
                serde_json::to_vec(o).unwrap(),
            )
        })
        .collect();
    let sent = produce(&topic, messages).await;

    // The shipped orders pipeline (bronze by event date), with `items` partitioned by customer.
    let shipped = std::fs::read_to_string(pipeline("orders.toml")).unwrap();
    let items_path = "path = \"${BRONZE_URL:-s3://bronze}/kafka/items\"\n";
    let by_date = "partition_by = { time = \"timestamp\", format = \"dt=%Y-%m-%d\" }\n";
    let items_section = shipped.find(items_path).unwrap();
    let (head, tail) = shipped.split_at(items_section);
    assert!(
        tail.starts_with(&format!("{items_path}# ")),
        "items is partitioned by date in the shipped file"
    );
    let tail = tail.replacen(by_date, "partition_by = [\"customer_id\"]\n", 1);
    let file = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(&file, format!("{head}{tail}")).unwrap();
    let env = paths.env(&[("ORDERS_TOPIC", &topic)]);
    assert_success(&ENGINE.run(&["run", file.to_str().unwrap(), "--batch"], &env));

    let by_coord: BTreeMap<(i32, i64), Value> = sent
        .values()
        .map(|s| {
            (
                (s.partition, s.offset),
                serde_json::from_slice(&s.value).unwrap(),
            )
        })
        .collect();

    // commandes: each row in the folder of its own timestamp's UTC date.
    let table = paths.table("commandes");
    let mut seen = BTreeMap::new();
    let mut dates = std::collections::BTreeSet::new();
    for (path, batches) in read_table_files(&table).await {
        let folder = folder_of(&table, &path);
        for row in rows(&batches) {
            let order = &by_coord[&coord(&row)];
            let date = chrono::DateTime::parse_from_rfc3339(order["timestamp"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
                .format("dt=%Y-%m-%d")
                .to_string();
            assert_eq!(folder, date, "order {} in {path}", order["order_id"]);
            dates.insert(date);
            assert!(seen.insert(coord(&row), ()).is_none(), "twice: {row:?}");
        }
    }
    assert_eq!(seen.len(), sent.len(), "every order once in commandes");
    assert!(dates.len() >= 4, "the orders span four dates: {dates:?}");
    // pyarrow's dataset with Hive partitioning finds the same rows, `dt` from the folders.
    let read = read_with(PyReader::HiveParquet, &table);
    assert_eq!(
        read.rows.len(),
        sent.len(),
        "pyarrow reads every order once"
    );
    for r in &read.rows {
        let order = &by_coord[&coord(r)];
        let date = utc(ms(order["timestamp"].as_str().unwrap()), "%Y-%m-%d");
        assert_eq!(r["dt"], Value::from(date), "{r:?}");
    }

    // items: by customer, the column only in the folder names, escaped as Hive escapes them.
    let hive = |customer: &Value| match customer.as_str() {
        None => "customer_id=__HIVE_DEFAULT_PARTITION__".to_string(),
        Some("x/y") => "customer_id=x%2Fy".to_string(),
        Some("50%=half") => "customer_id=50%25%3Dhalf".to_string(),
        Some(c) => {
            assert!(c.starts_with("cust-"), "{c}");
            format!("customer_id={c}")
        }
    };
    let table = paths.table("items");
    let mut items = 0;
    let mut folders = std::collections::BTreeSet::new();
    for (path, batches) in read_table_files(&table).await {
        let folder = folder_of(&table, &path);
        for b in &batches {
            assert!(b.schema().index_of("customer_id").is_err(), "{path}");
        }
        for row in rows(&batches) {
            let order = &by_coord[&coord(&row)];
            assert_eq!(folder, hive(&order["customer_id"]), "{path}");
            folders.insert(folder.clone());
            items += 1;
        }
    }
    let expected: usize = orders
        .iter()
        .map(|o| o["items"].as_array().unwrap().len())
        .sum();
    assert_eq!(items, expected, "every item once");
    // pyarrow decodes the escaped folder names back into the customers, and the default
    // partition into a null.
    let read = read_with(PyReader::HiveParquet, &table);
    assert_eq!(read.rows.len(), expected, "pyarrow reads every item once");
    for r in &read.rows {
        assert_eq!(
            r["customer_id"],
            by_coord[&coord(r)]["customer_id"],
            "{r:?}"
        );
    }
    for special in [
        "customer_id=x%2Fy",
        "customer_id=50%25%3Dhalf",
        "customer_id=__HIVE_DEFAULT_PARTITION__",
    ] {
        assert!(folders.contains(special), "{special} in {folders:?}");
    }
    let _ = std::fs::remove_file(file);
}
