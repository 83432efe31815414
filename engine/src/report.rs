//! `engine report <pipeline.toml>...`: reads back what the pipelines' `parquet` sinks wrote and
//! prints the row count of each table, the quarantine per reason and a preview of each gold
//! table.
//!
//! Each sink's table is classified by where the sink sits in its pipeline's graph:
//! - **gold** when an `aggregate`, `window_aggregate` or `top_n` node is upstream of it: a
//!   preview of at most `--rows` (or the sink's `preview_rows`, else 5) rows. A windowed table
//!   (a `window_aggregate` upstream and a `window_start` column) shows its latest window only.
//!   The rows are ordered by the sink's `preview_order_by` when set; else by the rank column of
//!   a `top_n` upstream, smallest first; else by the first numeric column the nearest aggregate
//!   adds, largest first. Ties, and tables with none of these, are ordered by the other columns,
//!   smallest first, so the preview is the same for the same table;
//! - **quarantine** when it reads a `quarantine` port (directly or through other nodes): its
//!   rows per `reason`;
//! - **bronze** otherwise: its row count.

use crate::graph::Graph;
use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::util::display::FormatOptions;
use arrow::util::pretty::pretty_format_batches_with_options;
use connectors::store::Location;
use engine_api::{EngineError, Node, OutputMode, TableFormat};
use engine_api::{Result, StorageConfig};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::Arc;

/// Rows in a gold table's preview when neither `--rows` nor the sink's `preview_rows` say.
pub const DEFAULT_PREVIEW_ROWS: usize = 5;

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
    let metas: Vec<_> = match loc.store.list(Some(&loc.prefix)).try_collect().await {
        Ok(metas) => metas,
        // A failed list says why (a missing bucket, refused credentials) only in its text: ask
        // the store.
        Err(e) => return Err(loc.check().await.err().unwrap_or_else(|| loc.explain(e))),
    };
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

/// What a sink's table holds, from where the sink sits in its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// Records as they came in: reported as a row count.
    Bronze,
    /// Records a parser set aside: reported per `reason`.
    Quarantine,
    /// Results of an aggregate, a window aggregate or a ranking: previewed.
    Gold(GoldPreview),
}

/// How a gold table is previewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldPreview {
    /// Keep only the latest window (by `window_start`).
    pub windowed: bool,
    /// The column the rows are ordered by, and whether smallest first. `None`: by every column,
    /// smallest first.
    pub order_by: Option<(String, bool)>,
    /// Rows to show, when the pipeline says (`preview_rows`).
    pub rows: Option<usize>,
}

/// One table a pipeline's sink writes.
#[derive(Debug, Clone)]
pub struct ReportTable {
    pub pipeline: String,
    /// The sink node's name.
    pub node: String,
    pub url: String,
    /// Plain Parquet files, or a Delta table (whose log says which files hold its rows).
    pub format: TableFormat,
    pub mode: OutputMode,
    pub kind: TableKind,
    /// The pipeline's `[storage]`, to read the table with.
    pub storage: StorageConfig,
}

impl ReportTable {
    /// Every committed row of the table.
    pub async fn read(&self) -> Result<Vec<RecordBatch>> {
        match self.format {
            TableFormat::Parquet => read_table(&self.url, &self.storage).await,
            TableFormat::Delta => connectors::delta::read_table(&self.url, &self.storage).await,
        }
    }
}

