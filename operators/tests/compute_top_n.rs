//! `compute` (columns from expressions) and `top_n` (a ranking of a complete-mode table). Expected
//! values are computed in the test from the rows it wrote.

mod common;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use common::ctx;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{Built, ErrorKind, Input, OperatorConfig, OutputMode};
use operators::aggregate::AggregateConfig;
use operators::compute::ComputeConfig;
use operators::top_n::TopNConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

fn config_error<T>(r: engine_api::Result<T>) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        Err(e) => panic!("expected a config error, got {e:?}"),
        Ok(_) => panic!("expected a config error, got Ok"),
    }
}

fn names(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn f64s(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Float64, "`{name}`");
    c.as_primitive::<Float64Type>().iter().collect()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Int64, "`{name}`");
    c.as_primitive::<Int64Type>().iter().collect()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    b.column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// compute
// ---------------------------------------------------------------------------------------------

type Abn = (Option<i64>, Option<f64>, Option<&'static str>);

fn abn_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn abn_batch(rows: &[Abn]) -> RecordBatch {
    RecordBatch::try_new(
        abn_schema(),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// A `compute` config; columns keep their order (a JSON map would sort them).
fn compute(columns: &[(&str, &str)]) -> ComputeConfig {
    ComputeConfig {
        columns: columns
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn build_compute(cfg: ComputeConfig) -> engine_api::Result<Built> {
    cfg.build(&ctx(), &Input::new(abn_schema()))
}

/// A built `compute` over [`abn_schema`], with its output schema.
fn computing(cfg: ComputeConfig) -> (Harness, SchemaRef) {
    let built = build_compute(cfg).unwrap();
    let schema = built.ports[0].schema.clone();
    (Harness::new(built).with_input(abn_schema()), schema)
}

fn run(op: &mut Harness, b: RecordBatch) -> RecordBatch {
    let out = op.process(b).unwrap();
    assert_eq!(out.main().len(), 1);
    out.main()[0].clone()
}

const ROWS: [Abn; 6] = [
    (Some(1), Some(2.0), Some("x")),
    (Some(-3), Some(0.5), Some("y")),
    (None, Some(4.0), None),
    (Some(7), None, Some("z")),
    (Some(i32::MAX as i64), Some(1e10), Some("w")),
    (Some(0), Some(-0.0), Some("v")),
];

#[test]
fn compute_adds_a_column_from_an_expression() {
    let (mut op, schema) = computing(compute(&[("mid", "(a + b) / 2"), ("scaled", "a * 3 - b")]));
    assert_eq!(names(&schema), ["a", "b", "name", "mid", "scaled"]);
    assert_eq!(schema.field(3).data_type(), &DataType::Float64);
    assert!(schema.field(3).is_nullable());
    let input = abn_batch(&ROWS);
    let got = run(&mut op, input.clone());
    assert_eq!(got.schema(), schema);
    // The input columns pass through untouched.
    for i in 0..3 {
        assert_eq!(got.column(i), input.column(i));
    }
    let want_mid: Vec<Option<f64>> = ROWS
        .iter()
        .map(|(a, b, _)| Some((a.map(|a| a as f64)? + (*b)?) / 2.0))
        .collect();
    let want_scaled: Vec<Option<f64>> = ROWS
        .iter()
        .map(|(a, b, _)| Some(a.map(|a| a as f64)? * 3.0 - (*b)?))
        .collect();
    assert_eq!(f64s(&got, "mid"), want_mid);
    assert_eq!(f64s(&got, "scaled"), want_scaled);
    // An empty batch gives an empty batch of the same schema (and nothing is emitted).
    assert!(op.process(abn_batch(&[])).unwrap().is_empty());
}

#[test]
fn compute_replaces_an_existing_column_in_place() {
    // `a` is replaced; `twice_a`, after it, still reads the input's `a`.
    let (mut op, schema) = computing(compute(&[
        ("a", "a * 10"),
        ("twice_a", "a * 2"),
        ("is_big", "b > 1"),
    ]));
    assert_eq!(names(&schema), ["a", "b", "name", "twice_a", "is_big"]);
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Float64,
        "numbers are doubles"
    );
    assert_eq!(schema.field(4).data_type(), &DataType::Boolean);
    let got = run(&mut op, abn_batch(&ROWS));
    let a10: Vec<Option<f64>> = ROWS.iter().map(|r| r.0.map(|a| a as f64 * 10.0)).collect();
    let a2: Vec<Option<f64>> = ROWS.iter().map(|r| r.0.map(|a| a as f64 * 2.0)).collect();
    assert_eq!(f64s(&got, "a"), a10);
    assert_eq!(f64s(&got, "twice_a"), a2);
    let big: Vec<Option<bool>> = got
        .column_by_name("is_big")
        .unwrap()
        .as_boolean()
        .iter()
        .collect();
    assert_eq!(
        big,
        ROWS.iter()
            .map(|r| r.1.map(|b| b > 1.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        strs(&got, "name"),
        ROWS.iter()
            .map(|r| r.2.map(str::to_string))
            .collect::<Vec<_>>()
    );
}

/// Division is in doubles, as IEEE 754 has it: x / 0 is +inf or -inf, 0 / 0 is NaN. A zero
/// divisor does not fail the batch, and does not turn the result into a null.
#[test]
fn division_by_zero_gives_infinities_and_nan() {
    let rows: [Abn; 5] = [
        (Some(1), Some(0.0), None),
        (Some(-1), Some(0.0), None),
        (Some(0), Some(0.0), None),
        (Some(1), Some(-0.0), None),
        (Some(6), Some(4.0), None),
    ];
    let (mut op, _) = computing(compute(&[("q", "a / b"), ("r", "b / a"), ("z", "a / 0")]));
    let got = run(&mut op, abn_batch(&rows));
    let q = f64s(&got, "q");
    assert_eq!(q[0], Some(f64::INFINITY));
    assert_eq!(q[1], Some(f64::NEG_INFINITY));
    assert!(q[2].unwrap().is_nan());
    // A column's -0.0 is read as 0.0 (see `expr`), so 1 / -0.0 is +inf, not -inf.
    assert_eq!(q[3], Some(f64::INFINITY));
    assert_eq!(q[4], Some(1.5));
    let r = f64s(&got, "r");
    assert!(r[2].unwrap().is_nan());
    assert_eq!(r[4], Some(4.0 / 6.0));
    let z = f64s(&got, "z");
    assert_eq!(z[0], Some(f64::INFINITY));
    assert_eq!(z[1], Some(f64::NEG_INFINITY));
    assert!(z[2].unwrap().is_nan());
}

#[test]
fn compute_configuration_mistakes() {
    let e = config_error(build_compute(compute(&[
        ("ok", "a + 1"),
        ("load", "(a + nope) / 2"),
    ])));
    assert!(
        e.contains("`nope`") && e.starts_with("`columns.load`"),
        "{e}"
    );
    assert!(e.contains("a, b, name"), "lists the columns: {e}");
    let e = config_error(build_compute(compute(&[("bad", "(a + b")])));
    assert!(e.starts_with("`columns.bad`"), "{e}");
    let e = config_error(build_compute(compute(&[])));
    assert!(e.contains("empty"), "{e}");
    // Arithmetic on text is found at build, as a configuration mistake.
    let e = config_error(build_compute(compute(&[("n1", "name + 1")])));
    assert!(e.starts_with("`columns.n1`"), "{e}");
}

#[test]
fn compute_passes_the_input_mode_on_and_keeps_the_operator_contract() {
    for mode in [OutputMode::Append, OutputMode::Update, OutputMode::Complete] {
        let built = compute(&[("mid", "(a + b) / 2")])
            .build(&ctx(), &Input::new(abn_schema()).with_mode(mode))
            .unwrap();
        assert_eq!(built.ports[0].mode, mode);
    }
    let script = Script::new(abn_schema())
        .batch(abn_batch(&ROWS[..4]))
        .barrier()
        .batch(abn_batch(&ROWS[4..]))
        .batch(abn_batch(&ROWS[..1]))
        .barrier()
        .end();
    let run = check_operator(
        || build_compute(compute(&[("a", "a * 10"), ("mid", "(a + b) / 2")])),
        &script,
    );
    let got = run.all().concat("out");
    let rows: Vec<Abn> = ROWS.iter().chain(&ROWS[..1]).copied().collect();
    let want_mid: Vec<Option<f64>> = rows
        .iter()
        .map(|(a, b, _)| Some((a.map(|a| a as f64)? + (*b)?) / 2.0))
        .collect();
    assert_eq!(f64s(&got, "mid"), want_mid);
    let a10: Vec<Option<f64>> = rows.iter().map(|r| r.0.map(|a| a as f64 * 10.0)).collect();
    assert_eq!(f64s(&got, "a"), a10);
}

// ---------------------------------------------------------------------------------------------
// top_n
// ---------------------------------------------------------------------------------------------

fn servers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("server", DataType::Utf8, false),
        Field::new("load", DataType::Float64, true),
    ]))
}

fn servers(rows: &[(String, Option<f64>)]) -> RecordBatch {
    RecordBatch::try_new(
        servers_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )) as ArrayRef,
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

fn build_top_n(v: serde_json::Value, mode: OutputMode) -> engine_api::Result<Built> {
    let cfg: TopNConfig = serde_json::from_value(v).unwrap();
    cfg.build(&ctx(), &Input::new(servers_schema()).with_mode(mode))
}

/// A built `top_n` over a complete-mode [`servers_schema`] table, with its output schema.
fn top_n(v: serde_json::Value) -> (Harness, SchemaRef) {
    let built = build_top_n(v, OutputMode::Complete).unwrap();
    let schema = built.ports[0].schema.clone();
    (Harness::new(built).with_input(servers_schema()), schema)
}

fn trigger(op: &mut Harness) -> Vec<RecordBatch> {
    op.barrier().unwrap().main().to_vec()
}

/// The ranking, as (rank, server, load).
fn ranking(out: &[RecordBatch], rank_column: &str) -> Vec<(i64, String, Option<f64>)> {
    assert_eq!(out.len(), 1, "one batch per trigger");
    let b = &out[0];
    assert_eq!(
        b.schema().field(0).name(),
        rank_column,
        "the rank comes first"
    );
    let ranks = i64s(b, rank_column);
    let s = strs(b, "server");
    let l = f64s(b, "load");
    (0..b.num_rows())
        .map(|i| (ranks[i].unwrap(), s[i].clone().unwrap(), l[i]))
        .collect()
}

/// The loads of the best `n` rows, by sorting in the test: largest first (or smallest), nulls last.
fn best_loads(rows: &[(String, Option<f64>)], n: usize, descending: bool) -> Vec<Option<f64>> {
    let mut loads: Vec<Option<f64>> = rows.iter().map(|r| r.1).collect();
    loads.sort_by(|x, y| match (x, y) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, _) => std::cmp::Ordering::Greater,
        (_, None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) if descending => y.total_cmp(x),
        (Some(x), Some(y)) => x.total_cmp(y),
    });
    loads.truncate(n);
    loads
}

