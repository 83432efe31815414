//! The checkpoint coordinator: collects, per epoch, each source's positions and every other
//! node's acknowledgement (operator state, event-time state, sinks' staged output), then commits
//! the epoch. Epochs commit strictly in sequence: one that never completes (a lost
//! acknowledgement) holds back every later one, so nothing is committed out of order.
//!
//! How an epoch commits depends on the part of the pipeline ([`Chain`]):
//! - per partition: each partition's position and staged output go into the next entry of that
//!   partition's chain (put-if-absent: the commit point, and the fence), then its output is
//!   made visible;
//! - the finalizer: state objects, then the epoch's manifest (put-if-absent: the commit point),
//!   then the staged output.

use super::exchange::Planner;
use super::outputs::{Flow, Stop};
use super::partitions::Partitions;
use super::progress::Work;
use crate::checkpoint::{CheckpointStore, Lock, Manifest};
use engine_api::{Committer, EngineError, Epoch, PendingCommit, Positions, Result, TrackerState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What actors and sources tell the coordinator.
pub(crate) enum CoordMsg {
    /// A source injected the barrier of `epoch` at `position`.
    Position {
        source: String,
        epoch: Epoch,
        positions: Positions,
        event_time: Option<TrackerState>,
        work: Work,
    },
    /// A source finished (batch mode, or a clean stop) after its last barrier.
    SourceEnded { source: String },
    /// An operator or sink got the end of all its inputs after its last barrier: later epochs
    /// need no acknowledgement from it.
    NodeEnded { node: String },
    /// An operator or sink handled the barrier of `epoch`.
    Ack {
        node: String,
        epoch: Epoch,
        state: Option<Vec<u8>>,
        event_time: Option<TrackerState>,
        pending: Vec<PendingCommit>,
        work: Work,
    },
}

/// Where actors send [`CoordMsg`]s.
#[derive(Clone)]
pub(crate) struct CoordinatorHandle(pub(crate) mpsc::UnboundedSender<CoordMsg>);

impl CoordinatorHandle {
    /// Fails only when the coordinator is gone: a consequence of its own failure.
    pub(crate) fn send(&self, msg: CoordMsg) -> Flow {
        self.0
            .send(msg)
            .map_err(|_| Stop::Cascade("the checkpoint coordinator stopped"))
    }
}

/// The newest committed positions per source, for sources to report lag.
pub(crate) type Committed = Arc<Mutex<BTreeMap<String, Positions>>>;

/// Where a part of the pipeline commits its epochs. (One per coordinator: the size of the
/// finalizer's variant, which holds its last manifest, does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Chain {
    /// The part that runs per source partition: one chain per partition.
    Partitioned(Arc<Partitions>),
    /// The finalizer: one manifest per epoch, after `last`.
    Finalizer {
        last: Option<Manifest>,
        /// Cleans up the exchange after each commit (absent in a pipeline without one).
        planner: Option<Arc<Planner>>,
        /// The process holding the finalizer's role, written into each manifest, when the role
        /// can move.
        owner: Option<String>,
        /// Cancelled when the role moved away: from then on nothing is committed. (As the
        /// finalizer stops, its nodes end, and an epoch would otherwise count them as done
        /// and commit without their state: the next holder would restore, say, an aggregate
        /// without what it had merged.)
        lost: Option<CancellationToken>,
    },
}

#[derive(Default)]
struct EpochProgress {
    positions: BTreeMap<String, Positions>,
    acked: BTreeSet<String>,
    state: BTreeMap<String, Vec<u8>>,
    event_time: BTreeMap<String, TrackerState>,
    pending: Vec<PendingCommit>,
    /// What each node did in the epoch.
    work: BTreeMap<String, Work>,
}

/// What the coordinator did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) epochs: u64,
    pub(crate) last: Option<Epoch>,
}

pub(crate) struct Coordinator {
    pub(crate) lock: Option<Lock>,
    pub(crate) store: Arc<CheckpointStore>,
    /// Acknowledgements an epoch needs: one per operator and sink.
    pub(crate) acks_needed: usize,
    pub(crate) sources: BTreeSet<String>,
    pub(crate) first_epoch: Epoch,
    pub(crate) committers: HashMap<String, Arc<dyn Committer>>,
    pub(crate) committed: Committed,
    pub(crate) chain: Chain,
}

