//! `json_parse` on literal Kafka-shaped batches: decoding, quarantine reasons, hostile payloads,
//! and the three `on_error` modes. Every expected value comes from the JSON the test writes.

mod common;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMillisecondType;
use arrow::datatypes::{DataType, Float64Type, Int32Type, SchemaRef, TimeUnit};
use base64::Engine as _;
use common::*;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{ErrorKind, Input, OperatorConfig, OutputMode, Tally};
use indexmap::IndexMap;
use operators::json_parse::{JsonParseConfig, OnError};
use serde_json::{Value, json};

/// The course's orders schema, as in `pipelines/orders.toml`.
fn orders_schema() -> IndexMap<String, String> {
    [
        ("order_id", "int"),
        ("customer_id", "string"),
        ("timestamp", "string"),
        (
            "items",
            "list<struct<product_id: int, product_name: string, quantity: int, unit_price: double, subtotal: double>>",
        ),
        ("total", "double"),
        ("status", "string"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(
    schema: IndexMap<String, String>,
    required: &[&str],
    on_error: OnError,
) -> JsonParseConfig {
    JsonParseConfig {
        value_column: "value".into(),
        schema,
        required: required.iter().map(|s| s.to_string()).collect(),
        rules: Vec::new(),
        on_error,
        decoder: Default::default(),
    }
}

/// A built operator with its output schemas (out, quarantine).
fn parser(cfg: JsonParseConfig) -> (Harness, SchemaRef, SchemaRef) {
    init_parser(cfg)
}

fn orders_parser(required: &[&str], on_error: OnError) -> (Harness, SchemaRef, SchemaRef) {
    parser(config(orders_schema(), required, on_error))
}

fn order(id: i64, items: Value) -> Value {
    let total: f64 = items
        .as_array()
        .map(|a| a.iter().map(|i| i["subtotal"].as_f64().unwrap()).sum())
        .unwrap_or(0.0);
    json!({
        "order_id": id,
        "customer_id": format!("C{:04}", id % 200),
        "timestamp": format!("2026-03-01T10:{:02}:00Z", id % 60),
        "items": items,
        "total": total,
        "status": "paid",
    })
}

fn item(product_id: i64, name: &str, quantity: i64, unit_price: f64) -> Value {
    json!({
        "product_id": product_id,
        "product_name": name,
        "quantity": quantity,
        "unit_price": unit_price,
        "subtotal": unit_price * quantity as f64,
    })
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).unwrap())
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn reason_of(bad: &RecordBatch, offset: i64) -> String {
    reasons(bad)
        .into_iter()
        .find(|(o, _)| *o == offset)
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("offset {offset} is not quarantined: {:?}", reasons(bad)))
}

fn detail_of(bad: &RecordBatch, offset: i64) -> String {
    let row = offsets(bad).iter().position(|o| *o == offset).unwrap();
    strings(bad, "detail")[row].clone().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Valid orders

#[test]
fn valid_orders_decode_to_the_values_of_their_json() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let mut special = order(7, json!([item(3, "Café \"crème\" ☕\n\\", 2, 0.1)]));
    special["customer_id"] = json!("C-é-\u{1F600}");
    special["total"] = json!(-1.5e-7);
    let mut no_status = order(8, json!([]));
    no_status.as_object_mut().unwrap().remove("status");
    let mut null_items = order(9, Value::Null);
    null_items["status"] = Value::Null;
    let orders = [
        order(
            1,
            json!([
                item(10, "Laptop", 1, 899.99),
                item(11, "Mouse", 3, 19.9),
                item(12, "Cable", 10, 2.5)
            ]),
        ),
        order(2, json!([item(20, "Desk", 1, 249.0)])),
        order(3, json!([])),
        special,
        no_status,
        null_items,
        order(
            i64::from(i32::MAX),
            json!([item(i64::from(i32::MIN), "", 0, 0.0)]),
        ),
    ];
    let values = orders.iter().map(bytes).collect();
    let (good, bad, sent) = parse_all(&mut op, &out_schema, &q_schema, values);
    assert_eq!(bad.num_rows(), 0, "{:?}", reasons(&bad));
    // Row order is the input order; the coordinates are carried (checked in parse_all).
    assert_eq!(
        offsets(&good),
        sent.iter().map(|m| m.offset).collect::<Vec<_>>()
    );
    for (row, o) in orders.iter().enumerate() {
        assert_row_is(&good, row, o, &ORDER_FIELDS);
    }
    // The output is the input's coordinates then the schema's fields, in the TOML order.
    let names: Vec<_> = out_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "key",
            "order_id",
            "customer_id",
            "timestamp",
            "items",
            "total",
            "status"
        ]
    );
}

