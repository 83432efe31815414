//! `engine report <pipeline.toml>`: a pipeline whose topic, node names and table paths are not
//! the demo's lands orders, then the report of that pipeline is compared with counts computed
//! here from exactly the messages the test produced.

use crate::ENGINE;
use serde_json::Value;
use std::collections::BTreeMap;
use test_support::*;

const MINUTE: i64 = 60_000;

/// The shipped orders pipeline's shape, written anew: other node names, another topic, other
/// table paths under the test's prefixes, other aggregate names, and no preview settings except
/// one `preview_order_by`.
fn shop_pipeline(topic: &str) -> String {
    format!(
        r#"
[pipeline]
name = "shop"
trigger = "1h"
checkpoint = "${{CHECKPOINT_URL}}/shop"

[storage]
endpoint = "${{S3_ENDPOINT:-http://127.0.0.1:9000}}"
region = "${{AWS_REGION:-us-east-1}}"
access_key_id = "${{AWS_ACCESS_KEY_ID:-minioadmin}}"
secret_access_key = "${{AWS_SECRET_ACCESS_KEY:-minioadmin}}"

[nodes.feed]
type = "kafka"
brokers = "${{KAFKA_BROKERS:-127.0.0.1:9092}}"
topic = "{topic}"
starting_offsets = "earliest"

[nodes.decode]
type = "json_parse"
inputs = ["feed"]
event_time = {{ column = "timestamp", lateness = "2m" }}
required = ["order_id", "customer_id", "timestamp"]
rules = ["timestamp is timestamp", "total >= 0", "items.quantity > 0"]

[nodes.decode.schema]
order_id = "int"
customer_id = "string"
timestamp = "string"
items = "list<struct<product_id: int, product_name: string, quantity: int, unit_price: double, subtotal: double>>"
total = "double"

[nodes.orders_raw]
type = "parquet"
inputs = ["decode"]
path = "${{BRONZE_URL}}/shop/orders_raw"

[nodes.lines]
type = "explode"
inputs = ["decode"]
column = "items"

[nodes.order_lines]
type = "parquet"
inputs = ["lines"]
path = "${{BRONZE_URL}}/shop/order_lines"

[nodes.rejects]
type = "parquet"
inputs = ["decode.quarantine"]
path = "${{BRONZE_URL}}/rejected/{topic}"

[nodes.per_product]
type = "aggregate"
inputs = ["lines"]
group_by = ["product_id"]
output_mode = "complete"
aggregates = [{{ name = "revenue", fn = "sum", column = "subtotal" }}, {{ name = "nb_lines", fn = "count" }}]

[nodes.sales_by_product]
type = "parquet"
inputs = ["per_product"]
path = "${{GOLD_URL}}/sales_by_product"
mode = "complete"

[nodes.per_minute]
type = "window_aggregate"
inputs = ["decode"]
window = "1m"
group_by = ["customer_id"]
aggregates = [{{ name = "nb", fn = "count" }}, {{ name = "spent", fn = "sum", column = "total" }}]

[nodes.customer_minutes]
type = "parquet"
inputs = ["per_minute"]
path = "${{GOLD_URL}}/customer_minutes"
preview_order_by = "spent"
"#
    )
}

/// Good orders for the shop pipeline, which has no `status`: 6 customers, 1 to 3 lines of 7
/// products at prices drawn from 1.00 to 999.99 (so no two revenues tie), times in seconds.
const GOOD_ORDERS: OrderShape = OrderShape {
    customer_prefix: "c",
    customers: 6,
    lines: 1..4,
    products: &["p1", "p2", "p3", "p4", "p5", "p6", "p7"],
    prices: Prices::Drawn {
        min_cents: 100.0,
        max_cents: 99_999.0,
    },
    quantity: 1..6,
    statuses: &[],
    time: iso_seconds,
};

/// The lines of the report's section that starts with `title`, up to the next blank line.
fn section<'a>(out: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(title));
    assert!(lines.next().is_some(), "no section `{title}` in:\n{out}");
    lines.take_while(|l| !l.is_empty()).collect()
}

