//! The exchange between the part of a pipeline that runs per partition and its finalizer.
//!
//! Where a node that merges partitions (an aggregate, a window) reads from the per-partition
//! part, the runtime puts an [`ExchangeSink`] on the per-partition side and an
//! [`ExchangeSource`] on the finalizer's. The sink writes each partition's rows of an epoch as
//! Arrow IPC objects under `<checkpoint>/exchange/`, and the partition's chain entry commits
//! them like any sink's output. The finalizer reads the chains: at each trigger its
//! [`Planner`] takes every entry committed since the last plan, the exchange sources emit the
//! rows those entries reference, partition by partition and in chain order, and the
//! finalizer's manifest records how far each chain was consumed. Rows are therefore merged
//! exactly once, whichever process committed them, and a finalizer that restarts or moves
//! resumes where its last manifest says.

use crate::checkpoint::{CheckpointStore, PartitionManifest};
use arrow::array::{ArrayRef, RecordBatch, make_array, new_null_array};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use engine_api::{
    Committer, EngineError, Epoch, OpenContext, PartitionId, PendingCommit, Positions, Result,
    Sink, Source, SourceContext,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

/// An exchange object is written once its partition's rows reach this size.
const OBJECT_BYTES: usize = 2 * 1024 * 1024;

/// Writes the rows of one edge into the exchange, per partition and epoch.
pub(crate) struct ExchangeSink {
    pub(crate) node: String,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) schema: SchemaRef,
    /// Per column of `schema`, true when the finalizer does not read it: its values are not
    /// written ([`blank`]).
    blank: Vec<bool>,
    /// Tells this run's objects from any other's.
    pub(crate) run: String,
    pub(crate) epoch: Epoch,
    open: BTreeMap<PartitionId, (StreamWriter<Vec<u8>>, usize)>,
    written: BTreeMap<PartitionId, Vec<String>>,
    objects: usize,
}

impl ExchangeSink {
    /// `read`: the columns the finalizer reads, `None` for all of them.
    pub(crate) fn new(
        node: String,
        store: Arc<CheckpointStore>,
        schema: SchemaRef,
        read: Option<BTreeSet<String>>,
    ) -> Self {
        let blank = schema
            .fields()
            .iter()
            .map(|f| read.as_ref().is_some_and(|r| !r.contains(f.name())) && blankable(f))
            .collect();
        ExchangeSink {
            node,
            store,
            schema,
            blank,
            run: uuid::Uuid::new_v4().simple().to_string(),
            epoch: 0,
            open: BTreeMap::new(),
            written: BTreeMap::new(),
            objects: 0,
        }
    }

    async fn flush(&mut self, p: &PartitionId) -> Result<()> {
        let Some((writer, rows)) = self.open.remove(p) else {
            return Ok(());
        };
        let mut writer = writer;
        writer.finish().map_err(ipc_error)?;
        let bytes = writer.into_inner().map_err(ipc_error)?;
        self.objects += 1;
        let name = format!(
            "exchange/{}/{}/{}-{:08}-{:06}.arrow",
            self.node,
            p.as_str().replace('/', "@"),
            self.run,
            self.epoch,
            self.objects
        );
        let size = bytes.len();
        let path = self.store.put(&name, bytes.into()).await?;
        tracing::trace!(node = %self.node, partition = %p, rows, bytes = size, path = %path, "exchange object written");
        self.written.entry(p.clone()).or_default().push(path);
        Ok(())
    }
}

/// Whether a column's values can be left out of the exchange: one of a flat type (sent as
/// zeros or empty values), or a nullable one (sent as nulls).
fn blankable(f: &Field) -> bool {
    f.is_nullable() || f.data_type().is_primitive() || flat_bytes(f.data_type())
}

fn flat_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
    )
}

/// `n` placeholder values of type `t` that compress to almost nothing: for a flat type, zeros
/// or empty values without a null buffer (what the zeroed buffers of a null array hold), valid
/// whether or not the column is nullable; otherwise nulls.
fn blank(t: &DataType, n: usize) -> ArrayRef {
    let nulls = new_null_array(t, n).to_data();
    let zeros = (t.is_primitive() || flat_bytes(t))
        .then(|| nulls.clone().into_builder().nulls(None).build().ok())
        .flatten();
    make_array(zeros.unwrap_or(nulls))
}

