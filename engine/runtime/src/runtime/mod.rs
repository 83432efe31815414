//! Running a built graph: one actor per node over bounded mailboxes.
//!
//! - [`actor`]: the generic loop every operator and sink runs in;
//! - [`source`]: the context a source thread calls;
//! - [`outputs`]: the one send path, where event time is tracked;
//! - [`alignment`]: barrier alignment at multi-input nodes;
//! - [`coordinator`]: the checkpoint coordinator (the commit protocol);
//! - [`partitions`]: claiming source partitions and committing each to its own chain;
//! - [`split`]: the per-partition part of a graph and its finalizer;
//! - [`exchange`]: how the finalizer gets the per-partition part's committed rows;
//! - [`supervisor`]: the first failure stops the pipeline and is reported with its node.
//!
//! This module wires them: restore from the last checkpoint, open connections, create the
//! mailboxes, start the actors and supervise them, once per part.

mod actor;
mod alignment;
mod coordinator;
mod exchange;
mod outputs;
mod partitions;
mod progress;
mod source;
mod split;
mod supervisor;

use crate::checkpoint::{CheckpointStore, Lock, Manifest};
use crate::graph::{Graph, GraphNode};
use actor::{Actor, Behaviour};
use coordinator::{
    Chain, Committed, Coordinator, CoordinatorHandle, finish_commits, recover_staging,
};
use engine_api::{Committer, EngineError, Epoch, Node, PendingCommit, Positions, Result};
use outputs::{Envelope, Outputs, received_counter};
use partitions::Partitions;
use source::{Claiming, SourceCtx};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supervisor::Supervisor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Builds the pipeline's graph again, with fresh operators: how a process that takes the
/// finalizer's role over gets its nodes.
pub type GraphFactory = Arc<dyn Fn() -> Result<Graph> + Send + Sync>;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Read up to the end offsets seen at start, then stop.
    pub batch: bool,
    /// Lets the finalizer move between the instances that share the source (see [`run`]).
    pub rebuild: Option<GraphFactory>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub records: u64,
    pub rows_per_sink: BTreeMap<String, u64>,
    /// Epochs the per-partition part committed (each to the chains of the partitions it moved).
    pub epochs_committed: u64,
    pub last_epoch: Option<Epoch>,
    /// Epochs the finalizer committed (0 in a pipeline without aggregates or windows).
    pub finalizer_epochs: u64,
    pub elapsed: Duration,
}

/// `engine validate --connect`: checks that every service the pipeline names answers and
/// accepts the credentials: the checkpoint store, each source (broker, topic) and each sink
/// (bucket). Reads and writes no data. Errors name the node.
pub async fn check_environment(graph: &mut Graph) -> Result<()> {
    let p = &graph.pipeline;
    let file = p.path.display().to_string();
    CheckpointStore::open(&p.checkpoint, &p.storage, &p.name)
        .map_err(|e| e.context(&file))?
        .check()
        .await
        .map_err(|e| e.context(&file))?;
    for g in &mut graph.nodes {
        let at = graph.pipeline.locate(&g.spec, None);
        match &mut g.node {
            Node::Source(s) => tokio::task::block_in_place(|| s.check()),
            Node::Sink(s) => s.check().await,
            Node::Operator(_) => Ok(()),
        }
        .map_err(|e| e.context(&at))?;
    }
    Ok(())
}

