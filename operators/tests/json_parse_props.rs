//! Property test: `json_parse` never panics, and every input row comes out exactly once, on the
//! main port or on `quarantine`, whatever the bytes.
//!
//! Each case is one micro-batch mixing good orders (valid against `pipelines/orders.toml`'s
//! schema, values known to the test), tombstones, arbitrary bytes, and hostile JSON built from
//! the orders schema: wrong types in every field, integer and float extremes (i32/i64/u64
//! bounds, 1e400, -0, subnormals), huge strings, unicode, lone surrogates, raw control
//! characters, deep nesting, duplicate keys, a BOM, truncation. The batch goes through the shipped
//! parse node and through one with every field required and value rules on the nested list.
//!
//! Checked per batch: no panic and no error; each offset on exactly one port (and only offsets
//! that were sent); each good order on the main port with its values; each quarantined row
//! carrying its raw value and a known reason.
//!
//! Differential: the schema-directed fast decoder (`decoder = "fast"`, the default) and arrow-json
//! alone (`decoder = "arrow"`) give identical batches on both ports for the same rows, on the
//! orders schema and on one with every other type the schema language has.
//!
//! The number of cases is 128, or `PROPTEST_CASES`.

mod common;

use arrow::array::RecordBatch;
use base64::Engine as _;
use common::*;
use engine_api::testing::{Script, check_operator};
use engine_api::{Input, OperatorConfig};
use operators::json_parse::{Decoder, JsonParseConfig, reason};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Where the rows of a run went (`out`, or the quarantine reason): the generators must reach
/// every path, or the property says little.
type Outcomes = Mutex<BTreeMap<String, usize>>;

fn count(outcomes: &Outcomes, outcome: &str, n: usize) {
    *outcomes
        .lock()
        .unwrap()
        .entry(outcome.to_string())
        .or_default() += n;
}

/// One Kafka value of a batch.
#[derive(Debug, Clone)]
enum Row {
    /// A valid order: it must come out on the main port with exactly these values.
    Good(Value),
    /// Anything: it must come out once, on either port.
    Hostile(Vec<u8>),
    /// A null Kafka value.
    Tombstone,
}

impl Row {
    fn value(&self) -> Option<Vec<u8>> {
        match self {
            Row::Good(v) => Some(serde_json::to_vec(v).unwrap()),
            Row::Hostile(b) => Some(b.clone()),
            Row::Tombstone => None,
        }
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Number texts at and beyond the edges of i32, i64, u64 and f64, and forms JSON forbids.
fn extreme_numbers() -> Vec<String> {
    let mut v = s(&[
        "0",
        "-0",
        "0.0",
        "-0.0",
        "0e0",
        "-0e-0",
        "1.5",
        "2.0",
        "1e3",
        "1E+2",
        "15e-1",
        "1e400",
        "-1e400",
        "1e-400",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1.7976931348623159e308",
        "9007199254740993",
        "9007199254740993.0",
        "123456789012345678901234567890",
        "1e99999999999999999999",
        // Not JSON, but written by some producers.
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "0x10",
        "01",
        "+1",
        ".5",
        "1.",
        "1e",
        "--1",
    ]);
    for x in [
        i128::from(i32::MIN),
        i128::from(i32::MAX),
        i128::from(i64::MIN),
        i128::from(i64::MAX),
        i128::from(u64::MAX),
    ] {
        for d in [-1, 0, 1] {
            v.push((x + d).to_string());
        }
    }
    v.push(format!("1{}", "0".repeat(400)));
    v
}

/// String texts (with their quotes) that are hard on a decoder.
fn odd_strings() -> Vec<String> {
    s(&[
        r#""""#,
        r#""\u0000""#,
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        r#""\ud83d\ude00""#,
        r#""\x""#,
        r#""\""#,
        "\"raw\nnewline\"",
        "\"raw\ttab\"",
        "\"\u{feff}bom inside\"",
        "\"é 中文 🎉 \u{202e}rtl\"",
        r#""2026-03-01T10:00:00Z""#,
        r#""12""#,
        r#""NaN""#,
        r#""1e400""#,
        r#""true""#,
        r#""null""#,
    ])
}

/// Any JSON value as text, nested a little.
fn any_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        prop::sample::select(extreme_numbers()),
        prop::sample::select(odd_strings()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        any::<String>().prop_map(|v| serde_json::to_string(&v).unwrap()),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..6).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Nesting far beyond serde_json's limit of 128, as arrays or objects.
fn deep() -> impl Strategy<Value = String> {
    (1usize..3000, any::<bool>()).prop_map(|(n, arrays)| {
        if arrays {
            format!("{}{}", "[".repeat(n), "]".repeat(n))
        } else {
            format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n))
        }
    })
}

