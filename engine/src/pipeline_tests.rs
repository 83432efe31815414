//! `engine test`: unit tests for pipelines, declared in `<pipeline>.test.toml` beside each
//! pipeline file and run in-process, with no Kafka, no S3 and no disk.
//!
//! Each test builds the pipeline's real graph, replaces every source with the messages the test
//! gives ([`VectorSource`], barriers where the test puts them) and every sink with a memory
//! table ([`MemorySink`]), adds a memory table on every other node or port a test names, and
//! runs it with the real runtime and checkpoint protocol, checkpoints kept in memory. At the end
//! of input, what each of those tables committed is compared with the expected rows.

use crate::config::{NodeSpec, Pipeline};
use crate::graph::Graph;
use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use engine_api::{
    BuildContext, ConfigValue, EngineError, Epoch, Input, MAIN_PORT, Node, OutputMode, PartitionId,
    Registry, Result, Sink, SinkConfig,
};
use engine_runtime::harness::{MemorySink, MemoryTable, Step, VectorSource};
use engine_runtime::runtime::{RunOptions, run};
use operators::column_names;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The sink type of the memory tables `engine test` puts on the nodes and ports a test reads.
pub const TAP_TYPE: &str = "__engine_test_tap";

/// The file holding a pipeline's tests: `orders.toml` → `orders.test.toml`.
pub fn tests_path(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    pipeline.with_file_name(format!("{stem}.test.toml"))
}

/// The pipeline a command-line argument stands for: `x.test.toml` stands for `x.toml`, so
/// `engine test pipelines/*.toml` works with the tests beside their pipelines.
pub fn pipeline_path(arg: &Path) -> PathBuf {
    let name = arg.file_name().map(|s| s.to_string_lossy().into_owned());
    match name.as_deref().and_then(|n| n.strip_suffix(".test.toml")) {
        Some(stem) => arg.with_file_name(format!("{stem}.toml")),
        None => arg.to_path_buf(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    /// Messages and barriers, in order.
    #[serde(default)]
    input: Vec<toml::Table>,
    #[serde(default)]
    expect: Vec<Expectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    /// `node` (its main output, or for a sink what it was given) or `node.port`.
    node: String,
    #[serde(default)]
    rows: Vec<toml::Table>,
    /// `exact` (the default): these rows and no others; `contains`: at least these rows.
    #[serde(default, rename = "match")]
    mode: MatchMode,
    /// Relative tolerance for floating-point values (default 1e-9).
    #[serde(default = "default_tolerance")]
    tolerance: f64,
    /// Compare what the first `after` barriers made visible rather than everything.
    #[serde(default)]
    after: Option<Epoch>,
}

fn default_tolerance() -> f64 {
    1e-9
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum MatchMode {
    #[default]
    Exact,
    Contains,
}

/// The result of one test.
#[derive(Debug, Serialize)]
pub struct TestResult {
    pub name: String,
    pub passed: bool,
    pub duration_ms: u64,
    pub failures: Vec<Failure>,
}

/// One expectation that did not hold.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// `node` or `node.port`.
    pub node: String,
    /// What went wrong, in one line.
    pub message: String,
    /// Expected rows no actual row matched.
    pub missing: Vec<Json>,
    /// Actual rows no expected row matched (exact mode).
    pub unexpected: Vec<Json>,
}

/// The results of one pipeline's tests.
#[derive(Debug, Serialize)]
pub struct PipelineResults {
    pub pipeline: String,
    pub tests_file: String,
    pub tests: Vec<TestResult>,
}

/// A placeholder sink for the taps, replaced by a memory sink before the run.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TapConfig {}

impl SinkConfig for TapConfig {
    fn build(self, ctx: &BuildContext, _: &Input) -> Result<Box<dyn Sink>> {
        Ok(Box::new(MemorySink::new(&ctx.node, MemoryTable::new())))
    }
}

/// Adds the tap sink type `engine test` needs to a registry.
pub fn register_tap(registry: &mut Registry) {
    registry.register_sink::<TapConfig>(TAP_TYPE);
}

/// Reads a pipeline's test file; `Ok(None)` when it has none.
fn load_tests(pipeline: &Path) -> Result<Option<(PathBuf, TestFile)>> {
    let path = tests_path(pipeline);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EngineError::config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let file: TestFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        EngineError::config(format!(
            "{}{line}: {}",
            path.display(),
            e.message().trim_end()
        ))
    })?;
    let mut names = std::collections::BTreeSet::new();
    for t in &file.tests {
        if !names.insert(t.name.as_str()) {
            return Err(EngineError::config(format!(
                "{}: two tests are named `{}`; give each its own name",
                path.display(),
                t.name
            )));
        }
    }
    Ok(Some((path, file)))
}

