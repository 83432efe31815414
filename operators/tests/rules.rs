//! `json_parse` with `rules`: records that break a rule go to the quarantine port with reason
//! `rule_broken`. Whether a record breaks a rule is decided in the test, in plain Rust, from the
//! values it wrote into the JSON.

mod common;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, SchemaRef};
use common::*;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{ErrorKind, Input, OperatorConfig};
use indexmap::IndexMap;
use operators::json_parse::{JsonParseConfig, OnError};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const RULES: [&str; 5] = [
    "total >= 0",
    "items.quantity > 0",
    "level in ('A', 'B')",
    "x between 0 and 100",
    "timestamp is timestamp",
];

fn schema() -> IndexMap<String, String> {
    [
        ("id", "int"),
        ("timestamp", "string"),
        ("items", "list<struct<product_id: int, quantity: int>>"),
        ("total", "double"),
        ("level", "string"),
        ("x", "double"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(rules: &[&str], required: &[&str], on_error: OnError) -> JsonParseConfig {
    JsonParseConfig {
        value_column: "value".into(),
        schema: schema(),
        required: required.iter().map(|s| s.to_string()).collect(),
        rules: rules.iter().map(|s| s.to_string()).collect(),
        on_error,
        decoder: Default::default(),
    }
}

fn parser(cfg: JsonParseConfig) -> (Harness, SchemaRef, SchemaRef) {
    init_parser(cfg)
}

fn build(cfg: JsonParseConfig) -> engine_api::Result<engine_api::Built> {
    cfg.build(&ctx(), &Input::new(kafka_schema()))
}

fn config_error<T>(r: engine_api::Result<T>) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        Err(e) => panic!("expected a config error, got {e:?}"),
        Ok(_) => panic!("expected a config error, got Ok"),
    }
}

/// One record, as the test writes it.
#[derive(Debug, Clone)]
struct Rec {
    id: i64,
    timestamp: Option<(String, bool)>,
    /// Quantities of the items; `None` in the list is a null element (not an item with a null
    /// quantity, which is `Some(None)`).
    items: Option<Vec<Option<Option<i64>>>>,
    total: Option<f64>,
    level: Option<&'static str>,
    x: Option<f64>,
}

impl Rec {
    fn json(&self) -> Value {
        let mut v = json!({ "id": self.id });
        if let Some((t, _)) = &self.timestamp {
            v["timestamp"] = json!(t);
        }
        v["items"] = match &self.items {
            None => Value::Null,
            Some(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, q)| match q {
                        None => Value::Null,
                        Some(q) => json!({ "product_id": i, "quantity": q }),
                    })
                    .collect(),
            ),
        };
        if let Some(t) = self.total {
            v["total"] = json!(t);
        }
        v["level"] = json!(self.level);
        if let Some(x) = self.x {
            v["x"] = json!(x);
        }
        v
    }

    /// The first rule of [`RULES`] the record breaks, decided here without the expression code.
    /// A null value breaks no rule.
    fn first_broken(&self) -> Option<&'static str> {
        let broken = [
            // In Rust as in IEEE 754, -0.0 < 0.0 is false.
            self.total.is_some_and(|t| t < 0.0),
            self.items
                .as_ref()
                .is_some_and(|items| items.iter().any(|q| matches!(q, Some(Some(q)) if *q <= 0))),
            self.level.is_some_and(|l| l != "A" && l != "B"),
            self.x.is_some_and(|x| !(0.0..=100.0).contains(&x)),
            self.timestamp.as_ref().is_some_and(|(_, valid)| !valid),
        ];
        RULES.iter().zip(broken).find(|(_, b)| *b).map(|(r, _)| *r)
    }
}

struct Rng(u64);

impl Rng {
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from[((self.0 >> 33) % from.len() as u64) as usize].clone()
    }
}

/// Mostly good records, each field now and then bad, null or on the edge.
fn gen_records(n: usize) -> Vec<Rec> {
    let mut rng = Rng(2026);
    let timestamps: Vec<Option<(String, bool)>> = vec![
        Some(("2026-03-01T10:00:00Z".into(), true)),
        Some(("2026-03-01T10:00:00.250+01:00".into(), true)),
        Some(("2026-03-01 10:00:00".into(), true)),
        Some(("2026-03-01T10:00:00Z".into(), true)),
        Some(("yesterday".into(), false)),
        Some(("2026-02-30T10:00:00Z".into(), false)),
        Some(("".into(), false)),
        None,
    ];
    let items: Vec<Option<Vec<Option<Option<i64>>>>> = vec![
        Some(vec![Some(Some(1)), Some(Some(3))]),
        Some(vec![Some(Some(2))]),
        Some(vec![Some(Some(5)), Some(Some(1)), Some(Some(7))]),
        Some(vec![Some(Some(1)), Some(Some(0))]),
        Some(vec![Some(Some(-2)), Some(Some(4))]),
        Some(vec![]),
        Some(vec![Some(None), Some(Some(2))]),
        Some(vec![None, Some(Some(1))]),
        None,
    ];
    let totals = [
        Some(10.5),
        Some(0.0),
        Some(-0.0),
        Some(1e-300),
        Some(99.0),
        Some(-0.01),
        Some(-5e-324),
        None,
    ];
    let levels = [
        Some("A"),
        Some("B"),
        Some("A"),
        Some("B"),
        Some("C"),
        Some("a"),
        Some(""),
        None,
    ];
    let xs = [
        Some(0.0),
        Some(100.0),
        Some(50.5),
        Some(-0.0),
        Some(-0.001),
        Some(100.0001),
        Some(42.0),
        None,
    ];
    (0..n)
        .map(|i| Rec {
            id: i as i64,
            timestamp: rng.pick(&timestamps),
            items: rng.pick(&items),
            total: rng.pick(&totals),
            level: rng.pick(&levels),
            x: rng.pick(&xs),
        })
        .collect()
}

