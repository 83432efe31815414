//! The shipped landing pipelines keep every record that parses against their schema.
//!
//! Each test reads the `[nodes.parse]` table of a file in `pipelines/`, so it checks the rules
//! and `required` fields that ship, and feeds it data written the way producers we did not write
//! write it: the level names of Python's logging, log4j and syslog, their timestamp formats,
//! negative durations, refunds, zero quantities, a CPU above 100 %. All of it must come out on
//! the main port with its values. What the windows cannot use (no event time, or one that is not
//! a time) still goes to quarantine.

mod common;

use arrow::array::RecordBatch;
use common::*;
use engine_api::testing::{Script, check_operator};
use engine_api::{Input, OperatorConfig, OutputMode};
use operators::aggregate::WindowAggregateConfig;
use operators::json_parse::reason;
use serde::Deserialize;
use serde_json::{Value, json};

const LOG_FIELDS: [&str; 7] = [
    "timestamp",
    "level",
    "module",
    "message",
    "request_id",
    "user_id",
    "duration_ms",
];
const METRIC_FIELDS: [&str; 5] = [
    "timestamp",
    "server_id",
    "cpu_percent",
    "memory_percent",
    "disk_percent",
];

/// Level names as real loggers write them.
#[rustfmt::skip]
const FOREIGN_LEVELS: [&str; 16] = [
    // Python logging.
    "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
    // log4j, logback, slf4j.
    "TRACE", "WARN", "FATAL",
    // syslog severities (RFC 5424 keywords, as rsyslog's %syslogseverity-text% writes them).
    "notice", "err", "emerg", "alert", "crit",
    // Lowercase, as many JSON loggers write them.
    "warn", "info", "debug",
];

/// Event-time text as real producers write it: Python logging's asctime, log4j's default and
/// ISO8601 layouts, Java's `Instant.toString()`, Python's `isoformat()`, offsets without colon.
const FOREIGN_TIMESTAMPS: [&str; 10] = [
    "2026-03-01 10:00:00,123",
    "2026-03-01T10:00:01,456",
    "2026-03-01T10:00:02.123456789Z",
    "2026-03-01T10:00:03.250000+00:00",
    "2026-03-01T10:00:04.250000",
    "2026-03-01T10:00:05+00:00",
    "2026-03-01T10:00:06.000+0000",
    "2026-03-01T12:00:07.000+02:00",
    "2026-03-01t10:00:08.5z",
    "2026-03-01 10:00:09",
];

/// Runs `records` through the parse node of `pipelines/<file>`; returns (out, quarantine) after
/// checking that each record is on exactly one port (by offset).
fn through_shipped(file: &str, records: &[Value]) -> (RecordBatch, RecordBatch) {
    let (mut op, out_schema, q_schema) = init_parser(shipped_parse_config(file));
    let values = records
        .iter()
        .map(|r| Some(serde_json::to_vec(r).unwrap()))
        .collect();
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    (good, bad)
}

/// Asserts that every record is on the main port, in order, with the values it was written with.
fn assert_all_kept(good: &RecordBatch, bad: &RecordBatch, records: &[Value], fields: &[&str]) {
    let quarantined: Vec<_> = reasons(bad)
        .into_iter()
        .zip(strings(bad, "detail"))
        .zip(strings(bad, "raw_value"))
        .collect();
    assert!(
        quarantined.is_empty(),
        "records were quarantined: {quarantined:#?}"
    );
    assert_eq!(
        offsets(good),
        (100..100 + records.len() as i64).collect::<Vec<_>>()
    );
    for (row, r) in records.iter().enumerate() {
        assert_row_is(good, row, r, fields);
    }
}

fn log_line(i: usize, level: &str, timestamp: &str, duration_ms: i64) -> Value {
    json!({
        "timestamp": timestamp,
        "level": level,
        "module": (["auth", "payment", "search"][i % 3]),
        "message": format!("message {i}"),
        "request_id": format!("req-{i}"),
        "user_id": format!("u{}", i % 7),
        "duration_ms": duration_ms,
    })
}