/// Runs a built graph until its input ends (batch), `cancel` fires, or a node fails.
///
/// The graph runs as two parts (see [`split`]): the nodes that work row by row run per source
/// partition, committing each partition to its own chain; the nodes that merge partitions
/// (aggregates, windows) and what follows them run in the finalizer, which reads what the
/// partition chains committed through the exchange. The finalizer stops once the per-partition
/// part has stopped and it has taken everything that part committed.
///
/// Streaming instances share the source's partitions through its consumer group. With
/// [`RunOptions::rebuild`], the finalizer runs in whichever instance owns the source's lead
/// partition, and moves with it; without, a pipeline with a finalizer runs as one instance.
pub async fn run(graph: Graph, opts: RunOptions, cancel: CancellationToken) -> Result<RunSummary> {
    let started = Instant::now();
    let Graph {
        pipeline, nodes, ..
    } = graph;
    let store = Arc::new(CheckpointStore::open(
        &pipeline.checkpoint,
        &pipeline.storage,
        &pipeline.name,
    )?);
    store.check().await?;

    let committers = committers_of(&nodes);
    let sources: Vec<String> = source_names(&nodes).collect();
    let lead = nodes.iter().find_map(|g| match &g.node {
        Node::Source(s) => Some(s.lead_partition()),
        _ => None,
    });
    let mut latest = store.latest().await?;
    let mut resumed = BTreeMap::new();
    for s in &sources {
        resumed.insert(s.clone(), !store.chains(s).await?.is_empty());
    }
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let split::Split {
        mut partitioned,
        finalizer,
    } = split::split(nodes, &store, latest.as_ref(), &owner, 0)?;
    let elected = match (&finalizer, lead.flatten(), &opts.rebuild) {
        (Some(_), Some(lead), Some(_)) if !opts.batch => Some(lead),
        _ => None,
    };
    // A batch run, and a streaming pipeline whose finalizer cannot move, run alone: they take
    // the pipeline's lock. Streaming instances share the partitions and register as members.
    let alone = opts.batch || (finalizer.is_some() && elected.is_none());
    let registration = if alone {
        if opts.batch {
            store.check_no_members().await?;
        }
        store.lock().await?
    } else {
        store.check_unlocked().await?;
        store.confirm_conditional_writes(&owner).await?;
        store.join(&owner).await?
    };
    // Only now that this run may write: finish what a checkpoint of an earlier version left.
    let legacy = legacy_positions(&mut latest, &mut partitioned, &committers, &resumed).await?;
    for s in legacy.keys() {
        resumed.insert(s.clone(), true);
    }
    let (lead_tx, lead_rx) = tokio::sync::watch::channel(false);
    // Whether a partition is idle is judged where it is read, and written into its chain for
    // the finalizer's watermark (see `WatermarkTracker::set_partitions`). A batch run reads
    // every partition to its end: one whose event time did not advance in an epoch is idle at
    // once (every partition idle means the smallest maximum counts), and an empty one never
    // holds the watermark.
    let idle_after = finalizer.as_ref().and_then(|f| {
        f.nodes
            .iter()
            .filter(|g| matches!(g.node, Node::Source(_)))
            .filter_map(|g| g.event_time.as_ref().map(|e| e.idle_timeout))
            .min()
            .map(|d| if opts.batch { Duration::ZERO } else { d })
    });
    let partitions = Arc::new(Partitions {
        store: store.clone(),
        committers: committers_of(&partitioned),
        owner,
        owned: Default::default(),
        legacy,
        resumed: Mutex::new(resumed),
        prune: finalizer.is_none(),
        planner: Mutex::new(match (&finalizer, &elected) {
            (Some(f), None) => Some(f.planner.clone()),
            _ => None,
        }),
        local_epoch: Default::default(),
        open_epoch: AtomicU64::new(1),
        released: Default::default(),
        shared: !alone,
        lead: elected.map(|lead| (lead, lead_tx)),
        idle_after,
    });
    // The registration is kept, and heartbeated, by the part that ends last.
    let local_finalizer = finalizer.is_some() && partitions.lead.is_none();
    let (upstream_lock, downstream_lock) = if local_finalizer {
        (None, Some(registration))
    } else {
        (Some(registration), None)
    };
    let upstream = Part {
        nodes: partitioned,
        chain: Chain::Partitioned(partitions.clone()),
        first_epoch: 1,
        latest: None,
        lock: upstream_lock,
        partitions: Some(partitions.clone()),
    };
    let Some(fin) = finalizer else {
        let done = run_part(upstream, &pipeline, &store, opts, cancel).await?;
        return Ok(done.summary(started));
    };
    let stop_upstream = cancel.child_token();
    let upstream_done = CancellationToken::new();
    let upstream_run = async {
        let r = run_part(
            upstream,
            &pipeline,
            &store,
            opts.clone(),
            stop_upstream.clone(),
        )
        .await;
        upstream_done.cancel();
        if let Some(p) = partitions.planner() {
            p.upstream_done();
        }
        r
    };
    // The finalizer stops by itself once the per-partition part is done; when it fails, the
    // per-partition part stops too.
    let downstream_run = async {
        let r = match (&opts.rebuild, partitions.lead.is_some()) {
            (Some(rebuild), true) => {
                drop(fin);
                let role = FinalizerRole {
                    lead: lead_rx,
                    rebuild: rebuild.clone(),
                    store: store.clone(),
                    partitions: partitions.clone(),
                    upstream_done: upstream_done.clone(),
                    stopping: cancel.clone(),
                };
                role.run(opts.clone()).await
            }
            _ => {
                let mut fin_nodes = fin.nodes;
                let fin_committers = committers_of(&fin_nodes);
                restore(&store, &fin_committers, latest.as_ref(), &mut fin_nodes).await?;
                let downstream = Part {
                    first_epoch: latest.as_ref().map_or(1, |m| m.epoch + 1),
                    nodes: fin_nodes,
                    chain: Chain::Finalizer {
                        last: latest.clone(),
                        planner: Some(fin.planner.clone()),
                        owner: None,
                        lost: None,
                    },
                    latest: latest.clone(),
                    lock: downstream_lock,
                    partitions: None,
                };
                run_part(
                    downstream,
                    &pipeline,
                    &store,
                    opts.clone(),
                    CancellationToken::new(),
                )
                .await
                .map(|d| d.progress.epochs)
            }
        };
        if r.is_err() {
            stop_upstream.cancel();
        }
        r
    };
    let (up, down) = tokio::join!(upstream_run, downstream_run);
    // A part that stopped because the other failed stopped cleanly: the error is the cause.
    let (up, down) = (up?, down?);
    let mut summary = up.summary(started);
    summary.finalizer_epochs = down;
    Ok(summary)
}

