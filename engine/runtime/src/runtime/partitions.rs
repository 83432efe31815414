//! Ownership of source partitions: claiming them before reading, and committing each one's
//! share of an epoch to its own chain.
//!
//! A claim reads the partition's newest chain entry and writes the next one (same position, no
//! output, this process as owner) with put-if-absent. Whoever owned the partition before is
//! fenced from then on: its next commit for the partition finds its sequence number taken.
//! Only after the claim does the new owner finish the output the chain committed, remove what
//! was left staged for the partition, and start reading at the committed position.

use super::coordinator::{finish_commits, of_node, recover_staging};
use super::exchange::Planner;
use crate::checkpoint::{CheckpointStore, PartitionManifest};
use engine_api::{
    Claimed, Committer, EngineError, Epoch, PartitionId, PendingCommit, Positions, Result,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times a claim retries when another process writes the chain at the same moment.
const CLAIM_ATTEMPTS: usize = 5;

/// What this process holds of one partition it owns.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    pub(crate) source: String,
    /// The newest sequence number this process wrote in the partition's chain.
    pub(crate) seq: u64,
    pub(crate) position: Option<serde_json::Value>,
    /// Since when this process has seen the partition's event time advance (or owned it).
    pub(crate) active: Instant,
    /// The largest event time of its rows seen here.
    pub(crate) max_event_time: Option<i64>,
    /// Whether this process's newest entry says it is idle.
    pub(crate) idle: bool,
}

/// The partitions this process owns, shared by the sources that claim them and the coordinator
/// that commits them.
pub(crate) type Owners = Arc<Mutex<BTreeMap<PartitionId, Owned>>>;

/// Claims partitions for this process and commits their chains.
pub(crate) struct Partitions {
    pub(crate) store: Arc<CheckpointStore>,
    /// The committers of the sinks fed from partitions.
    pub(crate) committers: HashMap<String, Arc<dyn Committer>>,
    /// This process's id in the chains.
    pub(crate) owner: String,
    pub(crate) owned: Owners,
    /// Positions of a checkpoint written before partition chains, by source.
    pub(crate) legacy: BTreeMap<String, Positions>,
    /// Sources that have committed: before this run, or in it (by any process).
    pub(crate) resumed: Mutex<BTreeMap<String, bool>>,
    /// Whether this part removes old chain entries itself: when the pipeline has no finalizer,
    /// which otherwise does once it has consumed them.
    pub(crate) prune: bool,
    /// The finalizer in this process, if it runs one now, told when each epoch is committed.
    pub(crate) planner: Mutex<Option<Arc<Planner>>>,
    /// The last epoch this part committed.
    pub(crate) local_epoch: AtomicU64,
    /// The epoch the sources are filling (the next barrier's).
    pub(crate) open_epoch: AtomicU64,
    /// Partitions given up, with the epoch that was open then: output of theirs in that epoch
    /// or before was read under the ownership that ended, so it is abandoned even if the
    /// partition was claimed again since (the claim resumes from the last commit, and reads it
    /// again).
    pub(crate) released: Mutex<BTreeMap<PartitionId, Epoch>>,
    /// Whether partitions may move to other processes (a consumer group): a partition claimed
    /// away is then given up; without a group it means another engine runs the same
    /// checkpoint, which is an error.
    pub(crate) shared: bool,
    /// The partition whose owner runs the finalizer, and where to say whether this process
    /// owns it.
    pub(crate) lead: Option<(PartitionId, tokio::sync::watch::Sender<bool>)>,
    /// The pipeline's idle timeout, when it declares event time and has a finalizer: an owned
    /// partition whose event time has not advanced for this long is marked idle in its chain.
    pub(crate) idle_after: Option<Duration>,
}

impl Partitions {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<PartitionId, Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says whether this process owns the lead partition, when `p` is it.
    fn leads(&self, p: &PartitionId, owns: bool) {
        if let Some((lead, tx)) = &self.lead
            && lead == p
        {
            tx.send_replace(owns);
        }
    }

    /// Makes `planner` the one told of committed epochs (`None` once the finalizer stops here).
    pub(crate) fn set_planner(&self, planner: Option<Arc<Planner>>) {
        *self.planner.lock().unwrap_or_else(|e| e.into_inner()) = planner;
    }

