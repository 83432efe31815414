//! Helpers shared by the operator tests: a Kafka-shaped input batch, a build context, operators
//! driven through `engine_api::testing::Harness` as the runtime drives them, and a comparison of
//! decoded Arrow values against the JSON they came from.
#![allow(dead_code)]

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{
    DataType, Float64Type, Int32Type, Int64Type, SchemaRef, TimestampMillisecondType,
};
use engine_api::testing::{Harness, Output, build_context};
use engine_api::{BuildContext, Input, OperatorConfig, PartitionId};
use operators::json_parse::JsonParseConfig;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

pub fn ctx() -> BuildContext {
    build_context("node")
}

/// Builds `cfg` against `input` (append mode, no event time) in a harness that checks the
/// batches it is given against `input`.
pub fn harness(cfg: impl OperatorConfig, input: &SchemaRef) -> Harness {
    let built = cfg.build(&ctx(), &Input::new(input.clone())).unwrap();
    Harness::new(built).with_input(input.clone())
}

/// The Kafka partition the test batches come from.
pub fn partition() -> PartitionId {
    PartitionId::kafka(TOPIC, 0)
}

/// The Kafka source's schema.
pub fn kafka_schema() -> SchemaRef {
    engine_api::kafka_record_schema()
}

/// One Kafka record. Coordinates are derived from the offset so each test can recompute them.
#[derive(Debug, Clone)]
pub struct Msg {
    pub offset: i64,
    pub value: Option<Vec<u8>>,
}

impl Msg {
    pub fn partition(&self) -> i32 {
        (self.offset % 3) as i32
    }
    pub fn timestamp(&self) -> Option<i64> {
        (self.offset % 5 != 4).then_some(1_700_000_000_000 + self.offset * 1000)
    }
    pub fn key(&self) -> Option<String> {
        (self.offset % 4 != 3).then(|| format!("key-{}", self.offset))
    }
}

pub const TOPIC: &str = "commandes-json";

/// The top-level fields of the course's orders, as in `pipelines/orders.toml`.
pub const ORDER_FIELDS: [&str; 6] = [
    "order_id",
    "customer_id",
    "timestamp",
    "items",
    "total",
    "status",
];

/// Messages at offsets 100, 101, ... holding `values`.
pub fn msgs(values: Vec<Option<Vec<u8>>>) -> Vec<Msg> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Msg {
            offset: 100 + i as i64,
            value,
        })
        .collect()
}

pub fn kafka_batch(msgs: &[Msg]) -> RecordBatch {
    RecordBatch::try_new(
        kafka_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(msgs.iter().map(|_| TOPIC))) as ArrayRef,
            Arc::new(Int32Array::from_iter_values(
                msgs.iter().map(Msg::partition),
            )),
            Arc::new(Int64Array::from_iter_values(msgs.iter().map(|m| m.offset))),
            Arc::new(
                TimestampMillisecondArray::from_iter(msgs.iter().map(Msg::timestamp))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter(msgs.iter().map(Msg::key))),
            Arc::new(BinaryArray::from_iter(
                msgs.iter().map(|m| m.value.as_deref()),
            )),
        ],
    )
    .unwrap()
}

/// Runs one batch through a built operator; returns what it emitted.
pub fn run(op: &mut Harness, batch: RecordBatch) -> Output {
    op.process(batch).unwrap()
}

/// Everything emitted on port number `port`, as one batch of `schema`.
pub fn port(out: &Output, port: usize, schema: &SchemaRef) -> RecordBatch {
    concat_batches(schema, &out.ports()[port].batches).unwrap()
}

pub fn col<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column `{name}` in {:?}", batch.schema()))
}

pub fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col(batch, name)
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

