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
mod source;
mod split;
mod supervisor;

use crate::checkpoint::{CheckpointStore, Lock, Manifest};
use crate::graph::{Graph, GraphNode};
use actor::{Actor, Behaviour};
use coordinator::{Chain, Committed, Coordinator, CoordinatorHandle, finish_commits};
use engine_api::{Committer, EngineError, Epoch, Node, PendingCommit, Positions, Result};
use outputs::{Envelope, Outputs};
use partitions::Partitions;
use source::{Claiming, SourceCtx};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supervisor::Supervisor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Read up to the end offsets seen at start, then stop.
    pub batch: bool,
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
pub async fn run(graph: Graph, opts: RunOptions, cancel: CancellationToken) -> Result<RunSummary> {
    let started = Instant::now();
    let Graph {
        pipeline,
        mut nodes,
        ..
    } = graph;
    let store = Arc::new(CheckpointStore::open(
        &pipeline.checkpoint,
        &pipeline.storage,
        &pipeline.name,
    )?);
    store.check().await?;

    let committers = committers_of(&nodes);
    let sources: Vec<String> = nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Source(_)))
        .map(|g| g.spec.name.clone())
        .collect();
    let mut latest = store.latest().await?;
    let mut resumed = BTreeMap::new();
    for s in &sources {
        resumed.insert(s.clone(), !store.chains(s).await?.is_empty());
    }
    let legacy = legacy_positions(&mut latest, &mut nodes, &committers, &resumed).await?;
    for s in legacy.keys() {
        resumed.insert(s.clone(), true);
    }

    let owner = uuid::Uuid::new_v4().simple().to_string();
    let split::Split {
        partitioned,
        finalizer,
    } = split::split(nodes, &store, latest.as_ref(), &owner)?;
    // A streaming pipeline without a finalizer shares its partitions with every instance
    // started on the same checkpoint, through the source's consumer group. A batch run, and
    // for now a pipeline with a finalizer, runs alone: it takes the pipeline's lock.
    let shared = !opts.batch && finalizer.is_none();
    let lock = if shared {
        store.check_unlocked().await?;
        None
    } else {
        Some(store.lock().await?)
    };
    let partitions = Arc::new(Partitions {
        store: store.clone(),
        committers: committers_of(&partitioned),
        owner,
        owned: Default::default(),
        legacy,
        resumed,
        prune: finalizer.is_none(),
        planner: finalizer.as_ref().map(|f| f.planner.clone()),
        shared,
        grouped: finalizer.is_none(),
    });
    let (first, lock) = match finalizer {
        Some(_) => (None, lock),
        None => (lock, None),
    };
    let upstream = Part {
        nodes: partitioned,
        chain: Chain::Partitioned(partitions.clone()),
        first_epoch: 1,
        latest: None,
        lock: first,
        partitions: Some(partitions),
    };
    let Some(fin) = finalizer else {
        let done = run_part(upstream, &pipeline, &store, opts, cancel).await?;
        return Ok(done.summary(started));
    };
    let mut fin_nodes = fin.nodes;
    let fin_committers = committers_of(&fin_nodes);
    restore(&store, &fin_committers, latest.as_ref(), &mut fin_nodes).await?;
    let downstream = Part {
        first_epoch: latest.as_ref().map_or(1, |m| m.epoch + 1),
        nodes: fin_nodes,
        chain: Chain::Finalizer {
            last: latest.clone(),
            planner: Some(fin.planner.clone()),
        },
        latest,
        lock,
        partitions: None,
    };
    let planner = fin.planner;
    let stop_upstream = cancel.child_token();
    let upstream_run = async {
        let r = run_part(upstream, &pipeline, &store, opts, stop_upstream.clone()).await;
        planner.upstream_done();
        r
    };
    // The finalizer stops by itself once the per-partition part is done; when it fails, the
    // per-partition part stops too.
    let downstream_run = async {
        let r = run_part(
            downstream,
            &pipeline,
            &store,
            opts,
            CancellationToken::new(),
        )
        .await;
        if r.is_err() {
            stop_upstream.cancel();
        }
        r
    };
    let (up, down) = tokio::join!(upstream_run, downstream_run);
    // A part that stopped because the other failed stopped cleanly: the error is the cause.
    let (up, down) = (up?, down?);
    let mut summary = up.summary(started);
    summary.rows_per_sink.extend(down.rows_per_sink);
    summary.finalizer_epochs = down.progress.epochs;
    Ok(summary)
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
    let sources: BTreeSet<String> = nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Source(_)))
        .map(|g| g.spec.name.clone())
        .collect();
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
    let mut outputs = Outputs::new(edges);
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
                cascade: None,
                claims: Claiming {
                    source: name.clone(),
                    partitions: shared.partitions.clone(),
                    handle,
                    batch: shared.batch,
                },
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
    for (node, c) in committers {
        let mine: Vec<_> = committed_pending
            .iter()
            .filter(|p| &p.node == node)
            .cloned()
            .collect();
        let cleaned = c
            .recover(None, &mine)
            .await
            .map_err(|e| e.context(format!("cleaning up staged output of `{node}`")))?;
        if cleaned > 0 {
            tracing::info!(node = %node, objects = cleaned, "removed output staged by epochs that never committed");
        }
    }
    Ok(())
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
