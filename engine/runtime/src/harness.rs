//! Running a pipeline in-process, with no Kafka and no S3: a [`VectorSource`] replays given
//! batches (each from one source partition, with barriers where the script puts them) and a
//! [`MemorySink`] stages per epoch and publishes into a [`MemoryTable`] on commit, exactly as
//! the Parquet sink stages uploads and completes them.
//!
//! Build the graph from the pipeline file as usual, then swap its Kafka source and its sinks
//! with [`crate::graph::Graph::replace_source`] and [`crate::graph::Graph::replace_sink`]. The
//! runtime, the coordinator and the checkpoint protocol are the real ones; a `file://`
//! checkpoint location keeps everything on the local disk.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use engine_api::{
    Committer, EngineError, Epoch, PartitionId, PendingCommit, Result, Sink, Source, SourceContext,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// One step of a [`VectorSource`]'s script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Rows read from one source partition.
    Batch(PartitionId, RecordBatch),
    /// A trigger: the source injects a barrier here.
    Barrier,
}

/// A source that replays a script. Its position is the number of steps done, so a run
/// restored from a checkpoint resumes after the last committed barrier.
pub struct VectorSource {
    schema: SchemaRef,
    steps: Vec<Step>,
    start: usize,
    /// Stop (as if killed) before this step, without a last barrier.
    crash_before: Option<usize>,
}

impl VectorSource {
    pub fn new(schema: SchemaRef, steps: Vec<Step>) -> Self {
        VectorSource {
            schema,
            steps,
            start: 0,
            crash_before: None,
        }
    }

    /// Fails, as a crash would, when the script reaches step `step`: what the last barrier
    /// before it committed stays committed, the rest is replayed by the next run.
    pub fn crash_before(mut self, step: usize) -> Self {
        self.crash_before = Some(step);
        self
    }
}

impl Source for VectorSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn open(&mut self, restored: Option<&serde_json::Value>) -> Result<()> {
        self.start = match restored {
            None => 0,
            Some(p) => p
                .get("next_step")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| EngineError::runtime("vector source: bad position"))?
                as usize,
        };
        Ok(())
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        for i in self.start..self.steps.len() {
            if self.crash_before == Some(i) {
                wait_for_commit(ctx, i);
                return Err(EngineError::runtime(format!("crashed before step {i}")));
            }
            if ctx.stopping() {
                break;
            }
            match &self.steps[i] {
                Step::Batch(p, b) => ctx.emit(p, b.clone())?,
                Step::Barrier => {
                    ctx.barrier(serde_json::json!({ "next_step": i + 1 }))?;
                }
            }
        }
        ctx.barrier(serde_json::json!({ "next_step": self.steps.len() }))?;
        Ok(())
    }
}

/// Waits (up to 10 s) until the last barrier before step `i` is committed, so a crash there
/// deterministically follows that commit.
fn wait_for_commit(ctx: &mut dyn SourceContext, i: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut done = 0;
    while std::time::Instant::now() < deadline {
        if let Some(p) = ctx.take_committed() {
            done = p["next_step"].as_u64().unwrap_or(0) as usize;
        }
        if done + 1 >= i {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[derive(Default)]
struct TableState {
    committed: Vec<RecordBatch>,
    staged: BTreeMap<(String, Epoch), Vec<RecordBatch>>,
    published: BTreeSet<(String, Epoch)>,
    /// Commits that must fail (by epoch), once each.
    fail_commit: BTreeSet<Epoch>,
}

/// What memory sinks publish into; it outlives runs, like a bucket.
#[derive(Clone, Default)]
pub struct MemoryTable(Arc<Mutex<TableState>>);

impl MemoryTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The committed rows, in commit order.
    pub fn committed(&self) -> Vec<RecordBatch> {
        self.lock().committed.clone()
    }

    /// Staged batches not (yet) committed.
    pub fn staged(&self) -> usize {
        self.lock().staged.values().map(Vec::len).sum()
    }

    /// Makes the commit of `epoch` fail once (after its manifest is written).
    pub fn fail_commit_of(&self, epoch: Epoch) {
        self.lock().fail_commit.insert(epoch);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sink that stages what each epoch wrote and publishes it into a [`MemoryTable`] on commit.
pub struct MemorySink {
    node: String,
    table: MemoryTable,
    current: Vec<RecordBatch>,
    fail_prepare: Option<Epoch>,
}

impl MemorySink {
    pub fn new(node: impl Into<String>, table: MemoryTable) -> Self {
        MemorySink {
            node: node.into(),
            table,
            current: Vec::new(),
            fail_prepare: None,
        }
    }

    /// Fails when asked to stage `epoch`, as a sink whose store refuses a write.
    pub fn fail_prepare_of(mut self, epoch: Epoch) -> Self {
        self.fail_prepare = Some(epoch);
        self
    }
}

#[async_trait::async_trait]
impl Sink for MemorySink {
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.current.push(batch);
        Ok(())
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        if self.fail_prepare == Some(epoch) {
            return Err(EngineError::unavailable(format!(
                "memory sink refuses epoch {epoch}"
            )));
        }
        let batches = std::mem::take(&mut self.current);
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        self.table
            .lock()
            .staged
            .insert((self.node.clone(), epoch), batches);
        Ok(vec![PendingCommit::new(
            &self.node,
            serde_json::json!({ "epoch": epoch }),
        )])
    }

    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(MemoryCommitter {
            node: self.node.clone(),
            table: self.table.clone(),
        })
    }

    fn describe(&self) -> String {
        "memory table".into()
    }
}

/// Publishes one memory sink's staged epochs.
struct MemoryCommitter {
    node: String,
    table: MemoryTable,
}

#[async_trait::async_trait]
impl Committer for MemoryCommitter {
    async fn commit(&self, pending: &[PendingCommit]) -> Result<()> {
        let mut t = self.table.lock();
        for p in pending {
            let epoch = p.data["epoch"]
                .as_u64()
                .ok_or_else(|| EngineError::runtime("memory sink: bad pending commit"))?;
            if t.fail_commit.remove(&epoch) {
                return Err(EngineError::unavailable(format!(
                    "memory table refuses the commit of epoch {epoch}"
                )));
            }
            let key = (p.node.clone(), epoch);
            if t.published.contains(&key) {
                continue;
            }
            if let Some(b) = t.staged.remove(&key) {
                t.committed.extend(b);
            }
            t.published.insert(key);
        }
        Ok(())
    }

    async fn recover(&self, committed: &[PendingCommit]) -> Result<usize> {
        let keep: BTreeSet<(String, u64)> = committed
            .iter()
            .filter_map(|p| Some((p.node.clone(), p.data["epoch"].as_u64()?)))
            .collect();
        let mut t = self.table.lock();
        let before = t.staged.len();
        t.staged.retain(|k, _| k.0 != self.node || keep.contains(k));
        Ok(before - t.staged.len())
    }
}
