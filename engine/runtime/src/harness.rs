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
    Committer, EngineError, Epoch, OpenContext, PartitionId, PendingCommit, Positions, Result,
    Sink, Source, SourceContext,
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

/// A source that replays a script. Its position in each partition is the number of that
/// partition's batches sent, so a run restored from a checkpoint resumes after what was
/// committed, partition by partition.
pub struct VectorSource {
    schema: SchemaRef,
    steps: Vec<Step>,
    /// Batches to skip per partition: what earlier runs committed.
    start: BTreeMap<PartitionId, u64>,
    /// Stop (as if killed) before this step, without a last barrier.
    crash_before: Option<usize>,
}

impl VectorSource {
    pub fn new(schema: SchemaRef, steps: Vec<Step>) -> Self {
        VectorSource {
            schema,
            steps,
            start: BTreeMap::new(),
            crash_before: None,
        }
    }

    /// Fails, as a crash would, when the script reaches step `step`: what the last barrier
    /// before it committed stays committed, the rest is replayed by the next run.
    pub fn crash_before(mut self, step: usize) -> Self {
        self.crash_before = Some(step);
        self
    }

    /// Batches per partition in the first `n` steps.
    fn counts(&self, n: usize) -> BTreeMap<PartitionId, u64> {
        let mut counts = BTreeMap::new();
        for s in &self.steps[..n] {
            if let Step::Batch(p, _) = s {
                *counts.entry(p.clone()).or_default() += 1;
            }
        }
        counts
    }
}

fn positions(counts: &BTreeMap<PartitionId, u64>) -> Positions {
    counts
        .iter()
        .map(|(p, n)| (p.clone(), serde_json::json!(n)))
        .collect()
}

impl Source for VectorSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn open(&mut self, claims: &mut dyn OpenContext) -> Result<()> {
        let partitions: Vec<PartitionId> = self.counts(self.steps.len()).into_keys().collect();
        let claimed = claims.claim(&partitions)?;
        self.start = BTreeMap::new();
        for (p, v) in claimed.positions {
            let n = v
                .as_u64()
                .ok_or_else(|| EngineError::runtime("vector source: bad position"))?;
            self.start.insert(p, n);
        }
        Ok(())
    }

    /// Version 1 and 2 checkpoints held the number of steps done, `{"next_step": n}`.
    fn legacy_positions(&self, position: &serde_json::Value) -> Result<Positions> {
        let n = position["next_step"]
            .as_u64()
            .ok_or_else(|| EngineError::runtime("vector source: bad position"))?;
        Ok(positions(&self.counts((n as usize).min(self.steps.len()))))
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        let mut seen: BTreeMap<PartitionId, u64> = self
            .counts(self.steps.len())
            .into_keys()
            .map(|p| (p, 0))
            .collect();
        // Resume after the last barrier whose positions were committed.
        let resume = (0..self.steps.len())
            .filter(|b| matches!(self.steps[*b], Step::Barrier))
            .filter(|b| {
                self.counts(*b)
                    .iter()
                    .all(|(p, n)| *n <= self.start.get(p).copied().unwrap_or(0))
            })
            .map(|b| b + 1)
            .max()
            .unwrap_or(0);
        for (p, n) in self.counts(resume) {
            seen.insert(p, n);
        }
        for i in resume..self.steps.len() {
            if self.crash_before == Some(i) {
                wait_for_commit(ctx, &self.counts(last_barrier_before(&self.steps, i)));
                return Err(EngineError::runtime(format!("crashed before step {i}")));
            }
            if ctx.stopping() {
                break;
            }
            match &self.steps[i] {
                Step::Batch(p, b) => {
                    let n = seen.entry(p.clone()).or_default();
                    *n += 1;
                    if *n > self.start.get(p).copied().unwrap_or(0) {
                        ctx.emit(p, b.clone())?;
                    }
                }
                Step::Barrier => {
                    ctx.barrier(positions(&seen))?;
                }
            }
        }
        ctx.barrier(positions(&seen))?;
        Ok(())
    }
}

/// How many steps come before the last barrier before step `i`.
fn last_barrier_before(steps: &[Step], i: usize) -> usize {
    steps[..i]
        .iter()
        .rposition(|s| matches!(s, Step::Barrier))
        .unwrap_or(0)
}

