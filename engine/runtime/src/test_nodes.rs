//! Node types for the runtime's own tests: no Kafka, no S3, no built-in operator.

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use engine_api::{
    BuildContext, Built, Collector, Committer, EngineError, Epoch, Input, Operator, OperatorConfig,
    OutputMode, OutputPort, PartitionId, PendingCommit, Registry, Result, Sink, SinkConfig, Source,
    SourceConfig, SourceContext,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `"x"` is an Int64 column, `"x:string"` a Utf8 one.
pub fn schema(cols: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| match c.split_once(':') {
                Some((n, "string")) => Field::new(n, DataType::Utf8, true),
                _ => Field::new(*c, DataType::Int64, true),
            })
            .collect::<Vec<_>>(),
    ))
}

/// A batch of `(key, ts, n)` rows for the schema `["key:string", "ts:string", "n"]`.
pub fn rows(rows: &[(&str, &str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(&["key:string", "ts:string", "n"]),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSource {
    columns: Vec<String>,
}
pub struct TestSourceNode(SchemaRef);
impl SourceConfig for TestSource {
    fn build(self, _: &BuildContext) -> Result<Box<dyn Source>> {
        let cols: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        Ok(Box::new(TestSourceNode(schema(&cols))))
    }
}
impl Source for TestSourceNode {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn open(&mut self, _: &mut dyn engine_api::OpenContext) -> Result<()> {
        Ok(())
    }
    fn run(&mut self, _: &mut dyn SourceContext) -> Result<()> {
        Ok(())
    }
}

/// Passes rows on and, with `split`, also declares a second port `rejected` that must be read;
/// `mode` sets its output mode; `needs` a column it requires.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOp {
    #[serde(default)]
    split: bool,
    #[serde(default)]
    mode: Option<OutputMode>,
    #[serde(default)]
    needs: Option<String>,
}
struct Pass;
impl OperatorConfig for TestOp {
    fn build(self, _: &BuildContext, input: &Input) -> Result<Built> {
        if let Some(c) = &self.needs {
            input
                .schema
                .index_of(c)
                .map_err(|_| EngineError::invalid("needs", format!("no column `{c}`")))?;
        }
        let mode = self.mode.unwrap_or(input.mode);
        let mut ports = vec![OutputPort::main(input.schema.clone(), mode)];
        if self.split {
            ports.push(
                OutputPort::named("rejected", input.schema.clone(), mode)
                    .must_be_read("or set split = false"),
            );
        }
        Ok(Built::new(Pass, ports))
    }
}
impl Operator for Pass {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        out.emit(batch);
        Ok(())
    }
}

/// Sums `n` per `key` (stateful, checkpointed) and emits the whole table at each trigger
/// (complete mode); rows with `n < 0` fail the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SumOp {}
struct Sum {
    schema: SchemaRef,
    sums: BTreeMap<String, i64>,
}
impl OperatorConfig for SumOp {
    fn build(self, _: &BuildContext, _: &Input) -> Result<Built> {
        let schema = schema(&["key:string", "n"]);
        Ok(Built::new(
            Sum {
                schema: schema.clone(),
                sums: BTreeMap::new(),
            },
            vec![OutputPort::main(schema, OutputMode::Complete)],
        ))
    }
}
impl Operator for Sum {
    fn process(&mut self, batch: RecordBatch, _: &mut Collector) -> Result<()> {
        let keys = batch.column_by_name("key").unwrap().as_string::<i32>();
        let n = batch
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if n.value(i) < 0 {
                return Err(EngineError::runtime("negative n"));
            }
            *self.sums.entry(keys.value(i).to_string()).or_default() += n.value(i);
        }
        Ok(())
    }
    fn on_barrier(&mut self, _: Epoch, out: &mut Collector) -> Result<()> {
        out.emit(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(self.sums.keys())),
                Arc::new(Int64Array::from_iter_values(self.sums.values().copied())),
            ],
        )?);
        Ok(())
    }
    fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(Some(serde_json::to_vec(&self.sums).unwrap()))
    }
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.sums = serde_json::from_slice(state).unwrap();
        Ok(())
    }
}

/// Emits one row `(watermark)` for every watermark it receives, and `(-epoch)` at each barrier,
/// so a test sees the order of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarksOp {}
struct Watermarks(SchemaRef);
impl OperatorConfig for WatermarksOp {
    fn build(self, _: &BuildContext, input: &Input) -> Result<Built> {
        if input.event_time.is_none() {
            return Err(EngineError::invalid("type", "needs event time"));
        }
        let s = schema(&["w"]);
        Ok(Built::new(
            Watermarks(s.clone()),
            vec![OutputPort::main(s, OutputMode::Append)],
        ))
    }
}
impl Watermarks {
    fn row(&self, v: i64, out: &mut Collector) -> Result<()> {
        out.emit(RecordBatch::try_new(
            self.0.clone(),
            vec![Arc::new(Int64Array::from(vec![v]))],
        )?);
        Ok(())
    }
}
impl Operator for Watermarks {
    fn merges_partitions(&self) -> bool {
        true
    }
    fn process(&mut self, _: RecordBatch, _: &mut Collector) -> Result<()> {
        Ok(())
    }
    fn on_watermark(&mut self, w: i64, out: &mut Collector) -> Result<()> {
        self.row(w, out)
    }
    fn on_barrier(&mut self, epoch: Epoch, out: &mut Collector) -> Result<()> {
        self.row(-(epoch as i64), out)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSink {
    /// Takes every output mode, not only append.
    #[serde(default)]
    any_mode: bool,
}
pub struct TestSinkNode(bool);
struct NoCommit;
#[async_trait::async_trait]
impl Committer for NoCommit {
    async fn commit(&self, _: &[PendingCommit]) -> Result<()> {
        Ok(())
    }
}
impl SinkConfig for TestSink {
    fn build(self, _: &BuildContext, _: &Input) -> Result<Box<dyn Sink>> {
        Ok(Box::new(TestSinkNode(self.any_mode)))
    }
}
#[async_trait::async_trait]
impl Sink for TestSinkNode {
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, _: RecordBatch, _: Option<&PartitionId>) -> Result<()> {
        Ok(())
    }
    async fn prepare_commit(&mut self, _: Epoch) -> Result<Vec<PendingCommit>> {
        Ok(Vec::new())
    }
    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(NoCommit)
    }
    fn describe(&self) -> String {
        "test sink".into()
    }
    fn accepts(&self) -> Vec<OutputMode> {
        if self.0 {
            vec![OutputMode::Append, OutputMode::Update, OutputMode::Complete]
        } else {
            vec![OutputMode::Append]
        }
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_source::<TestSource>("src");
    r.register_operator::<TestOp>("op");
    r.register_operator::<SumOp>("sum");
    r.register_operator::<WatermarksOp>("watermarks");
    r.register_sink::<TestSink>("sink");
    r
}

/// The `n` column of batches as (key, n) pairs, sorted.
pub fn key_n(batches: &[RecordBatch]) -> Vec<(String, i64)> {
    let mut v = Vec::new();
    for b in batches {
        let keys = b.column_by_name("key").unwrap().as_string::<i32>();
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            v.push((keys.value(i).to_string(), n.value(i)));
        }
    }
    v.sort();
    v
}

/// The single Int64 column of batches, in order.
pub fn ints(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Int64Type>();
            (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect()
}