pub fn i64s(batch: &RecordBatch, name: &str) -> Vec<i64> {
    col(batch, name)
        .as_primitive::<Int64Type>()
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

pub fn i32s(batch: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    col(batch, name)
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

pub fn offsets(batch: &RecordBatch) -> Vec<i64> {
    i64s(batch, "offset")
}

/// Asserts that the Kafka coordinates of every output row are those of the message at its offset.
pub fn assert_coordinates(batch: &RecordBatch, sent: &[Msg]) {
    let partitions = i32s(batch, "partition");
    let keys = strings(batch, "key");
    let topics = strings(batch, "topic");
    let ts: Vec<Option<i64>> = col(batch, "kafka_timestamp")
        .as_primitive::<TimestampMillisecondType>()
        .iter()
        .collect();
    for (row, offset) in offsets(batch).into_iter().enumerate() {
        let m = sent
            .iter()
            .find(|m| m.offset == offset)
            .unwrap_or_else(|| panic!("offset {offset} was not sent"));
        assert_eq!(topics[row].as_deref(), Some(TOPIC));
        assert_eq!(
            partitions[row],
            Some(m.partition()),
            "partition of {offset}"
        );
        assert_eq!(ts[row], m.timestamp(), "kafka_timestamp of {offset}");
        assert_eq!(keys[row], m.key(), "key of {offset}");
    }
}

/// Asserts that `array[row]` holds exactly the JSON value `json` (missing or null: a null).
pub fn assert_json_eq(array: &dyn Array, row: usize, json: &Value, path: &str) {
    if json.is_null() {
        assert!(array.is_null(row), "{path}: expected null, got a value");
        return;
    }
    assert!(array.is_valid(row), "{path}: expected {json}, got null");
    match array.data_type() {
        DataType::Int32 => assert_eq!(
            i64::from(array.as_primitive::<Int32Type>().value(row)),
            json.as_i64()
                .unwrap_or_else(|| panic!("{path}: {json} is not an integer")),
            "{path}"
        ),
        DataType::Int64 => assert_eq!(
            array.as_primitive::<Int64Type>().value(row),
            json.as_i64().unwrap(),
            "{path}"
        ),
        DataType::Float64 => assert_eq!(
            array.as_primitive::<Float64Type>().value(row),
            json.as_f64().unwrap(),
            "{path}"
        ),
        DataType::Utf8 => assert_eq!(
            array.as_string::<i32>().value(row),
            json.as_str().unwrap(),
            "{path}"
        ),
        DataType::List(_) => {
            let items = json.as_array().unwrap();
            let list = array.as_list::<i32>().value(row);
            assert_eq!(list.len(), items.len(), "{path}: list length");
            for (i, item) in items.iter().enumerate() {
                assert_json_eq(list.as_ref(), i, item, &format!("{path}[{i}]"));
            }
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            for (f, child) in fields.iter().zip(s.columns()) {
                let v = json.get(f.name()).unwrap_or(&Value::Null);
                assert_json_eq(child.as_ref(), row, v, &format!("{path}.{}", f.name()));
            }
        }
        other => panic!("{path}: no comparison for {other}"),
    }
}

/// Asserts that row `row` of `batch` holds the fields of the JSON object `json`, for every field
/// of `fields` (the parse schema).
pub fn assert_row_is(batch: &RecordBatch, row: usize, json: &Value, fields: &[&str]) {
    for name in fields {
        let v = json.get(*name).unwrap_or(&Value::Null);
        assert_json_eq(
            col(batch, name).as_ref(),
            row,
            v,
            &format!("row {row} `{name}`"),
        );
    }
}

/// Runs `values` through `op`; returns (out, quarantine, the messages sent) after checking that
/// every message lands on exactly one port.
pub fn parse_all(
    op: &mut Harness,
    out_schema: &SchemaRef,
    q_schema: &SchemaRef,
    values: Vec<Option<Vec<u8>>>,
) -> (RecordBatch, RecordBatch, Vec<Msg>) {
    let sent = msgs(values);
    let collected = run(op, kafka_batch(&sent));
    let good = port(&collected, 0, out_schema);
    let bad = port(&collected, 1, q_schema);
    assert_eq!(good.schema(), *out_schema);
    assert_eq!(bad.schema(), *q_schema);
    let g: BTreeSet<i64> = offsets(&good).into_iter().collect();
    let b: BTreeSet<i64> = offsets(&bad).into_iter().collect();
    assert_eq!(g.len(), good.num_rows(), "an offset twice on the out port");
    assert_eq!(
        b.len(),
        bad.num_rows(),
        "an offset twice on the quarantine port"
    );
    assert!(
        g.is_disjoint(&b),
        "an offset on both ports: {:?}",
        g.intersection(&b)
    );
    assert_eq!(
        good.num_rows() + bad.num_rows(),
        sent.len(),
        "a message was lost"
    );
    assert_coordinates(&good, &sent);
    assert_coordinates(&bad, &sent);
    (good, bad, sent)
}

/// The quarantine reason of each offset.
pub fn reasons(bad: &RecordBatch) -> Vec<(i64, String)> {
    offsets(bad)
        .into_iter()
        .zip(strings(bad, "reason"))
        .map(|(o, r)| (o, r.unwrap()))
        .collect()
}

/// The `[nodes.parse]` table of a shipped pipeline (`pipelines/<file>`), as its `json_parse`
/// config: tests that use it follow the file, so they check the rules the pipeline really ships.
pub fn shipped_parse_config(file: &str) -> JsonParseConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut parse = doc["nodes"]["parse"]
        .as_table()
        .unwrap_or_else(|| panic!("{file} has no [nodes.parse]"))
        .clone();
    assert_eq!(
        parse
            .remove("type")
            .and_then(|t| t.as_str().map(str::to_string)),
        Some("json_parse".to_string()),
        "{file}: [nodes.parse] is a json_parse"
    );
    // The runtime's keys, which it strips before the operator sees its config.
    parse.remove("inputs");
    parse.remove("event_time");
    assert!(
        !toml::to_string(&parse).unwrap().contains("${"),
        "{file}: [nodes.parse] uses environment variables, which this helper does not expand"
    );
    JsonParseConfig::deserialize(toml::Value::Table(parse))
        .unwrap_or_else(|e| panic!("{file}: [nodes.parse]: {e}"))
}

/// The `event_time` a shipped pipeline declares on its parse node: (column, lateness).
pub fn shipped_event_time(file: &str) -> Option<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines")
        .join(file);
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let e = doc["nodes"]["parse"].get("event_time")?;
    Some((
        e["column"].as_str().unwrap().to_string(),
        e.get("lateness")
            .map_or("2m", |l| l.as_str().unwrap())
            .to_string(),
    ))
}

/// A built parser over Kafka records, with its output schemas (out, quarantine).
pub fn init_parser(cfg: JsonParseConfig) -> (Harness, SchemaRef, SchemaRef) {
    let built = cfg.build(&ctx(), &Input::new(kafka_schema())).unwrap();
    let names: Vec<&str> = built.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["out", "quarantine"]);
    let (out, q) = (built.ports[0].schema.clone(), built.ports[1].schema.clone());
    (Harness::new(built).with_input(kafka_schema()), out, q)
}