/// The tables the `parquet` and `delta` sinks (any sink that names a table) of a built
/// pipeline write, in the graph's order.
pub fn tables(graph: &Graph) -> Vec<ReportTable> {
    let mut out = Vec::new();
    for g in &graph.nodes {
        let Node::Sink(sink) = &g.node else {
            continue;
        };
        let Some(info) = sink.table() else {
            continue;
        };
        let Some(schema) = g.input.as_ref().map(|i| i.schema.clone()) else {
            continue;
        };
        // The nodes upstream of the sink, nearest first, and whether a quarantine port is
        // on the way.
        let mut seen = HashSet::new();
        let mut upstream = Vec::new();
        let mut quarantine = false;
        let mut queue: VecDeque<(usize, usize)> = g.inputs.iter().copied().collect();
        while let Some((u, port)) = queue.pop_front() {
            let n = &graph.nodes[u];
            quarantine |= n.ports.get(port).is_some_and(|p| p.name == "quarantine");
            if seen.insert(u) {
                upstream.push(u);
                queue.extend(n.inputs.iter().copied());
            }
        }
        let type_of = |u: &usize| graph.nodes[*u].spec.type_name.as_str();
        let aggregated = upstream
            .iter()
            .any(|u| matches!(type_of(u), "aggregate" | "window_aggregate" | "top_n"));
        let kind = if aggregated {
            let order_by = match info.preview.order_by {
                Some(col) => Some((col, info.preview.ascending)),
                None => default_order(graph, &upstream, &schema),
            };
            TableKind::Gold(GoldPreview {
                windowed: upstream.iter().any(|u| type_of(u) == "window_aggregate")
                    && schema.index_of("window_start").is_ok(),
                order_by,
                rows: info.preview.rows,
            })
        } else if quarantine {
            TableKind::Quarantine
        } else {
            TableKind::Bronze
        };
        out.push(ReportTable {
            pipeline: graph.pipeline.name.clone(),
            node: g.spec.name.clone(),
            url: info.url.trim_end_matches('/').to_string(),
            format: info.format,
            mode: info.mode,
            kind,
            storage: graph.pipeline.storage.clone(),
        });
    }
    out
}

/// The preview order the pipeline implies: a `top_n`'s rank column (smallest first), else the
/// first numeric column the nearest aggregate adds (largest first).
fn default_order(graph: &Graph, upstream: &[usize], schema: &SchemaRef) -> Option<(String, bool)> {
    for &u in upstream {
        let n = &graph.nodes[u];
        if n.spec.type_name == "top_n"
            && let Some(rank) = n.ports.first().and_then(|p| p.schema.fields().first())
            && schema.index_of(rank.name()).is_ok()
        {
            return Some((rank.name().clone(), true));
        }
    }
    let n = upstream
        .iter()
        .map(|u| &graph.nodes[*u])
        .find(|n| matches!(n.spec.type_name.as_str(), "aggregate" | "window_aggregate"))?;
    let input = &n.input.as_ref()?.schema;
    n.ports.first()?.schema.fields().iter().find_map(|f| {
        let name = f.name();
        let added = input.index_of(name).is_err() && name != "window_start" && name != "window_end";
        let numeric = schema
            .field_with_name(name)
            .is_ok_and(|f| f.data_type().is_numeric());
        (added && numeric).then(|| (name.clone(), false))
    })
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn sortable(dt: &DataType) -> bool {
    dt.is_primitive()
        || matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
        )
}

/// The rows a gold table's preview shows: the latest window's when `windowed`, ordered by
/// `order_by` then by every other column (smallest first), at most `limit`.
pub fn preview(
    batches: &[RecordBatch],
    how: &GoldPreview,
    limit: usize,
) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let mut all = concat_batches(&first.schema(), batches)?;
    if how.windowed
        && let Some(ws) = all.column_by_name("window_start")
    {
        let ws = cast(ws, &DataType::Int64)?;
        let ws = ws.as_primitive::<Int64Type>();
        if let Some(latest) = arrow::compute::max(ws) {
            let mask = eq(ws, &Int64Array::new_scalar(latest))?;
            all = filter_record_batch(&all, &mask)?;
        }
    }
    let n = all.num_rows().min(limit);
    if n == 0 {
        return Ok(None);
    }
    let schema = all.schema();
    let first_key = how
        .order_by
        .as_ref()
        .and_then(|(c, asc)| Some((schema.index_of(c).ok()?, *asc)))
        .filter(|(i, _)| sortable(schema.field(*i).data_type()));
    let mut keys = Vec::new();
    if let Some((i, asc)) = first_key {
        keys.push(SortColumn {
            values: all.column(i).clone(),
            options: Some(SortOptions {
                descending: !asc,
                nulls_first: false,
            }),
        });
    }
    for (i, f) in schema.fields().iter().enumerate() {
        if Some(i) != first_key.map(|(k, _)| k) && sortable(f.data_type()) {
            keys.push(SortColumn {
                values: all.column(i).clone(),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: false,
                }),
            });
        }
    }
    let idx = if keys.is_empty() {
        UInt32Array::from_iter_values(0..n as u32)
    } else {
        lexsort_to_indices(&keys, Some(n))?
    };
    Ok(Some(take_record_batch(&all, &idx)?))
}