/// The finalizer's role in a process whose source shares its partitions: it runs while this
/// process owns the lead partition. Each time the role is taken, the finalizer is rebuilt from
/// the pipeline file, claims the finalizer's chain (fencing the previous holder), restores
/// from it and runs; when the lead partition moves away it stops, leaving what it had not
/// committed to the next holder (unless this process is stopping: it then finishes).
struct FinalizerRole {
    lead: tokio::sync::watch::Receiver<bool>,
    rebuild: GraphFactory,
    store: Arc<CheckpointStore>,
    partitions: Arc<Partitions>,
    upstream_done: CancellationToken,
    stopping: CancellationToken,
}

impl FinalizerRole {
    /// Returns the epochs committed while holding the role.
    async fn run(mut self, opts: RunOptions) -> Result<u64> {
        let mut epochs = 0;
        loop {
            tokio::select! {
                held = self.lead.wait_for(|l| *l) => if held.is_err() { return Ok(epochs) },
                _ = self.upstream_done.cancelled() => return Ok(epochs),
            }
            let ran = self.hold(&opts).await;
            self.partitions.set_planner(None);
            match ran {
                Ok(n) => epochs += n,
                Err(e) => {
                    let latest = self.store.latest().await?;
                    let mine = Some(self.partitions.owner.as_str());
                    match latest.as_ref().and_then(|m| m.owner.as_deref()) {
                        Some(other) if Some(other) != mine => tracing::warn!(
                            error = %e,
                            "finalizer fenced: another instance took the role; nothing more is committed here"
                        ),
                        _ => return Err(e),
                    }
                }
            }
            if self.upstream_done.is_cancelled() {
                return Ok(epochs);
            }
        }
    }