/// Checks a ranking against the input: ranks 1..=k, the best loads in order, and every row is an
/// input row, at most once.
fn check_ranking(
    got: &[(i64, String, Option<f64>)],
    rows: &[(String, Option<f64>)],
    n: usize,
    descending: bool,
) {
    let want = best_loads(rows, n, descending);
    assert_eq!(got.len(), want.len());
    let ranks: Vec<i64> = got.iter().map(|r| r.0).collect();
    assert_eq!(ranks, (1..=want.len() as i64).collect::<Vec<_>>());
    let loads: Vec<Option<f64>> = got.iter().map(|r| r.2).collect();
    assert_eq!(loads, want);
    let input: BTreeMap<&str, Option<f64>> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (_, s, l) in got {
        assert_eq!(input.get(s.as_str()), Some(l), "{s} is an input row");
        assert!(seen.insert(s.clone()), "{s} ranked twice");
    }
}

fn gen_servers(seed: u64, n: usize) -> Vec<(String, Option<f64>)> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let load = ((x >> 33) % 1000) as f64 / 10.0;
            (format!("srv-{i:03}"), (i % 11 != 5).then_some(load))
        })
        .collect()
}

#[test]
fn top_n_ranks_the_table_emitted_before_the_trigger() {
    let (mut op, schema) = top_n(json!({ "order_by": "load", "n": 5 }));
    assert_eq!(names(&schema), ["rank", "server", "load"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    let rows = gen_servers(1, 40);
    // The complete table may come in several batches before the trigger.
    let first = op.process(servers(&rows[..15])).unwrap();
    let second = op.process(servers(&rows[15..])).unwrap();
    assert!(
        first.is_empty() && second.is_empty(),
        "top_n emits at triggers"
    );
    let got = ranking(&trigger(&mut op), "rank");
    check_ranking(&got, &rows, 5, true);
    // Nothing new: nothing emitted.
    assert!(trigger(&mut op).is_empty());
    // The next complete table replaces the previous one: it is not added to it.
    let next = gen_servers(2, 12);
    op.process(servers(&next)).unwrap();
    let got = ranking(&trigger(&mut op), "rank");
    check_ranking(&got, &next, 5, true);
}

#[test]
fn top_n_with_n_larger_than_the_table_ranks_every_row() {
    let (mut op, _) = top_n(json!({ "order_by": "load", "n": 100 }));
    let rows = gen_servers(3, 23);
    op.process(servers(&rows)).unwrap();
    let got = ranking(&trigger(&mut op), "rank");
    assert_eq!(got.len(), rows.len());
    check_ranking(&got, &rows, 100, true);
    // Null loads rank last.
    let nulls = rows.iter().filter(|r| r.1.is_none()).count();
    assert!(nulls > 0);
    assert!(got[got.len() - nulls..].iter().all(|r| r.2.is_none()));
}

#[test]
fn top_n_ascending_and_a_custom_rank_column() {
    let (mut op, schema) = top_n(json!({
        "order_by": "load", "n": 4, "descending": false, "rank_column": "position",
    }));
    assert_eq!(names(&schema), ["position", "server", "load"]);
    let rows = gen_servers(4, 30);
    op.process(servers(&rows)).unwrap();
    let got = ranking(&trigger(&mut op), "position");
    check_ranking(&got, &rows, 4, false);
    // Smallest first, and nulls are not "smallest".
    assert!(got.iter().all(|r| r.2.is_some()));
}

/// Ties get consecutive ranks (1, 2, ...), like SQL's `row_number()`, not `rank()`; which of the
/// tied rows make the cut is not specified.
#[test]
fn top_n_ties() {
    let rows: Vec<(String, Option<f64>)> = [5.0, 3.0, 5.0, 9.0, 5.0, 1.0]
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("s{i}"), Some(*l)))
        .collect();
    let (mut op, _) = top_n(json!({ "order_by": "load", "n": 3 }));
    op.process(servers(&rows)).unwrap();
    let got = ranking(&trigger(&mut op), "rank");
    check_ranking(&got, &rows, 3, true);
    assert_eq!(got[0].1, "s3");
    let tied: Vec<&str> = got[1..].iter().map(|r| r.1.as_str()).collect();
    assert!(
        tied.iter().all(|s| ["s0", "s2", "s4"].contains(s)),
        "{tied:?}"
    );
}

