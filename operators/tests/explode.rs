//! `explode` on literal batches: rows per list element, positions, kept and flattened columns.

mod common;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, Float64Type, Int32Type, Schema, SchemaRef};
use common::*;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{ErrorKind, Input, OperatorConfig, OutputMode};
use operators::explode::ExplodeConfig;
use serde_json::{Value, json};
use std::sync::Arc;

fn item_fields() -> Fields {
    Fields::from(vec![
        Field::new("product_id", DataType::Int32, true),
        Field::new("product_name", DataType::Utf8, true),
        Field::new("quantity", DataType::Int32, true),
        Field::new("unit_price", DataType::Float64, true),
        Field::new("subtotal", DataType::Float64, true),
    ])
}

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int32, false),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new(
            "items",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(item_fields()),
                true,
            ))),
            true,
        ),
        Field::new("total", DataType::Float64, true),
    ]))
}

/// Orders with 3, 0, no (null) and 1 items, and one without the field at all.
fn orders() -> Vec<Value> {
    vec![
        json!({"order_id": 1, "customer_id": "C1", "total": 30.5, "items": [
            {"product_id": 10, "product_name": "Laptop", "quantity": 1, "unit_price": 20.0, "subtotal": 20.0},
            {"product_id": 11, "product_name": "Mouse", "quantity": 3, "unit_price": 2.5, "subtotal": 7.5},
            {"product_id": 12, "product_name": null, "quantity": 1, "unit_price": 3.0, "subtotal": 3.0}
        ]}),
        json!({"order_id": 2, "customer_id": "C2", "total": 0.0, "items": []}),
        json!({"order_id": 3, "customer_id": null, "total": null, "items": null}),
        json!({"order_id": 4, "customer_id": "C4", "total": 9.99, "items": [
            {"product_id": 40, "product_name": "Café ☕", "quantity": 1, "unit_price": 9.99, "subtotal": 9.99}
        ]}),
        json!({"order_id": 5, "customer_id": "C5", "total": 1.0}),
    ]
}

/// The orders as an Arrow batch, decoded by arrow-json directly (not by the operator under test).
fn orders_batch(orders: &[Value]) -> RecordBatch {
    let text: String = orders.iter().map(|o| format!("{o}\n")).collect();
    let mut decoder = arrow_json::ReaderBuilder::new(orders_schema())
        .build_decoder()
        .unwrap();
    decoder.decode(text.as_bytes()).unwrap();
    decoder.flush().unwrap().unwrap()
}

fn explode(cfg: ExplodeConfig, input: &SchemaRef) -> (Harness, SchemaRef) {
    let built = cfg.build(&ctx(), &Input::new(input.clone())).unwrap();
    let schema = built.ports[0].schema.clone();
    (Harness::new(built).with_input(input.clone()), schema)
}

fn cfg(position: Option<&str>, columns: Option<&[&str]>) -> ExplodeConfig {
    ExplodeConfig {
        column: "items".into(),
        flatten: true,
        position: position.map(str::to_string),
        columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
    }
}

/// (order, position, item) for every item of every order, in order: what explode must give.
fn expected_rows(orders: &[Value]) -> Vec<(&Value, usize, &Value)> {
    orders
        .iter()
        .flat_map(|o| {
            o.get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(i, item)| (o, i, item))
        })
        .collect()
}