/// Doubles to 2 decimals, for reading.
fn rounded(batch: RecordBatch) -> Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .map(|c| match c.as_primitive_opt::<Float64Type>() {
            Some(f) => {
                Arc::new(f.unary::<_, Float64Type>(|v| (v * 100.0).round() / 100.0)) as ArrayRef
            }
            None => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// The longest `/`-separated prefix the URLs share that is a folder above each of them (at
/// least `scheme://bucket`), or `None`.
fn common_prefix<'a>(urls: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let split: Vec<Vec<&str>> = urls.into_iter().map(|u| u.split('/').collect()).collect();
    let shortest = split.iter().map(Vec::len).min()?;
    let mut n = 0;
    while n + 1 < shortest && split.iter().all(|s| s[n] == split[0][n]) {
        n += 1;
    }
    let prefix = &split[0][..n];
    (n >= 3 && prefix.last().is_some_and(|s| !s.is_empty())).then(|| prefix.join("/"))
}

/// A table's name under `prefix`, or its URL.
fn name_under<'a>(prefix: &Option<String>, url: &'a str) -> &'a str {
    prefix
        .as_deref()
        .and_then(|p| url.strip_prefix(p))
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(url)
}

fn io(e: std::io::Error) -> EngineError {
    EngineError::runtime(format!("cannot write the report: {e}"))
}

