use crate::{Epoch, OutputMode, PartitionId, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// The name of every node's main output port.
pub const MAIN_PORT: &str = "out";

/// What a node is built against: the schema and output mode of its input, and the event-time
/// column the pipeline declared upstream (if it still exists in this schema). A node with
/// several inputs gets one `Input`: the graph builder requires them to agree.
#[derive(Debug, Clone)]
pub struct Input {
    pub schema: SchemaRef,
    pub mode: OutputMode,
    /// The pipeline's event-time column, when one is declared upstream and this schema still has
    /// it. The runtime tracks it and sends watermarks; a window operator groups by it.
    pub event_time: Option<String>,
}

impl Input {
    /// An append-mode input with no event time, as most operator tests want.
    pub fn new(schema: SchemaRef) -> Self {
        Input {
            schema,
            mode: OutputMode::Append,
            event_time: None,
        }
    }

    pub fn with_mode(mut self, mode: OutputMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_event_time(mut self, column: impl Into<String>) -> Self {
        self.event_time = Some(column.into());
        self
    }
}

/// One output port of a built operator: its name, the schema of what it emits and its output
/// mode. Port 0 is the main port, [`MAIN_PORT`]; downstream nodes name the others as
/// `"node.port"` in their `inputs`.
#[derive(Debug, Clone)]
pub struct OutputPort {
    pub name: String,
    pub schema: SchemaRef,
    pub mode: OutputMode,
    /// `Some(advice)` when rows sent here would be lost unless a node reads the port (a parser's
    /// `quarantine`): the graph builder then rejects a pipeline that leaves it unread, adding
    /// the advice (such as `set on_error = "drop"`) to the error.
    pub must_read: Option<String>,
}

impl OutputPort {
    /// The main port.
    pub fn main(schema: SchemaRef, mode: OutputMode) -> Self {
        Self::named(MAIN_PORT, schema, mode)
    }

    pub fn named(name: impl Into<String>, schema: SchemaRef, mode: OutputMode) -> Self {
        OutputPort {
            name: name.into(),
            schema,
            mode,
            must_read: None,
        }
    }

    /// Declares that the port must be read; `advice` says how else to silence the error
    /// (empty for none).
    pub fn must_be_read(mut self, advice: impl Into<String>) -> Self {
        self.must_read = Some(advice.into());
        self
    }
}

/// A ready operator and its output ports, as [`crate::OperatorConfig::build`] returns it.
pub struct Built {
    pub operator: Box<dyn Operator>,
    /// Main port first.
    pub ports: Vec<OutputPort>,
    /// The input columns the operator reads, when it says ([`Built::reading`]); `None` means
    /// any of them. Where the operator runs in the finalizer, the exchange that feeds it
    /// carries only these columns' values (the others as zeros, empty values or nulls, the
    /// schema unchanged).
    pub reads: Option<Vec<String>>,
}

impl Built {
    pub fn new(operator: impl Operator, ports: Vec<OutputPort>) -> Self {
        Built {
            operator: Box::new(operator),
            ports,
            reads: None,
        }
    }

    /// Declares that the operator reads no input column but `columns`: the values of the
    /// others may be replaced by zeros, empty values or nulls before they reach it.
    pub fn reading(mut self, columns: impl IntoIterator<Item = String>) -> Self {
        self.reads = Some(columns.into_iter().collect());
        self
    }

    /// A stateless operator with one main port, in the input's mode.
    pub fn main(operator: impl Operator, schema: SchemaRef, input: &Input) -> Self {
        Self::new(operator, vec![OutputPort::main(schema, input.mode)])
    }
}

/// A pipeline operator: pure over batches, no I/O.
///
/// The engine wraps each operator in an actor with a bounded mailbox, aligns barriers, tracks
/// event time, snapshots state and forwards what the operator collects, so an implementation
/// never sees a mailbox, a barrier or a partition. It is built ready to run by its
/// [`crate::OperatorConfig`], which checks its input schema and declares its output ports.
/// Built-in operators implement this trait and register like user code.
pub trait Operator: Send + 'static {
    /// Processes one micro-batch, pushing results to `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()>;

    /// Called when a checkpoint barrier (a trigger) arrives, before the state is snapshotted.
    /// Window operators emit here what the trigger makes visible.
    fn on_barrier(&mut self, _epoch: Epoch, _out: &mut Collector) -> Result<()> {
        Ok(())
    }

    /// Called when the watermark advances: no event older than `watermark_ms` (ms since the
    /// Unix epoch) is expected any more. The runtime computes it from the pipeline's declared
    /// event time, per source partition, and calls this before the barrier it precedes.
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

    /// True when the operator's output depends on rows of several source partitions. The
    /// runtime runs such operators, and everything after them, in the finalizer, which sees
    /// every partition; the others run per partition, wherever the partition is owned. An
    /// operator that keeps state ([`Operator::snapshot`] gives `Some`) is taken to merge
    /// partitions whatever this says; a stateless one that emits in
    /// [`Operator::on_watermark`], [`Operator::on_barrier`] or [`Operator::on_end`] must say so.
    fn merges_partitions(&self) -> bool {
        false
    }
}

/// Where an operator pushes its output batches, per port, and says what it set aside.
#[derive(Debug, Default)]
pub struct Collector {
    ports: Vec<Vec<RecordBatch>>,
    counts: Vec<(Tally, &'static str, u64)>,
}

/// What an operator reports beside its output, counted per node by the runtime
/// (`engine_records_quarantined_total`, `engine_records_dropped_total`,
/// `engine_late_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tally {
    /// Rows sent to a quarantine port, per reason.
    Quarantined,
    /// Rows left out on purpose (an `on_error = "drop"` setting, late events), per reason.
    Dropped,
    /// Events older than the watermark when they arrived.
    Late,
}

impl Collector {
    pub fn new(num_ports: usize) -> Self {
        Collector {
            ports: vec![Vec::new(); num_ports.max(1)],
            counts: Vec::new(),
        }
    }

    /// Reports `n` rows sent to a quarantine port for `reason`.
    pub fn quarantined(&mut self, reason: &'static str, n: u64) {
        self.tally(Tally::Quarantined, reason, n);
    }

    /// Reports `n` rows left out for `reason`.
    pub fn dropped(&mut self, reason: &'static str, n: u64) {
        self.tally(Tally::Dropped, reason, n);
    }

    /// Reports `n` late events (left out or not: say [`Collector::dropped`] too when they are).
    pub fn late(&mut self, n: u64) {
        self.tally(Tally::Late, "", n);
    }

    /// (A count of 0 still makes the series exist, at 0: dashboards see it before the first.)
    fn tally(&mut self, what: Tally, reason: &'static str, n: u64) {
        match self
            .counts
            .iter_mut()
            .find(|(w, r, _)| *w == what && *r == reason)
        {
            Some((_, _, c)) => *c += n,
            None => self.counts.push((what, reason, n)),
        }
    }

    /// Takes what was reported since the last call.
    pub fn drain_tallies(&mut self) -> std::vec::Drain<'_, (Tally, &'static str, u64)> {
        self.counts.drain(..)
    }

    /// Emits a batch on the main port.
    pub fn emit(&mut self, batch: RecordBatch) {
        self.emit_to(0, batch);
    }

    /// Emits a batch on port `port` (an index into the built operator's ports). Empty batches
    /// are dropped.
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

/// A source's position, per source partition (for Kafka: the next offset to read). The
/// runtime commits each partition's entry with that partition's share of the output, so a
/// partition can move to another process on its own.
pub type Positions = std::collections::BTreeMap<PartitionId, serde_json::Value>;

/// What claiming partitions gives a source: where to resume each of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    /// The committed position of each claimed partition that has one.
    pub positions: Positions,
    /// True when this source has committed before: a claimed partition without a position is
    /// then new since, and is read from its start.
    pub resumed: bool,
}