fn ipc_error(e: arrow::error::ArrowError) -> EngineError {
    EngineError::runtime(format!("exchange (Arrow IPC): {e}"))
}

#[async_trait::async_trait]
impl Sink for ExchangeSink {
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch, partition: Option<&PartitionId>) -> Result<()> {
        let p = partition.ok_or_else(|| {
            EngineError::runtime(format!(
                "exchange `{}` got rows of no single source partition",
                self.node
            ))
        })?;
        if !self.open.contains_key(p) {
            // LZ4-compressed buffers: the exchange goes through the object store, and its
            // columns (ids, names, Kafka coordinates) compress several times over.
            let options = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::LZ4_FRAME))
                .map_err(ipc_error)?;
            let w = StreamWriter::try_new_with_options(Vec::new(), &self.schema, options)
                .map_err(ipc_error)?;
            self.open.insert(p.clone(), (w, 0));
        }
        let batch = if self.blank.contains(&true) {
            let n = batch.num_rows();
            let columns = (batch.columns().iter().zip(&self.blank))
                .map(|(c, skip)| match skip {
                    true => blank(c.data_type(), n),
                    false => c.clone(),
                })
                .collect();
            RecordBatch::try_new(batch.schema(), columns).map_err(ipc_error)?
        } else {
            batch
        };
        let (w, rows) = self.open.get_mut(p).expect("inserted above");
        w.write(&batch).map_err(ipc_error)?;
        *rows += batch.num_rows();
        if w.get_ref().len() >= OBJECT_BYTES {
            self.flush(p).await?;
        }
        Ok(())
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        let open: Vec<PartitionId> = self.open.keys().cloned().collect();
        for p in &open {
            self.flush(p).await?;
        }
        self.epoch = epoch;
        Ok(std::mem::take(&mut self.written)
            .into_iter()
            .map(|(p, objects)| {
                PendingCommit::of(
                    &self.node,
                    Some(p),
                    serde_json::json!({ "objects": objects }),
                )
            })
            .collect())
    }

    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(ExchangeCommitter)
    }

    fn describe(&self) -> String {
        "exchange to the finalizer".into()
    }
}

/// Exchange objects are visible to the finalizer through the chain entry that references them:
/// there is nothing to finish. The finalizer removes them once it has consumed them.
struct ExchangeCommitter;

#[async_trait::async_trait]
impl Committer for ExchangeCommitter {
    async fn commit(&self, _pending: &[PendingCommit]) -> Result<()> {
        Ok(())
    }
}