    /// Holds the role once: until the lead partition moves away or the pipeline stops.
    async fn hold(&mut self, opts: &RunOptions) -> Result<u64> {
        let graph = (self.rebuild)()?;
        let pipeline = graph.pipeline.clone();
        let owner = self.partitions.owner.clone();
        let (prev, claim) = self.store.claim_finalizer(&owner).await?;
        crate::failpoint::hit("after_finalizer_claim");
        tracing::info!(
            epoch = claim.epoch,
            "finalizer role taken: this instance owns the lead partition; merging every partition's committed rows"
        );
        let split::Split {
            partitioned,
            finalizer,
        } = split::split(
            graph.nodes,
            &self.store,
            Some(&claim),
            &owner,
            self.partitions.local_epoch(),
        )?;
        drop(partitioned);
        let fin = finalizer
            .ok_or_else(|| EngineError::runtime("the rebuilt pipeline has no finalizer"))?;
        let mut nodes = fin.nodes;
        restore(
            &self.store,
            &committers_of(&nodes),
            prev.as_ref(),
            &mut nodes,
        )
        .await?;
        self.partitions.set_planner(Some(fin.planner.clone()));
        if self.upstream_done.is_cancelled() {
            fin.planner.upstream_done();
        }
        let stop = CancellationToken::new();
        let part = Part {
            first_epoch: claim.epoch + 1,
            nodes,
            chain: Chain::Finalizer {
                last: Some(claim.clone()),
                planner: Some(fin.planner.clone()),
                owner: Some(owner),
                lost: Some(stop.clone()),
            },
            latest: Some(claim),
            lock: None,
            partitions: None,
        };
        let run = run_part(part, &pipeline, &self.store, opts.clone(), stop.clone());
        tokio::pin!(run);
        let done = loop {
            tokio::select! {
                r = &mut run => break r,
                changed = self.lead.changed() => {
                    let lost = changed.is_err() || !*self.lead.borrow();
                    if lost && !self.stopping.is_cancelled() {
                        tracing::info!("finalizer role lost: the lead partition moved; the next holder takes over from the last commit");
                        stop.cancel();
                        break run.await;
                    }
                }
            }
        }?;
        Ok(done.progress.epochs)
    }
}

/// The names of the sources among `nodes`.
fn source_names(nodes: &[GraphNode]) -> impl Iterator<Item = String> + '_ {
    nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Source(_)))
        .map(|g| g.spec.name.clone())
}

/// The committers of the sinks among `nodes`, by node.
fn committers_of(nodes: &[GraphNode]) -> HashMap<String, Arc<dyn Committer>> {
    nodes
        .iter()
        .filter_map(|g| match &g.node {
            Node::Sink(s) => Some((g.spec.name.clone(), s.committer())),
            _ => None,
        })
        .collect()
}

/// A checkpoint written before partition chains (manifest versions 1 and 2) holds each
/// source's position for all its partitions. For each source that has no chain yet, this
/// finishes that manifest's commits and splits its position per partition; the first claims
/// start the chains there.
async fn legacy_positions(
    latest: &mut Option<Manifest>,
    nodes: &mut [GraphNode],
    committers: &HashMap<String, Arc<dyn Committer>>,
    resumed: &BTreeMap<String, bool>,
) -> Result<BTreeMap<String, Positions>> {
    let mut legacy = BTreeMap::new();
    let Some(m) = latest.as_mut() else {
        return Ok(legacy);
    };
    let names: Vec<&str> = resumed.keys().map(String::as_str).collect();
    m.name_v1_position(&names);
    for g in nodes.iter() {
        if let (Node::Source(src), Some(v)) = (&g.node, m.positions.get(&g.spec.name))
            && resumed.get(&g.spec.name) == Some(&false)
        {
            let positions = src
                .legacy_positions(v)
                .map_err(|e| e.context(format!("node `{}`", g.spec.name)))?;
            legacy.insert(g.spec.name.clone(), positions);
        }
    }
    // The chains carry these positions from now on.
    for name in legacy.keys() {
        m.positions.remove(name);
    }
    if !legacy.is_empty() {
        tracing::info!(
            epoch = m.epoch,
            "resuming from a checkpoint written before partition chains"
        );
        finish_commits(committers, &m.pending).await?;
        m.pending.clear();
    }
    Ok(legacy)
}

/// One part of a running pipeline: the per-partition part or the finalizer.
struct Part {
    nodes: Vec<GraphNode>,
    chain: Chain,
    first_epoch: Epoch,
    /// The finalizer's last manifest, which restores event-time state.
    latest: Option<Manifest>,
    lock: Option<Lock>,
    /// The per-partition part's claims.
    partitions: Option<Arc<Partitions>>,
}

/// What one part did.
struct PartDone {
    progress: coordinator::Progress,
    records: u64,
    rows_per_sink: BTreeMap<String, u64>,
}

impl PartDone {
    fn summary(self, started: Instant) -> RunSummary {
        RunSummary {
            records: self.records,
            rows_per_sink: self.rows_per_sink,
            epochs_committed: self.progress.epochs,
            last_epoch: self.progress.last,
            finalizer_epochs: 0,
            elapsed: started.elapsed(),
        }
    }
}