/// How a source takes ownership of partitions before it reads them. The runtime fences the
/// previous owner (its later commits for these partitions fail), finishes the output it
/// committed, removes what it left staged, restores the partitions' event-time state, and
/// returns the committed positions.
pub trait Claims: Send {
    fn claim(&mut self, partitions: &[PartitionId]) -> Result<Claimed>;
    /// Gives partitions up (the consumer group moved them away): whatever this process has
    /// not committed for them yet is abandoned, and the next owner reads it again from the
    /// last committed position.
    fn release(&mut self, _partitions: &[PartitionId]) {}
}

/// What a source gets when it opens: claims, and the run's mode.
pub trait OpenContext: Claims {
    /// True in `--batch` mode: read up to the end seen at start, then stop.
    fn batch_mode(&self) -> bool;
}

/// What the runtime offers a source. Sources run on a dedicated thread, so these calls block:
/// `emit` waits while the downstream mailbox is full, which is how backpressure reaches Kafka.
pub trait SourceContext: Claims {
    /// Sends a batch read from one source partition downstream. Every row of a batch comes
    /// from `partition`, which the source must have claimed: the runtime tracks event time,
    /// commits and hands over work per partition.
    fn emit(&mut self, partition: &PartitionId, batch: RecordBatch) -> Result<()>;
    /// True when the trigger interval has elapsed and the source should call [`SourceContext::barrier`].
    fn checkpoint_due(&self) -> bool;
    /// Injects a barrier for the next epoch. `positions` says where the source is in each
    /// partition it reads (for Kafka, the next offset); each is committed with its partition and
    /// given back by [`Claims::claim`] on restart or handover.
    fn barrier(&mut self, positions: Positions) -> Result<Epoch>;
    /// True once the pipeline is stopping (Ctrl-C, SIGTERM or a failure elsewhere).
    fn stopping(&self) -> bool;
    /// True in `--batch` mode: read up to the end seen at start, then return.
    fn batch_mode(&self) -> bool;
    /// The positions committed since the last call, if any. The Kafka source commits these
    /// offsets to its consumer group, only to report lag.
    fn take_committed(&mut self) -> Option<Positions>;
    /// A handle for claiming and releasing partitions from elsewhere on the source's thread,
    /// such as a Kafka consumer's rebalance callback.
    fn claims(&self) -> Box<dyn Claims>;
    /// Says which partitions the source reads, and which of them are idle, for the next
    /// barrier's watermark and every one after, until the next call: a partition not idle holds
    /// the watermark, even before its first row. A source that never calls it leaves idleness to
    /// wall time (a partition whose event time has not advanced for the idle timeout), and a
    /// partition counts from its first row.
    fn report_partitions(
        &mut self,
        _partitions: std::collections::BTreeSet<PartitionId>,
        _idle: std::collections::BTreeSet<PartitionId>,
    ) {
    }
    /// Says how far behind each partition the source reads is (records between the end of the
    /// partition and the last committed position), for the progress of the epochs that follow.
    fn report_lag(&mut self, _lag: std::collections::BTreeMap<PartitionId, i64>) {}
}