fn values(recs: &[Rec]) -> Vec<Option<Vec<u8>>> {
    recs.iter()
        .map(|r| Some(serde_json::to_vec(&r.json()).unwrap()))
        .collect()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("id")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>()
        .iter()
        .map(|v| i64::from(v.unwrap()))
        .collect()
}

#[test]
fn records_breaking_a_rule_are_quarantined_with_the_rule() {
    let (mut op, out_schema, q_schema) = parser(config(&RULES, &[], OnError::Quarantine));
    let recs = gen_records(400);
    let sent = msgs(values(&recs));
    let out = run(&mut op, kafka_batch(&sent));
    let good = port(&out, 0, &out_schema);
    let bad = port(&out, 1, &q_schema);
    assert_coordinates(&good, &sent);
    assert_coordinates(&bad, &sent);

    let want_good: Vec<i64> = recs
        .iter()
        .filter(|r| r.first_broken().is_none())
        .map(|r| r.id)
        .collect();
    let want_bad: BTreeMap<i64, &str> = recs
        .iter()
        .filter_map(|r| Some((r.id + 100, r.first_broken()?)))
        .collect();
    // Every rule is broken by some record, and many records pass.
    for rule in RULES {
        assert!(
            want_bad.values().any(|r| *r == rule),
            "no record breaks `{rule}`"
        );
    }
    assert!(want_good.len() > 20, "{}", want_good.len());
    assert_eq!(ids(&good), want_good);
    let got_bad: BTreeMap<i64, (String, String)> = offsets(&bad)
        .into_iter()
        .zip(
            strings(&bad, "reason")
                .into_iter()
                .zip(strings(&bad, "detail")),
        )
        .map(|(o, (r, d))| (o, (r.unwrap(), d.unwrap())))
        .collect();
    assert_eq!(
        got_bad.keys().collect::<Vec<_>>(),
        want_bad.keys().collect::<Vec<_>>()
    );
    for (offset, (reason, detail)) in &got_bad {
        assert_eq!(reason, "rule_broken");
        let rule = want_bad[offset];
        assert!(
            detail.contains(&format!("`{rule}`")),
            "offset {offset}: {detail}, want {rule}"
        );
        // The raw value is kept.
        let row = offsets(&bad).iter().position(|o| o == offset).unwrap();
        let raw = strings(&bad, "raw_value")[row].clone().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&raw).unwrap(),
            recs[(*offset - 100) as usize].json()
        );
    }
}

#[test]
fn null_values_break_no_rule() {
    let (mut op, out_schema, q_schema) = parser(config(&RULES, &[], OnError::Quarantine));
    let recs = [
        json!({ "id": 1 }),
        json!({ "id": 2, "timestamp": null, "items": null, "total": null, "level": null, "x": null }),
        json!({ "id": 3, "items": [null, { "product_id": 1, "quantity": null }, { "product_id": 2 }] }),
        json!({ "id": 4, "items": [] }),
    ];
    let vals = recs
        .iter()
        .map(|r| Some(serde_json::to_vec(r).unwrap()))
        .collect();
    let out = run(&mut op, kafka_batch(&msgs(vals)));
    assert!(
        out.port("quarantine").is_empty(),
        "{:?}",
        out.port("quarantine")
    );
    assert_eq!(ids(&port(&out, 0, &out_schema)), [1, 2, 3, 4]);
    let _ = q_schema;
}