/// A huge string value (up to 256 KiB), of one repeated character.
fn huge_string() -> impl Strategy<Value = String> {
    (1usize..262_144, any::<char>())
        .prop_map(|(n, c)| serde_json::to_string(&c.to_string().repeat(n / c.len_utf8())).unwrap())
}

/// A value for a field of type `ty` (`int`, `double`, `string`): right, extreme or wrong.
fn field_value(ty: &'static str) -> BoxedStrategy<String> {
    let right = match ty {
        "int" => any::<i32>().prop_map(|v| v.to_string()).boxed(),
        "double" => any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| serde_json::to_string(&v).unwrap())
            .boxed(),
        "long" => any::<i64>().prop_map(|v| v.to_string()).boxed(),
        "boolean" => any::<bool>().prop_map(|v| v.to_string()).boxed(),
        "timestamp" => prop_oneof![
            timestamp_text().prop_map(|t| serde_json::to_string(&t).unwrap()),
            any::<i64>().prop_map(|v| v.to_string()),
        ]
        .boxed(),
        "date" => (-800_000i64..800_000, 0usize..3)
            .prop_map(|(days, form)| {
                let d = chrono::DateTime::from_timestamp(days * 86_400, 0).unwrap();
                let text = match form {
                    0 => d.format("%Y-%m-%d").to_string(),
                    1 => d.format(" %Y-%m-%d ").to_string(),
                    _ => d.format("%Y-%m-%dT00:00:00").to_string(),
                };
                serde_json::to_string(&text).unwrap()
            })
            .boxed(),
        _ => any::<String>()
            .prop_map(|v| serde_json::to_string(&v).unwrap())
            .boxed(),
    };
    prop_oneof![
        4 => right,
        2 => prop::sample::select(extreme_numbers()),
        2 => prop::sample::select(odd_strings()),
        2 => any_json(),
        1 => huge_string(),
        1 => deep(),
    ]
    .boxed()
}

/// A JSON object with some of `fields` (name, value strategy), some twice (duplicate keys),
/// extra fields, in any order.
fn object(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let present: Vec<BoxedStrategy<Vec<(String, String)>>> = fields
        .into_iter()
        .map(|(name, value)| {
            prop::collection::vec(value, 0..3)
                .prop_map(move |vs| vs.into_iter().map(|v| (name.to_string(), v)).collect())
                .boxed()
        })
        .collect();
    let extra = prop::collection::vec(("[a-z_]{1,10}|\\PC{1,6}", any_json()), 0..3);
    (present, extra)
        .prop_map(|(present, extra)| present.into_iter().flatten().chain(extra).collect())
        .prop_flat_map(|pairs: Vec<(String, String)>| Just(pairs).prop_shuffle())
        .prop_map(|pairs| {
            let fields: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                .collect();
            format!("{{{}}}", fields.join(", "))
        })
        .boxed()
}