/// The exchange objects a chain entry references for exchange node `node`.
fn objects_of(m: &PartitionManifest, node: &str) -> Vec<String> {
    m.pending
        .iter()
        .filter(|p| p.node == node)
        .flat_map(|p| {
            p.data["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_str().map(String::from))
        })
        .collect()
}

/// What the finalizer takes in one epoch: the chain entries committed since the last plan.
pub(crate) struct Plan {
    pub(crate) entries: Vec<Arc<PartitionManifest>>,
    /// How far each chain is consumed once this plan is: the last sequence number, by partition.
    pub(crate) positions: Positions,
    /// The per-partition part has stopped and this plan takes all it committed.
    pub(crate) last: bool,
    /// The partitions whose newest entry consumed says they are idle (see
    /// [`PartitionManifest::idle`]). Nothing else is: a partition whose owners keep failing
    /// writes no entry, and keeps holding the watermark however long that lasts.
    pub(crate) idle: BTreeSet<PartitionId>,
    /// Every partition with a chain: claimed by some process, so read now or soon.
    pub(crate) partitions: BTreeSet<PartitionId>,
}

struct PlanState {
    /// The last sequence number consumed, by (source, partition).
    consumed: BTreeMap<(String, PartitionId), u64>,
    /// Plans not yet taken by every exchange source, by index, with how many took each.
    plans: BTreeMap<u64, (Arc<Plan>, usize)>,
    /// Plans made and not yet known to be committed, to clean up after.
    issued: Vec<Arc<Plan>>,
    /// The consumed entry kept at the head of each chain by the last clean-up.
    kept: BTreeMap<(String, PartitionId), u64>,
    /// Whether the newest entry consumed of each chain says its partition is idle.
    idle: BTreeMap<(String, PartitionId), bool>,
}

/// Decides, once per finalizer epoch, what every exchange source emits, so that they all take
/// the same chain entries.
pub(crate) struct Planner {
    store: Arc<CheckpointStore>,
    /// The per-partition part's sources, whose chains the plans read.
    sources: Vec<String>,
    /// The exchange sources that take each plan (their node names are also the exchange
    /// nodes of the per-partition part whose objects they read).
    readers: Vec<String>,
    /// Held while a plan is made: it reads the store.
    state: tokio::sync::Mutex<PlanState>,
    /// Set once the per-partition part has stopped: the next plan is the last.
    upstream_done: AtomicBool,
    /// This process's id in the partition chains.
    owner: String,
    /// The last epoch this process's per-partition part finished committing.
    local_epoch: AtomicU64,
    /// That epoch when this planner started: plan `i` follows local epoch `base + i + 1`.
    base: Epoch,
}

impl Planner {
    pub(crate) fn new(
        store: Arc<CheckpointStore>,
        sources: Vec<String>,
        readers: Vec<String>,
        consumed: &Positions,
        owner: String,
        base: Epoch,
    ) -> Self {
        // The finalizer's positions name partitions; each belongs to one source's chains, which
        // the first plan finds by listing them.
        let consumed = consumed
            .iter()
            .filter_map(|(p, v)| Some(((String::new(), p.clone()), v.as_u64()?)))
            .collect();
        Planner {
            store,
            sources,
            readers,
            state: tokio::sync::Mutex::new(PlanState {
                consumed,
                plans: BTreeMap::new(),
                issued: Vec::new(),
                kept: BTreeMap::new(),
                idle: BTreeMap::new(),
            }),
            upstream_done: AtomicBool::new(false),
            owner,
            local_epoch: AtomicU64::new(base),
            base,
        }
    }

    /// This process's per-partition part finished committing `epoch` (whether or not it had
    /// anything to commit).
    pub(crate) fn local_committed(&self, epoch: Epoch) {
        self.local_epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// Waits until plan `index` can be made: once the local per-partition part has committed
    /// its epoch `index + 1`, or has stopped. Plans follow local epochs one to one, so a
    /// finalizer in the same process as the partitions it merges makes visible at each trigger
    /// exactly what that trigger committed; entries of other processes join the next plan.
    /// Returns `false` when `stop` says to stop waiting (the finalizer's role moved).
    fn wait_for(&self, index: u64, stop: &dyn Fn() -> bool) -> bool {
        while self.local_epoch.load(Ordering::SeqCst) <= self.base + index
            && !self.is_upstream_done()
        {
            if stop() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub(crate) fn upstream_done(&self) {
        self.upstream_done.store(true, Ordering::SeqCst);
    }

    fn is_upstream_done(&self) -> bool {
        self.upstream_done.load(Ordering::SeqCst)
    }

    /// Plan number `index`: made by the first exchange source that asks, then handed to the
    /// others.
    pub(crate) async fn plan(&self, index: u64) -> Result<Arc<Plan>> {
        let mut st = self.state.lock().await;
        if let Some((plan, taken)) = st.plans.get_mut(&index) {
            *taken += 1;
            let plan = plan.clone();
            if *taken >= self.readers.len() {
                st.plans.remove(&index);
            }
            return Ok(plan);
        }
        // Read before listing: what the per-partition part committed before it stopped is
        // then in this plan. Until then, this process's entries are taken up to its epoch
        // `index + 1`.
        let local = self.local_epoch.load(Ordering::SeqCst);
        let last = self.is_upstream_done() && local <= self.base + index;
        let limit = if last {
            Epoch::MAX
        } else {
            self.base + index + 1
        };
        let mut entries = Vec::new();
        let mut positions = Positions::new();
        let mut idle = BTreeSet::new();
        let mut chained = BTreeSet::new();
        for source in &self.sources {
            for p in self.store.chains(source).await? {
                chained.insert(p.clone());
                let key = (source.clone(), p.clone());
                let from = st
                    .consumed
                    .get(&key)
                    .or_else(|| st.consumed.get(&(String::new(), p.clone())))
                    .copied()
                    .unwrap_or(0);
                let mut upto = from;
                for seq in self.store.partition_seqs(source, &p).await? {
                    if seq <= from {
                        continue;
                    }
                    let m = self.store.partition_manifest(source, &p, seq).await?;
                    if m.owner == self.owner && m.epoch > limit {
                        break;
                    }
                    st.idle.insert(key.clone(), m.idle);
                    entries.push(Arc::new(m));
                    upto = seq;
                }
                if from > 0 && !st.idle.contains_key(&key) {
                    // The first plan since this finalizer started, and nothing new: the entry
                    // consumed last says whether the partition is idle.
                    let was = self.store.partition_manifest(source, &p, from).await;
                    st.idle.insert(key.clone(), was.is_ok_and(|m| m.idle));
                }
                if st.idle.get(&key) == Some(&true) {
                    idle.insert(p.clone());
                }
                st.consumed.remove(&(String::new(), p.clone()));
                st.consumed.insert(key, upto);
                positions.insert(p, serde_json::json!(upto));
            }
        }
        let plan = Arc::new(Plan {
            entries,
            positions,
            last,
            idle,
            partitions: chained,
        });
        if self.readers.len() > 1 {
            st.plans.insert(index, (plan.clone(), 1));
        }
        st.issued.push(plan.clone());
        Ok(plan)
    }

    /// After the finalizer committed a manifest whose exchange positions are `committed`:
    /// removes the exchange objects and the chain entries of every plan that it covers. The
    /// newest entry of each chain stays, for claims and restarts to read.
    pub(crate) async fn committed(&self, committed: &Positions) {
        let mut newest: BTreeMap<(String, PartitionId), u64> = BTreeMap::new();
        let (covered, previously_kept) = {
            let mut st = self.state.lock().await;
            let (done, open): (Vec<Arc<Plan>>, _) = std::mem::take(&mut st.issued)
                .into_iter()
                .partition(|plan| covers(committed, &plan.positions));
            st.issued = open;
            for m in done.iter().flat_map(|plan| plan.entries.iter()) {
                let n = newest
                    .entry((m.source.clone(), m.partition.clone()))
                    .or_default();
                *n = (*n).max(m.seq);
            }
            let mut previously_kept = Vec::new();
            for (k, n) in &newest {
                if let Some(old) = st.kept.insert(k.clone(), *n)
                    && old < *n
                {
                    previously_kept.push((k.clone(), old));
                }
            }
            (done, previously_kept)
        };
        for m in covered.iter().flat_map(|plan| plan.entries.iter()) {
            for node in &self.readers {
                for o in objects_of(m, node) {
                    self.store.delete(&o).await;
                }
            }
            if newest.get(&(m.source.clone(), m.partition.clone())) != Some(&m.seq) {
                self.store
                    .remove_partition_entry(&m.source, &m.partition, m.seq)
                    .await;
            }
        }
        for ((source, p), seq) in previously_kept {
            self.store.remove_partition_entry(&source, &p, seq).await;
        }
    }

    /// The exchange positions among a finalizer manifest's positions.
    pub(crate) fn positions_in(
        &self,
        positions: &BTreeMap<String, serde_json::Value>,
    ) -> Positions {
        self.readers
            .first()
            .and_then(|r| positions.get(r))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

/// Whether `committed` positions are at or past every one of `plan`.
fn covers(committed: &Positions, plan: &Positions) -> bool {
    plan.iter().all(
        |(p, v)| match (committed.get(p).and_then(|c| c.as_u64()), v.as_u64()) {
            (Some(c), Some(v)) => v <= c,
            _ => false,
        },
    )
}

/// Emits, in the finalizer, the rows one exchange node received in the per-partition part.
pub(crate) struct ExchangeSource {
    /// The exchange node whose objects it reads.
    pub(crate) node: String,
    pub(crate) schema: SchemaRef,
    pub(crate) planner: Arc<Planner>,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) handle: Handle,
    /// The index of the next plan to take.
    pub(crate) next_plan: u64,
}

impl ExchangeSource {
    fn emit_plan(&self, plan: &Plan, ctx: &mut dyn SourceContext) -> Result<()> {
        for m in &plan.entries {
            for path in objects_of(m, &self.node) {
                let bytes = self.handle.block_on(self.store.read(&path))?;
                let reader =
                    StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(ipc_error)?;
                for batch in reader {
                    ctx.emit(&m.partition, batch.map_err(ipc_error)?)?;
                }
            }
        }
        Ok(())
    }
}

impl Source for ExchangeSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn open(&mut self, _: &mut dyn OpenContext) -> Result<()> {
        Ok(())
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        loop {
            if !self.planner.wait_for(self.next_plan, &|| ctx.stopping()) {
                // The finalizer's role moved: what was not committed is the next one's.
                return Ok(());
            }
            let plan = self.handle.block_on(self.planner.plan(self.next_plan))?;
            self.next_plan += 1;
            if plan.last && plan.entries.is_empty() {
                // The previous barrier covered everything.
                return Ok(());
            }
            self.emit_plan(&plan, ctx)?;
            ctx.report_partitions(plan.partitions.clone(), plan.idle.clone());
            ctx.barrier(plan.positions.clone())?;
            if plan.last {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{Int64Type, Schema};

    /// Only the columns the finalizer reads keep their values; the others keep their type and
    /// length, as zeros and empty strings (flat types) or nulls (nested, where nullable).
    #[tokio::test]
    async fn the_exchange_writes_only_the_values_the_finalizer_reads() {
        let dir = std::env::temp_dir().join(format!("engine-exchange-{}", uuid::Uuid::new_v4()));
        let url = format!("file://{}", dir.display());
        let store = Arc::new(CheckpointStore::open(&url, &Default::default(), "t").unwrap());
        let list = DataType::new_list(DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![
            Field::new("read", DataType::Utf8, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("topic", DataType::Utf8, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("items", list.clone(), true),
            Field::new("nested", list, false),
        ]));
        let items = || {
            let values = [Some(vec![Some(1), Some(2)]), None, Some(vec![])];
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(values)) as ArrayRef
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
                Arc::new(StringArray::from(vec!["t", "t", "t"])),
                Arc::new(Int64Array::from(vec![7, 8, 9])),
                items(),
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>([
                    Some(vec![Some(5)]),
                    Some(vec![]),
                    Some(vec![Some(6), None]),
                ])),
            ],
        )
        .unwrap();
        let read = BTreeSet::from(["read".to_string()]);
        let mut sink = ExchangeSink::new("x.out".into(), store.clone(), schema.clone(), Some(read));
        let p = PartitionId::new("in/0");
        sink.write(batch.clone(), Some(&p)).await.unwrap();
        let pending = sink.prepare_commit(1).await.unwrap();
        let objects = pending[0].data["objects"].as_array().unwrap().clone();
        assert_eq!(objects.len(), 1);
        let bytes = store.read(objects[0].as_str().unwrap()).await.unwrap();
        let got: Vec<RecordBatch> = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 1);
        let got = &got[0];
        assert_eq!(got.schema(), schema);
        assert_eq!(got.column(0), batch.column(0));
        for c in [1, 2] {
            let text = got.column(c).as_string::<i32>();
            assert_eq!(text.null_count(), 0);
            assert!(text.iter().all(|v| v == Some("")), "{text:?}");
        }
        let offsets = got.column(3).as_primitive::<Int64Type>();
        assert_eq!(
            (offsets.null_count(), offsets.values().to_vec()),
            (0, vec![0, 0, 0])
        );
        assert_eq!(got.column(4).null_count(), 3);
        // Non-nullable and nested: sent as it is.
        assert_eq!(got.column(5), batch.column(5));
        let _ = std::fs::remove_dir_all(dir);
    }
}