#[test]
fn logs_keep_every_level_name_timestamp_format_and_duration() {
    let durations = [-5, -1, 0, 12, i64::from(i32::MIN), i64::from(i32::MAX)];
    let mut records = Vec::new();
    for (i, level) in FOREIGN_LEVELS.iter().enumerate() {
        for (j, ts) in FOREIGN_TIMESTAMPS.iter().enumerate() {
            let n = i * FOREIGN_TIMESTAMPS.len() + j;
            records.push(log_line(n, level, ts, durations[n % durations.len()]));
        }
    }
    // Lines without a level or a module are stored with a null there.
    let mut no_level = log_line(1000, "INFO", "2026-03-01T10:00:00Z", 3);
    no_level.as_object_mut().unwrap().remove("level");
    let mut no_module = log_line(1001, "INFO", "2026-03-01T10:00:00Z", 3);
    no_module["module"] = Value::Null;
    records.extend([no_level, no_module]);

    let (good, bad) = through_shipped("logs.toml", &records);
    assert_all_kept(&good, &bad, &records, &LOG_FIELDS);
    let levels: Vec<Option<String>> = records
        .iter()
        .map(|r| r["level"].as_str().map(str::to_string))
        .collect();
    assert_eq!(strings(&good, "level"), levels, "levels exactly as written");
}

#[test]
fn orders_keep_refunds_zero_quantities_and_missing_ids() {
    let item = |q: i64, price: f64| {
        json!({"product_id": 1, "product_name": "p", "quantity": q, "unit_price": price,
               "subtotal": price * q as f64})
    };
    let order = |id: Value, ts: &str, items: Vec<Value>, total: f64| {
        json!({"order_id": id, "customer_id": "C0001", "timestamp": ts, "items": items,
               "total": total, "status": "refunded"})
    };
    let mut records = vec![
        // A refund: negative total, a line with a negative quantity and subtotal.
        order(json!(1), "2026-03-01T10:00:00Z", vec![item(-2, 9.5)], -19.0),
        // A free line and a zero-quantity line.
        order(
            json!(2),
            "2026-03-01T10:00:00Z",
            vec![item(0, 9.5), item(3, 0.0)],
            0.0,
        ),
        // No order id, and a null one: stored as null.
        json!({"customer_id": "C0002", "timestamp": "2026-03-01T10:00:00Z", "items": [], "total": 1.0}),
        order(Value::Null, "2026-03-01T10:00:00Z", vec![], 2.0),
        // No customer, no items, no total.
        json!({"order_id": 5, "timestamp": "2026-03-01T10:00:00Z"}),
    ];
    for (i, ts) in FOREIGN_TIMESTAMPS.iter().enumerate() {
        records.push(order(json!(100 + i), ts, vec![item(1, 2.5)], -(i as f64)));
    }
    let (good, bad) = through_shipped("orders.toml", &records);
    assert_all_kept(&good, &bad, &records, &ORDER_FIELDS);
}

#[test]
fn metrics_keep_values_outside_0_to_100_and_missing_servers() {
    let metric = |server: Value, ts: &str, cpu: f64, mem: f64, disk: f64| {
        json!({"timestamp": ts, "server_id": server, "cpu_percent": cpu,
               "memory_percent": mem, "disk_percent": disk})
    };
    let mut records = vec![
        metric(json!("srv-1"), "2026-03-01T10:00:00Z", 100.5, 50.0, 50.0),
        metric(
            json!("srv-2"),
            "2026-03-01T10:00:00Z",
            250.0,
            -0.5,
            100.0001,
        ),
        metric(json!("srv-3"), "2026-03-01T10:00:00Z", -1.0, 101.0, 1e6),
        metric(Value::Null, "2026-03-01T10:00:00Z", 10.0, 10.0, 10.0),
    ];
    for (i, ts) in FOREIGN_TIMESTAMPS.iter().enumerate() {
        records.push(metric(
            json!(format!("srv-{i}")),
            ts,
            100.0 + i as f64,
            1.0,
            1.0,
        ));
    }
    let (good, bad) = through_shipped("metrics.toml", &records);
    assert_all_kept(&good, &bad, &records, &METRIC_FIELDS);
}