/// Checks a test file against its pipeline without running anything (`engine validate
/// x.test.toml`): it parses, and every source and node it names exists. Returns the number of
/// tests.
pub fn validate(arg: &Path, registry: &Registry) -> Result<usize> {
    let pipeline_file = pipeline_path(arg);
    let pipeline = Pipeline::load(&pipeline_file)?;
    let Some((path, file)) = load_tests(&pipeline_file)? else {
        return Err(EngineError::config(format!(
            "{}: no such file",
            tests_path(&pipeline_file).display()
        )));
    };
    for t in &file.tests {
        let built = prepare(&pipeline, t, registry)
            .map_err(|e| e.context(format!("{}: test `{}`", path.display(), t.name)))?;
        drop(built);
    }
    Ok(file.tests.len())
}

/// Runs the tests of one pipeline whose names contain `filter`. `Ok(None)` when the pipeline
/// has no test file.
pub async fn run_pipeline_tests(
    pipeline_file: &Path,
    registry: &Registry,
    filter: Option<&str>,
) -> Result<Option<PipelineResults>> {
    let pipeline = Pipeline::load(pipeline_file)?;
    let Some((path, file)) = load_tests(pipeline_file)? else {
        return Ok(None);
    };
    let mut results = Vec::new();
    for t in &file.tests {
        if filter.is_some_and(|f| !t.name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let failures = run_one(&pipeline, t, registry)
            .await
            .map_err(|e| e.context(format!("{}: test `{}`", path.display(), t.name)))?;
        results.push(TestResult {
            name: t.name.clone(),
            passed: failures.is_empty(),
            duration_ms: started.elapsed().as_millis() as u64,
            failures,
        });
    }
    Ok(Some(PipelineResults {
        pipeline: pipeline_file.display().to_string(),
        tests_file: path.display().to_string(),
        tests: results,
    }))
}

/// A test's graph, ready to run, and the tables to read afterwards.
struct Prepared {
    graph: Graph,
    /// Per expectation: the table holding what its node or port gave, that output's mode and
    /// schema.
    tables: Vec<(MemoryTable, OutputMode, SchemaRef)>,
    _checkpoint: MemoryCheckpoint,
}

/// The in-memory checkpoint store of one test, freed with it.
struct MemoryCheckpoint(String);

impl Drop for MemoryCheckpoint {
    fn drop(&mut self) {
        engine_api::store::drop_memory_location(&self.0);
    }
}

/// Builds a test's graph: taps on the nodes and ports it reads, its messages in place of the
/// sources, memory tables in place of the sinks, checkpoints in memory.
fn prepare(pipeline: &Pipeline, test: &TestCase, registry: &Registry) -> Result<Prepared> {
    let mut p = pipeline.clone();
    let checkpoint = MemoryCheckpoint(engine_api::store::memory_location());
    p.checkpoint = checkpoint.0.clone();
    // A sink is read as what it was given; any other node or port through a tap.
    let mut taps: BTreeMap<String, String> = BTreeMap::new();
    for e in &test.expect {
        let (node, port) = e.node.split_once('.').unwrap_or((&e.node, MAIN_PORT));
        let Some(spec) = p.nodes.iter().find(|n| n.name == node) else {
            return Err(EngineError::config(format!(
                "expect.node: the pipeline has no node `{node}` (nodes: {})",
                join_names(p.nodes.iter().map(|n| n.name.as_str()))
            )));
        };
        let is_sink = registry.kind(&spec.type_name) == Some(engine_api::NodeKind::Sink);
        if is_sink && port != MAIN_PORT {
            return Err(EngineError::config(format!(
                "expect.node: `{node}` is a sink, which has no port `{port}`; name the sink alone to read what it was given"
            )));
        }
        if is_sink || taps.contains_key(&e.node) {
            continue;
        }
        let name = format!("{TAP_TYPE}_{}", taps.len());
        let line = spec.line;
        p.nodes.push(NodeSpec {
            name: name.clone(),
            type_name: TAP_TYPE.into(),
            inputs: vec![e.node.clone()],
            config: ConfigValue::Table(Vec::new()),
            event_time: None,
            line,
        });
        taps.insert(e.node.clone(), name);
    }
    let mut graph = Graph::build(p, registry).map_err(|e| {
        // A port that does not exist is reported against the tap: say it in the test's words.
        let message = e.message();
        match message.split_once(&format!("({TAP_TYPE}): ")) {
            Some((_, what)) => EngineError::config(format!("expect.node: {what}")),
            None => e,
        }
    })?;
    // Sources: the test's messages.
    let sources: Vec<(String, SchemaRef, Option<String>)> = graph
        .nodes
        .iter()
        .filter_map(|g| match &g.node {
            Node::Source(s) => Some((
                g.spec.name.clone(),
                s.schema(),
                g.spec
                    .config
                    .get("topic")
                    .and_then(ConfigValue::as_str)
                    .map(str::to_string),
            )),
            _ => None,
        })
        .collect();
    let mut scripts = scripts(&sources, &test.input)?;
    for (name, schema, _) in &sources {
        let steps = scripts.remove(name).unwrap_or_default();
        graph.replace_source(name, Box::new(VectorSource::new(schema.clone(), steps)))?;
    }
    // Sinks and taps: memory tables.
    let mut by_node: BTreeMap<String, (MemoryTable, OutputMode, SchemaRef)> = BTreeMap::new();
    let sinks: Vec<(String, OutputMode, SchemaRef)> = graph
        .nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Sink(_)))
        .map(|g| {
            let schema = g
                .input
                .as_ref()
                .map(|i| i.schema.clone())
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            (g.spec.name.clone(), g.mode, schema)
        })
        .collect();
    for (name, mode, schema) in sinks {
        let table = MemoryTable::new();
        graph.replace_sink(&name, Box::new(MemorySink::new(&name, table.clone())))?;
        by_node.insert(name, (table, mode, schema));
    }
    let tables = test
        .expect
        .iter()
        .map(|e| {
            let sink = taps.get(&e.node).cloned().unwrap_or_else(|| e.node.clone());
            by_node
                .get(&sink)
                .cloned()
                .ok_or_else(|| EngineError::runtime(format!("no table for `{}`", e.node)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared {
        graph,
        tables,
        _checkpoint: checkpoint,
    })
}

/// Names, comma-separated, for messages that list what there is.
fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

async fn run_one(
    pipeline: &Pipeline,
    test: &TestCase,
    registry: &Registry,
) -> Result<Vec<Failure>> {
    let Prepared {
        graph,
        tables,
        _checkpoint,
    } = prepare(pipeline, test, registry)?;
    let opts = RunOptions {
        batch: true,
        rebuild: None,
    };
    run(graph, opts, CancellationToken::new()).await?;
    let mut failures = Vec::new();
    for (e, (table, mode, schema)) in test.expect.iter().zip(&tables) {
        let batches = visible(table, *mode, e.after);
        if let Some(f) = compare(e, schema, &batches)? {
            failures.push(f);
        }
    }
    Ok(failures)
}

/// What a reader of the table sees after the first `after` barriers (all of it when `None`):
/// every row committed for an append or update output, the last commit of a complete one.
fn visible(table: &MemoryTable, mode: OutputMode, after: Option<Epoch>) -> Vec<RecordBatch> {
    let commits: Vec<(Epoch, Vec<RecordBatch>)> = table
        .commits()
        .into_iter()
        .filter(|(e, _)| after.is_none_or(|a| *e <= a))
        .collect();
    match mode {
        OutputMode::Complete => commits.last().map(|(_, b)| b.clone()).unwrap_or_default(),
        _ => commits.into_iter().flat_map(|(_, b)| b).collect(),
    }
}

/// The keys of an input entry that are not column values.
const STEP_KEYS: [&str; 3] = ["barrier", "source", "tombstone"];

/// A source's batch being gathered: its partition and its rows, column to value.
type Gathering = (i64, Vec<BTreeMap<String, Json>>);

/// Turns a test's input entries into one script per source: consecutive messages of one
/// source partition form one batch.
fn scripts(
    sources: &[(String, SchemaRef, Option<String>)],
    input: &[toml::Table],
) -> Result<BTreeMap<String, Vec<Step>>> {
    let mut out: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    // Per source: the partition and rows of the batch being gathered.
    let mut pending: BTreeMap<String, Gathering> = BTreeMap::new();
    let mut next_offset: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut next_line: BTreeMap<(String, String), i64> = BTreeMap::new();
    let flush = |out: &mut BTreeMap<String, Vec<Step>>,
                 pending: &mut BTreeMap<String, Gathering>,
                 source: &str|
     -> Result<()> {
        if let Some((partition, rows)) = pending.remove(source) {
            let (_, schema, _) = sources.iter().find(|s| s.0 == source).expect("known");
            let batch = source_batch(schema, &rows)?;
            out.entry(source.to_string())
                .or_default()
                .push(Step::Batch(partition_id(source, partition), batch));
        }
        Ok(())
    };
    for (i, entry) in input.iter().enumerate() {
        let at = format!("input[{i}]");
        if entry.get("barrier").and_then(toml::Value::as_bool) == Some(true) {
            if entry.len() > 1 {
                return Err(EngineError::config(format!(
                    "{at}: a barrier takes no other key"
                )));
            }
            for (name, _, _) in sources {
                flush(&mut out, &mut pending, name)?;
                out.entry(name.clone()).or_default().push(Step::Barrier);
            }
            continue;
        }
        let source = match entry.get("source") {
            Some(v) => v
                .as_str()
                .filter(|s| sources.iter().any(|x| x.0 == *s))
                .ok_or_else(|| {
                    EngineError::config(format!(
                        "{at}.source: not a source of the pipeline (sources: {})",
                        source_names(sources)
                    ))
                })?
                .to_string(),
            None if sources.len() == 1 => sources[0].0.clone(),
            None => {
                return Err(EngineError::config(format!(
                    "{at}: the pipeline has several sources; say which with source = \"...\" ({})",
                    source_names(sources)
                )));
            }
        };
        let (_, schema, topic) = sources.iter().find(|s| s.0 == source).expect("known");
        let mut row = BTreeMap::new();
        for (k, v) in entry {
            if STEP_KEYS.contains(&k.as_str()) {
                continue;
            }
            let column = if k == "timestamp" && schema.index_of("timestamp").is_err() {
                "kafka_timestamp"
            } else {
                k.as_str()
            };
            if schema.index_of(column).is_err() {
                return Err(EngineError::config(format!(
                    "{at}: `{k}` is not a column of source `{source}` (columns: {})",
                    column_names(schema)
                )));
            }
            row.insert(column.to_string(), toml_to_json(v));
        }
        let tombstone = entry.get("tombstone").and_then(toml::Value::as_bool) == Some(true);
        if schema.index_of("value").is_ok() {
            match (row.get("value"), tombstone) {
                (Some(_), true) => {
                    return Err(EngineError::config(format!(
                        "{at}: a tombstone has no value; remove one of `value` and `tombstone`"
                    )));
                }
                (None, false) => {
                    return Err(EngineError::config(format!(
                        "{at}: give the message a `value` (text, or a table written as JSON), or tombstone = true for a null value"
                    )));
                }
                (None, true) => {
                    row.insert("value".into(), Json::Null);
                }
                (Some(_), false) => {}
            }
        }
        let partition = match row.get("partition") {
            Some(v) => v.as_i64().ok_or_else(|| {
                EngineError::config(format!("{at}.partition: expected an integer"))
            })?,
            None => 0,
        };
        // Defaults: the configured topic, the next offset of the partition, the next line of
        // the file.
        if schema.index_of("topic").is_ok() {
            row.entry("topic".into())
                .or_insert_with(|| Json::from(topic.clone().unwrap_or_else(|| source.clone())));
        }
        if schema.index_of("partition").is_ok() {
            row.insert("partition".into(), Json::from(partition));
        }
        if schema.index_of("offset").is_ok() {
            let next = next_offset.entry((source.clone(), partition)).or_insert(0);
            let offset = row.get("offset").and_then(Json::as_i64).unwrap_or(*next);
            *next = offset + 1;
            row.insert("offset".into(), Json::from(offset));
        }
        if schema.index_of("file").is_ok() {
            let file = row
                .entry("file".into())
                .or_insert_with(|| Json::from("input.jsonl"))
                .as_str()
                .unwrap_or_default()
                .to_string();
            if schema.index_of("line").is_ok() {
                let next = next_line.entry((source.clone(), file)).or_insert(1);
                let line = row.get("line").and_then(Json::as_i64).unwrap_or(*next);
                *next = line + 1;
                row.insert("line".into(), Json::from(line));
            }
        }
        if pending.get(&source).is_some_and(|(p, _)| *p != partition) {
            flush(&mut out, &mut pending, &source)?;
        }
        pending
            .entry(source.clone())
            .or_insert_with(|| (partition, Vec::new()))
            .1
            .push(row);
    }
    for (name, _, _) in sources {
        flush(&mut out, &mut pending, name)?;
    }
    Ok(out)
}

fn source_names(sources: &[(String, SchemaRef, Option<String>)]) -> String {
    join_names(sources.iter().map(|s| s.0.as_str()))
}

fn partition_id(source: &str, partition: i64) -> PartitionId {
    PartitionId::new(format!("{source}/{partition}"))
}

/// A TOML value as JSON: a date-time becomes its RFC 3339 text.
fn toml_to_json(v: &toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::from(s.as_str()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        toml::Value::Boolean(b) => Json::from(*b),
        toml::Value::Datetime(d) => Json::from(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Json::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// The source batch for rows given as JSON values per column. A message's `value` given as
/// text is sent as that text; as a table, number or list, as its JSON.
fn source_batch(schema: &SchemaRef, rows: &[BTreeMap<String, Json>]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in schema.fields() {
        let vals: Vec<Option<&Json>> = rows
            .iter()
            .map(|r| r.get(f.name()).filter(|v| !v.is_null()))
            .collect();
        let bad = |what: &str| {
            EngineError::config(format!("input column `{}`: expected {what}", f.name()))
        };
        let text = |v: &Json| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let array: ArrayRef = match f.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from(
                vals.iter().map(|v| v.map(text)).collect::<Vec<_>>(),
            )),
            DataType::Binary => {
                let texts: Vec<Option<String>> = vals.iter().map(|v| v.map(text)).collect();
                Arc::new(BinaryArray::from(
                    texts
                        .iter()
                        .map(|t| t.as_deref().map(str::as_bytes))
                        .collect::<Vec<_>>(),
                ))
            }
            DataType::Int32 => Arc::new(Int32Array::from(
                vals.iter()
                    .map(|v| {
                        v.map(|v| {
                            v.as_i64()
                                .and_then(|i| i32::try_from(i).ok())
                                .ok_or_else(|| bad("a 32-bit integer"))
                        })
                        .transpose()
                    })
                    .collect::<Result<Vec<_>>>()?,
            )),
            DataType::Int64 => Arc::new(Int64Array::from(
                vals.iter()
                    .map(|v| {
                        v.map(|v| v.as_i64().ok_or_else(|| bad("an integer")))
                            .transpose()
                    })
                    .collect::<Result<Vec<_>>>()?,
            )),
            DataType::Timestamp(TimeUnit::Millisecond, tz) => Arc::new(
                TimestampMillisecondArray::from(
                    vals.iter()
                        .map(|v| {
                            v.map(|v| {
                                millis(v).ok_or_else(|| {
                                    bad("a date-time (RFC 3339) or milliseconds since 1970")
                                })
                            })
                            .transpose()
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
                .with_timezone_opt(tz.clone()),
            ),
            other => {
                if vals.iter().any(Option::is_some) {
                    return Err(EngineError::config(format!(
                        "input column `{}` is {other}, which tests cannot give yet",
                        f.name()
                    )));
                }
                arrow::array::new_null_array(other, rows.len())
            }
        };
        if !f.is_nullable() && array.null_count() > 0 {
            return Err(EngineError::config(format!(
                "input column `{}` needs a value in every message",
                f.name()
            )));
        }
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| EngineError::config(format!("cannot build the test input: {e}")))
}

/// Milliseconds since 1970 of an RFC 3339 text or an integer.
fn millis(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => Some(parse_time(s)?.timestamp_millis()),
        _ => None,
    }
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .map(|d| {
                    d.and_hms_opt(0, 0, 0)
                        .expect("midnight")
                        .and_utc()
                        .fixed_offset()
                })
        })
}

/// The rows of batches as JSON objects, every column present (null included); binary columns
/// as text.
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, Json>>> {
    let mut out = Vec::new();
    for b in batches {
        let b = texts_for_binary(b)?;
        let mut buf = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        w.write(&b)
            .and_then(|_| w.finish())
            .map_err(|e| EngineError::runtime(format!("cannot show the output rows: {e}")))?;
        drop(w);
        if buf.is_empty() {
            continue;
        }
        let rows: Vec<serde_json::Map<String, Json>> = serde_json::from_slice(&buf)
            .map_err(|e| EngineError::runtime(format!("cannot show the output rows: {e}")))?;
        out.extend(rows);
    }
    Ok(out)
}

/// Binary columns as UTF-8 text (invalid bytes replaced), so rows show and compare as text.
fn texts_for_binary(b: &RecordBatch) -> Result<RecordBatch> {
    if !b
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Binary)
    {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if let Some(bin) = c.as_any().downcast_ref::<BinaryArray>() {
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from(
                bin.iter()
                    .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect::<Vec<_>>(),
            )));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| EngineError::runtime(format!("cannot show the output rows: {e}")))
}

/// Checks one expectation against what its node gave; `None` when it holds.
fn compare(
    e: &Expectation,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Option<Failure>> {
    let expected = expected_rows(&e.rows)?;
    // Only the columns the expected rows name are compared; each must exist.
    let mut columns: Vec<String> = Vec::new();
    for r in &expected {
        for k in r.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    for c in &columns {
        if schema.index_of(c).is_err() {
            return Ok(Some(Failure {
                node: e.node.clone(),
                message: format!(
                    "no column `{c}` in this output (columns: {})",
                    column_names(schema)
                ),
                missing: Vec::new(),
                unexpected: Vec::new(),
            }));
        }
    }
    let actual = json_rows(batches)?;
    let types: BTreeMap<&str, &DataType> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    for exp in &expected {
        let found = actual.iter().enumerate().position(|(i, act)| {
            !used[i]
                && exp.iter().all(|(k, v)| {
                    values_match(
                        v,
                        act.get(k).unwrap_or(&Json::Null),
                        types[k.as_str()],
                        e.tolerance,
                    )
                })
        });
        match found {
            Some(i) => used[i] = true,
            None => missing.push(Json::Object(exp.clone())),
        }
    }
    let unexpected: Vec<Json> = match e.mode {
        MatchMode::Contains => Vec::new(),
        MatchMode::Exact => actual
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(r, _)| {
                // Shown with the compared columns only, unless nothing was expected.
                if columns.is_empty() {
                    Json::Object(r.clone())
                } else {
                    Json::Object(
                        columns
                            .iter()
                            .map(|c| (c.clone(), r.get(c).cloned().unwrap_or(Json::Null)))
                            .collect(),
                    )
                }
            })
            .collect(),
    };
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(None);
    }
    let when = e
        .after
        .map(|a| format!(" after barrier {a}"))
        .unwrap_or_default();
    let message = match e.mode {
        MatchMode::Exact => format!(
            "expected {} row(s){when}, got {}: {} expected row(s) not found, {} row(s) not expected",
            expected.len(),
            actual.len(),
            missing.len(),
            unexpected.len()
        ),
        MatchMode::Contains => format!(
            "{} of {} expected row(s) not found{when} among {} row(s)",
            missing.len(),
            expected.len(),
            actual.len()
        ),
    };
    Ok(Some(Failure {
        node: e.node.clone(),
        message,
        missing,
        unexpected,
    }))
}

/// The key of an expected row that lists the columns expected to be null (TOML has no null).
const NULL_KEY: &str = "_null";

/// Expected rows as JSON objects, with `_null = ["a", "b"]` turned into null values.
fn expected_rows(rows: &[toml::Table]) -> Result<Vec<serde_json::Map<String, Json>>> {
    rows.iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            for (k, v) in r {
                if k != NULL_KEY {
                    m.insert(k.clone(), toml_to_json(v));
                    continue;
                }
                let columns = v.as_array().filter(|a| a.iter().all(toml::Value::is_str));
                let Some(columns) = columns else {
                    return Err(EngineError::config(format!(
                        "expect.rows: `{NULL_KEY}` lists the columns expected to be null, such as {NULL_KEY} = [\"order_id\"]"
                    )));
                };
                for c in columns.iter().filter_map(toml::Value::as_str) {
                    m.insert(c.to_string(), Json::Null);
                }
            }
            Ok(m)
        })
        .collect()
}