/// The rows of a printed table (`| a | b |` lines after the header), as column -> text.
fn printed_rows(lines: &[&str]) -> Vec<BTreeMap<String, String>> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut table = lines.iter().filter(|l| l.trim_start().starts_with('|'));
    let header = cells(table.next().expect("a header row"));
    table
        .map(|l| header.iter().cloned().zip(cells(l)).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn report_reads_the_tables_a_pipeline_names_and_counts_them_independently() {
    let topic = unique("it-report");
    // One partition: the watermark is then the latest order time minus 2 minutes.
    create_topic(&topic, 1).await;
    let paths = EnginePaths::new("report");
    let file = std::env::temp_dir().join(format!("{}.toml", unique("shop")));
    std::fs::write(&file, shop_pipeline(&topic)).unwrap();
    let file = file.to_str().unwrap();

    let t0 = ms("2026-05-01T12:00:00Z");
    // One every 2 s from `t0`.
    let good = GOOD_ORDERS.values(400, 77, 0, t0, 2_000);
    let bad: Vec<(&str, &[u8])> = vec![
        ("not_json", br#"{"order_id": 1, "customer_id""#),
        ("not_json", b"\xff\xfe"),
        ("not_object", b"[1, 2]"),
        ("wrong_type", br#"{"order_id": "x", "customer_id": "c", "timestamp": "t"}"#),
        ("missing_field", br#"{"order_id": 5, "timestamp": "2026-05-01T12:00:00Z"}"#),
        ("empty_value", b""),
        ("rule_broken", br#"{"order_id": 6, "customer_id": "c", "timestamp": "2026-05-01T12:00:00Z", "items": [], "total": -3.0}"#),
        ("rule_broken", br#"{"order_id": 7, "customer_id": "c", "timestamp": "yesterday", "items": [], "total": 3.0}"#),
        ("rule_broken", br#"{"order_id": 8, "customer_id": "c", "timestamp": "2026-05-01T12:00:00Z", "items": [{"product_id": 1, "quantity": 0, "subtotal": 0.0}], "total": 0.0}"#),
    ];
    let mut msgs: Vec<(Option<String>, Vec<u8>)> = good
        .iter()
        .map(|v| (None, serde_json::to_vec(v).unwrap()))
        .collect();
    msgs.extend(bad.iter().map(|(_, v)| (None, v.to_vec())));
    let sent = produce(&topic, msgs).await;
    assert_eq!(sent.len(), good.len() + bad.len());
    let tombstones = produce_tombstones(&topic, 2).await;

    let env = paths.env(&[]);
    assert_success(&ENGINE.run(&["run", file, "--batch"], &env));
    let out = ENGINE.run(&["report", file, "--rows", "3"], &env);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");

    // Row counts per table, under the test's bronze prefix.
    let lines: usize = good
        .iter()
        .map(|o| o["items"].as_array().unwrap().len())
        .sum();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in section(&stdout, &format!("Bronze tables in {} (", paths.bronze))
        .iter()
        .skip(1)
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 2, "`{l}`");
        counts.insert(w[0].to_string(), w[1].parse().unwrap());
    }
    let rejects = format!("rejected/{topic}");
    let expected: BTreeMap<String, usize> = [
        ("shop/orders_raw".to_string(), good.len()),
        ("shop/order_lines".to_string(), lines),
        (rejects.clone(), bad.len() + tombstones.len()),
    ]
    .into();
    assert_eq!(counts, expected, "{stdout}");

    // Quarantine per reason.
    let mut reasons: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (r, _) in &bad {
        *reasons.entry((rejects.clone(), r.to_string())).or_default() += 1;
    }
    reasons.insert((rejects.clone(), "null_value".into()), tombstones.len());
    let mut got = BTreeMap::new();
    for l in section(&stdout, "Quarantined records per table and reason") {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 3, "`{l}`");
        got.insert((w[0].to_string(), w[1].to_string()), w[2].parse().unwrap());
    }
    assert_eq!(got, reasons, "{stdout}");

    // Gold: the three products with the most revenue (the first aggregate), largest first.
    let mut revenue: BTreeMap<i64, f64> = BTreeMap::new();
    for o in &good {
        for it in o["items"].as_array().unwrap() {
            *revenue
                .entry(it["product_id"].as_i64().unwrap())
                .or_default() += it["subtotal"].as_f64().unwrap();
        }
    }
    let mut ranked: Vec<(i64, f64)> = revenue.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let title = format!(
        "sales_by_product: top 3 by revenue, of {} rows",
        ranked.len()
    );
    let shown = printed_rows(&section(&stdout, &title));
    assert_eq!(shown.len(), 3, "{stdout}");
    for (row, (pid, rev)) in shown.iter().zip(&ranked) {
        assert_eq!(row["product_id"], pid.to_string(), "{stdout}");
        let printed: f64 = row["revenue"].parse().unwrap();
        assert!((printed - rev).abs() <= 0.006, "{printed} vs {rev}");
    }

    // Gold: the latest window the watermark closed, its customers by `spent`, largest first.
    let latest_time = t0 + (good.len() as i64 - 1) * 2_000;
    let watermark = latest_time - 2 * MINUTE;
    let window_of = |o: &Value| ms(o["timestamp"].as_str().unwrap()).div_euclid(MINUTE) * MINUTE;
    let closed: std::collections::BTreeSet<(String, i64)> = good
        .iter()
        .map(|o| (o["customer_id"].as_str().unwrap().to_string(), window_of(o)))
        .filter(|(_, ws)| ws + MINUTE <= watermark)
        .collect();
    let start = closed.iter().map(|(_, ws)| *ws).max().unwrap();
    let mut spent: BTreeMap<String, f64> = BTreeMap::new();
    for o in good.iter().filter(|o| window_of(o) == start) {
        *spent
            .entry(o["customer_id"].as_str().unwrap().into())
            .or_default() += o["total"].as_f64().unwrap();
    }
    let mut ranked: Vec<(String, f64)> = spent.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let title = format!(
        "customer_minutes: top {} by spent in the latest closed window, of {} rows",
        3.min(ranked.len()),
        closed.len()
    );
    let shown = printed_rows(&section(&stdout, &title));
    assert_eq!(shown.len(), 3.min(ranked.len()), "{stdout}");
    for (row, (customer, total)) in shown.iter().zip(&ranked) {
        assert_eq!(row["customer_id"], *customer, "{stdout}");
        assert_eq!(row["window_start"], iso_seconds(start));
        let printed: f64 = row["spent"].parse().unwrap();
        assert!((printed - total).abs() <= 0.006, "{printed} vs {total}");
    }

    // No part of the storage secret in any message, even when the store refuses it.
    let sentinel = "Zq9-S3CRET-$Wxyz7";
    let mut env_bad = env.clone();
    env_bad.push(("AWS_SECRET_ACCESS_KEY", sentinel));
    let out = ENGINE.run(&["report", file], &env_bad);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for part in ["Zq9", "S3CRET", "Wxyz7"] {
        assert!(
            !all.contains(part),
            "`{part}` of the secret printed:\n{all}"
        );
    }
    std::fs::remove_file(file).ok();
}