#[test]
fn top_n_needs_a_complete_mode_input() {
    let cfg = json!({ "order_by": "load", "n": 3 });
    for mode in [OutputMode::Append, OutputMode::Update] {
        let e = config_error(build_top_n(cfg.clone(), mode));
        assert!(
            e.contains("complete") && e.contains(&mode.to_string()),
            "{e}"
        );
    }
    let built = build_top_n(cfg, OutputMode::Complete).unwrap();
    assert_eq!(built.ports[0].mode, OutputMode::Complete);
    let e = config_error(build_top_n(
        json!({ "order_by": "load", "n": 0 }),
        OutputMode::Complete,
    ));
    assert!(e.contains("`n`"), "{e}");
    let e = config_error(build_top_n(
        json!({ "order_by": "cpu", "n": 1 }),
        OutputMode::Complete,
    ));
    assert!(e.contains("`cpu`"), "{e}");
}

#[test]
fn top_n_keeps_the_operator_contract() {
    let (t1, t2) = (gen_servers(5, 30), gen_servers(6, 18));
    // A complete table per trigger, in one or several batches.
    let script = Script::new(servers_schema())
        .batch(servers(&t1[..10]))
        .batch(servers(&t1[10..]))
        .barrier()
        .barrier()
        .batch(servers(&t2))
        .barrier()
        .end();
    let run = check_operator(
        || build_top_n(json!({ "order_by": "load", "n": 4 }), OutputMode::Complete),
        &script,
    );
    check_ranking(&ranking(run.steps[2].main(), "rank"), &t1, 4, true);
    assert!(run.steps[3].is_empty(), "no new table, no ranking");
    check_ranking(&ranking(run.steps[5].main(), "rank"), &t2, 4, true);
}

