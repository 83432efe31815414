//! `select` on literal batches: keep and order, drop, and configuration errors.

mod common;

use arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use common::*;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{Built, ErrorKind, Input, OperatorConfig, OutputMode, PartitionId};
use operators::select::SelectConfig;
use std::sync::Arc;

fn input() -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int32, false),
        Field::new("b", DataType::Utf8, true),
        Field::new("c", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
        Arc::new(Float64Array::from(vec![Some(0.5), Some(-1.0), None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    (schema, batch)
}

fn select(columns: Option<&[&str]>, drop: Option<&[&str]>) -> SelectConfig {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    SelectConfig {
        columns: columns.map(own),
        drop: drop.map(own),
    }
}

fn build(cfg: SelectConfig, input: &SchemaRef) -> engine_api::Result<Built> {
    cfg.build(&ctx(), &Input::new(input.clone()))
}

/// A built select with its output schema.
fn selecting(cfg: SelectConfig, input: &SchemaRef) -> (Harness, SchemaRef) {
    let built = build(cfg, input).unwrap();
    let schema = built.ports[0].schema.clone();
    (Harness::new(built).with_input(input.clone()), schema)
}

fn names(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn config_error<T: std::fmt::Debug>(r: engine_api::Result<T>) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn columns_keeps_the_named_columns_in_the_given_order() {
    let (schema, batch) = input();
    let (mut op, out_schema) = selecting(select(Some(&["c", "a"]), None), &schema);
    assert_eq!(names(&out_schema), ["c", "a"]);
    // Fields keep their type and nullability.
    assert_eq!(out_schema.field(0), schema.field(2));
    assert_eq!(out_schema.field(1), schema.field(0));
    let got = port(&run(&mut op, batch.clone()), 0, &out_schema);
    assert_eq!(got.num_rows(), 3);
    assert_eq!(got.column(0), batch.column(2));
    assert_eq!(got.column(1), batch.column(0));
}

#[test]
fn drop_removes_the_named_columns() {
    let (schema, batch) = input();
    let (mut op, out_schema) = selecting(select(None, Some(&["b"])), &schema);
    assert_eq!(names(&out_schema), ["a", "c"]);
    let got = port(&run(&mut op, batch.clone()), 0, &out_schema);
    assert_eq!(got.column(0), batch.column(0));
    assert_eq!(got.column(1), batch.column(2));
    assert_eq!(i32s(&got, "a"), [Some(1), Some(2), Some(3)]);
}

#[test]
fn exactly_one_of_columns_and_drop() {
    let (schema, _) = input();
    for cfg in [select(Some(&["a"]), Some(&["b"])), select(None, None)] {
        let e = config_error(build(cfg, &schema).map(|_| ()));
        assert!(e.contains("columns") && e.contains("drop"), "{e}");
    }
}

#[test]
fn unknown_columns_are_named() {
    let (schema, _) = input();
    let e = config_error(build(select(Some(&["a", "nope"]), None), &schema).map(|_| ()));
    assert!(e.contains("`nope`"), "{e}");
    // The message lists what there is.
    assert!(e.contains("a, b, c"), "{e}");
    let e = config_error(build(select(None, Some(&["gone"])), &schema).map(|_| ()));
    assert!(e.contains("`gone`"), "{e}");
}

#[test]
fn a_column_named_twice_or_no_column_left_is_an_error() {
    let (schema, _) = input();
    let e = config_error(build(select(Some(&["a", "b", "a"]), None), &schema).map(|_| ()));
    assert!(e.contains("`a`") && e.contains("twice"), "{e}");
    let e = config_error(build(select(None, Some(&["a", "b", "c"])), &schema).map(|_| ()));
    assert!(e.contains("no column"), "{e}");
    let e = config_error(build(select(Some(&[]), None), &schema).map(|_| ()));
    assert!(e.contains("no column"), "{e}");
}

#[test]
fn config_from_toml_names() {
    let c: SelectConfig = serde_json::from_value(serde_json::json!({"drop": ["items"]})).unwrap();
    assert_eq!(c.drop.as_deref(), Some(&["items".to_string()][..]));
    assert!(serde_json::from_value::<SelectConfig>(serde_json::json!({"keep": ["a"]})).is_err());
}

#[test]
fn the_output_mode_is_the_input_mode() {
    let (schema, _) = input();
    for mode in [OutputMode::Append, OutputMode::Update, OutputMode::Complete] {
        let built = select(Some(&["a"]), None)
            .build(&ctx(), &Input::new(schema.clone()).with_mode(mode))
            .unwrap();
        assert_eq!(built.ports.len(), 1);
        assert_eq!(built.ports[0].mode, mode);
    }
}

#[test]
fn select_keeps_the_operator_contract() {
    let (schema, batch) = input();
    let script = Script::new(schema.clone())
        .batch_from(PartitionId::kafka("t", 0), batch.clone())
        .batch_from(PartitionId::kafka("t", 1), batch.slice(1, 2))
        .barrier()
        .batch(batch.slice(0, 1))
        .barrier()
        .end();
    let run = check_operator(|| build(select(Some(&["c", "a"]), None), &schema), &script);
    let all = run.all().concat("out");
    assert_eq!(all.num_rows(), 6);
    assert_eq!(
        i32s(&all, "a"),
        [Some(1), Some(2), Some(3), Some(2), Some(3), Some(1)]
    );
    let run = check_operator(|| build(select(None, Some(&["a"])), &schema), &script);
    assert_eq!(names(&run.ports[0].schema), ["b", "c"]);
    assert_eq!(run.all().num_rows("out"), 6);
}