/// Waits (up to 10 s) until the positions `want` are committed, so a crash there
/// deterministically follows that commit.
fn wait_for_commit(ctx: &mut dyn SourceContext, want: &BTreeMap<PartitionId, u64>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut done: BTreeMap<PartitionId, u64> = BTreeMap::new();
    while std::time::Instant::now() < deadline {
        if let Some(p) = ctx.take_committed() {
            for (k, v) in p {
                done.insert(k, v.as_u64().unwrap_or(0));
            }
        }
        if want
            .iter()
            .all(|(p, n)| done.get(p).copied().unwrap_or(0) >= *n)
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What one memory sink staged for one epoch of one run and one source partition: epochs of the
/// partitioned part of a pipeline count from 1 in every run.
type StagedKey = (String, String, Epoch, Option<PartitionId>);

#[derive(Default)]
struct TableState {
    committed: Vec<RecordBatch>,
    /// What each publication made visible, with the epoch that staged it, in commit order.
    history: Vec<(Epoch, Vec<RecordBatch>)>,
    staged: BTreeMap<StagedKey, Vec<RecordBatch>>,
    published: BTreeSet<StagedKey>,
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

    /// What each commit made visible, with the epoch that staged it, in commit order (a
    /// complete-mode table's last entry is the whole table).
    pub fn commits(&self) -> Vec<(Epoch, Vec<RecordBatch>)> {
        self.lock().history.clone()
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
    /// What was written since the last barrier, per source partition (as the Parquet sink
    /// stages one file per partition).
    current: BTreeMap<Option<PartitionId>, Vec<RecordBatch>>,
    fail_prepare: Option<Epoch>,
    /// Tells this sink's staged epochs from an earlier run's.
    run: String,
}

impl MemorySink {
    pub fn new(node: impl Into<String>, table: MemoryTable) -> Self {
        MemorySink {
            node: node.into(),
            table,
            current: BTreeMap::new(),
            run: uuid::Uuid::new_v4().simple().to_string(),
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

    async fn write(&mut self, batch: RecordBatch, partition: Option<&PartitionId>) -> Result<()> {
        self.current
            .entry(partition.cloned())
            .or_default()
            .push(batch);
        Ok(())
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        if self.fail_prepare == Some(epoch) {
            return Err(EngineError::unavailable(format!(
                "memory sink refuses epoch {epoch}"
            )));
        }
        let mut pending = Vec::new();
        let mut t = self.table.lock();
        for (partition, batches) in std::mem::take(&mut self.current) {
            t.staged.insert(
                (
                    self.node.clone(),
                    self.run.clone(),
                    epoch,
                    partition.clone(),
                ),
                batches,
            );
            pending.push(PendingCommit::of(
                &self.node,
                partition,
                serde_json::json!({ "epoch": epoch, "run": self.run }),
            ));
        }
        Ok(pending)
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
            let key = staged_key(p, epoch);
            if t.published.contains(&key) {
                continue;
            }
            if let Some(b) = t.staged.remove(&key) {
                t.committed.extend(b.iter().cloned());
                t.history.push((epoch, b));
            }
            t.published.insert(key);
        }
        Ok(())
    }

    async fn abort(&self, pending: &[PendingCommit]) {
        let mut t = self.table.lock();
        for p in pending {
            if let Some(epoch) = p.data["epoch"].as_u64() {
                t.staged.remove(&staged_key(p, epoch));
            }
        }
    }

    async fn recover(
        &self,
        partition: Option<&PartitionId>,
        committed: &[PendingCommit],
    ) -> Result<usize> {
        let keep: BTreeSet<StagedKey> = committed
            .iter()
            .filter_map(|p| Some(staged_key(p, p.data["epoch"].as_u64()?)))
            .collect();
        let mut t = self.table.lock();
        let before = t.staged.len();
        t.staged
            .retain(|k, _| k.0 != self.node || k.3.as_ref() != partition || keep.contains(k));
        Ok(before - t.staged.len())
    }
}

fn staged_key(p: &PendingCommit, epoch: Epoch) -> StagedKey {
    let run = p.data["run"].as_str().unwrap_or_default().to_string();
    (p.node.clone(), run, epoch, p.partition.clone())
}