    /// The planner of the finalizer running in this process, if any.
    pub(crate) fn planner(&self) -> Option<Arc<Planner>> {
        self.planner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn local_epoch(&self) -> Epoch {
        self.local_epoch.load(Ordering::SeqCst)
    }

    /// Claims `partitions` of `source` (see the module's documentation).
    pub(crate) async fn claim(&self, source: &str, partitions: &[PartitionId]) -> Result<Claimed> {
        let claims = partitions.iter().map(|p| self.claim_one(source, p));
        let mut positions = Positions::new();
        for (p, position) in partitions
            .iter()
            .zip(futures::future::try_join_all(claims).await?)
        {
            if let Some(v) = position {
                positions.insert(p.clone(), v);
            }
        }
        // A source that has committed anything resumes: a partition of it without a position
        // is new since, and is read from its start.
        let mut resumed = self.resumed.lock().unwrap_or_else(|e| e.into_inner());
        let r = resumed.entry(source.to_string()).or_default();
        *r |= !positions.is_empty();
        Ok(Claimed {
            positions,
            resumed: *r,
        })
    }

    async fn claim_one(&self, source: &str, p: &PartitionId) -> Result<Option<serde_json::Value>> {
        if let Some(other) = self.owned().get(p).filter(|o| o.source != source) {
            return Err(EngineError::config(format!(
                "sources `{}` and `{source}` both read partition {p}; give each source its own topic",
                other.source
            )));
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let latest = self.store.partition_latest(source, p).await?;
            let position = match &latest {
                Some(m) => m.position.clone(),
                None => self.legacy.get(source).and_then(|l| l.get(p)).cloned(),
            };
            let claim = PartitionManifest {
                version: crate::checkpoint::MANIFEST_VERSION,
                pipeline: self.store.pipeline().to_string(),
                source: source.to_string(),
                partition: p.clone(),
                seq: latest.as_ref().map_or(1, |m| m.seq + 1),
                owner: self.owner.clone(),
                claim: true,
                epoch: 0,
                created_at: chrono::Utc::now().to_rfc3339(),
                position: position.clone(),
                pending: Vec::new(),
                carried: latest.as_ref().map(unfinished).unwrap_or_default(),
                idle: false,
            };
            crate::failpoint::hit("before_claim");
            // A claim that landed in a hole (see `commit`) is retried from the newest entry,
            // before it cleans anything up: the staging belongs to the partition's live owner.
            if !self.store.commit_partition(&claim).await?
                || self
                    .store
                    .partition_moved_past(source, p, claim.seq)
                    .await?
            {
                continue;
            }
            crate::failpoint::hit("after_claim");
            finish_commits(&self.committers, &claim.carried).await?;
            recover_staging(&self.committers, Some(p), &claim.carried).await?;
            if self.prune {
                self.store.prune_partition(source, p, claim.seq).await;
            }
            tracing::debug!(partition = %p, seq = claim.seq, position = ?position, "partition claimed");
            self.owned().insert(
                p.clone(),
                Owned {
                    source: source.to_string(),
                    seq: claim.seq,
                    position: position.clone(),
                    active: Instant::now(),
                    max_event_time: None,
                    idle: false,
                },
            );
            self.leads(p, true);
            return Ok(position);
        }
        Err(EngineError::runtime(format!(
            "could not claim partition {p}: its chain at the checkpoint changed {CLAIM_ATTEMPTS} times in a row; another engine is claiming it too"
        )))
    }

    /// Gives partitions up: their output not committed yet is abandoned at the next commits.
    pub(crate) fn release(&self, partitions: &[PartitionId]) {
        crate::failpoint::hit("in_release");
        let open = self.open_epoch.load(Ordering::SeqCst);
        let mut owned = self.owned();
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        for p in partitions {
            if let Some(o) = owned.remove(p) {
                tracing::debug!(partition = %p, seq = o.seq, epoch = open, "partition released");
            }
            released.insert(p.clone(), open);
            self.leads(p, false);
        }
    }

    /// Abandons staged output of partitions this process no longer owns.
    async fn abort(&self, pending: &[PendingCommit]) {
        for (node, c) in &self.committers {
            let mine = of_node(pending, node);
            if !mine.is_empty() {
                c.abort(&mine).await;
            }
        }
    }

    /// Notes the largest event time seen of owned partition `p` by the end of an epoch, and
    /// returns what this process holds of it.
    fn observe(&self, p: &PartitionId, max_event_time: Option<i64>) -> Option<Owned> {
        let mut owned = self.owned();
        let o = owned.get_mut(p)?;
        if let Some(m) = max_event_time
            && o.max_event_time.is_none_or(|old| m > old)
        {
            o.max_event_time = Some(m);
            o.active = Instant::now();
        }
        Some(o.clone())
    }

    /// Commits epoch `epoch` partition by partition: each owned partition whose position moved,
    /// that staged output, or that became idle or active again gets the next entry of its
    /// chain, then its output is made visible. `max_event_time` is the largest event time seen
    /// per partition by then. Returns how many partitions it committed and the files it made
    /// visible.
    pub(crate) async fn commit(
        &self,
        epoch: Epoch,
        positions: BTreeMap<String, Positions>,
        pending: Vec<PendingCommit>,
        max_event_time: &BTreeMap<PartitionId, i64>,
    ) -> Result<(usize, usize)> {
        let mut work: BTreeMap<PartitionId, (Option<serde_json::Value>, Vec<PendingCommit>)> =
            BTreeMap::new();
        if self.idle_after.is_some() {
            // A partition with nothing new may have become idle.
            for p in self.owned().keys() {
                work.entry(p.clone()).or_default();
            }
        }
        for (p, v) in positions.into_values().flatten() {
            work.entry(p).or_default().0 = Some(v);
        }
        for c in pending {
            let p = c.partition.clone().ok_or_else(|| {
                EngineError::runtime(format!(
                    "sink `{}` got rows that mix source partitions in the part of the pipeline that runs per partition: an operator before it emits at watermarks or barriers without saying so (`Operator::merges_partitions`)",
                    c.node
                ))
            })?;
            work.entry(p).or_default().1.push(c);
        }
        let (mut partitions, mut files) = (0, 0);
        let stale: Vec<PartitionId> = {
            let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            released.retain(|_, at| *at >= epoch);
            released.keys().cloned().collect()
        };
        for (p, (position, pending)) in work {
            if stale.contains(&p) {
                // Read before this process gave the partition up.
                if !pending.is_empty() {
                    self.abort(&pending).await;
                }
                continue;
            }
            let Some(owned) = self.observe(&p, max_event_time.get(&p).copied()) else {
                // Released, or claimed away, since these rows were read.
                if !pending.is_empty() {
                    tracing::debug!(partition = %p, epoch, files = pending.len(), "abandoning output of a partition this process no longer owns");
                    self.abort(&pending).await;
                }
                continue;
            };
            let position = position.or(owned.position.clone());
            let idle = self
                .idle_after
                .is_some_and(|after| owned.active.elapsed() >= after);
            if pending.is_empty() && position == owned.position && idle == owned.idle {
                continue;
            }
            let seq = owned.seq + 1;
            let mut pending = pending;
            for c in &mut pending {
                c.version = Some(seq);
            }
            let m = PartitionManifest {
                version: crate::checkpoint::MANIFEST_VERSION,
                pipeline: self.store.pipeline().to_string(),
                source: owned.source.clone(),
                partition: p.clone(),
                seq,
                owner: self.owner.clone(),
                claim: false,
                epoch,
                created_at: chrono::Utc::now().to_rfc3339(),
                position: position.clone(),
                pending,
                carried: Vec::new(),
                idle,
            };
            crate::failpoint::hit("before_partition_commit");
            let written = self.store.commit_partition(&m).await?;
            // Entries below a chain's newest are removed once the finalizer consumed them (or
            // pruned), so a put-if-absent can land in such a hole after the chain moved on: the
            // writer then finds a newer entry, which was there before it wrote (the newest entry
            // of a chain is never removed), and was fenced. Its entry is below the newest, so no
            // claim or planner reads it, and its output is never made visible.
            if !written
                || (self.shared
                    && self
                        .store
                        .partition_moved_past(&owned.source, &p, m.seq)
                        .await?)
            {
                if !self.shared {
                    return Err(EngineError::config(format!(
                        "partition {p} of pipeline `{}` was claimed by another engine with the same checkpoint; stop it, or give this one its own checkpoint location",
                        self.store.pipeline()
                    )));
                }
                // Fenced: another process claimed it (this one was paused or cut off past the
                // group's session timeout). Its output is never made visible.
                tracing::warn!(partition = %p, epoch, "partition lost: another instance claimed it; abandoning this epoch's output for it");
                crate::failpoint::hit("after_fenced");
                self.release(std::slice::from_ref(&p));
                self.abort(&m.pending).await;
                continue;
            }
            crate::failpoint::hit("after_partition_commit");
            match (owned.idle, idle) {
                (false, true) => {
                    tracing::info!(partition = %p, epoch, "partition idle: its event time has not advanced for the idle timeout, so windows stop waiting for it");
                }
                (true, false) => {
                    tracing::info!(partition = %p, epoch, "partition active again: windows wait for it");
                }
                _ => {}
            }
            if let Some(o) = self.owned().get_mut(&p) {
                o.seq = m.seq;
                o.position = position;
                o.idle = idle;
            }
            finish_commits(&self.committers, &m.pending).await?;
            if m.position.is_some() {
                self.resumed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(m.source.clone(), true);
            }
            if self.prune && m.seq > 2 {
                self.store
                    .remove_partition_entry(&m.source, &p, m.seq - 2)
                    .await;
            }
            partitions += 1;
            files += m.pending.len();
        }
        self.local_epoch.fetch_max(epoch, Ordering::SeqCst);
        if let Some(p) = self.planner() {
            p.local_committed(epoch);
        }
        Ok((partitions, files))
    }
}

/// The committed output of chain entry `m` that may not be finished: its own, or, for a claim,
/// what it carried.
fn unfinished(m: &PartitionManifest) -> Vec<PendingCommit> {
    if m.claim {
        m.carried.clone()
    } else {
        m.pending.clone()
    }
}