/// An `items` value: a list of item objects, or something else.
fn items_value() -> BoxedStrategy<String> {
    let item = object(vec![
        ("product_id", field_value("int")),
        ("product_name", field_value("string")),
        ("quantity", field_value("int")),
        ("unit_price", field_value("double")),
        ("subtotal", field_value("double")),
    ]);
    let element = prop_oneof![6 => item, 1 => Just("null".to_string()), 1 => any_json()];
    prop_oneof![
        4 => prop::collection::vec(element, 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => any_json(),
        1 => deep(),
    ]
    .boxed()
}

/// An order built from the orders schema with hostile values, then maybe wrapped in a BOM and
/// whitespace, or cut short.
fn hostile_order() -> impl Strategy<Value = Vec<u8>> {
    let order = object(vec![
        ("order_id", field_value("int")),
        ("customer_id", field_value("string")),
        ("timestamp", field_value("string")),
        ("items", items_value()),
        ("total", field_value("double")),
        ("status", field_value("string")),
    ]);
    (
        order,
        any::<bool>(),
        prop::sample::select(vec!["", " ", "\n", "\t \r\n"]),
        prop::option::weighted(0.15, any::<prop::sample::Index>()),
    )
        .prop_map(|(text, bom, ws, cut)| {
            let mut b = Vec::new();
            if bom {
                b.extend_from_slice(b"\xEF\xBB\xBF");
            }
            b.extend_from_slice(ws.as_bytes());
            b.extend_from_slice(text.as_bytes());
            b.extend_from_slice(ws.as_bytes());
            if let Some(i) = cut {
                b.truncate(i.index(b.len()));
            }
            b
        })
}

/// Arbitrary bytes, or bytes from JSON's own alphabet (which reach deeper into the decoder),
/// often framed as an object so they get past the first check.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b"{}[]\":,.-+eE0123456789 \n\\truefalsnu_id".to_vec();
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(prop::sample::select(alphabet), 0..120),
    ];
    (bytes, any::<bool>()).prop_map(|(mut b, framed)| {
        if framed {
            b.insert(0, b'{');
            b.push(b'}');
        }
        b
    })
}

/// A time as producers write them: RFC 3339 in UTC, Python's `asctime`, an offset with
/// nanoseconds, no zone.
fn timestamp_text() -> impl Strategy<Value = String> {
    (0i64..4_102_444_800_000, 0usize..5).prop_map(|(ms, form)| {
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        match form {
            0 => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            1 => t.format("%Y-%m-%d %H:%M:%S,%3f").to_string(),
            2 => t.format("%Y-%m-%dT%H:%M:%S%.9f+0000").to_string(),
            3 => t.format("%Y-%m-%dT%H:%M:%S%.3f+02:00").to_string(),
            _ => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        }
    })
}

/// A valid order: every value fits its type, the timestamp is a time.
fn good_order() -> impl Strategy<Value = Value> {
    let item = (
        any::<i32>(),
        any::<String>(),
        any::<i32>(),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    )
        .prop_map(|(p, n, q, u, st)| {
            json!({"product_id": p, "product_name": n, "quantity": q, "unit_price": u, "subtotal": st})
        });
    let timestamp = timestamp_text();
    (
        prop::option::of(any::<i32>()),
        prop::option::of(any::<String>()),
        timestamp,
        prop::option::of(prop::collection::vec(item, 0..4)),
        prop::option::of(any::<f64>().prop_filter("finite", |v| v.is_finite())),
        prop::option::of("[a-z]{0,10}"),
    )
        .prop_map(|(id, customer, ts, items, total, status)| {
            json!({"order_id": id, "customer_id": customer, "timestamp": ts, "items": items,
                   "total": total, "status": status})
        })
}

fn row() -> impl Strategy<Value = Row> {
    prop_oneof![
        4 => good_order().prop_map(Row::Good),
        4 => hostile_order().prop_map(Row::Hostile),
        2 => hostile_bytes().prop_map(Row::Hostile),
        1 => any_json().prop_map(|v| Row::Hostile(v.into_bytes())),
        1 => prop::sample::select(vec!["", " ", "\r\n\t ", "\u{feff}", "\u{feff} \n"])
            .prop_map(|v| Row::Hostile(v.as_bytes().to_vec())),
        1 => Just(Row::Tombstone),
    ]
}

/// The orders schema with every field required and value rules on the top level and inside
/// the items list: the paths the shipped pipeline does not take.
fn strict_config() -> JsonParseConfig {
    let mut cfg = shipped_parse_config("orders.toml");
    cfg.required = ORDER_FIELDS.iter().map(|f| f.to_string()).collect();
    cfg.rules = s(&[
        "timestamp is timestamp",
        "total >= 0",
        "items.quantity > 0",
        "items.subtotal >= 0 and items.unit_price between 0 and 1e9",
        "status in ('paid', 'shipped')",
    ]);
    cfg
}