#[test]
fn a_string_value_column_is_parsed_too() {
    let mut cfg = config(orders_schema(), &[], OnError::Quarantine);
    cfg.value_column = "payload".into();
    let input = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", DataType::Int64, false),
        arrow::datatypes::Field::new("payload", DataType::Utf8, true),
    ]));
    let built = cfg.build(&ctx(), &Input::new(input.clone())).unwrap();
    let schemas: Vec<SchemaRef> = built.ports.iter().map(|p| p.schema.clone()).collect();
    let mut op = Harness::new(built).with_input(input.clone());
    let o = order(5, json!([item(1, "a", 2, 1.25)]));
    let batch = RecordBatch::try_new(
        input,
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])),
            std::sync::Arc::new(StringArray::from(vec![
                Some(o.to_string()),
                Some("[]".into()),
            ])),
        ],
    )
    .unwrap();
    let out = run(&mut op, batch);
    let good = port(&out, 0, &schemas[0]);
    let bad = port(&out, 1, &schemas[1]);
    assert_eq!(i64s(&good, "id"), [1]);
    assert_row_is(&good, 0, &o, &ORDER_FIELDS);
    assert_eq!(i64s(&bad, "id"), [2]);
    assert_eq!(strings(&bad, "reason"), [Some("not_object".to_string())]);
}

// ---------------------------------------------------------------------------------------------
// 2. Quarantine: one bad record of each kind among good ones