fn names(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

#[test]
fn one_row_per_item_with_its_position_and_the_order_columns() {
    let orders = orders();
    let (mut op, schema) = explode(cfg(Some("item_index"), None), &orders_schema());
    assert_eq!(
        names(&schema),
        [
            "order_id",
            "customer_id",
            "total",
            "item_index",
            "product_id",
            "product_name",
            "quantity",
            "unit_price",
            "subtotal"
        ]
    );
    let out = run(&mut op, orders_batch(&orders));
    let got = port(&out, 0, &schema);
    let expected = expected_rows(&orders);
    assert_eq!(got.num_rows(), 4); // 3 + 0 + none + 1 + none
    assert_eq!(got.num_rows(), expected.len());
    let pos: Vec<i32> = col(&got, "item_index")
        .as_primitive::<Int32Type>()
        .iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(pos, [0, 1, 2, 0]);
    for (row, (order, position, item)) in expected.iter().enumerate() {
        assert_eq!(pos[row] as usize, *position);
        assert_row_is(&got, row, order, &["order_id", "customer_id", "total"]);
        assert_row_is(
            &got,
            row,
            item,
            &[
                "product_id",
                "product_name",
                "quantity",
                "unit_price",
                "subtotal",
            ],
        );
    }
}

#[test]
fn columns_restricts_the_kept_columns_in_their_order() {
    let orders = orders();
    let (mut op, schema) = explode(cfg(None, Some(&["total", "order_id"])), &orders_schema());
    assert_eq!(
        names(&schema),
        [
            "total",
            "order_id",
            "product_id",
            "product_name",
            "quantity",
            "unit_price",
            "subtotal"
        ]
    );
    let got = port(&run(&mut op, orders_batch(&orders)), 0, &schema);
    for (row, (order, _, item)) in expected_rows(&orders).iter().enumerate() {
        assert_row_is(&got, row, order, &["total", "order_id"]);
        assert_row_is(&got, row, item, &["product_id", "quantity", "subtotal"]);
    }

    // No kept column at all: only the items.
    let (mut op, schema) = explode(cfg(None, Some(&[])), &orders_schema());
    let got = port(&run(&mut op, orders_batch(&orders)), 0, &schema);
    assert_eq!(got.num_columns(), 5);
    assert_eq!(got.num_rows(), 4);
}

#[test]
fn without_flatten_the_element_keeps_the_column_name() {
    let orders = orders();
    let mut c = cfg(Some("pos"), Some(&["order_id"]));
    c.flatten = false;
    let (mut op, schema) = explode(c, &orders_schema());
    assert_eq!(names(&schema), ["order_id", "pos", "items"]);
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Struct(item_fields())
    );
    let got = port(&run(&mut op, orders_batch(&orders)), 0, &schema);
    for (row, (order, _, item)) in expected_rows(&orders).iter().enumerate() {
        assert_row_is(&got, row, order, &["order_id"]);
        assert_json_eq(col(&got, "items").as_ref(), row, item, "items");
    }
}

#[test]
fn a_list_of_scalars_explodes_to_one_column() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
    ]));
    let rows = [
        json!({"id": 1, "tags": ["a", null, "c"]}),
        json!({"id": 2, "tags": []}),
        json!({"id": 3, "tags": ["d"]}),
    ];
    let text: String = rows.iter().map(|o| format!("{o}\n")).collect();
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .build_decoder()
        .unwrap();
    decoder.decode(text.as_bytes()).unwrap();
    let batch = decoder.flush().unwrap().unwrap();
    let c = ExplodeConfig {
        column: "tags".into(),
        flatten: true,
        position: None,
        columns: None,
    };
    let (mut op, out_schema) = explode(c, &schema);
    assert_eq!(names(&out_schema), ["id", "tags"]);
    let got = port(&run(&mut op, batch), 0, &out_schema);
    assert_eq!(i32s(&got, "id"), [Some(1), Some(1), Some(1), Some(3)]);
    assert_eq!(
        strings(&got, "tags"),
        [Some("a".into()), None, Some("c".into()), Some("d".into())]
    );
}

/// Arrow allows a null list entry to cover values, and a null struct to sit over child values:
/// neither may leak into the output.
#[test]
fn nulls_hide_the_values_under_them() {
    let ids = Int32Array::from(vec![7, 8, 9]);
    let item = Field::new(
        "item",
        DataType::Struct(Fields::from(vec![Field::new("q", DataType::Int32, true)])),
        true,
    );
    // Elements: q = 1, 2 (under a null list entry), 3 (a null struct), 4.
    let values = StructArray::new(
        Fields::from(vec![Field::new("q", DataType::Int32, true)]),
        vec![Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as ArrayRef],
        Some(NullBuffer::from(vec![true, true, false, true])),
    );
    let list = ListArray::new(
        Arc::new(item),
        OffsetBuffer::new(vec![0, 1, 2, 4].into()),
        Arc::new(values),
        Some(NullBuffer::from(vec![true, false, true])),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("l", list.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(list)]).unwrap();
    let c = ExplodeConfig {
        column: "l".into(),
        flatten: true,
        position: Some("p".into()),
        columns: None,
    };
    let (mut op, out_schema) = explode(c, &schema);
    let got = port(&run(&mut op, batch), 0, &out_schema);
    // Row 8 is null: its element (q = 2) is not output. Row 9's first element is a null struct.
    assert_eq!(i32s(&got, "id"), [Some(7), Some(9), Some(9)]);
    assert_eq!(i32s(&got, "p"), [Some(0), Some(0), Some(1)]);
    assert_eq!(i32s(&got, "q"), [Some(1), None, Some(4)]);
}