/// A source of batches (Kafka). Runs on its own thread.
pub trait Source: Send + 'static {
    /// The schema of the batches it emits.
    fn schema(&self) -> SchemaRef;
    /// Connects and checks (topic exists, broker reachable). A source that knows its partitions
    /// up front claims them here, which gives their committed positions; one in a consumer
    /// group claims them as the group assigns them, in [`Source::run`].
    fn open(&mut self, ctx: &mut dyn OpenContext) -> Result<()>;
    /// Checks, for `engine validate --connect`, that what the config names is there (broker
    /// reachable, credentials accepted, topic exists), without reading anything.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// The partition whose owner runs the pipeline's finalizer (aggregates, windows) when
    /// streaming instances share the source: Kafka's partition 0. Whoever the group gives it to
    /// takes the finalizer's role. `None` for a source that is never shared.
    fn lead_partition(&self) -> Option<PartitionId> {
        None
    }
    /// Splits a position that a checkpoint written before positions were kept per partition
    /// (manifest versions 1 and 2) holds for the whole source.
    fn legacy_positions(&self, _position: &serde_json::Value) -> Result<Positions> {
        Err(crate::EngineError::config(
            "this source cannot resume from a checkpoint written by an earlier engine version; use a new checkpoint location",
        ))
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
    /// The source partition whose rows it holds, when a sink stages per partition; `None` for
    /// output that mixes partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionId>,
    /// Sink-specific description (for the Parquet sink: the object path and its multipart upload).
    pub data: serde_json::Value,
    /// The number of the commit point that made it visible, set by the runtime as it writes
    /// that point: the sequence number of the partition's chain entry for a partition's output,
    /// the epoch of the manifest for output that mixes partitions. It grows with every commit of
    /// the same sink and partition, whichever process makes it, so a table format can record
    /// it and recognise a commit it already made (Delta's `txn` version). `None` before the
    /// commit point is written, and in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl PendingCommit {
    /// Output of `node` that mixes source partitions.
    pub fn new(node: impl Into<String>, data: serde_json::Value) -> Self {
        PendingCommit {
            node: node.into(),
            partition: None,
            data,
            version: None,
        }
    }

    /// Output of `node` that holds rows of `partition` only (`None`: of several).
    pub fn of(
        node: impl Into<String>,
        partition: Option<PartitionId>,
        data: serde_json::Value,
    ) -> Self {
        PendingCommit {
            node: node.into(),
            partition,
            data,
            version: None,
        }
    }
}