#[test]
fn each_kind_of_bad_record_is_quarantined_with_its_reason() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let good_order = |id| bytes(&order(id, json!([item(1, "Pen", 2, 1.5)])));
    let invalid_utf8: &[u8] = b"\xff\xfe\xfd";
    let utf8_in_string: Vec<u8> = [
        &br#"{"order_id": 5, "customer_id": "C"#[..],
        b"\xc3\x28",
        b"\"}",
    ]
    .concat();
    // (value, expected reason; None = good)
    let cases: Vec<(Option<Vec<u8>>, Option<&str>)> = vec![
        (good_order(1), None),
        (None, Some("null_value")),
        (text(""), Some("empty_value")),
        (text("  \n\t \r\n"), Some("empty_value")),
        (
            text(r#"{"order_id": 4, "customer_id": "C0004", "items": [{"product_id": 1"#),
            Some("not_json"),
        ),
        (good_order(5), None),
        (Some(invalid_utf8.to_vec()), Some("not_json")),
        (Some(utf8_in_string.clone()), Some("not_json")),
        (text("[1, 2, 3]"), Some("not_object")),
        (text(r#"[{"order_id": 9}]"#), Some("not_object")),
        (text("null"), Some("not_object")),
        (text(r#""a string""#), Some("not_object")),
        (text("42"), Some("not_object")),
        (
            text(r#"{"order_id": "abc", "customer_id": "C"}"#),
            Some("wrong_type"),
        ),
        (
            text(r#"{"order_id": 2147483648, "customer_id": "C"}"#),
            Some("wrong_type"),
        ),
        (text(r#"{"order_id": -2147483649}"#), Some("wrong_type")),
        (
            text(r#"{"customer_id": "C0016", "total": 3.5}"#),
            Some("missing_field"),
        ),
        (
            text(r#"{"order_id": null, "customer_id": "C0017"}"#),
            Some("missing_field"),
        ),
        (text(r#"{"order_id": 18, "total": NaN}"#), Some("not_json")),
        (
            text(r#"{"order_id": 19, "total": Infinity}"#),
            Some("not_json"),
        ),
        (
            text(r#"{"order_id": 20, "total": -Infinity}"#),
            Some("not_json"),
        ),
        (
            text(r#"{"order_id": 21}{"order_id": 22}"#),
            Some("not_json"),
        ),
        (
            text("{\"order_id\": 23}\n{\"order_id\": 24}"),
            Some("not_json"),
        ),
        (good_order(25), None),
        (
            text(r#"{"order_id": 26, "items": {"product_id": 1}}"#),
            Some("wrong_type"),
        ),
        (
            text(r#"{"order_id": 27, "items": [{"quantity": "2"}]}"#),
            Some("wrong_type"),
        ),
        (good_order(28), None),
    ];
    let values: Vec<_> = cases.iter().map(|(v, _)| v.clone()).collect();
    let (good, bad, sent) = parse_all(&mut op, &out_schema, &q_schema, values);

    let expect_good: Vec<i64> = cases
        .iter()
        .zip(&sent)
        .filter(|((_, r), _)| r.is_none())
        .map(|(_, m)| m.offset)
        .collect();
    let expect_bad: Vec<(i64, String)> = cases
        .iter()
        .zip(&sent)
        .filter_map(|((_, r), m)| r.map(|r| (m.offset, r.to_string())))
        .collect();
    assert_eq!(offsets(&good), expect_good);
    // Quarantined rows keep the input order too.
    assert_eq!(reasons(&bad), expect_bad);

    // The good ones decoded to their values.
    for (row, offset) in expect_good.iter().enumerate() {
        let i = (offset - 100) as usize;
        let v: Value = serde_json::from_slice(cases[i].0.as_deref().unwrap()).unwrap();
        assert_row_is(&good, row, &v, &ORDER_FIELDS);
    }

    // raw_value / raw_encoding: the bytes as sent, base64 when they are not UTF-8.
    let raw = strings(&bad, "raw_value");
    let enc = strings(&bad, "raw_encoding");
    let detail = strings(&bad, "detail");
    for (row, offset) in offsets(&bad).into_iter().enumerate() {
        let value = cases[(offset - 100) as usize].0.as_deref();
        assert!(
            detail[row].as_deref().is_some_and(|d| !d.is_empty()),
            "no detail for {offset}"
        );
        match value {
            None => {
                assert_eq!(raw[row], None);
                assert_eq!(enc[row].as_deref(), Some("null"));
            }
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => {
                    assert_eq!(raw[row].as_deref(), Some(s));
                    assert_eq!(enc[row].as_deref(), Some("utf8"));
                }
                Err(_) => {
                    assert_eq!(enc[row].as_deref(), Some("base64"), "offset {offset}");
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(raw[row].as_deref().unwrap())
                        .unwrap();
                    assert_eq!(decoded, v);
                }
            },
        }
    }
    // 0xff 0xfe 0xfd = 111111 111111 111011 111101 = "//79" in base64, worked out by hand.
    let row = offsets(&bad).iter().position(|o| *o == 106).unwrap();
    assert_eq!(raw[row].as_deref(), Some("//79"));
    assert!(
        detail_of(&bad, 106).contains("UTF-8"),
        "{}",
        detail_of(&bad, 106)
    );
    assert!(
        detail_of(&bad, 107).contains("UTF-8"),
        "{}",
        detail_of(&bad, 107)
    );
    assert!(
        detail_of(&bad, 116).contains("order_id"),
        "{}",
        detail_of(&bad, 116)
    );
    assert!(
        detail_of(&bad, 113).contains("order_id"),
        "{}",
        detail_of(&bad, 113)
    );

    // ingested_at is now.
    let now = chrono::Utc::now().timestamp_millis();
    let ingested = col(&bad, "ingested_at").as_primitive::<TimestampMillisecondType>();
    assert_eq!(ingested.null_count(), 0);
    assert!(
        ingested
            .values()
            .iter()
            .all(|t| (now - 60_000..=now).contains(t))
    );
}

#[test]
fn the_quarantine_schema_is_the_coordinates_and_the_raw_value() {
    let (_, _, q_schema) = orders_parser(&[], OnError::Quarantine);
    let names: Vec<_> = q_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "key",
            "raw_value",
            "raw_encoding",
            "reason",
            "detail",
            "ingested_at"
        ]
    );
    assert_eq!(
        q_schema.field_with_name("ingested_at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
}

#[test]
fn an_all_bad_batch_and_an_all_good_batch() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let (good, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![None, text("x"), text("[]")],
    );
    assert_eq!(good.num_rows(), 0);
    assert_eq!(
        reasons(&bad),
        [
            (100, "null_value".into()),
            (101, "not_json".into()),
            (102, "not_object".into())
        ]
    );
    let out = run(&mut op, kafka_batch(&msgs(vec![])));
    assert!(out.main().is_empty() && out.port("quarantine").is_empty());
}

/// arrow-json's decoder is a stream parser that takes raw newlines inside strings: fed the
/// messages one after the other, `{"customer_id":"}` swallows the start of the next message.
/// The operator used to decode the two bad messages below as two rows with each other's data.
#[test]
fn two_bad_messages_never_merge_into_good_rows() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let good = bytes(&order(3, json!([])));
    let (ok, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![
            text(r#"{"customer_id":"}"#),
            text(r#"{","order_id":1}{"order_id":2}"#),
            good.clone(),
        ],
    );
    assert_eq!(offsets(&ok), [102]);
    assert_eq!(
        reasons(&bad),
        [(100, "not_json".into()), (101, "not_json".into())]
    );

    // The same with an even split: the first message leaves a string open, the second closes
    // it and holds one more object.
    let (ok, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![
            text(r#"{"status": "}"#),
            text(r#"{", "order_id": 1}"#),
            good,
        ],
    );
    assert_eq!(offsets(&ok), [102]);
    assert_eq!(reasons(&bad).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Hostile payloads

#[test]
fn a_utf8_bom_before_an_object_is_ignored() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let o = order(1, json!([item(1, "a", 1, 1.0)]));
    let with_bom = [&b"\xEF\xBB\xBF"[..], &serde_json::to_vec(&o).unwrap()].concat();
    let with_bom_and_space = [&b"\xEF\xBB\xBF \n"[..], &serde_json::to_vec(&o).unwrap()].concat();
    let (good, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![Some(with_bom.clone()), Some(with_bom_and_space)],
    );
    assert_eq!(offsets(&good), [100, 101]);
    assert_row_is(&good, 0, &o, &ORDER_FIELDS);
    assert_eq!(bad.num_rows(), 0);
    // A BOM alone is an empty value.
    let (_, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![Some(b"\xEF\xBB\xBF".to_vec())],
    );
    assert_eq!(reasons(&bad), [(100, "empty_value".into())]);
}

/// Duplicate keys: the last one wins (arrow-json overwrites the field's position in the tape).
#[test]
fn with_duplicate_keys_the_last_value_wins() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let (good, _, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![text(
            r#"{"order_id": 1, "customer_id": "first", "order_id": 2, "customer_id": "last", "items": [{"quantity": 1, "quantity": 5}]}"#,
        )],
    );
    let last = json!({"order_id": 2, "customer_id": "last", "items": [{"quantity": 5}]});
    assert_row_is(&good, 0, &last, &["order_id", "customer_id", "items"]);
}

#[test]
fn unknown_fields_are_ignored() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let mut o = order(1, json!([item(1, "a", 2, 3.0)]));
    o["extra"] = json!({"nested": [1, "two", null, {"x": [true, false]}], "n": 1e300});
    o["Order_ID"] = json!("case matters");
    o["items"][0]["colour"] = json!("red");
    o["big"] = json!(1e308);
    let mut raw = serde_json::to_string(&o).unwrap();
    // Also a number beyond the range of a double, in a field nobody reads.
    raw.insert_str(1, r#""huge": 1e400, "#);
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, vec![text(&raw)]);
    assert_eq!(bad.num_rows(), 0, "{:?}", strings(&bad, "detail"));
    assert_row_is(&good, 0, &o, &ORDER_FIELDS);
}

#[test]
fn a_one_mebibyte_string_parses() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let big: String = "é0123456789abcdef\u{1F600}"
        .chars()
        .cycle()
        .take(1 << 20)
        .collect();
    assert!(big.len() >= 1 << 20);
    let mut o = order(1, json!([item(1, &big, 1, 1.0)]));
    o["customer_id"] = json!(big);
    o["unknown"] = json!(big);
    let (good, bad, _) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        vec![bytes(&o), bytes(&order(2, json!([])))],
    );
    assert_eq!(bad.num_rows(), 0);
    assert_eq!(
        strings(&good, "customer_id")[0].as_deref(),
        Some(big.as_str())
    );
    assert_row_is(&good, 0, &o, &ORDER_FIELDS);
    assert_row_is(&good, 1, &order(2, json!([])), &ORDER_FIELDS);
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// arrow-json's tape decoder keeps its own stack, so deep nesting in a field nobody reads
/// parses; when such a message must be classified, serde_json stops at 128 levels.
#[test]
fn deep_nesting_neither_panics_nor_overflows_the_stack() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(1000), "}".repeat(1000));
    let values = vec![
        text(&format!(
            r#"{{"order_id": 1, "unknown": {}}}"#,
            nested(1000)
        )),
        text(&format!(r#"{{"order_id": 2, "unknown": {deep_objects}}}"#)),
        text(&format!(
            r#"{{"order_id": 3, "unknown": {}}}"#,
            nested(100_000)
        )),
        // Deep nesting where the schema wants a list of structs: quarantined.
        text(&format!(r#"{{"order_id": 4, "items": {}}}"#, nested(1000))),
        // A type error elsewhere in a deeply nested message: quarantined.
        text(&format!(
            r#"{{"order_id": "five", "unknown": {}}}"#,
            nested(1000)
        )),
        // Unbalanced: never closed.
        text(&format!(
            r#"{{"order_id": 6, "unknown": {}}}"#,
            "[".repeat(100_000)
        )),
    ];
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    assert_eq!(offsets(&good), [100, 101, 102]);
    assert_eq!(i32s(&good, "order_id"), [Some(1), Some(2), Some(3)]);
    let r = reasons(&bad);
    assert_eq!(
        r.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [103, 104, 105]
    );
    for (offset, reason) in &r {
        assert!(
            ["not_json", "wrong_type"].contains(&reason.as_str()),
            "{offset}: {reason}"
        );
    }
    assert_eq!(reason_of(&bad, 105), "not_json");
}

#[test]
fn numbers_out_of_range_are_wrong_type_never_infinity() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let values = vec![
        text(r#"{"order_id": 1, "total": 1e400}"#),
        text(r#"{"order_id": 2, "total": -1e400}"#),
        text(r#"{"order_id": 3, "items": [{"unit_price": 1.8e308}]}"#),
        text(r#"{"order_id": 4, "total": 1.7976931348623157e308}"#),
        text(r#"{"order_id": 5, "total": 12345678901234567890123456789}"#),
        text(r#"{"order_id": 6, "total": 1e-400}"#),
        text(r#"{"order_id": 2147483647, "total": 0}"#),
        text(r#"{"order_id": -2147483648, "total": -0.0}"#),
        text(r#"{"order_id": 99999999999999999999999}"#),
    ];
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    assert_eq!(
        reasons(&bad),
        [
            (100, "wrong_type".into()),
            (101, "wrong_type".into()),
            (102, "wrong_type".into()),
            (108, "wrong_type".into())
        ]
    );
    assert_eq!(offsets(&good), [103, 104, 105, 106, 107]);
    let totals: Vec<f64> = col(&good, "total")
        .as_primitive::<Float64Type>()
        .iter()
        .map(Option::unwrap)
        .collect();
    // Expected values: Rust's own (correctly rounded) parse of the literals.
    assert_eq!(totals[0], f64::MAX);
    assert_eq!(
        totals[1],
        "12345678901234567890123456789".parse::<f64>().unwrap()
    );
    // Below the smallest subnormal a number rounds to zero, as any JSON parser does.
    assert_eq!(totals[2], 0.0);
    assert_eq!(
        i32s(&good, "order_id")[3..],
        [Some(i32::MAX), Some(i32::MIN)]
    );
    assert!(totals[4] == 0.0 && totals[4].is_sign_negative());
}

/// arrow-json alone reads `"123"` as 123, `"NaN"` as NaN and truncates 1.7 to 1 in an int
/// column; the operator quarantines all of these as `wrong_type` instead.
#[test]
fn numbers_are_never_coerced_or_truncated() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let values = vec![
        text(r#"{"order_id": "123"}"#),
        text(r#"{"order_id": 1, "total": "12.5"}"#),
        text(r#"{"order_id": 2, "total": "NaN"}"#),
        text(r#"{"order_id": 1.7}"#),
        text(r#"{"order_id": -0.5}"#),
        text(r#"{"order_id": 15e-1}"#),
        text(r#"{"order_id": 5, "items": [{"quantity": 2.5}]}"#),
        text(r#"{"order_id": 6, "customer_id": 123}"#),
        text(r#"{"order_id": 7, "status": true}"#),
        text(r#"{"order_id": 8, "customer_id": {"id": 1}}"#),
        // Whole numbers written with a fraction or an exponent are exact, so they are kept.
        text(r#"{"order_id": 2.0, "items": [{"quantity": 1e1, "product_id": 1.50e1}]}"#),
        text(r#"{"order_id": 1E+3, "total": 7}"#),
    ];
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    let expected: Vec<(i64, String)> = (100..110).map(|o| (o, "wrong_type".into())).collect();
    assert_eq!(reasons(&bad), expected);
    assert!(
        detail_of(&bad, 100).contains("order_id"),
        "{}",
        detail_of(&bad, 100)
    );
    assert!(
        detail_of(&bad, 101).contains("total"),
        "{}",
        detail_of(&bad, 101)
    );
    assert_eq!(offsets(&good), [110, 111]);
    assert_row_is(
        &good,
        0,
        &json!({"order_id": 2, "items": [{"quantity": 10, "product_id": 15}]}),
        &["order_id", "items"],
    );
    assert_row_is(
        &good,
        1,
        &json!({"order_id": 1000, "total": 7.0}),
        &["order_id", "total"],
    );
}

/// What arrow-json accepts although it is not strict JSON (the operator does not re-validate
/// the syntax of messages that decode): a missing or doubled comma, a raw control character in a
/// string, a leading zero. The values are the ones the writer evidently meant; nothing is lost.
#[test]
fn lenient_syntax_that_arrow_json_accepts() {
    let (mut op, out_schema, q_schema) = orders_parser(&[], OnError::Quarantine);
    let values = vec![
        text(r#"{"order_id": 1 "customer_id": "a"}"#),
        text(r#"{,"order_id": 2,, "customer_id": "b",}"#),
        text("{\"order_id\": 3, \"customer_id\": \"line\nbreak\"}"),
        text(r#"{"order_id": 04, "total": 01.50}"#),
    ];
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    assert_eq!(bad.num_rows(), 0);
    assert_eq!(
        i32s(&good, "order_id"),
        [Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(
        strings(&good, "customer_id"),
        [
            Some("a".into()),
            Some("b".into()),
            Some("line\nbreak".into()),
            None
        ]
    );
    assert_eq!(
        col(&good, "total").as_primitive::<Float64Type>().value(3),
        1.5
    );
}

/// The schema's `timestamp` type (`Timestamp(ms, "UTC")`): RFC 3339 text with or without an
/// offset, or epoch milliseconds. arrow-json alone cannot decode it without arrow's `chrono-tz`.
#[test]
fn the_timestamp_type_decodes_rfc3339_and_epoch_millis() {
    let schema: IndexMap<String, String> = [
        ("id", "int"),
        ("at", "timestamp"),
        ("hist", "list<timestamp>"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut op, out_schema, q_schema) = parser(config(schema, &["at"], OnError::Quarantine));
    assert_eq!(
        out_schema.field_with_name("at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    let texts = [
        "2026-03-01T10:00:00Z",
        "2026-03-01T12:00:00.123+02:00",
        "2026-02-28T23:59:59.999-05:30",
    ];
    let millis = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let mut values: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            text(&format!(
                r#"{{"id": {i}, "at": "{t}", "hist": ["{t}", null]}}"#
            ))
        })
        .collect();
    values.push(text(r#"{"id": 3, "at": 1772359200000}"#));
    values.push(text(r#"{"id": 4, "at": "yesterday"}"#));
    values.push(text(r#"{"id": 5, "at": null}"#));
    let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
    assert_eq!(
        reasons(&bad),
        [(104, "wrong_type".into()), (105, "missing_field".into())]
    );
    let at: Vec<_> = col(&good, "at")
        .as_primitive::<TimestampMillisecondType>()
        .iter()
        .map(Option::unwrap)
        .collect();
    let mut expected: Vec<i64> = texts.iter().map(|t| millis(t)).collect();
    expected.push(1_772_359_200_000);
    assert_eq!(at, expected);
    let hist = col(&good, "hist").as_list::<i32>();
    for (row, t) in texts.iter().enumerate() {
        let h = hist.value(row);
        let h = h.as_primitive::<TimestampMillisecondType>();
        assert_eq!(h.len(), 2);
        assert_eq!(h.value(0), millis(t));
        assert!(h.is_null(1));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. on_error = drop / fail

fn mixed() -> Vec<Option<Vec<u8>>> {
    vec![
        bytes(&order(1, json!([item(1, "a", 1, 2.0)]))),
        text("{broken"),
        None,
        bytes(&order(2, json!([]))),
        text(r#"{"customer_id": "no id"}"#),
    ]
}

#[test]
fn on_error_drop_keeps_the_good_rows_and_emits_nothing_else() {
    let (mut op, out_schema, _) = orders_parser(&["order_id"], OnError::Drop);
    let sent = msgs(mixed());
    let out = run(&mut op, kafka_batch(&sent));
    assert!(out.port("quarantine").is_empty());
    let good = port(&out, 0, &out_schema);
    assert_eq!(offsets(&good), [100, 103]);
    assert_row_is(
        &good,
        0,
        &order(1, json!([item(1, "a", 1, 2.0)])),
        &ORDER_FIELDS,
    );
    assert_row_is(&good, 1, &order(2, json!([])), &ORDER_FIELDS);
    assert_coordinates(&good, &sent);
}

/// What the runtime counts as `engine_records_quarantined_total` and
/// `engine_records_dropped_total`: one per bad record, under the reason it has.
#[test]
fn bad_records_are_tallied_per_reason_in_both_modes() {
    // Per message of `mixed()`: kept, not_json, null_value, kept, missing_field.
    let expected = [("not_json", 1), ("null_value", 1), ("missing_field", 1)];
    let (mut op, _, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    let out = run(&mut op, kafka_batch(&msgs(mixed())));
    let quarantined = port(&out, 1, &q_schema);
    for (reason, n) in expected {
        assert_eq!(out.tallied(Tally::Quarantined, reason), n, "{reason}");
        let rows = reasons(&quarantined)
            .iter()
            .filter(|(_, r)| r == reason)
            .count();
        assert_eq!(rows as u64, n, "quarantine rows of {reason}");
        assert_eq!(out.tallied(Tally::Dropped, reason), 0);
    }

    let (mut op, _, _) = orders_parser(&["order_id"], OnError::Drop);
    let out = run(&mut op, kafka_batch(&msgs(mixed())));
    for (reason, n) in expected {
        assert_eq!(out.tallied(Tally::Dropped, reason), n, "{reason}");
        assert_eq!(out.tallied(Tally::Quarantined, reason), 0);
    }
}

#[test]
fn on_error_fail_returns_an_error_and_emits_nothing() {
    // Driven without the harness, to see that nothing is collected before the error.
    let built = config(orders_schema(), &["order_id"], OnError::Fail)
        .build(&ctx(), &Input::new(kafka_schema()))
        .unwrap();
    let mut op = built.operator;
    let mut out = engine_api::Collector::new(2);
    let err = op
        .process(kafka_batch(&msgs(mixed())), &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Runtime, "{err:?}");
    let msg = err.to_string();
    // The first bad record of the batch (row 1) is named, with its reason.
    assert!(msg.contains("row 1") && msg.contains("not_json"), "{msg}");
    assert!(out.port(0).is_empty() && out.port(1).is_empty());

    // A clean batch goes through.
    let good = vec![bytes(&order(1, json!([])))];
    let mut out = engine_api::Collector::new(2);
    op.process(kafka_batch(&msgs(good)), &mut out).unwrap();
    assert_eq!(
        out.port(0).iter().map(RecordBatch::num_rows).sum::<usize>(),
        1
    );
}

#[test]
fn on_error_parses_from_toml_names() {
    for (name, expected) in [
        ("quarantine", OnError::Quarantine),
        ("drop", OnError::Drop),
        ("fail", OnError::Fail),
    ] {
        let cfg: JsonParseConfig = serde_json::from_value(json!({
            "schema": {"order_id": "int"},
            "on_error": name,
        }))
        .unwrap();
        assert_eq!(cfg.on_error, expected);
        assert_eq!(cfg.value_column, "value");
    }
    let cfg: JsonParseConfig = serde_json::from_value(json!({"schema": {"a": "int"}})).unwrap();
    assert_eq!(cfg.on_error, OnError::Quarantine);
    assert!(
        serde_json::from_value::<JsonParseConfig>(
            json!({"schema": {"a": "int"}, "on_error": "ignore"})
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

fn config_error(r: engine_api::Result<impl Sized>) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        Err(e) => panic!("not a config error: {e:?}"),
        Ok(_) => panic!("expected a config error"),
    }
}

fn build(cfg: JsonParseConfig) -> engine_api::Result<engine_api::Built> {
    cfg.build(&ctx(), &Input::new(kafka_schema()))
}

#[test]
fn configuration_mistakes_are_config_errors_naming_the_culprit() {
    let e = config_error(build(config(
        orders_schema(),
        &["order_idd"],
        OnError::Quarantine,
    )));
    assert!(e.contains("order_idd"), "{e}");

    let mut bad_type = orders_schema();
    bad_type.insert("when".into(), "datetime".into());
    let e = config_error(build(config(bad_type, &[], OnError::Quarantine)));
    assert!(e.contains("when") && e.contains("datetime"), "{e}");

    let mut cfg = config(orders_schema(), &[], OnError::Quarantine);
    cfg.value_column = "payload".into();
    let e = config_error(build(cfg));
    assert!(e.contains("payload"), "{e}");

    let mut cfg = config(orders_schema(), &[], OnError::Quarantine);
    cfg.value_column = "offset".into();
    let e = config_error(build(cfg));
    assert!(e.contains("offset"), "{e}");

    let mut clash = orders_schema();
    clash.insert("partition".into(), "int".into());
    let e = config_error(build(config(clash, &[], OnError::Quarantine)));
    assert!(e.contains("partition"), "{e}");

    let e = config_error(build(config(IndexMap::new(), &[], OnError::Quarantine)));
    assert!(e.contains("no fields"), "{e}");
}

#[test]
fn the_ports_are_declared_in_the_input_mode_and_quarantine_must_be_read() {
    for mode in [OutputMode::Append, OutputMode::Update] {
        for (on_error, must_read) in [
            (OnError::Quarantine, Some("or set on_error = \"drop\"")),
            // Nothing ever goes to quarantine then: it may stay unread.
            (OnError::Drop, None),
            (OnError::Fail, None),
        ] {
            let built = config(orders_schema(), &[], on_error)
                .build(&ctx(), &Input::new(kafka_schema()).with_mode(mode))
                .unwrap();
            let ports: Vec<_> = built
                .ports
                .iter()
                .map(|p| (p.name.as_str(), p.mode, p.must_read.as_deref()))
                .collect();
            assert_eq!(
                ports,
                [("out", mode, None), ("quarantine", mode, must_read)],
                "{on_error:?}"
            );
        }
    }
}

/// Several batches of good and bad records with triggers between them, the wall-clock
/// `ingested_at` left out of the comparison.
fn compliance_script() -> (Script, Vec<Msg>) {
    let mut script = Script::new(kafka_schema()).wall_clock_column("quarantine", "ingested_at");
    let mut all = Vec::new();
    for round in 0..4i64 {
        let mut values: Vec<Option<Vec<u8>>> = (0..6)
            .map(|i| bytes(&order(round * 10 + i, json!([item(i, "x", 1, 0.5)]))))
            .collect();
        values[round as usize] = text("{broken");
        values[5] = if round % 2 == 0 {
            None
        } else {
            text(r#"{"customer_id": "no id"}"#)
        };
        let sent: Vec<Msg> = msgs(values)
            .into_iter()
            .map(|mut m| {
                m.offset += round * 100;
                m
            })
            .collect();
        script = script.batch(kafka_batch(&sent));
        if round % 2 == 1 {
            script = script.barrier();
        }
        all.extend(sent);
    }
    (script.barrier().end(), all)
}

#[test]
fn json_parse_keeps_the_operator_contract() {
    for on_error in [OnError::Quarantine, OnError::Drop] {
        let (script, sent) = compliance_script();
        let run = check_operator(
            || build(config(orders_schema(), &["order_id"], on_error)),
            &script,
        );
        let all = run.all();
        let good = all.concat("out");
        let bad = all.concat("quarantine");
        // Per round: one broken message, and a tombstone or a record without its order_id.
        assert_eq!(good.num_rows(), 4 * 4, "{on_error:?}");
        assert_coordinates(&good, &sent);
        match on_error {
            OnError::Quarantine => {
                assert_eq!(bad.num_rows(), 4 * 2);
                assert_coordinates(&bad, &sent);
                let mut r: Vec<String> = reasons(&bad).into_iter().map(|(_, r)| r).collect();
                r.sort();
                assert_eq!(
                    r,
                    [
                        "missing_field",
                        "missing_field",
                        "not_json",
                        "not_json",
                        "not_json",
                        "not_json",
                        "null_value",
                        "null_value"
                    ]
                );
            }
            _ => assert_eq!(bad.num_rows(), 0),
        }
        // Rows come out with the batch that brought them, never at triggers.
        for (i, step) in run.steps.iter().enumerate() {
            if !matches!(
                script.steps().get(i),
                Some(engine_api::testing::Step::Batch(_))
            ) {
                assert!(step.is_empty(), "step {i}");
            }
        }
    }
}

#[test]
fn many_batches_are_independent() {
    let (mut op, out_schema, q_schema) = orders_parser(&["order_id"], OnError::Quarantine);
    for round in 0..3 {
        let orders: Vec<Value> = (0..50)
            .map(|i| order(round * 100 + i, json!([item(i, "x", 1, 0.5)])))
            .collect();
        let mut values: Vec<_> = orders.iter().map(bytes).collect();
        values[10] = text("{");
        let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values);
        assert_eq!(reasons(&bad), [(110, "not_json".into())]);
        assert_eq!(good.num_rows(), 49);
        let mut row = 0;
        for (i, o) in orders.iter().enumerate() {
            if i != 10 {
                assert_row_is(&good, row, o, &ORDER_FIELDS);
                row += 1;
            }
        }
        let ids = col(&good, "order_id").as_primitive::<Int32Type>();
        assert_eq!(ids.null_count(), 0);
    }
    let _ = StringArray::from(Vec::<&str>::new()).len();
}