/// What each landing pipeline still quarantines: a record its windows cannot place in time.
#[test]
fn landing_pipelines_quarantine_only_records_without_a_usable_event_time() {
    let cases: [(&str, Value); 3] = [
        ("logs.toml", log_line(0, "INFO", "2026-03-01T10:00:00Z", 1)),
        (
            "orders.toml",
            json!({"order_id": 1, "customer_id": "c", "timestamp": "2026-03-01T10:00:00Z", "items": [], "total": 1.0}),
        ),
        (
            "metrics.toml",
            json!({"timestamp": "2026-03-01T10:00:00Z", "server_id": "s", "cpu_percent": 1.0}),
        ),
    ];
    for (file, good_record) in cases {
        let mut no_time = good_record.clone();
        no_time.as_object_mut().unwrap().remove("timestamp");
        let mut null_time = good_record.clone();
        null_time["timestamp"] = Value::Null;
        let mut not_a_time = good_record.clone();
        not_a_time["timestamp"] = json!("yesterday at noon");
        let mut date_only = good_record.clone();
        date_only["timestamp"] = json!("2026-03-01");
        let records = [good_record, no_time, null_time, not_a_time, date_only];
        let (good, bad) = through_shipped(file, &records);
        assert_eq!(offsets(&good), [100], "{file}");
        assert_eq!(
            reasons(&bad),
            [
                (101, reason::MISSING_FIELD.to_string()),
                (102, reason::MISSING_FIELD.to_string()),
                (103, reason::RULE_BROKEN.to_string()),
                (104, reason::RULE_BROKEN.to_string()),
            ],
            "{file}"
        );
    }
}

/// The shipped pipelines declare their event time on the parse node, on a column of its schema,
/// and their windows build on it without naming it again.
#[test]
fn shipped_windows_build_on_the_event_time_declared_on_parse() {
    let mut windows = 0;
    for file in [
        "orders.toml",
        "logs.toml",
        "metrics.toml",
        "orders_console.toml",
    ] {
        let (column, lateness) =
            shipped_event_time(file).unwrap_or_else(|| panic!("{file}: no event_time on parse"));
        engine_api::parse_duration(
            "lateness",
            &lateness,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(31 * 24 * 3600),
        )
        .unwrap();
        let parsed = shipped_parse_config(file)
            .build(&ctx(), &Input::new(kafka_schema()))
            .unwrap();
        let schema = parsed.ports[0].schema.clone();
        assert!(schema.index_of(&column).is_ok(), "{file}: no `{column}`");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines")
            .join(file);
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (name, node) in doc["nodes"].as_table().unwrap() {
            if node["type"].as_str() != Some("window_aggregate") {
                continue;
            }
            assert_eq!(node["inputs"].as_array().unwrap().len(), 1);
            assert_eq!(node["inputs"][0].as_str(), Some("parse"), "{file}: {name}");
            let mut table = node.as_table().unwrap().clone();
            table.remove("type");
            table.remove("inputs");
            for gone in ["time_column", "watermark", "idle_timeout"] {
                assert!(
                    !table.contains_key(gone),
                    "{file}: {name} still has `{gone}`"
                );
            }
            let cfg = WindowAggregateConfig::deserialize(toml::Value::Table(table))
                .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
            let input = Input::new(schema.clone()).with_event_time(&column);
            let built = cfg
                .build(&ctx(), &input)
                .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
            assert_ne!(built.ports[0].mode, OutputMode::Complete, "{file}: {name}");
            windows += 1;
        }
    }
    assert_eq!(windows, 4);
}

/// Each shipped parse node keeps the operator contract on batches of good and bad records.
#[test]
fn shipped_parsers_keep_the_operator_contract() {
    let cases: [(&str, Value); 3] = [
        (
            "logs.toml",
            log_line(0, "WARNING", "2026-03-01 10:00:00,123", 5),
        ),
        (
            "orders.toml",
            json!({"order_id": 1, "customer_id": "c", "timestamp": "2026-03-01T10:00:00Z", "items": [], "total": -1.0}),
        ),
        (
            "metrics.toml",
            json!({"timestamp": "2026-03-01T10:00:00Z", "server_id": "s", "cpu_percent": 150.0}),
        ),
    ];
    for (file, good) in cases {
        let mut no_time = good.clone();
        no_time.as_object_mut().unwrap().remove("timestamp");
        let values = vec![
            Some(serde_json::to_vec(&good).unwrap()),
            Some(b"{not json".to_vec()),
            Some(serde_json::to_vec(&no_time).unwrap()),
            None,
        ];
        let batch = kafka_batch(&msgs(values));
        let script = Script::new(kafka_schema())
            .wall_clock_column("quarantine", "ingested_at")
            .batch(batch.clone())
            .barrier()
            .batch(batch)
            .barrier()
            .end();
        let run = check_operator(
            || shipped_parse_config(file).build(&ctx(), &Input::new(kafka_schema())),
            &script,
        );
        let all = run.all();
        assert_eq!(all.num_rows("out"), 2, "{file}");
        assert_eq!(all.num_rows("quarantine"), 6, "{file}");
    }
}