/// Runs one batch through `cfg`. `all_good_kept`: the good orders must be on the main port.
/// The same batch, between two triggers, also goes through the operator-contract check.
fn check(cfg: JsonParseConfig, rows: &[Row], all_good_kept: bool, outcomes: &Outcomes) {
    let batch = kafka_batch(&msgs(rows.iter().map(Row::value).collect()));
    let script = Script::new(kafka_schema())
        .wall_clock_column("quarantine", "ingested_at")
        .batch(batch)
        .barrier()
        .end();
    let input = Input::new(kafka_schema());
    check_operator(|| cfg.clone().build(&ctx(), &input), &script);
    let (mut op, out_schema, q_schema) = init_parser(cfg);
    // parse_all: no panic, no error, each offset once on one port, coordinates carried.
    let (good, bad, sent) = parse_all(
        &mut op,
        &out_schema,
        &q_schema,
        rows.iter().map(Row::value).collect(),
    );
    let good_offsets = offsets(&good);
    count(outcomes, "out", good_offsets.len());
    for (_, why) in reasons(&bad) {
        count(outcomes, &why, 1);
    }
    if all_good_kept {
        for (m, r) in sent.iter().zip(rows) {
            if let Row::Good(v) = r {
                let Some(at) = good_offsets.iter().position(|o| *o == m.offset) else {
                    panic!("a good order was quarantined: {v}\n{:?}", reasons(&bad));
                };
                assert_row_is(&good, at, v, &ORDER_FIELDS);
            }
        }
    }
    check_quarantine(&bad, &sent);
}

/// Every quarantine reason json_parse gives.
const REASONS: [&str; 7] = [
    reason::NULL_VALUE,
    reason::EMPTY_VALUE,
    reason::NOT_JSON,
    reason::NOT_OBJECT,
    reason::WRONG_TYPE,
    reason::MISSING_FIELD,
    reason::RULE_BROKEN,
];

/// Each quarantined row has its raw value (text, or base64 when not UTF-8) and a known reason.
fn check_quarantine(bad: &RecordBatch, sent: &[Msg]) {
    let known = REASONS;
    let raw = strings(bad, "raw_value");
    let enc = strings(bad, "raw_encoding");
    for (i, (offset, why)) in reasons(bad).into_iter().enumerate() {
        assert!(known.contains(&why.as_str()), "unknown reason {why}");
        let m = sent.iter().find(|m| m.offset == offset).unwrap();
        match &m.value {
            None => assert_eq!(
                (raw[i].as_deref(), why.as_str()),
                (None, reason::NULL_VALUE)
            ),
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => {
                    assert_eq!(raw[i].as_deref(), Some(text));
                    assert_eq!(enc[i].as_deref(), Some("utf8"));
                }
                Err(_) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                    assert_eq!(raw[i].as_deref(), Some(b64.as_str()));
                    assert_eq!(enc[i].as_deref(), Some("base64"));
                }
            },
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Failures print the smallest batch found; nothing is written into the source tree.
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    })
}

