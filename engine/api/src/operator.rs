use crate::{Epoch, OutputMode, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// The name of every node's main output port.
pub const MAIN_PORT: &str = "out";

/// A pipeline operator: pure over batches, no I/O.
///
/// The engine wraps each operator in an actor with a bounded mailbox, aligns barriers,
/// snapshots state and forwards what the operator collects, so an implementation never sees a
/// mailbox. Built-in operators implement this trait and register like user code.
///
/// Output ports: port 0 is [`MAIN_PORT`]; an operator with more ports (such as the JSON parser's
/// `quarantine`) lists them in [`Operator::output_ports`], and downstream nodes name them as
/// `"node.port"` in their `inputs`.
pub trait Operator: Send + 'static {
    /// Names of the output ports, main port first.
    fn output_ports(&self) -> Vec<String> {
        vec![MAIN_PORT.to_string()]
    }

    /// Called once before any data with the schema of the input; returns the schema of each
    /// output port, in the order of [`Operator::output_ports`]. Check column names and types here,
    /// so `engine validate` reports mistakes before anything runs.
    fn init(&mut self, input: &SchemaRef) -> Result<Vec<SchemaRef>>;

    /// The output mode of this operator given its input's. Stateless operators pass it on (the
    /// default); aggregates set their own; an operator that needs a given input mode says so here
    /// with a config error, so `engine validate` rejects the pipeline.
    fn output_mode(&self, input: OutputMode) -> Result<OutputMode> {
        Ok(input)
    }

    /// Processes one micro-batch, pushing results to `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()>;

    /// Called when a checkpoint barrier (a trigger) arrives, before the state is snapshotted.
    /// Window operators emit here what the trigger makes visible.
    fn on_barrier(&mut self, _epoch: Epoch, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Called when the upstream watermark advances (event time in ms).
    fn on_watermark(&mut self, _watermark_ms: i64, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Called once when the input ends; emit what is still held.
    fn on_end(&mut self, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Serialises the operator's state at a barrier. `None` means stateless.
    fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Restores state saved by [`Operator::snapshot`], before any data.
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Rows (or entries) held in state, reported in metrics and logs.
    fn state_size(&self) -> usize {
        0
    }
}

/// Where an operator pushes its output batches, per port.
#[derive(Debug, Default)]
pub struct Collector {
    ports: Vec<Vec<RecordBatch>>,
}

impl Collector {
    pub fn new(num_ports: usize) -> Self {
        Collector {
            ports: vec![Vec::new(); num_ports.max(1)],
        }
    }

    /// Emits a batch on the main port.
    pub fn emit(&mut self, batch: RecordBatch) {
        self.emit_to(0, batch);
    }

    /// Emits a batch on port `port` (an index into [`Operator::output_ports`]). Empty batches are dropped.
    pub fn emit_to(&mut self, port: usize, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        if port >= self.ports.len() {
            self.ports.resize(port + 1, Vec::new());
        }
        self.ports[port].push(batch);
    }

    /// Takes what was collected, per port.
    pub fn drain(&mut self) -> impl Iterator<Item = (usize, RecordBatch)> + '_ {
        self.ports
            .iter_mut()
            .enumerate()
            .flat_map(|(i, v)| v.drain(..).map(move |b| (i, b)))
    }

    /// Batches collected on one port so far (for tests).
    pub fn port(&self, port: usize) -> &[RecordBatch] {
        self.ports.get(port).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What the runtime offers a source. Sources run on a dedicated thread, so these calls block:
/// `emit` waits while the downstream mailbox is full, which is how backpressure reaches Kafka.
pub trait SourceContext: Send {
    /// Sends a batch downstream.
    fn emit(&mut self, batch: RecordBatch) -> Result<()>;
    /// True when the trigger interval has elapsed and the source should call [`SourceContext::barrier`].
    fn checkpoint_due(&self) -> bool;
    /// Injects a barrier for the next epoch. `position` says where the source is (for Kafka, the
    /// next offset per partition); it is stored in the epoch's manifest and given back to
    /// [`Source::open`] on restart.
    fn barrier(&mut self, position: serde_json::Value) -> Result<Epoch>;
    /// True once the pipeline is stopping (Ctrl-C, SIGTERM or a failure elsewhere).
    fn stopping(&self) -> bool;
    /// True in `--batch` mode: read up to the end seen at start, then return.
    fn batch_mode(&self) -> bool;
    /// The position of the newest epoch whose manifest was committed since the last call, if any.
    /// The Kafka source commits these offsets to its consumer group, only to report lag.
    fn take_committed(&mut self) -> Option<serde_json::Value>;
}

/// A source of batches (Kafka). Runs on its own thread.
pub trait Source: Send + 'static {
    /// The schema of the batches it emits.
    fn schema(&self) -> SchemaRef;
    /// Connects and checks (topic exists, broker reachable). `restored` is the position stored in
    /// the last committed checkpoint, if any.
    fn open(&mut self, restored: Option<&serde_json::Value>) -> Result<()>;
    /// Checks, for `engine validate --connect`, that what the config names is there (broker
    /// reachable, credentials accepted, topic exists), without reading anything.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Reads until the input ends (batch mode) or the context says stop. The source must call
    /// [`SourceContext::barrier`] when a checkpoint is due and once more before returning.
    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()>;
}

/// Work a sink staged for an epoch that becomes visible only after the epoch's manifest is
/// written. It is stored in the manifest, so a restarted engine can finish it. Finishing must be
/// idempotent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingCommit {
    /// The sink node that staged it.
    pub node: String,
    /// Sink-specific description (for the Parquet sink: the object path and its multipart upload).
    pub data: serde_json::Value,
}

/// A sink: receives batches, stages them per epoch, and makes them visible on commit.
#[async_trait::async_trait]
pub trait Sink: Send + 'static {
    /// Called once with the input schema, before anything runs. No I/O.
    fn init(&mut self, input: &SchemaRef) -> Result<()>;
    /// Connects and checks (bucket exists, credentials accepted).
    async fn open(&mut self) -> Result<()>;
    /// Checks, for `engine validate --connect`, that the sink could open (bucket exists,
    /// credentials accepted), without writing anything.
    async fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes a batch into the current (staged, invisible) output.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Stages everything written since the previous barrier; returns what commit must finish.
    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>>;
    /// The object that makes this sink's staged output visible. The checkpoint coordinator holds
    /// it, so it can finish commits after the sink's actor is gone, or on restart.
    fn committer(&self) -> std::sync::Arc<dyn Committer>;
    /// One line for `engine graph`, such as the table path.
    fn describe(&self) -> String;
    /// The output modes this sink can write. A file table in append mode takes only append-mode
    /// input (Spark's rule); the console takes all.
    fn accepts(&self) -> Vec<OutputMode> {
        vec![OutputMode::Append, OutputMode::Update, OutputMode::Complete]
    }
    /// The table this sink writes, for readers such as `engine report`; `None` (the default)
    /// for a sink that writes no table a reader can list, such as the console.
    fn table(&self) -> Option<TableInfo> {
        None
    }
}

/// Where a sink's table is and how it is written, as [`Sink::table`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's location as configured, after interpolation: `s3://bucket/prefix` or
    /// `file:///path`. Its committed files are the `.parquet` objects under it, outside `_`- and
    /// `.`-prefixed folders.
    pub url: String,
    /// `Append` (new files each epoch) or `Complete` (one object replaced whole).
    pub mode: OutputMode,
    /// How `engine report` previews the table, when the pipeline says.
    pub preview: TablePreview,
}

/// A pipeline author's say on how `engine report` previews a table. Unset fields take the
/// report's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePreview {
    /// The column to order the preview by.
    pub order_by: Option<String>,
    /// Smallest first instead of largest first.
    pub ascending: bool,
    /// How many rows to show.
    pub rows: Option<usize>,
}

/// Makes staged output visible. Called after the epoch's manifest is written, and again on
/// restart for the last manifest, whose commits may not have finished: it must be idempotent.
#[async_trait::async_trait]
pub trait Committer: Send + Sync + 'static {
    async fn commit(&self, pending: &[PendingCommit]) -> Result<()>;

    /// On start, after the last manifest's commits are finished: removes what epochs that never
    /// committed left staged (for S3, aborts their multipart uploads). `committed` is the last
    /// manifest's pending work for this sink, which must be kept. Returns how many were removed.
    async fn recover(&self, _committed: &[PendingCommit]) -> Result<usize> {
        Ok(0)
    }
}