/// A sink: receives batches, stages them per epoch, and makes them visible on commit.
#[async_trait::async_trait]
pub trait Sink: Send + 'static {
    /// Connects and checks (bucket exists, credentials accepted).
    async fn open(&mut self) -> Result<()>;
    /// Checks, for `engine validate --connect`, that the sink could open (bucket exists,
    /// credentials accepted), without writing anything.
    async fn check(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes a batch into the current (staged, invisible) output. `partition` is the source
    /// partition every row came from, `None` for rows derived from several (an aggregate's
    /// output). A sink that writes files stages one per partition and tags its
    /// [`PendingCommit`] with it, so that a partition's output can be committed, or abandoned,
    /// with that partition alone.
    async fn write(&mut self, batch: RecordBatch, partition: Option<&PartitionId>) -> Result<()>;
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
    /// `file:///path`.
    pub url: String,
    /// How a reader finds the table's rows.
    pub format: TableFormat,
    /// `Append` (new files each epoch) or `Complete` (replaced whole).
    pub mode: OutputMode,
    /// How `engine report` previews the table, when the pipeline says.
    pub preview: TablePreview,
}

/// How a table's committed files are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Plain Parquet: the `.parquet` objects under the table's location, outside `_`- and
    /// `.`-prefixed folders.
    Parquet,
    /// A Delta Lake table: the files its log's latest version references.
    Delta,
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

    /// Abandons staged output that will never be committed (its partition moved to another
    /// process before its epoch committed): for S3, aborts the uploads. Best effort: what is
    /// left is removed by the next owner's claim.
    async fn abort(&self, _pending: &[PendingCommit]) {}

    /// When a process takes over `partition` (`None`: the output that mixes partitions), after
    /// the last manifest's commits are finished: removes what epochs that never committed left
    /// staged for it, by any earlier owner (for S3, aborts their multipart uploads). The claim
    /// has fenced those owners, so nothing they staged can commit any more. `committed` is the
    /// last manifest's pending work for this sink and partition, which must be kept. Never
    /// touches another partition's staging. Returns how many objects were removed.
    async fn recover(
        &self,
        _partition: Option<&PartitionId>,
        _committed: &[PendingCommit],
    ) -> Result<usize> {
        Ok(0)
    }
}
