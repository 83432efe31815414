//! `engine report`: reads the tables back from the object store and prints what they hold.

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{
    SortOptions, concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use arrow::util::display::FormatOptions;
use arrow::util::pretty::pretty_format_batches_with_options;
use connectors::store::Location;
use engine_api::EngineError;
use engine_api::{Result, StorageConfig};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whether `location`, listed under a table's `prefix`, is one of the table's committed Parquet
/// files: not under a `_`- or `.`-prefixed folder (staging, Spark's logs), as Spark and pyarrow
/// read a table.
pub fn is_table_file(
    prefix: &object_store::path::Path,
    location: &object_store::path::Path,
) -> bool {
    let rel = location
        .as_ref()
        .strip_prefix(prefix.as_ref())
        .unwrap_or(location.as_ref());
    let hidden = rel
        .split('/')
        .any(|p| p.starts_with('_') || p.starts_with('.'));
    !hidden && rel.ends_with(".parquet")
}

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
        if !is_table_file(&loc.prefix, &m.location) {
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

/// The rows of `batches` sorted by `by` (largest first), at most `limit`, keeping `columns`.
fn top(
    batches: &[RecordBatch],
    by: &str,
    limit: usize,
    columns: &[&str],
) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let all = concat_batches(&first.schema(), batches)?;
    let Some(key) = all.column_by_name(by) else {
        return Ok(None);
    };
    let opts = SortOptions {
        descending: true,
        nulls_first: false,
    };
    let idx = sort_to_indices(key, Some(opts), Some(limit.min(all.num_rows())))?;
    let sorted = take_record_batch(&all, &idx)?;
    let idx: Vec<usize> = columns
        .iter()
        .filter_map(|c| sorted.schema().index_of(c).ok())
        .collect();
    let picked = sorted.project(&idx)?;
    // Doubles to 2 decimals, for reading.
    let cols = picked
        .columns()
        .iter()
        .map(|c| match c.as_primitive_opt::<Float64Type>() {
            Some(f) => {
                Arc::new(f.unary::<_, Float64Type>(|v| (v * 100.0).round() / 100.0)) as ArrayRef
            }
            None => c.clone(),
        })
        .collect();
    Ok(Some(RecordBatch::try_new(picked.schema(), cols)?))
}

fn print_table(title: &str, batch: Option<RecordBatch>) -> Result<()> {
    println!("\n{title}");
    match batch {
        Some(b) if b.num_rows() > 0 => {
            let opts = FormatOptions::default()
                .with_null("null")
                .with_types_info(false);
            let text = pretty_format_batches_with_options(&[b], &opts)?;
            for line in text.to_string().lines() {
                println!("  {line}");
            }
        }
        _ => println!("  (no rows yet)"),
    }
    Ok(())
}

/// Prints row counts per table, the quarantine per reason, and the gold tables.
pub async fn report(bronze: &str, gold: &str, storage: &StorageConfig) -> Result<()> {
    println!("Bronze tables in {bronze}/kafka (committed files only)");
    println!("  {:<34} {:>10}", "table", "rows");
    for t in ["commandes", "items", "logs", "metrics"] {
        let batches = read_table(&format!("{bronze}/kafka/{t}"), storage).await?;
        println!("  {:<34} {:>10}", t, rows(&batches));
    }
    let mut reasons: BTreeMap<(String, String), usize> = BTreeMap::new();
    for topic in ["commandes-json", "logs-application", "metrics"] {
        let batches = read_table(&format!("{bronze}/kafka/_quarantine/{topic}"), storage).await?;
        println!(
            "  {:<34} {:>10}",
            format!("_quarantine/{topic}"),
            rows(&batches)
        );
        for b in &batches {
            let r = b
                .column_by_name("reason")
                .expect("quarantine schema")
                .as_string::<i32>();
            for v in r.iter().flatten() {
                *reasons
                    .entry((topic.to_string(), v.to_string()))
                    .or_default() += 1;
            }
        }
    }
    println!("\nQuarantined records per topic and reason");
    if reasons.is_empty() {
        println!("  (none)");
    }
    for ((topic, reason), n) in &reasons {
        println!("  {topic:<20} {reason:<16} {n:>8}");
    }

    let products = read_table(&format!("{gold}/product_sales"), storage).await?;
    print_table(
        &format!("Top 5 products by revenue ({gold}/product_sales)"),
        top(
            &products,
            "ca_total",
            5,
            &[
                "product_id",
                "product_name",
                "nb_ventes",
                "quantite_totale",
                "ca_total",
            ],
        )?,
    )?;

    let windows = read_table(&format!("{gold}/customer_orders_1min"), storage).await?;
    let latest = windows
        .iter()
        .filter_map(|b| b.column_by_name("window_start"))
        .filter_map(|c| arrow::compute::max(c.as_primitive::<TimestampMillisecondType>()))
        .max();
    let in_latest: Vec<RecordBatch> = match latest {
        Some(t) => windows
            .iter()
            .map(|b| {
                let ws = b
                    .column_by_name("window_start")
                    .expect("checked")
                    .as_primitive::<TimestampMillisecondType>();
                let mask: BooleanArray = ws.iter().map(|v| Some(v == Some(t))).collect();
                filter_record_batch(b, &mask)
            })
            .collect::<std::result::Result<_, _>>()?,
        None => Vec::new(),
    };
    print_table(
        &format!(
            "Busiest customers in the latest closed 1-minute window ({gold}/customer_orders_1min)"
        ),
        top(
            &in_latest,
            "total_commandes",
            5,
            &[
                "customer_id",
                "window_start",
                "window_end",
                "nb_commandes",
                "total_commandes",
            ],
        )?,
    )?;

    let levels = read_table(&format!("{gold}/log_levels"), storage).await?;
    print_table(
        &format!("Logs per level ({gold}/log_levels)"),
        top(&levels, "nb_logs", 10, &["level", "nb_logs"])?,
    )?;
    let modules = read_table(&format!("{gold}/log_modules"), storage).await?;
    print_table(
        &format!("Logs per module ({gold}/log_modules)"),
        top(
            &modules,
            "nb_logs",
            10,
            &["module", "nb_logs", "duree_moyenne_ms"],
        )?,
    )?;
    let servers = read_table(&format!("{gold}/most_loaded_servers"), storage).await?;
    print_table(
        &format!(
            "Most loaded servers, load = (avg_cpu + avg_memory) / 2 ({gold}/most_loaded_servers)"
        ),
        top(
            &servers,
            "load_score",
            5,
            &[
                "rank",
                "server_id",
                "load_score",
                "avg_cpu",
                "max_cpu",
                "avg_memory",
                "max_memory",
                "nb_mesures",
            ],
        )?,
    )?;
    Ok(())
}
