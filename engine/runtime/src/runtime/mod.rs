//! Running a built graph: one actor per node over bounded mailboxes.
//!
//! - [`actor`]: the generic loop every operator and sink runs in;
//! - [`source`]: the context a source thread calls;
//! - [`outputs`]: the one send path, where event time is tracked;
//! - [`alignment`]: barrier alignment at multi-input nodes;
//! - [`coordinator`]: the checkpoint coordinator (the commit protocol);
//! - [`supervisor`]: the first failure stops the pipeline and is reported with its node.
//!
//! This module wires them: restore from the last checkpoint, open connections, create the
//! mailboxes, start the actors and supervise them.

mod actor;
mod alignment;
mod coordinator;
mod outputs;
mod source;
mod supervisor;

use crate::checkpoint::{CheckpointStore, Manifest};
use crate::graph::{Graph, GraphNode};
use actor::{Actor, Behaviour};
use coordinator::{Committed, Coordinator, CoordinatorHandle, finish_commits};
use engine_api::{Committer, EngineError, Epoch, Node, Result, Source};
use outputs::{Envelope, Outputs};
use source::SourceCtx;
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
    pub epochs_committed: u64,
    pub last_epoch: Option<Epoch>,
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
pub async fn run(graph: Graph, opts: RunOptions, cancel: CancellationToken) -> Result<RunSummary> {
    let started = Instant::now();
    let Graph {
        pipeline,
        mut nodes,
        ..
    } = graph;
    let store = CheckpointStore::open(&pipeline.checkpoint, &pipeline.storage, &pipeline.name)?;
    store.check().await?;
    let lock = store.lock().await?;

    // Committers outlive their sinks: the coordinator finishes commits with them.
    let committers: HashMap<String, Arc<dyn Committer>> = nodes
        .iter()
        .filter_map(|g| match &g.node {
            Node::Sink(s) => Some((g.spec.name.clone(), s.committer())),
            _ => None,
        })
        .collect();
    let sources: BTreeSet<String> = nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Source(_)))
        .map(|g| g.spec.name.clone())
        .collect();
    let latest = restore(&store, &committers, &sources, &mut nodes).await?;
    let next_epoch = latest.as_ref().map_or(1, |m| m.epoch + 1);

    // Open connections before anything runs, so bad input fails fast and clearly.
    for g in nodes.iter_mut() {
        if let Node::Sink(s) = &mut g.node {
            s.open()
                .await
                .map_err(|e| e.context(format!("node `{}`", g.spec.name)))?;
        }
    }
    for g in nodes.iter_mut() {
        if let Node::Source(src) = &mut g.node {
            let restored = latest
                .as_ref()
                .and_then(|m| m.positions.get(&g.spec.name))
                .cloned();
            open_source(&g.spec.name, src, restored).await?;
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
        next_epoch,
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
            lock: Some(lock),
            store,
            acks_needed,
            sources,
            first_epoch: next_epoch,
            committers,
            committed,
            last: latest,
        }
        .run(coord_rx),
    );
    let progress = supervisor.supervise(coordinator).await?;
    Ok(RunSummary {
        records: records.load(Ordering::Relaxed),
        rows_per_sink: rows_per_sink
            .into_iter()
            .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
            .collect(),
        epochs_committed: progress.epochs,
        last_epoch: progress.last,
        elapsed: started.elapsed(),
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
            let mut ctx = SourceCtx {
                name: name.clone(),
                outputs,
                handle: tokio::runtime::Handle::current(),
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

/// Restores from the last committed manifest: finishes its commits, removes what epochs that
/// never committed left staged, and restores operator state. Returns the manifest.
async fn restore(
    store: &CheckpointStore,
    committers: &HashMap<String, Arc<dyn Committer>>,
    sources: &BTreeSet<String>,
    nodes: &mut [GraphNode],
) -> Result<Option<Manifest>> {
    let mut latest = store.latest().await?;
    if let Some(m) = latest.as_mut() {
        let names: Vec<&str> = sources.iter().map(String::as_str).collect();
        m.name_v1_position(&names);
    }
    if let Some(m) = &latest {
        tracing::info!(epoch = m.epoch, "resuming from checkpoint");
        finish_commits(committers, &m.pending).await?;
        for g in nodes.iter_mut() {
            if let (Node::Operator(b), Some(path)) = (&mut g.node, m.state.get(&g.spec.name)) {
                let bytes = store.read(path).await?;
                b.operator
                    .restore(&bytes)
                    .map_err(|e| e.context(format!("restoring node `{}`", g.spec.name)))?;
            }
        }
    }
    let committed_pending = latest.as_ref().map(|m| m.pending.as_slice()).unwrap_or(&[]);
    for (node, c) in committers {
        let mine: Vec<_> = committed_pending
            .iter()
            .filter(|p| &p.node == node)
            .cloned()
            .collect();
        let cleaned = c
            .recover(&mine)
            .await
            .map_err(|e| e.context(format!("cleaning up staged output of `{node}`")))?;
        if cleaned > 0 {
            tracing::info!(node = %node, objects = cleaned, "removed output staged by epochs that never committed");
        }
    }
    Ok(latest)
}

/// Opens a source on a blocking thread (sources block), at its restored position.
async fn open_source(
    name: &str,
    src: &mut Box<dyn Source>,
    restored: Option<serde_json::Value>,
) -> Result<()> {
    tokio::task::block_in_place(|| src.open(restored.as_ref()))
        .map_err(|e| e.context(format!("node `{name}`")))
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