/// Whether an expected value matches an actual one: numbers within the relative tolerance,
/// date-times as instants (whatever their text), lists and structs element by element, the
/// rest equal. No coercion between text and numbers.
fn values_match(expected: &Json, actual: &Json, dtype: &DataType, tolerance: f64) -> bool {
    match (expected, actual) {
        (Json::Null, Json::Null) => true,
        (Json::Number(a), Json::Number(b)) => {
            if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                return a == b;
            }
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= tolerance * 1f64.max(a.abs()).max(b.abs()),
                _ => false,
            }
        }
        (Json::String(a), Json::String(b))
            if matches!(
                dtype,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            ) =>
        {
            match (parse_time(a), parse_time(b)) {
                (Some(a), Some(b)) => a == b,
                _ => a == b,
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            let inner = match dtype {
                DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
                _ => DataType::Null,
            };
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| values_match(x, y, &inner, tolerance))
        }
        (Json::Object(a), Json::Object(b)) => {
            let field_type = |k: &str| match dtype {
                DataType::Struct(fs) => fs
                    .iter()
                    .find(|f| f.name() == k)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Null),
                _ => DataType::Null,
            };
            a.iter().all(|(k, v)| {
                values_match(
                    v,
                    b.get(k).unwrap_or(&Json::Null),
                    &field_type(k),
                    tolerance,
                )
            })
        }
        (a, b) => a == b,
    }
}

