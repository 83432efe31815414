//! A table's rows as JSON-like maps, for comparison with what was produced.

use crate::s3::read_table;
use crate::stack::eventually;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One row: column name to value.
pub type Row = BTreeMap<String, Value>;

/// A table's rows as maps from column name to value, for easy comparison.
pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (f, col) in b.schema().fields().iter().zip(b.columns()) {
                row.insert(f.name().clone(), cell(col.as_ref(), i));
            }
            out.push(row);
        }
    }
    out
}

fn cell(col: &dyn Array, i: usize) -> Value {
    use arrow::datatypes::DataType::*;
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        Utf8 => col.as_string::<i32>().value(i).into(),
        Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        Float64 => col.as_primitive::<Float64Type>().value(i).into(),
        Timestamp(_, _) => col
            .as_primitive::<TimestampMillisecondType>()
            .value(i)
            .into(),
        other => Value::String(format!("<{other}>")),
    }
}

/// Every row of the table at `url`, as its readers see it: a Delta table (one with a
/// `_delta_log`) through its log with delta-rs, else its committed Parquet files.
pub async fn table_rows(url: &str) -> Vec<Row> {
    let log = format!("{}/_delta_log", url.trim_end_matches('/'));
    if crate::s3::list_all(&log).await.is_empty() {
        rows(&read_table(url).await)
    } else {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || {
            crate::readers::read_with(crate::PyReader::Delta, &url).rows
        })
        .await
        .unwrap()
    }
}

/// Where a bronze or quarantine row's message was in Kafka: its (partition, offset).
pub fn coord(row: &Row) -> (i32, i64) {
    (
        row["partition"].as_i64().unwrap() as i32,
        row["offset"].as_i64().unwrap(),
    )
}

/// The (partition, offset) of each row, in order.
pub fn coords(rows: &[Row]) -> Vec<(i32, i64)> {
    rows.iter().map(coord).collect()
}

/// Waits up to 60 s until the table at `url` holds exactly `want` rows.
pub async fn wait_rows(what: &str, url: &str, want: usize) {
    eventually(what, Duration::from_secs(60), || async move {
        (table_rows(url).await.len() == want).then_some(())
    })
    .await;
}