/// `aggregate` (complete) → `compute` → `top_n`, wired by hand as the engine wires them: the
/// aggregate emits its whole table at the trigger, the others process it, then get the trigger.
#[test]
fn top_n_over_a_complete_aggregate() {
    let input = Arc::new(Schema::new(vec![
        Field::new("server", DataType::Utf8, false),
        Field::new("cpu", DataType::Float64, true),
        Field::new("mem", DataType::Float64, true),
    ]));
    let agg: AggregateConfig = serde_json::from_value(json!({
        "group_by": ["server"],
        "aggregates": [
            { "name": "avg_cpu", "fn": "avg", "column": "cpu" },
            { "name": "avg_mem", "fn": "avg", "column": "mem" },
        ],
    }))
    .unwrap();
    // Each node is built against what the one before it declares, as the graph builder does.
    let agg = agg.build(&ctx(), &Input::new(input.clone())).unwrap();
    let (s1, mode) = (agg.ports[0].schema.clone(), agg.ports[0].mode);
    assert_eq!(mode, OutputMode::Complete);
    let comp = compute(&[("load", "(avg_cpu + avg_mem) / 2")])
        .build(&ctx(), &Input::new(s1.clone()).with_mode(mode))
        .unwrap();
    let (s2, mode) = (comp.ports[0].schema.clone(), comp.ports[0].mode);
    let cfg: TopNConfig = serde_json::from_value(json!({ "order_by": "load", "n": 3 })).unwrap();
    let top = cfg
        .build(&ctx(), &Input::new(s2.clone()).with_mode(mode))
        .unwrap();
    assert_eq!(top.ports[0].mode, OutputMode::Complete);
    let mut agg = Harness::new(agg).with_input(input.clone());
    let mut comp = Harness::new(comp).with_input(s1);
    let mut top = Harness::new(top).with_input(s2);

    let mut samples: Vec<(String, f64, f64)> = Vec::new();
    let mut x = 77u64;
    for epoch in 0..3 {
        let part: Vec<(String, f64, f64)> = (0..50)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let server = format!("srv-{}", (x >> 40) % 8);
                let cpu = ((x >> 20) % 400) as f64 * 0.25;
                let mem = ((x >> 10) % 400) as f64 * 0.25;
                (server, cpu, mem)
            })
            .collect();
        samples.extend(part.clone());
        let b = RecordBatch::try_new(
            input.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    part.iter().map(|r| r.0.as_str()),
                )) as ArrayRef,
                Arc::new(Float64Array::from_iter_values(part.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(part.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        agg.process(b).unwrap();
        // The trigger reaches the aggregate, whose output flows down before the trigger does.
        let out = agg.barrier().unwrap();
        for table in out.main() {
            let c = comp.process(table.clone()).unwrap();
            for b in c.main() {
                top.process(b.clone()).unwrap();
            }
        }
        assert!(comp.barrier().unwrap().is_empty());
        let out = top.barrier().unwrap();
        let b = &out.main()[0];

        // Independently: per server, the mean cpu and mem so far, and the load.
        let mut per: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
        for (s, c, m) in &samples {
            let e = per.entry(s.as_str()).or_default();
            e.0 += c;
            e.1 += m;
            e.2 += 1.0;
        }
        let mut loads: Vec<(String, f64)> = per
            .iter()
            .map(|(s, (c, m, n))| (s.to_string(), (c / n + m / n) / 2.0))
            .collect();
        loads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got_servers: Vec<String> = strs(b, "server").into_iter().map(Option::unwrap).collect();
        let got_loads: Vec<f64> = f64s(b, "load").into_iter().map(Option::unwrap).collect();
        assert_eq!(i64s(b, "rank"), [Some(1), Some(2), Some(3)]);
        for (i, (s, l)) in got_servers.iter().zip(&got_loads).enumerate() {
            assert!(
                (l - loads[i].1).abs() < 1e-9,
                "epoch {epoch} rank {}: {l} vs {}",
                i + 1,
                loads[i].1
            );
            let own = loads.iter().find(|x| &x.0 == s).unwrap().1;
            assert!((l - own).abs() < 1e-9, "{s}: {l} vs {own}");
        }
    }
}
