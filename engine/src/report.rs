//! `engine report`: reads the tables back from the object store and prints what they hold.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type};
use connectors::store::Location;
use engine_api::EngineError;
use engine_api::{Result, StorageConfig};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;

/// Every committed row of the Parquet table at `url` (files under `_`-prefixed folders are
/// staging and are skipped, as Spark and pyarrow skip them).
pub async fn read_table(url: &str, storage: &StorageConfig) -> Result<Vec<RecordBatch>> {
    let loc = Location::open(url, storage)?;
    let metas: Vec<_> = loc
        .store
        .list(Some(&loc.prefix))
        .try_collect()
        .await
        .map_err(|e| loc.explain(e))?;
    let mut out = Vec::new();
    for m in metas {
        let rel = m
            .location
            .as_ref()
            .strip_prefix(loc.prefix.as_ref())
            .unwrap_or(m.location.as_ref());
        let hidden = rel
            .split('/')
            .any(|p| p.starts_with('_') || p.starts_with('.'));
        if hidden || !rel.ends_with(".parquet") {
            continue;
        }
        let bad = |e: &dyn std::fmt::Display| {
            EngineError::runtime(format!("reading {}: {e}", m.location))
        };
        let bytes = loc
            .store
            .get(&m.location)
            .await
            .map_err(|e| loc.explain(e))?
            .bytes()
            .await
            .map_err(|e| loc.explain(e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| bad(&e))?
            .build()
            .map_err(|e| bad(&e))?;
        for b in reader {
            out.push(b.map_err(|e| bad(&e))?);
        }
    }
    Ok(out)
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Prints row counts per table and the top products by revenue.
pub async fn report(bronze: &str, storage: &StorageConfig) -> Result<()> {
    let tables = ["commandes", "items", "logs", "metrics"];
    println!("Tables in {bronze}/kafka (committed files only)");
    println!("  {:<28} {:>10}", "table", "rows");
    let mut items = Vec::new();
    for t in tables {
        let url = format!("{bronze}/kafka/{t}");
        let batches = read_table(&url, storage).await?;
        println!("  {:<28} {:>10}", t, rows(&batches));
        if t == "items" {
            items = batches;
        }
    }
    for topic in ["commandes-json", "logs-application", "metrics"] {
        let url = format!("{bronze}/kafka/_quarantine/{topic}");
        let batches = read_table(&url, storage).await?;
        println!(
            "  {:<28} {:>10}",
            format!("_quarantine/{topic}"),
            rows(&batches)
        );
    }

    // Top 5 products by revenue, from the items table.
    let mut by_product: HashMap<String, (i64, i64, f64)> = HashMap::new();
    for b in &items {
        let (Some(name), Some(qty), Some(sub)) = (
            b.column_by_name("product_name"),
            b.column_by_name("quantity"),
            b.column_by_name("subtotal"),
        ) else {
            continue;
        };
        let (name, qty, sub) = (
            name.as_string::<i32>(),
            qty.as_primitive::<Int32Type>(),
            sub.as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            if name.is_null(i) {
                continue;
            }
            let e = by_product.entry(name.value(i).to_string()).or_default();
            e.0 += 1;
            e.1 += qty.value(i) as i64;
            e.2 += sub.value(i);
        }
    }
    let mut top: Vec<_> = by_product.into_iter().collect();
    top.sort_by(|a, b| b.1.2.total_cmp(&a.1.2).then(a.0.cmp(&b.0)));
    println!("\nTop 5 products by revenue (from {bronze}/kafka/items)");
    println!(
        "  {:<30} {:>10} {:>15} {:>14}",
        "product_name", "nb_ventes", "quantite_totale", "ca_total"
    );
    for (name, (n, q, ca)) in top.iter().take(5) {
        println!("  {name:<30} {n:>10} {q:>15} {ca:>14.2}");
    }
    Ok(())
}