impl Coordinator {
    /// Runs until every actor and source has dropped its handle; the lock is given up at the
    /// end, also after a failure (this process writes nothing more).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<CoordMsg>,
    ) -> Result<Progress> {
        let mut lock = self.lock.take();
        let result = self.commit_all(&mut lock, &mut rx).await;
        if let Some(l) = lock {
            l.release().await;
        }
        result
    }

    async fn commit_all(
        self,
        lock: &mut Option<Lock>,
        rx: &mut mpsc::UnboundedReceiver<CoordMsg>,
    ) -> Result<Progress> {
        let Coordinator {
            lock: _,
            store,
            acks_needed,
            sources,
            first_epoch,
            committers,
            committed,
            mut chain,
        } = self;
        let mut epochs: BTreeMap<Epoch, EpochProgress> = BTreeMap::new();
        let mut ended: BTreeSet<String> = BTreeSet::new();
        let mut ended_nodes: BTreeSet<String> = BTreeSet::new();
        let mut next = first_epoch;
        let mut done = Progress::default();
        let mut last_commit = Instant::now();
        let mut beat = tokio::time::interval(Duration::from_secs(5));
        beat.tick().await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = beat.tick() => {
                    if let Some(l) = lock.as_mut() {
                        l.heartbeat().await?;
                    }
                    continue;
                }
            };
            match msg {
                CoordMsg::Position {
                    source,
                    epoch,
                    positions,
                    event_time,
                    work,
                } => {
                    let e = epochs.entry(epoch).or_default();
                    e.work.insert(source.clone(), work);
                    if let Some(t) = event_time {
                        e.event_time.insert(source.clone(), t);
                    }
                    e.positions.insert(source, positions);
                }
                CoordMsg::SourceEnded { source } => {
                    ended.insert(source);
                }
                CoordMsg::NodeEnded { node } => {
                    ended_nodes.insert(node);
                }
                CoordMsg::Ack {
                    node,
                    epoch,
                    state,
                    event_time,
                    pending,
                    work,
                } => {
                    let e = epochs.entry(epoch).or_default();
                    e.work.insert(node.clone(), work);
                    e.acked.insert(node.clone());
                    if let Some(s) = state {
                        e.state.insert(node.clone(), s);
                    }
                    if let Some(t) = event_time {
                        e.event_time.insert(node, t);
                    }
                    e.pending.extend(pending);
                }
            }
            while let Some(e) = epochs.get(&next) {
                let positioned = sources
                    .iter()
                    .all(|s| e.positions.contains_key(s) || ended.contains(s));
                let gone = ended_nodes.difference(&e.acked).count();
                if e.acked.len() + gone < acks_needed || !positioned {
                    break;
                }
                let mut e = epochs.remove(&next).expect("present");
                let t0 = Instant::now();
                let work = std::mem::take(&mut e.work);
                let offsets = e.positions.clone();
                let mut files_of_node = BTreeMap::<String, u64>::new();
                for p in &e.pending {
                    *files_of_node.entry(p.node.clone()).or_default() += 1;
                }
                let committed_what = match &mut chain {
                    Chain::Partitioned(parts) => {
                        let positions = e.positions.clone();
                        let mut max_event_time = BTreeMap::new();
                        for (p, m) in e.event_time.values().flat_map(|t| &t.max_event_time) {
                            let v = max_event_time.entry(p.clone()).or_insert(*m);
                            *v = (*v).max(*m);
                        }
                        let (partitions, files) = parts
                            .commit(next, e.positions, e.pending, &max_event_time)
                            .await?;
                        if let Ok(mut c) = committed.lock() {
                            c.extend(positions);
                        }
                        (partitions > 0).then_some((files, partitions, "partitions"))
                    }
                    Chain::Finalizer { lost, .. }
                        if lost.as_ref().is_some_and(|l| l.is_cancelled()) =>
                    {
                        tracing::debug!(epoch = next, "not committed: the finalizer's role moved");
                        None
                    }
                    Chain::Finalizer {
                        last,
                        planner,
                        owner,
                        ..
                    } => {
                        let stamp = owner.as_deref();
                        match commit_epoch(&store, &committers, last.as_ref(), next, e, stamp)
                            .await?
                        {
                            Some(m) => {
                                if let Some(p) = planner {
                                    p.committed(&p.positions_in(&m.positions)).await;
                                }
                                let files = m.pending.len();
                                *last = Some(m);
                                Some((files, 1, "finalizer"))
                            }
                            None => None,
                        }
                    }
                };
                // The epoch is done (committed, or with nothing to commit): the pipeline runs.
                crate::health::health().set_committed();
                if let Some((files, chains, part)) = committed_what {
                    metrics::counter!("engine_epochs_committed_total", "part" => part).increment(1);
                    metrics::gauge!("engine_last_committed_epoch", "part" => part).set(next as f64);
                    metrics::histogram!("engine_epoch_commit_seconds", "part" => part)
                        .record(t0.elapsed().as_secs_f64());
                    for (node, n) in files_of_node {
                        metrics::counter!("engine_sink_files_committed_total", "node" => node)
                            .increment(n);
                    }
                    tracing::debug!(epoch = next, part, chains, files, "epoch committed");
                    super::progress::log(
                        next,
                        part,
                        &work,
                        &offsets,
                        t0.elapsed(),
                        last_commit.elapsed(),
                    );
                    last_commit = Instant::now();
                    done.epochs += 1;
                    done.last = Some(next);
                }
                next += 1;
            }
        }
        Ok(done)
    }
}