#[test]
fn negative_zero_is_not_below_zero() {
    let (mut op, out_schema, _) = parser(config(
        &["total >= 0", "x between 0 and 100", "not (x < 0)"],
        &[],
        OnError::Quarantine,
    ));
    let vals = vec![
        Some(br#"{"id": 1, "total": -0.0, "x": -0.0}"#.to_vec()),
        Some(br#"{"id": 2, "total": -0, "x": 0}"#.to_vec()),
        Some(br#"{"id": 3, "total": -0.0e5, "x": -0.000}"#.to_vec()),
        Some(br#"{"id": 4, "total": -1e-9, "x": 1}"#.to_vec()),
    ];
    let out = run(&mut op, kafka_batch(&msgs(vals)));
    let good = port(&out, 0, &out_schema);
    assert_eq!(ids(&good), [1, 2, 3]);
    let totals = good
        .column_by_name("total")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!(totals.iter().all(|t| t == Some(0.0)));
    assert_eq!(
        out.port("quarantine")
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1
    );
}

#[test]
fn a_missing_required_field_is_reported_before_rules() {
    let (mut op, out_schema, q_schema) = parser(config(&RULES, &["total"], OnError::Quarantine));
    let vals = vec![
        // Missing `total` and a broken level: one quarantine row, for the missing field.
        Some(br#"{"id": 1, "level": "Z"}"#.to_vec()),
        Some(br#"{"id": 2, "total": -1, "level": "Z"}"#.to_vec()),
        Some(br#"{"id": 3, "total": 1, "level": "A"}"#.to_vec()),
        Some(br#"{"id": 4, "total": 1, "level": "Z"}"#.to_vec()),
    ];
    let out = run(&mut op, kafka_batch(&msgs(vals)));
    assert_eq!(ids(&port(&out, 0, &out_schema)), [3]);
    let bad = port(&out, 1, &q_schema);
    assert_eq!(offsets(&bad), [100, 101, 103]);
    let reasons: Vec<String> = strings(&bad, "reason")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(reasons, ["missing_field", "rule_broken", "rule_broken"]);
    let details: Vec<String> = strings(&bad, "detail")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert!(details[1].contains("`total >= 0`"), "{}", details[1]);
    assert!(
        details[2].contains("`level in ('A', 'B')`"),
        "{}",
        details[2]
    );
}

#[test]
fn rules_with_drop_and_fail() {
    let vals = || {
        vec![
            Some(br#"{"id": 1, "total": 1}"#.to_vec()),
            Some(br#"{"id": 2, "total": -1}"#.to_vec()),
        ]
    };
    let (mut op, out_schema, _) = parser(config(&["total >= 0"], &[], OnError::Drop));
    let out = run(&mut op, kafka_batch(&msgs(vals())));
    assert_eq!(ids(&port(&out, 0, &out_schema)), [1]);
    assert!(out.port("quarantine").is_empty());
    let mut op = build(config(&["total >= 0"], &[], OnError::Fail))
        .unwrap()
        .operator;
    let mut c = engine_api::Collector::new(2);
    match op.process(kafka_batch(&msgs(vals())), &mut c) {
        Err(e) if e.kind() == ErrorKind::Runtime => {
            let m = e.message();
            assert!(m.contains("rule_broken") && m.contains("total >= 0"), "{m}")
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    assert!(
        c.port(0).is_empty(),
        "nothing of the failed batch is emitted"
    );
}

#[test]
fn rule_mistakes_are_config_errors_at_build() {
    let at_init =
        |rule: &str| -> String { config_error(build(config(&[rule], &[], OnError::Quarantine))) };
    let e = at_init("nope >= 0");
    assert!(e.contains("`nope`") && e.contains("nope >= 0"), "{e}");
    let e = at_init("items.nope > 0");
    assert!(e.contains("`nope`"), "{e}");
    let e = at_init("total.cents > 0");
    assert!(e.contains("`total`"), "{e}");
    let e = at_init("ghost.quantity > 0");
    assert!(e.contains("`ghost`"), "{e}");
    let e = at_init("items.quantity > total");
    assert!(e.contains("items.quantity > total"), "{e}");
    // Columns of the Kafka record are in the parsed output too, so a rule may use them.
    assert!(build(config(&["offset >= 0"], &[], OnError::Quarantine)).is_ok());
    // Types are checked too, so `engine validate` finds these before any data.
    for rule in [
        "level > 1",
        "total + 1",
        "total is timestamp",
        "items.quantity",
    ] {
        let e = at_init(rule);
        assert!(e.contains(rule), "{rule}: {e}");
    }
    // Syntax errors are found when the node is built.
    let e = config_error(build(config(&["total >="], &[], OnError::Quarantine)));
    assert!(e.contains("rules"), "{e}");
}

#[test]
fn json_parse_with_rules_keeps_the_operator_contract() {
    let recs = gen_records(300);
    let vals = values(&recs);
    let mut script = Script::new(kafka_schema()).wall_clock_column("quarantine", "ingested_at");
    let mut sent = Vec::new();
    for (i, chunk) in vals.chunks(70).enumerate() {
        let batch: Vec<Msg> = msgs(chunk.to_vec())
            .into_iter()
            .map(|mut m| {
                m.offset += i as i64 * 1000;
                m
            })
            .collect();
        script = script.batch(kafka_batch(&batch)).barrier();
        sent.extend(batch);
    }
    let run = check_operator(
        || build(config(&RULES, &["id"], OnError::Quarantine)),
        &script.end(),
    );
    let all = run.all();
    let (good, bad) = (all.concat("out"), all.concat("quarantine"));
    assert_eq!(
        good.num_rows() + bad.num_rows(),
        recs.len(),
        "every record once"
    );
    assert_coordinates(&good, &sent);
    assert_coordinates(&bad, &sent);
    let want_good = recs.iter().filter(|r| r.first_broken().is_none()).count();
    assert_eq!(good.num_rows(), want_good);
}