/// Opens a part's connections, starts its actors and its coordinator, and supervises them.
async fn run_part(
    part: Part,
    pipeline: &crate::config::Pipeline,
    store: &Arc<CheckpointStore>,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<PartDone> {
    let Part {
        mut nodes,
        chain,
        first_epoch,
        latest,
        lock,
        partitions,
    } = part;
    // Committers outlive their sinks: the coordinator finishes commits with them.
    let committers = committers_of(&nodes);
    let sources: BTreeSet<String> = source_names(&nodes).collect();
    // Open connections before anything runs, so bad input fails fast and clearly.
    for g in nodes.iter_mut() {
        if let Node::Sink(s) = &mut g.node {
            s.open()
                .await
                .map_err(|e| e.context(format!("node `{}`", g.spec.name)))?;
        }
    }
    let handle = tokio::runtime::Handle::current();
    for g in nodes.iter_mut() {
        if let Node::Source(src) = &mut g.node {
            let mut claims = Claiming {
                source: g.spec.name.clone(),
                partitions: partitions.clone(),
                handle: handle.clone(),
                batch: opts.batch,
            };
            tokio::task::block_in_place(|| src.open(&mut claims))
                .map_err(|e| e.context(format!("node `{}`", g.spec.name)))?;
        }
    }

    let (coord_tx, coord_rx) = mpsc::unbounded_channel();
    let coord = CoordinatorHandle(coord_tx);
    let committed: Committed = Arc::new(Mutex::new(BTreeMap::new()));
    let records = Arc::new(AtomicU64::new(0));
    let mut rows_per_sink: BTreeMap<String, Arc<AtomicU64>> = BTreeMap::new();
    let acks_needed = nodes.len() - sources.len();

    let stop_sources = cancel.child_token();
    let failed = CancellationToken::new();
    let mut supervisor = Supervisor::new(failed.clone(), stop_sources.clone());
    let shared = Shared {
        coord,
        committed: committed.clone(),
        records: records.clone(),
        stop_sources,
        failed,
        trigger: pipeline.trigger,
        batch: opts.batch,
        next_epoch: first_epoch,
        partitions,
    };
    let (mut outputs, mut mailboxes) = wire(&nodes, pipeline.mailbox);
    for (i, g) in nodes.into_iter().enumerate() {
        let edges = std::mem::take(&mut outputs[i]);
        let mailbox = mailboxes[i].take();
        if let Some((sink, rows)) =
            spawn_node(g, edges, mailbox, latest.as_ref(), &shared, &mut supervisor)?
        {
            rows_per_sink.insert(sink, rows);
        }
    }
    // The coordinator ends once every task has dropped its handle.
    drop(shared);

    let coordinator = tokio::spawn(
        Coordinator {
            lock,
            store: store.clone(),
            acks_needed,
            sources,
            first_epoch,
            committers,
            committed,
            chain,
        }
        .run(coord_rx),
    );
    let progress = supervisor.supervise(coordinator).await?;
    Ok(PartDone {
        progress,
        records: records.load(Ordering::Relaxed),
        rows_per_sink: rows_per_sink
            .into_iter()
            .filter(|(k, _)| !k.contains('.'))
            .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
            .collect(),
    })
}

/// What every node's task gets from the run.
struct Shared {
    coord: CoordinatorHandle,
    committed: Committed,
    records: Arc<AtomicU64>,
    stop_sources: CancellationToken,
    failed: CancellationToken,
    trigger: Duration,
    batch: bool,
    next_epoch: Epoch,
    partitions: Option<Arc<Partitions>>,
}

/// Starts one node under `supervisor`: a source on a blocking thread, an operator or a sink as
/// an actor on its mailbox. The node that declares event time tracks it on its outputs, from
/// the restored state. Returns a sink's row counter.
fn spawn_node(
    g: GraphNode,
    edges: Edges,
    mailbox: Option<mpsc::Receiver<Envelope>>,
    latest: Option<&Manifest>,
    shared: &Shared,
    supervisor: &mut Supervisor,
) -> Result<Option<(String, Arc<AtomicU64>)>> {
    let GraphNode {
        spec,
        node,
        ports,
        timed_inputs,
        event_time,
        ..
    } = g;
    let name = spec.name;
    let port_names: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
    let mut outputs = Outputs::new(&name, &port_names, edges);
    if let Some(e) = &event_time {
        let column = ports[0].schema.index_of(&e.column)?;
        outputs.track(e, column);
        if let Some(state) = latest.and_then(|m| m.tracker_state(&name)) {
            outputs.restore_tracker(state);
        }
    }
    let mut sink_rows = None;
    let behaviour = match node {
        Node::Source(mut src) => {
            let handle = tokio::runtime::Handle::current();
            let mut ctx = SourceCtx {
                name: name.clone(),
                outputs,
                handle: handle.clone(),
                coord: shared.coord.clone(),
                next_epoch: shared.next_epoch,
                last_barrier: Instant::now(),
                trigger: shared.trigger,
                stop: shared.stop_sources.clone(),
                failed: shared.failed.clone(),
                batch: shared.batch,
                committed: shared.committed.clone(),
                records: shared.records.clone(),
                received: received_counter(&name),
                cascade: None,
                claims: Claiming {
                    source: name.clone(),
                    partitions: shared.partitions.clone(),
                    handle,
                    batch: shared.batch,
                },
                epoch_rows: 0,
                lag: Default::default(),
            };
            supervisor.spawn_blocking(name, move || {
                let ran = src.run(&mut ctx);
                ctx.finish(ran)
            });
            return Ok(None);
        }
        Node::Operator(b) => Behaviour::operator(b.operator, outputs.ports()),
        Node::Sink(sink) => {
            let rows = Arc::new(AtomicU64::new(0));
            sink_rows = Some((name.clone(), rows.clone()));
            Behaviour::Sink { sink, rows }
        }
    };
    let actor = Actor {
        rx: mailbox.ok_or_else(|| EngineError::runtime(format!("node `{name}` has no mailbox")))?,
        name: name.clone(),
        behaviour,
        outputs,
        timed: timed_inputs,
        coord: shared.coord.clone(),
    };
    supervisor.spawn(name, actor.run());
    Ok(sink_rows)
}

/// Restores the finalizer from its last committed manifest: finishes its commits, removes what
/// epochs that never committed left staged, and restores operator state.
async fn restore(
    store: &CheckpointStore,
    committers: &HashMap<String, Arc<dyn Committer>>,
    latest: Option<&Manifest>,
    nodes: &mut [GraphNode],
) -> Result<()> {
    let committed_pending: Vec<PendingCommit> = latest
        .map(|m| m.pending.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| committers.contains_key(&p.node))
        .collect();
    if let Some(m) = latest {
        tracing::info!(epoch = m.epoch, "finalizer resuming from checkpoint");
        finish_commits(committers, &committed_pending).await?;
        for g in nodes.iter_mut() {
            if let (Node::Operator(b), Some(path)) = (&mut g.node, m.state.get(&g.spec.name)) {
                let bytes = store.read(path).await?;
                b.operator
                    .restore(&bytes)
                    .map_err(|e| e.context(format!("restoring node `{}`", g.spec.name)))?;
            }
        }
    }
    recover_staging(committers, None, &committed_pending).await
}

type Edges = Vec<Vec<(mpsc::Sender<Envelope>, usize)>>;

/// Creates a bounded mailbox for every node with inputs, and each node's output edges per port.
fn wire(
    nodes: &[GraphNode],
    capacity: usize,
) -> (Vec<Edges>, Vec<Option<mpsc::Receiver<Envelope>>>) {
    let mut outputs: Vec<Edges> = nodes
        .iter()
        .map(|g| vec![Vec::new(); g.ports.len()])
        .collect();
    let mut mailboxes = Vec::with_capacity(nodes.len());
    for g in nodes {
        if g.inputs.is_empty() {
            mailboxes.push(None);
            continue;
        }
        let (tx, rx) = mpsc::channel(capacity);
        for (slot, (u, port)) in g.inputs.iter().enumerate() {
            outputs[*u][*port].push((tx.clone(), slot));
        }
        mailboxes.push(Some(rx));
    }
    (outputs, mailboxes)
}

#[cfg(test)]
mod tests;