/// Reads every table and writes the report to `out`: the row count of each bronze and
/// quarantine table, the quarantine per reason, then a preview of each gold table of at most
/// `rows` rows (when given; else the sink's `preview_rows`, else [`DEFAULT_PREVIEW_ROWS`]). A
/// table written by several pipelines is reported once.
pub async fn report(
    tables: &[ReportTable],
    rows_flag: Option<usize>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut seen = HashSet::new();
    let tables: Vec<&ReportTable> = tables
        .iter()
        .filter(|t| seen.insert((t.storage.endpoint.clone(), t.url.clone())))
        .collect();
    let listed: Vec<&ReportTable> = tables
        .iter()
        .filter(|t| t.kind == TableKind::Bronze)
        .chain(tables.iter().filter(|t| t.kind == TableKind::Quarantine))
        .copied()
        .collect();
    let gold: Vec<&ReportTable> = tables
        .iter()
        .filter(|t| matches!(t.kind, TableKind::Gold(_)))
        .copied()
        .collect();

    if !listed.is_empty() {
        let prefix = common_prefix(listed.iter().map(|t| t.url.as_str()));
        let title = match &prefix {
            Some(p) => format!("Bronze tables in {p} (committed files only)"),
            None => "Bronze tables (committed files only)".to_string(),
        };
        writeln!(out, "{title}").map_err(io)?;
        let width = listed
            .iter()
            .map(|t| name_under(&prefix, &t.url).len())
            .max()
            .unwrap_or(0)
            .max(34);
        writeln!(out, "  {:<width$} {:>10}", "table", "rows").map_err(io)?;
        let mut reasons: Vec<(&str, BTreeMap<String, usize>, bool)> = Vec::new();
        for t in &listed {
            let batches = t.read().await?;
            let name = name_under(&prefix, &t.url);
            writeln!(out, "  {name:<width$} {:>10}", rows(&batches)).map_err(io)?;
            if t.kind == TableKind::Quarantine {
                let mut per: BTreeMap<String, usize> = BTreeMap::new();
                let mut has_reason = true;
                for b in &batches {
                    match b
                        .column_by_name("reason")
                        .and_then(|c| c.as_string_opt::<i32>())
                    {
                        Some(r) => {
                            for v in r.iter() {
                                *per.entry(v.unwrap_or("null").to_string()).or_default() += 1;
                            }
                        }
                        None => has_reason = false,
                    }
                }
                reasons.push((name, per, has_reason));
            }
        }
        if !reasons.is_empty() {
            writeln!(out, "\nQuarantined records per table and reason").map_err(io)?;
            let width = reasons
                .iter()
                .map(|(n, _, _)| n.len())
                .max()
                .unwrap_or(0)
                .max(20);
            if reasons.iter().all(|(_, per, ok)| per.is_empty() && *ok) {
                writeln!(out, "  (none)").map_err(io)?;
            }
            for (name, per, has_reason) in &reasons {
                if !has_reason {
                    writeln!(out, "  {name:<width$} (no `reason` column)").map_err(io)?;
                }
                for (reason, n) in per {
                    writeln!(out, "  {name:<width$} {reason:<16} {n:>8}").map_err(io)?;
                }
            }
        }
    }

    if !gold.is_empty() {
        let prefix = common_prefix(gold.iter().map(|t| t.url.as_str()));
        if !listed.is_empty() {
            writeln!(out).map_err(io)?;
        }
        let title = match &prefix {
            Some(p) => format!("Gold tables in {p} (committed files only)"),
            None => "Gold tables (committed files only)".to_string(),
        };
        writeln!(out, "{title}").map_err(io)?;
        for t in gold {
            let TableKind::Gold(how) = &t.kind else {
                unreachable!("filtered above")
            };
            let limit = rows_flag.or(how.rows).unwrap_or(DEFAULT_PREVIEW_ROWS);
            let batches = t.read().await?;
            let total = rows(&batches);
            let shown = preview(&batches, how, limit)?;
            // How many rows the preview shows: fewer than `limit` when the table (or its latest
            // window) has fewer.
            let n = shown.as_ref().map_or(limit, RecordBatch::num_rows);
            let order = match &how.order_by {
                Some((col, false)) => format!("top {n} by {col}"),
                Some((col, true)) => format!("first {n} by {col}"),
                None => format!("first {n} rows"),
            };
            let window = match (how.windowed, t.mode) {
                (false, _) => "",
                (true, OutputMode::Append) => " in the latest closed window",
                (true, _) => " in the latest window (complete mode: it may still be open)",
            };
            let plural = if total == 1 { "" } else { "s" };
            writeln!(
                out,
                "\n{}: {order}{window}, of {total} row{plural}",
                name_under(&prefix, &t.url)
            )
            .map_err(io)?;
            match shown {
                Some(b) => {
                    let opts = FormatOptions::default()
                        .with_null("null")
                        .with_types_info(false);
                    let text = pretty_format_batches_with_options(&[rounded(b)?], &opts)?;
                    for line in text.to_string().lines() {
                        writeln!(out, "  {line}").map_err(io)?;
                    }
                }
                None => writeln!(out, "  (no rows yet)").map_err(io)?,
            }
        }
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use std::path::Path;

    /// A pipeline whose table paths and node names are not the demo's, with every kind of sink.
    const PIPELINE: &str = r#"
[pipeline]
name = "shop"
checkpoint = "s3://lake/_chk/shop"

[nodes.in]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "shop-events"

[nodes.parse]
type = "json_parse"
inputs = ["in"]
event_time = { column = "at" }
[nodes.parse.schema]
sku = "string"
shop = "string"
at = "string"
price = "double"

[nodes.raw]
type = "parquet"
inputs = ["parse"]
path = "s3://lake/raw/events/"

[nodes.rejected]
type = "select"
inputs = ["parse.quarantine"]
drop = ["raw_value"]

[nodes.rejects]
type = "parquet"
inputs = ["rejected"]
path = "s3://lake/raw/rejects"

[nodes.per_sku]
type = "aggregate"
inputs = ["parse"]
group_by = ["sku", "shop"]
output_mode = "complete"
aggregates = [{ name = "revenue", fn = "sum", column = "price" }, { name = "sales", fn = "count" }]

[nodes.sku_table]
type = "parquet"
inputs = ["per_sku"]
path = "s3://lake/gold/skus"
mode = "complete"

[nodes.steered]
type = "parquet"
inputs = ["per_sku"]
path = "s3://lake/gold/skus_by_sales"
mode = "complete"
preview_order_by = "sales asc"
preview_rows = 12

[nodes.best]
type = "top_n"
inputs = ["per_sku"]
order_by = "revenue"
n = 3
rank_column = "position"

[nodes.best_table]
type = "parquet"
inputs = ["best"]
path = "s3://lake/gold/best"
mode = "complete"

[nodes.per_minute]
type = "window_aggregate"
inputs = ["parse"]
window = "1m"
group_by = ["shop"]
aggregates = [{ name = "n", fn = "count" }, { name = "takings", fn = "sum", column = "price" }]

[nodes.minutes]
type = "parquet"
inputs = ["per_minute"]
path = "s3://lake/gold/minutes"

[nodes.show]
type = "console"
inputs = ["per_minute"]
"#;

    fn graph(text: &str) -> Graph {
        let p = Pipeline::parse(Path::new("shop.toml"), text).unwrap();
        Graph::build(p, &crate::builtin_registry()).unwrap()
    }

    fn gold(windowed: bool, order: Option<(&str, bool)>, rows: Option<usize>) -> TableKind {
        TableKind::Gold(GoldPreview {
            windowed,
            order_by: order.map(|(c, a)| (c.to_string(), a)),
            rows,
        })
    }

    #[test]
    fn sinks_are_classified_by_where_they_sit_in_the_graph() {
        let got: Vec<(String, String, OutputMode, TableKind)> = tables(&graph(PIPELINE))
            .into_iter()
            .map(|t| {
                assert_eq!(t.pipeline, "shop");
                (t.node, t.url, t.mode, t.kind)
            })
            .collect();
        let want = vec![
            (
                "raw",
                "s3://lake/raw/events",
                OutputMode::Append,
                TableKind::Bronze,
            ),
            (
                "rejects",
                "s3://lake/raw/rejects",
                OutputMode::Append,
                TableKind::Quarantine,
            ),
            (
                "sku_table",
                "s3://lake/gold/skus",
                OutputMode::Complete,
                gold(false, Some(("revenue", false)), None),
            ),
            (
                "steered",
                "s3://lake/gold/skus_by_sales",
                OutputMode::Complete,
                gold(false, Some(("sales", true)), Some(12)),
            ),
            (
                "best_table",
                "s3://lake/gold/best",
                OutputMode::Complete,
                gold(false, Some(("position", true)), None),
            ),
            (
                "minutes",
                "s3://lake/gold/minutes",
                OutputMode::Append,
                gold(true, Some(("n", false)), None),
            ),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(n, u, m, k)| (n.to_string(), u.to_string(), m, k))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn environment_variables_choose_the_paths() {
        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("REPORT_TEST_LAKE_Q", "s3://elsewhere/x") };
        let text = PIPELINE
            .replace("s3://lake/raw/events/", "${REPORT_TEST_LAKE_Q}/events")
            .replace(
                "s3://lake/raw/rejects",
                "${REPORT_TEST_UNSET_Q:-s3://dflt}/rejects",
            );
        let t = tables(&graph(&text));
        assert_eq!(t[0].url, "s3://elsewhere/x/events");
        assert_eq!(t[1].url, "s3://dflt/rejects");
    }

    #[test]
    fn a_preview_column_the_table_lacks_is_a_config_error() {
        let text = PIPELINE.replace("\"sales asc\"", "\"salez\"");
        let p = Pipeline::parse(Path::new("shop.toml"), &text).unwrap();
        let e = Graph::build(p, &crate::builtin_registry())
            .err()
            .expect("rejected");
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(e.contains("node `steered`"), "{e}");
        assert!(e.contains("no column `salez`"), "{e}");
        for bad in ["\"sales upward\"", "\"\""] {
            let p = Pipeline::parse(
                Path::new("shop.toml"),
                &PIPELINE.replace("\"sales asc\"", bad),
            )
            .unwrap();
            let e = Graph::build(p, &crate::builtin_registry()).err().unwrap();
            assert!(e.to_string().contains("`preview_order_by`"), "{e}");
        }
        let p = Pipeline::parse(
            Path::new("shop.toml"),
            &PIPELINE.replace("preview_rows = 12", "preview_rows = 0"),
        )
        .unwrap();
        let e = Graph::build(p, &crate::builtin_registry()).err().unwrap();
        assert!(e.to_string().contains("`preview_rows`"), "{e}");
    }

    fn windows_batch(rows: &[(&str, i64, i64, f64)]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("shop", DataType::Utf8, true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("n", DataType::Int64, false),
            Field::new("takings", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1 + 60_000))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    fn shops(b: &RecordBatch) -> Vec<String> {
        b.column_by_name("shop")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_windowed_preview_keeps_the_latest_window_ordered_with_ties_broken() {
        // The latest window is split over two files; an older window has larger values.
        let older = windows_batch(&[("a", 0, 50, 900.0), ("b", 60_000, 9, 1.0)]);
        let newer = windows_batch(&[("c", 120_000, 3, 30.0), ("d", 120_000, 5, 10.0)]);
        let more = windows_batch(&[("e", 120_000, 5, 20.0), ("b", 120_000, 1, 99.0)]);
        let how = GoldPreview {
            windowed: true,
            order_by: Some(("n".into(), false)),
            rows: None,
        };
        let b = preview(&[older.clone(), newer.clone(), more.clone()], &how, 3)
            .unwrap()
            .unwrap();
        // n descending; d and e tie on n = 5, so shop breaks the tie.
        assert_eq!(shops(&b), ["d", "e", "c"]);
        let ws = cast(b.column_by_name("window_start").unwrap(), &DataType::Int64).unwrap();
        assert!(
            ws.as_primitive::<Int64Type>()
                .iter()
                .all(|v| v == Some(120_000))
        );

        // Smallest first, and every row of the window when the limit allows.
        let how = GoldPreview {
            order_by: Some(("takings".into(), true)),
            ..how
        };
        let b = preview(&[newer.clone(), more.clone(), older.clone()], &how, 10)
            .unwrap()
            .unwrap();
        assert_eq!(shops(&b), ["d", "e", "c", "b"]);

        // Not windowed, no order column: every window, ordered by every column.
        let how = GoldPreview {
            windowed: false,
            order_by: None,
            rows: None,
        };
        let b = preview(&[more, older, newer], &how, 4).unwrap().unwrap();
        assert_eq!(shops(&b), ["a", "b", "b", "c"]);
        assert!(preview(&[], &how, 4).unwrap().is_none());
    }

    #[test]
    fn table_names_are_shown_under_their_common_folder() {
        let p = common_prefix([
            "s3://bronze/kafka/commandes",
            "s3://bronze/kafka/items",
            "s3://bronze/kafka/_quarantine/commandes-json",
        ]);
        assert_eq!(p.as_deref(), Some("s3://bronze/kafka"));
        assert_eq!(
            name_under(&p, "s3://bronze/kafka/_quarantine/commandes-json"),
            "_quarantine/commandes-json"
        );
        assert_eq!(common_prefix(["s3://gold/a"]).as_deref(), Some("s3://gold"));
        assert_eq!(common_prefix(["s3://gold/a", "s3://golden/b"]), None);
        assert_eq!(common_prefix(["s3://gold", "s3://gold/b"]), None);
        assert_eq!(
            common_prefix(["file:///tmp/t/a", "file:///tmp/t/b"]).as_deref(),
            Some("file:///tmp/t")
        );
        assert_eq!(name_under(&None, "s3://x/y"), "s3://x/y");
    }
}