#[test]
fn every_row_comes_out_once_and_nothing_panics() {
    let outcomes = Outcomes::default();
    runner()
        .run(&prop::collection::vec(row(), 1..40), |rows| {
            check(shipped_parse_config("orders.toml"), &rows, true, &outcomes);
            check(strict_config(), &rows, false, &outcomes);
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    eprintln!("rows per outcome: {outcomes:?}");
    if cases() >= 64 {
        for outcome in std::iter::once("out").chain(REASONS) {
            assert!(
                outcomes.get(outcome).copied().unwrap_or(0) >= 5,
                "the generators rarely reach `{outcome}`: {outcomes:?}"
            );
        }
    }
}

#[test]
fn arbitrary_bytes_come_out_once_and_nothing_panics() {
    let outcomes = Outcomes::default();
    runner()
        .run(&prop::collection::vec(hostile_bytes(), 1..64), |values| {
            let rows: Vec<Row> = values.into_iter().map(Row::Hostile).collect();
            check(shipped_parse_config("orders.toml"), &rows, true, &outcomes);
            Ok(())
        })
        .unwrap();
}

/// A schema with every other type of the schema language, nested.
fn all_types_config() -> JsonParseConfig {
    let mut cfg = shipped_parse_config("orders.toml");
    cfg.schema = [
        ("flag", "boolean"),
        ("count", "long"),
        ("at", "timestamp"),
        ("day", "date"),
        ("name", "string"),
        (
            "nested",
            "struct<x: int, tags: list<string>, inner: struct<w: double, on: boolean>>",
        ),
        ("matrix", "list<list<long>>"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.required = Vec::new();
    cfg.rules = Vec::new();
    cfg
}

/// A value for `all_types_config`'s schema: right, extreme or wrong.
fn all_types_row() -> impl Strategy<Value = Vec<u8>> {
    let inner = object(vec![
        ("w", field_value("double")),
        ("on", field_value("boolean")),
    ]);
    let tags = prop_oneof![
        4 => prop::collection::vec(field_value("string"), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
        1 => any_json(),
    ];
    let nested = object(vec![
        ("x", field_value("int")),
        ("tags", tags.boxed()),
        (
            "inner",
            prop_oneof![4 => inner, 1 => Just("null".to_string()), 1 => any_json()].boxed(),
        ),
    ]);
    let row_of_longs =
        prop::collection::vec(field_value("long"), 0..4).prop_map(|v| format!("[{}]", v.join(",")));
    let matrix = prop_oneof![
        4 => prop::collection::vec(row_of_longs, 0..3).prop_map(|v| format!("[{}]", v.join(","))),
        1 => any_json(),
    ];
    object(vec![
        ("flag", field_value("boolean")),
        ("count", field_value("long")),
        ("at", field_value("timestamp")),
        ("day", field_value("date")),
        ("name", field_value("string")),
        ("nested", prop_oneof![4 => nested, 1 => any_json()].boxed()),
        ("matrix", matrix.boxed()),
    ])
    .prop_map(String::into_bytes)
}

/// Both ports of `cfg` over `values`, with the fast decoder and with arrow-json alone, must be
/// identical (but for the quarantine's wall-clock `ingested_at`).
fn same_with_both_decoders(cfg: &JsonParseConfig, values: Vec<Option<Vec<u8>>>) -> (usize, usize) {
    let run = |decoder| {
        let mut cfg = cfg.clone();
        cfg.decoder = decoder;
        let (mut op, out_schema, q_schema) = init_parser(cfg);
        let (good, bad, _) = parse_all(&mut op, &out_schema, &q_schema, values.clone());
        let keep: Vec<usize> = (0..bad.num_columns())
            .filter(|i| bad.schema().field(*i).name() != "ingested_at")
            .collect();
        (good, bad.project(&keep).unwrap())
    };
    let (fast_good, fast_bad) = run(Decoder::Fast);
    let (arrow_good, arrow_bad) = run(Decoder::Arrow);
    assert_eq!(
        fast_good, arrow_good,
        "the fast decoder kept other rows or values"
    );
    if fast_bad != arrow_bad {
        let show = |b: &RecordBatch| {
            (
                offsets(b),
                strings(b, "reason"),
                strings(b, "detail"),
                strings(b, "raw_value"),
            )
        };
        panic!(
            "the fast decoder quarantined otherwise:\n fast  {:?}\n arrow {:?}",
            show(&fast_bad),
            show(&arrow_bad)
        );
    }
    (fast_good.num_rows(), fast_bad.num_rows())
}

#[test]
fn the_fast_decoder_gives_what_arrow_json_gives() {
    let totals = std::cell::Cell::new((0, 0));
    let tally = |(k, q): (usize, usize)| {
        let (kept, quarantined) = totals.get();
        totals.set((kept + k, quarantined + q));
    };
    runner()
        .run(&prop::collection::vec(row(), 1..40), |rows| {
            let values: Vec<_> = rows.iter().map(Row::value).collect();
            tally(same_with_both_decoders(
                &shipped_parse_config("orders.toml"),
                values.clone(),
            ));
            tally(same_with_both_decoders(&strict_config(), values));
            Ok(())
        })
        .unwrap();
    runner()
        .run(&prop::collection::vec(all_types_row(), 1..40), |rows| {
            let values = rows.into_iter().map(Some).collect();
            tally(same_with_both_decoders(&all_types_config(), values));
            Ok(())
        })
        .unwrap();
    let (kept, quarantined) = totals.get();
    eprintln!("rows kept {kept}, quarantined {quarantined}");
    if cases() >= 64 {
        assert!(
            kept >= 500 && quarantined >= 500,
            "kept {kept}, quarantined {quarantined}"
        );
    }
}