#[test]
fn a_sliced_batch_explodes_its_own_rows() {
    let orders = orders();
    let batch = orders_batch(&orders).slice(2, 3); // orders 3, 4, 5
    let (mut op, schema) = explode(cfg(Some("pos"), Some(&["order_id"])), &orders_schema());
    let got = port(&run(&mut op, batch), 0, &schema);
    assert_eq!(got.num_rows(), 1);
    assert_row_is(&got, 0, &orders[3], &["order_id"]);
    assert_row_is(
        &got,
        0,
        &orders[3]["items"][0],
        &["product_id", "product_name", "unit_price"],
    );
    assert_eq!(i32s(&got, "pos"), [Some(0)]);
    let prices = col(&got, "unit_price").as_primitive::<Float64Type>();
    assert_eq!(
        prices.value(0),
        orders[3]["items"][0]["unit_price"].as_f64().unwrap()
    );
}

#[test]
fn a_batch_with_nothing_to_explode_emits_nothing() {
    let orders = vec![orders()[1].clone(), orders()[2].clone()];
    let (mut op, _) = explode(cfg(None, None), &orders_schema());
    let out = run(&mut op, orders_batch(&orders));
    assert!(out.main().is_empty());
}

fn build_error(c: ExplodeConfig, input: &SchemaRef) -> String {
    match c.build(&ctx(), &Input::new(input.clone())) {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        Err(e) => panic!("not a config error: {e:?}"),
        Ok(b) => panic!("expected an error, got {:?}", b.ports),
    }
}

#[test]
fn config_errors_name_the_column() {
    let input = orders_schema();
    let mut c = cfg(None, None);
    c.column = "itemz".into();
    let e = build_error(c, &input);
    assert!(e.contains("`itemz`") && e.contains("items"), "{e}");

    let mut c = cfg(None, None);
    c.column = "customer_id".into();
    let e = build_error(c, &input);
    assert!(e.contains("`customer_id`") && e.contains("list"), "{e}");

    let e = build_error(cfg(None, Some(&["order_id", "totl"])), &input);
    assert!(e.contains("`totl`"), "{e}");

    // The position column or a kept column clashing with an item field.
    let e = build_error(cfg(Some("order_id"), None), &input);
    assert!(e.contains("`order_id`"), "{e}");
    let clash = Arc::new(Schema::new(vec![
        Field::new("quantity", DataType::Int32, true),
        orders_schema().field_with_name("items").unwrap().clone(),
    ]));
    let e = build_error(cfg(None, None), &clash);
    assert!(e.contains("`quantity`"), "{e}");
}

#[test]
fn config_from_toml_names() {
    let c: ExplodeConfig = serde_json::from_value(json!({"column": "items"})).unwrap();
    assert!(c.flatten && c.position.is_none() && c.columns.is_none());
    assert!(
        serde_json::from_value::<ExplodeConfig>(json!({"column": "items", "flaten": false}))
            .is_err()
    );
    let _ = StringArray::from(vec!["unused"]).len();
}

#[test]
fn explode_keeps_the_operator_contract_and_the_input_mode() {
    let orders = orders();
    let script = Script::new(orders_schema())
        .batch(orders_batch(&orders))
        .barrier()
        .batch(orders_batch(&orders[1..3]))
        .batch(orders_batch(&orders[3..]))
        .barrier()
        .end();
    for (position, columns) in [
        (Some("item_index"), None),
        (None, Some(&["order_id", "total"][..])),
    ] {
        let run = check_operator(
            || cfg(position, columns).build(&ctx(), &Input::new(orders_schema())),
            &script,
        );
        let got = run.all().concat("out");
        // Every item of the first batch, then the one item of order 4.
        let mut want: Vec<i64> = expected_rows(&orders)
            .iter()
            .map(|(o, _, _)| o["order_id"].as_i64().unwrap())
            .collect();
        want.push(4);
        let ids: Vec<i64> = i32s(&got, "order_id")
            .into_iter()
            .map(|v| i64::from(v.unwrap()))
            .collect();
        assert_eq!(ids, want);
    }
    let built = cfg(None, None)
        .build(
            &ctx(),
            &Input::new(orders_schema()).with_mode(OutputMode::Update),
        )
        .unwrap();
    assert_eq!(built.ports[0].mode, OutputMode::Update);
}