/// Commits one complete epoch, unless nothing changed since `last`. Returns its manifest.
async fn commit_epoch(
    store: &CheckpointStore,
    committers: &HashMap<String, Arc<dyn Committer>>,
    last: Option<&Manifest>,
    epoch: Epoch,
    e: EpochProgress,
    owner: Option<&str>,
) -> Result<Option<Manifest>> {
    let mut m = Manifest::new(store.pipeline(), epoch);
    m.owner = owner.map(String::from);
    // A source that ended keeps the position of its last barrier.
    if let Some(l) = last {
        m.positions = l.positions.clone();
        m.partitions = l.partitions.clone();
        m.watermarks = l.watermarks.clone();
    }
    m.positions.extend(
        e.positions
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).expect("serialisable"))),
    );
    for (node, t) in &e.event_time {
        m.set_tracker_state(node, t);
    }
    let unchanged = e.pending.is_empty()
        && e.state.is_empty()
        && last.is_some_and(|l| {
            l.positions == m.positions
                && l.partitions == m.partitions
                && l.watermarks == m.watermarks
        });
    if unchanged {
        return Ok(None);
    }
    for (node, bytes) in e.state {
        let path = store.write_state(epoch, &node, bytes).await?;
        m.state.insert(node, path);
    }
    m.pending = e.pending;
    for p in &mut m.pending {
        p.version = Some(epoch);
    }
    crate::failpoint::hit("before_manifest");
    // Manifests are never removed, so the put-if-absent alone fences a finalizer whose role
    // moved: its epoch is taken.
    store.commit(&m).await?;
    crate::failpoint::hit("after_manifest");
    finish_commits(committers, &m.pending).await?;
    Ok(Some(m))
}

/// The pending work of `pending` that sink `node` staged.
pub(crate) fn of_node(pending: &[PendingCommit], node: &str) -> Vec<PendingCommit> {
    pending.iter().filter(|p| p.node == node).cloned().collect()
}

/// Removes, sink by sink, what epochs that never committed left staged for `partition` (`None`:
/// the output that mixes partitions), keeping `committed`.
pub(crate) async fn recover_staging(
    committers: &HashMap<String, Arc<dyn Committer>>,
    partition: Option<&engine_api::PartitionId>,
    committed: &[PendingCommit],
) -> Result<()> {
    for (node, c) in committers {
        let cleaned = c
            .recover(partition, &of_node(committed, node))
            .await
            .map_err(|e| e.context(format!("cleaning up staged output of `{node}`")))?;
        if cleaned > 0 {
            tracing::info!(node = %node, partition = ?partition.map(|p| p.as_str()), objects = cleaned,
                "removed output staged by epochs that never committed");
        }
    }
    Ok(())
}

/// Makes the staged output of a committed manifest visible, sink by sink. Idempotent.
pub(crate) async fn finish_commits(
    committers: &HashMap<String, Arc<dyn Committer>>,
    pending: &[PendingCommit],
) -> Result<()> {
    let mut by_node: BTreeMap<&str, Vec<PendingCommit>> = BTreeMap::new();
    for p in pending {
        by_node.entry(p.node.as_str()).or_default().push(p.clone());
    }
    for (node, items) in by_node {
        let c = committers.get(node).ok_or_else(|| {
            EngineError::config(format!(
                "the checkpoint has output of sink `{node}`, which is no longer in the pipeline; restore the node or use a new checkpoint location"
            ))
        })?;
        c.commit(&items)
            .await
            .map_err(|e| e.context(format!("committing output of `{node}`")))?;
        crate::failpoint::hit("mid_commit");
    }
    Ok(())
}