/// Prints the results of every pipeline as text; returns (passed, failed).
pub fn print_text(results: &[PipelineResults], missing: &[String]) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for r in results {
        println!("{} ({})", r.pipeline, r.tests_file);
        for t in &r.tests {
            if t.passed {
                passed += 1;
                println!("  ok      {} ({} ms)", t.name, t.duration_ms);
                continue;
            }
            failed += 1;
            println!("  FAILED  {} ({} ms)", t.name, t.duration_ms);
            for f in &t.failures {
                println!("    `{}`: {}", f.node, f.message);
                for row in f.missing.iter().take(20) {
                    println!("      - expected  {row}");
                }
                for row in f.unexpected.iter().take(20) {
                    println!("      + actual    {row}");
                }
                let more =
                    f.missing.len().saturating_sub(20) + f.unexpected.len().saturating_sub(20);
                if more > 0 {
                    println!("      ... and {more} more (--format json shows all)");
                }
            }
        }
    }
    for m in missing {
        println!(
            "{m}: no tests (write them in {})",
            tests_path(Path::new(m)).display()
        );
    }
    println!(
        "\n{} test(s): {passed} passed, {failed} failed",
        passed + failed
    );
    (passed, failed)
}

/// The results of every pipeline as one JSON document.
pub fn to_json(results: &[PipelineResults], missing: &[String]) -> Json {
    let passed = results
        .iter()
        .flat_map(|r| &r.tests)
        .filter(|t| t.passed)
        .count();
    let total: usize = results.iter().map(|r| r.tests.len()).sum();
    serde_json::json!({
        "passed": passed,
        "failed": total - passed,
        "pipelines": results,
        "without_tests": missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut r = crate::builtin_registry();
        register_tap(&mut r);
        r
    }

    fn pipelines_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines")
    }

    /// A copy of a shipped pipeline in a fresh folder, with `tests` as its test file.
    fn with_tests(pipeline: &str, tests: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("engine-test-cmd-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(pipeline);
        std::fs::copy(pipelines_dir().join(pipeline), &file).unwrap();
        std::fs::write(tests_path(&file), tests).unwrap();
        file
    }

    async fn run_tests(file: &Path) -> Result<PipelineResults> {
        Ok(run_pipeline_tests(file, &registry(), None).await?.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shipped_pipelines_pass_their_tests() {
        let mut tested = Vec::new();
        for entry in std::fs::read_dir(pipelines_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".test.toml") {
                continue;
            }
            let r = run_tests(&pipeline_path(&path)).await.unwrap();
            assert!(!r.tests.is_empty(), "{name} has tests");
            for t in &r.tests {
                assert!(t.passed, "{name}: `{}` failed: {:#?}", t.name, t.failures);
            }
            tested.push(name);
        }
        tested.sort();
        assert_eq!(
            tested,
            [
                "logs.test.toml",
                "metrics.test.toml",
                "orders.test.toml",
                "orders_files.test.toml"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_expectation_fails_with_the_rows_that_differ() {
        // Two orders of c1 in [10:00, 10:01): the test claims three, for 18.0.
        let file = with_tests(
            "orders.toml",
            r#"
[[tests]]
name = "wrong on purpose"
[[tests.input]]
value = '{"order_id": 1, "customer_id": "c1", "timestamp": "2026-03-01T10:00:05Z", "total": 10.0}'
[[tests.input]]
value = '{"order_id": 2, "customer_id": "c1", "timestamp": "2026-03-01T10:00:40Z", "total": 5.0}'
[[tests.input]]
value = '{"order_id": 3, "customer_id": "c2", "timestamp": "2026-03-01T10:03:00Z", "total": 1.0}'
[[tests.expect]]
node = "customer_orders_1min"
rows = [{ customer_id = "c1", nb_commandes = 3, total_commandes = 18.0 }]
[[tests.expect]]
node = "commandes"
match = "contains"
rows = [{ order_id = 1 }, { order_id = 4 }]
[[tests.expect]]
node = "parse.quarantine"
rows = []
"#,
        );
        let r = run_tests(&file).await.unwrap();
        let t = &r.tests[0];
        assert!(!t.passed);
        assert_eq!(t.failures.len(), 2, "{:#?}", t.failures);
        let w = &t.failures[0];
        assert_eq!(w.node, "customer_orders_1min");
        assert_eq!(
            w.message,
            "expected 1 row(s), got 1: 1 expected row(s) not found, 1 row(s) not expected"
        );
        assert_eq!(
            w.missing,
            [serde_json::json!({"customer_id": "c1", "nb_commandes": 3, "total_commandes": 18.0})]
        );
        assert_eq!(
            w.unexpected,
            [serde_json::json!({"customer_id": "c1", "nb_commandes": 2, "total_commandes": 15.0})]
        );
        let c = &t.failures[1];
        assert_eq!(c.node, "commandes");
        assert_eq!(c.message, "1 of 2 expected row(s) not found among 3 row(s)");
        assert_eq!(c.missing, [serde_json::json!({"order_id": 4})]);
        assert!(c.unexpected.is_empty());
        // The text report names the test, the node and both rows; JSON says failed.
        let doc = to_json(std::slice::from_ref(&r), &[]);
        assert_eq!(
            (doc["passed"].clone(), doc["failed"].clone()),
            (0.into(), 1.into())
        );
        assert_eq!(
            doc["pipelines"][0]["tests"][0]["failures"][0]["missing"][0]["nb_commandes"],
            3
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tolerance_time_and_nulls_are_compared_as_documented() {
        let file = with_tests(
            "metrics.toml",
            r#"
[[tests]]
name = "t"
[[tests.input]]
value = { timestamp = "2026-03-01T10:00:00Z", server_id = "a", cpu_percent = 0.1, memory_percent = 0.2 }
[[tests.input]]
value = { timestamp = "2026-03-01T10:05:00Z", server_id = "a", cpu_percent = 0.1, memory_percent = 0.2 }
[[tests.expect]]
node = "server_load"
rows = [{ server_id = "a", load_score = 0.15000000001 }]
[[tests.expect]]
node = "server_metrics_1min"
rows = [{ window_start = "2026-03-01 11:00:00+01:00", server_id = "a", avg_cpu = 0.1 }]
[[tests.expect]]
node = "metrics"
match = "contains"
rows = [{ server_id = "a", _null = ["disk_percent"] }]
[[tests.expect]]
node = "metrics"
match = "contains"
rows = [{ server_id = "a", cpu_percent = "0.1" }]
"#,
        );
        let r = run_tests(&file).await.unwrap();
        let f = &r.tests[0].failures;
        // Only the last fails: text never matches a number.
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            f[0].missing,
            [serde_json::json!({"server_id": "a", "cpu_percent": "0.1"})]
        );
    }

    async fn error_of(pipeline: &str, tests: &str) -> String {
        let file = with_tests(pipeline, tests);
        match run_pipeline_tests(&file, &registry(), None).await {
            Err(e) => e.to_string(),
            Ok(r) => panic!("no error: {r:#?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mistakes_in_a_test_file_are_one_line_errors() {
        let cases = [
            (
                "[[tests.expect]]\nnode = \"nope\"\n",
                "test `t`: expect.node: the pipeline has no node `nope` (nodes: source, parse",
            ),
            (
                "[[tests.expect]]\nnode = \"parse.nope\"\n",
                "test `t`: expect.node: node `parse` has no port `nope`; its ports are: out, quarantine",
            ),
            (
                "[[tests.input]]\nvalue = \"{}\"\npartiton = 1\n",
                "input[0]: `partiton` is not a column of source `source` (columns: topic, partition, offset, kafka_timestamp, key, value)",
            ),
            (
                "[[tests.input]]\nkey = \"k\"\n",
                "input[0]: give the message a `value`",
            ),
            (
                "[[tests.expect]]\nnode = \"commandes\"\nmatch = \"some\"\n",
                "orders.test.toml:5: unknown variant `some`",
            ),
            ("[[tests]]\nname = \"t\"\n", "two tests are named `t`"),
        ];
        for (body, want) in cases {
            let e = error_of("orders.toml", &format!("[[tests]]\nname = \"t\"\n{body}")).await;
            assert!(e.contains(want), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // A misspelt column in the expectation is a failure that lists the columns.
        let file = with_tests(
            "orders.toml",
            "[[tests]]\nname = \"t\"\n[[tests.expect]]\nnode = \"commandes\"\nrows = [{ ordr_id = 1 }]\n",
        );
        let r = run_tests(&file).await.unwrap();
        assert!(
            r.tests[0].failures[0]
                .message
                .starts_with("no column `ordr_id` in this output (columns: topic, partition")
        );
    }

    #[test]
    fn test_files_stand_for_their_pipelines() {
        assert_eq!(
            pipeline_path(Path::new("p/orders.test.toml")),
            Path::new("p/orders.toml")
        );
        assert_eq!(
            pipeline_path(Path::new("p/orders.toml")),
            Path::new("p/orders.toml")
        );
        assert_eq!(
            tests_path(Path::new("p/orders.toml")),
            Path::new("p/orders.test.toml")
        );
    }

    #[test]
    fn a_pipeline_cannot_keep_its_checkpoints_in_memory() {
        let e = engine_api::Location::open("memory://x/y", &Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("unsupported URL scheme"), "{e}");
    }
}
