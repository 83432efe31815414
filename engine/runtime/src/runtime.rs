//! The actor runtime: one task per node, bounded mailboxes between them, barrier alignment,
//! the checkpoint coordinator, and supervision (the first failure stops the whole pipeline and
//! is reported with the failing node's name).

use crate::checkpoint::{CheckpointStore, Manifest};
use crate::graph::Graph;
use engine_api::{
    Collector, Committer, EngineError, Epoch, Message, Node, Operator, PendingCommit, Result, Sink,
    SourceContext,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What an actor says when it cannot reach the coordinator (a consequence, not a cause).
const COORDINATOR_STOPPED: &str = "the checkpoint coordinator stopped";

/// A message and the input slot it arrives on.
struct Envelope {
    slot: usize,
    msg: Message,
}

type Outputs = Vec<Vec<(mpsc::Sender<Envelope>, usize)>>;

enum CoordMsg {
    Barrier {
        epoch: Epoch,
        position: serde_json::Value,
    },
    Ack {
        node: String,
        epoch: Epoch,
        state: Option<Vec<u8>>,
        pending: Vec<PendingCommit>,
    },
}

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
    let pipeline = graph.pipeline.clone();
    let checkpoints =
        CheckpointStore::open(&pipeline.checkpoint, &pipeline.storage, &pipeline.name)?;
    checkpoints.check().await?;
    let lock = checkpoints.lock().await?;

    let mut nodes = graph.nodes;
    let node_names: Vec<String> = nodes.iter().map(|g| g.spec.name.clone()).collect();

    // Committers outlive their sinks: the coordinator finishes commits with them.
    let mut committers: HashMap<String, Arc<dyn Committer>> = HashMap::new();
    for g in &nodes {
        if let Node::Sink(s) = &g.node {
            committers.insert(g.spec.name.clone(), s.committer());
        }
    }

    // Restore: finish the last manifest's commits, clean up what uncommitted epochs staged,
    // restore state, and find where to resume.
    let latest = checkpoints.latest().await?;
    let committed_pending = latest
        .as_ref()
        .map(|m| m.pending.clone())
        .unwrap_or_default();
    let mut restored_position = None;
    let mut next_epoch: Epoch = 1;
    if let Some(m) = &latest {
        tracing::info!(epoch = m.epoch, "resuming from checkpoint");
        finish_commits(&committers, &m.pending).await?;
        for g in nodes.iter_mut() {
            if let (Node::Operator(op), Some(path)) = (&mut g.node, m.state.get(&g.spec.name)) {
                let bytes = checkpoints.read(path).await?;
                op.restore(&bytes)
                    .map_err(|e| e.context(format!("restoring node `{}`", g.spec.name)))?;
            }
        }
        restored_position = Some(m.position.clone());
        next_epoch = m.epoch + 1;
    }

    for (node, c) in &committers {
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

    // Open connections before anything runs, so bad input fails fast and clearly.
    for g in nodes.iter_mut() {
        if let Node::Sink(s) = &mut g.node {
            s.open()
                .await
                .map_err(|e| e.context(format!("node `{}`", g.spec.name)))?;
        }
    }
    let mut source_node = None;
    for (i, g) in nodes.iter_mut().enumerate() {
        if let Node::Source(_) = g.node {
            let placeholder = Node::Sink(Box::new(Gone));
            let Node::Source(mut src) = std::mem::replace(&mut g.node, placeholder) else {
                unreachable!()
            };
            let restored = restored_position.clone();
            let name = g.spec.name.clone();
            let src = tokio::task::spawn_blocking(move || {
                src.open(restored.as_ref())
                    .map(|_| src)
                    .map_err(|e| e.context(format!("node `{name}`")))
            })
            .await
            .map_err(|e| EngineError::runtime(format!("source open panicked: {e}")))??;
            source_node = Some((i, src));
        }
    }
    let (source_idx, source) = source_node.expect("the graph has one source");
    let mut source = Some(source);

    // Mailboxes.
    let mut senders: Vec<Option<mpsc::Sender<Envelope>>> = Vec::new();
    let mut receivers: Vec<Option<mpsc::Receiver<Envelope>>> = Vec::new();
    for (i, _) in nodes.iter().enumerate() {
        if i == source_idx {
            senders.push(None);
            receivers.push(None);
        } else {
            let (tx, rx) = mpsc::channel(pipeline.mailbox);
            senders.push(Some(tx));
            receivers.push(Some(rx));
        }
    }
    let mut outputs: Vec<Outputs> = nodes
        .iter()
        .map(|g| vec![Vec::new(); g.ports.len()])
        .collect();
    for (j, g) in nodes.iter().enumerate() {
        for (slot, (u, port)) in g.inputs.iter().enumerate() {
            let tx = senders[j].clone().expect("only the source has no mailbox");
            outputs[*u][*port].push((tx, slot));
        }
    }
    drop(senders);

    let (coord_tx, coord_rx) = mpsc::unbounded_channel();
    let committed = Arc::new(Mutex::new(None));
    let records = Arc::new(AtomicU64::new(0));
    let mut rows_per_sink: BTreeMap<String, Arc<AtomicU64>> = BTreeMap::new();
    let expected_acks = nodes.len() - 1;

    let mut tasks: JoinSet<(String, Result<()>)> = JoinSet::new();
    let stop_source = cancel.child_token();
    let failed = CancellationToken::new();
    for (i, g) in nodes.into_iter().enumerate() {
        let name = g.spec.name.clone();
        let outs = std::mem::take(&mut outputs[i]);
        let coord = coord_tx.clone();
        let n_inputs = g.inputs.len();
        match g.node {
            _ if i == source_idx => {
                let mut ctx = SourceCtx {
                    outs: outs.into_iter().next().unwrap_or_default(),
                    coord,
                    next_epoch,
                    last_barrier: Instant::now(),
                    trigger: pipeline.trigger,
                    stop: stop_source.clone(),
                    failed: failed.clone(),
                    batch: opts.batch,
                    committed: committed.clone(),
                    records: records.clone(),
                };
                let mut src = source.take().expect("one source");
                let n = name.clone();
                tasks.spawn_blocking(move || {
                    let r = src.run(&mut ctx);
                    if r.is_ok() {
                        ctx.send_all(Message::EndOfInput).ok();
                    }
                    (n, r)
                });
            }
            Node::Operator(op) => {
                let rx = receivers[i].take().expect("mailbox");
                tasks.spawn(async move {
                    let r = operator_actor(&name, op, rx, outs, n_inputs, coord).await;
                    (name, r)
                });
            }
            Node::Source(_) => unreachable!("moved out above"),
            Node::Sink(sink) => {
                let rx = receivers[i].take().expect("mailbox");
                let rows = Arc::new(AtomicU64::new(0));
                rows_per_sink.insert(name.clone(), rows.clone());
                tasks.spawn(async move {
                    let r = sink_actor(&name, sink, rx, n_inputs, coord, rows).await;
                    (name, r)
                });
            }
        }
    }
    drop(coord_tx);

    let coordinator = tokio::spawn(
        Coordinator {
            lock,
            store: checkpoints,
            expected_acks,
            first_epoch: next_epoch,
            committers,
            committed,
            last_position: latest.map(|m| m.position),
        }
        .run(coord_rx),
    );

    // Supervise: the first failure stops everything.
    let mut failure: Option<EngineError> = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => (
                "?".to_string(),
                Err(EngineError::runtime(format!("an actor panicked: {e}"))),
            ),
        };
        if let Err(e) = result
            && failure.is_none()
        {
            let kind = node_names
                .iter()
                .position(|n| *n == name)
                .map(|_| "node")
                .unwrap_or("actor");
            tracing::error!(node = %name, error = %e, "node failed; stopping the pipeline");
            failure = Some(e.context(format!("{kind} `{name}` failed")));
            failed.cancel();
            stop_source.cancel();
            tasks.abort_all();
        }
    }
    if let Some(e) = failure {
        // An actor that failed only because the coordinator stopped is not the cause: report
        // the coordinator's own error instead.
        if e.to_string().contains(COORDINATOR_STOPPED) {
            if let Ok(Ok(Err(ce))) = tokio::time::timeout(Duration::from_secs(5), coordinator).await
            {
                return Err(ce.context("checkpoint coordinator failed"));
            }
        } else {
            coordinator.abort();
        }
        return Err(e);
    }
    let (epochs_committed, last_epoch) = coordinator
        .await
        .map_err(|e| EngineError::runtime(format!("checkpoint coordinator panicked: {e}")))?
        .map_err(|e| e.context("checkpoint coordinator failed"))?;
    Ok(RunSummary {
        records: records.load(Ordering::Relaxed),
        rows_per_sink: rows_per_sink
            .into_iter()
            .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
            .collect(),
        epochs_committed,
        last_epoch,
        elapsed: started.elapsed(),
    })
}

/// Stand-in left in the node list once the source has moved to its thread.
struct Gone;

#[async_trait::async_trait]
impl Sink for Gone {
    fn init(&mut self, _: &arrow::datatypes::SchemaRef) -> Result<()> {
        Ok(())
    }
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, _: arrow::array::RecordBatch) -> Result<()> {
        Ok(())
    }
    async fn prepare_commit(&mut self, _: Epoch) -> Result<Vec<PendingCommit>> {
        Ok(Vec::new())
    }
    fn committer(&self) -> Arc<dyn Committer> {
        unreachable!("never used")
    }
    fn describe(&self) -> String {
        String::new()
    }
}

async fn finish_commits(
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

struct SourceCtx {
    outs: Vec<(mpsc::Sender<Envelope>, usize)>,
    coord: mpsc::UnboundedSender<CoordMsg>,
    next_epoch: Epoch,
    last_barrier: Instant,
    trigger: Duration,
    stop: CancellationToken,
    failed: CancellationToken,
    batch: bool,
    committed: Arc<Mutex<Option<serde_json::Value>>>,
    records: Arc<AtomicU64>,
}

impl SourceCtx {
    fn send_all(&self, msg: Message) -> Result<()> {
        for (tx, slot) in &self.outs {
            if self.failed.is_cancelled() {
                return Err(EngineError::runtime(
                    "the pipeline is stopping after a failure",
                ));
            }
            tx.blocking_send(Envelope {
                slot: *slot,
                msg: msg.clone(),
            })
            .map_err(|_| EngineError::runtime("a downstream node stopped"))?;
        }
        Ok(())
    }
}

impl SourceContext for SourceCtx {
    fn emit(&mut self, batch: arrow::array::RecordBatch) -> Result<()> {
        self.records
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.send_all(Message::Batch(batch))
    }

    fn checkpoint_due(&self) -> bool {
        self.last_barrier.elapsed() >= self.trigger
    }

    fn barrier(&mut self, position: serde_json::Value) -> Result<Epoch> {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.last_barrier = Instant::now();
        self.coord
            .send(CoordMsg::Barrier { epoch, position })
            .map_err(|_| EngineError::runtime(COORDINATOR_STOPPED))?;
        self.send_all(Message::Barrier(engine_api::Barrier { epoch }))?;
        Ok(epoch)
    }

    fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn batch_mode(&self) -> bool {
        self.batch
    }

    fn take_committed(&mut self) -> Option<serde_json::Value> {
        self.committed.lock().ok()?.take()
    }
}

/// Tracks which inputs have delivered the current barrier or ended.
struct Alignment {
    barrier: Vec<bool>,
    ended: Vec<bool>,
    held: VecDeque<Envelope>,
}

impl Alignment {
    fn new(n: usize) -> Self {
        Alignment {
            barrier: vec![false; n],
            ended: vec![false; n],
            held: VecDeque::new(),
        }
    }

    /// The next message to handle: held ones whose input is no longer blocked first.
    async fn next(&mut self, rx: &mut mpsc::Receiver<Envelope>) -> Option<Envelope> {
        if let Some(pos) = self.held.iter().position(|e| !self.barrier[e.slot]) {
            return self.held.remove(pos);
        }
        loop {
            let env = rx.recv().await?;
            if self.barrier[env.slot] {
                self.held.push_back(env);
            } else {
                return Some(env);
            }
        }
    }

    /// Records a barrier on `slot`; true when every live input has delivered it.
    fn barrier_arrived(&mut self, slot: usize) -> bool {
        self.barrier[slot] = true;
        let done = (0..self.barrier.len()).all(|i| self.barrier[i] || self.ended[i]);
        if done {
            self.barrier.iter_mut().for_each(|b| *b = false);
        }
        done
    }

    /// Records the end of `slot`; true when every input has ended.
    fn ended(&mut self, slot: usize) -> bool {
        self.ended[slot] = true;
        self.ended.iter().all(|e| *e)
    }
}

async fn forward(col: &mut Collector, outs: &Outputs) -> Result<()> {
    let batches: Vec<_> = col.drain().collect();
    for (port, batch) in batches {
        for (tx, slot) in &outs[port] {
            tx.send(Envelope {
                slot: *slot,
                msg: Message::Batch(batch.clone()),
            })
            .await
            .map_err(|_| EngineError::runtime("a downstream node stopped"))?;
        }
    }
    Ok(())
}

async fn broadcast(outs: &Outputs, msg: Message) -> Result<()> {
    for port in outs {
        for (tx, slot) in port {
            tx.send(Envelope {
                slot: *slot,
                msg: msg.clone(),
            })
            .await
            .map_err(|_| EngineError::runtime("a downstream node stopped"))?;
        }
    }
    Ok(())
}

async fn operator_actor(
    name: &str,
    mut op: Box<dyn Operator>,
    mut rx: mpsc::Receiver<Envelope>,
    outs: Outputs,
    n_inputs: usize,
    coord: mpsc::UnboundedSender<CoordMsg>,
) -> Result<()> {
    let mut col = Collector::new(outs.len());
    let mut align = Alignment::new(n_inputs);
    let mut watermarks = vec![i64::MIN; n_inputs];
    let mut watermark = i64::MIN;
    while let Some(env) = align.next(&mut rx).await {
        match env.msg {
            Message::Batch(b) => {
                op.process(b, &mut col)?;
                forward(&mut col, &outs).await?;
            }
            Message::Barrier(b) => {
                if align.barrier_arrived(env.slot) {
                    op.on_barrier(b.epoch, &mut col)?;
                    forward(&mut col, &outs).await?;
                    let state = op.snapshot()?;
                    coord
                        .send(CoordMsg::Ack {
                            node: name.to_string(),
                            epoch: b.epoch,
                            state,
                            pending: Vec::new(),
                        })
                        .map_err(|_| EngineError::runtime(COORDINATOR_STOPPED))?;
                    broadcast(&outs, Message::Barrier(b)).await?;
                }
            }
            Message::Watermark(w) => {
                watermarks[env.slot] = w;
                let low = *watermarks.iter().min().expect("one input at least");
                if low > watermark {
                    watermark = low;
                    op.on_watermark(low, &mut col)?;
                    forward(&mut col, &outs).await?;
                    broadcast(&outs, Message::Watermark(low)).await?;
                }
            }
            Message::EndOfInput => {
                if align.ended(env.slot) {
                    op.on_end(&mut col)?;
                    forward(&mut col, &outs).await?;
                    broadcast(&outs, Message::EndOfInput).await?;
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

async fn sink_actor(
    name: &str,
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Envelope>,
    n_inputs: usize,
    coord: mpsc::UnboundedSender<CoordMsg>,
    rows: Arc<AtomicU64>,
) -> Result<()> {
    let mut align = Alignment::new(n_inputs);
    while let Some(env) = align.next(&mut rx).await {
        match env.msg {
            Message::Batch(b) => {
                rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                sink.write(b).await?;
            }
            Message::Barrier(b) => {
                if align.barrier_arrived(env.slot) {
                    let pending = sink.prepare_commit(b.epoch).await?;
                    coord
                        .send(CoordMsg::Ack {
                            node: name.to_string(),
                            epoch: b.epoch,
                            state: None,
                            pending,
                        })
                        .map_err(|_| EngineError::runtime(COORDINATOR_STOPPED))?;
                }
            }
            Message::Watermark(_) => {}
            Message::EndOfInput => {
                if align.ended(env.slot) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct EpochProgress {
    position: Option<serde_json::Value>,
    acks: usize,
    state: BTreeMap<String, Vec<u8>>,
    pending: Vec<PendingCommit>,
}

/// The checkpoint coordinator.
struct Coordinator {
    lock: crate::checkpoint::Lock,
    store: CheckpointStore,
    /// Acknowledgements an epoch needs: one per operator and sink.
    expected_acks: usize,
    first_epoch: Epoch,
    committers: HashMap<String, Arc<dyn Committer>>,
    /// The newest committed source position, for the source to report lag.
    committed: Arc<Mutex<Option<serde_json::Value>>>,
    last_position: Option<serde_json::Value>,
}

impl Coordinator {
    /// Collects each epoch's barrier position and acknowledgements, then commits it: state,
    /// then the manifest (put-if-absent: the commit point), then the sinks' staged output.
    async fn run(self, mut rx: mpsc::UnboundedReceiver<CoordMsg>) -> Result<(u64, Option<Epoch>)> {
        let Coordinator {
            mut lock,
            store,
            expected_acks,
            first_epoch,
            committers,
            committed,
            mut last_position,
        } = self;
        let mut epochs: BTreeMap<Epoch, EpochProgress> = BTreeMap::new();
        let mut next = first_epoch;
        let mut count = 0;
        let mut last = None;
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
                    lock.heartbeat().await?;
                    continue;
                }
            };
            match msg {
                CoordMsg::Barrier { epoch, position } => {
                    epochs.entry(epoch).or_default().position = Some(position)
                }
                CoordMsg::Ack {
                    node,
                    epoch,
                    state,
                    pending,
                } => {
                    let e = epochs.entry(epoch).or_default();
                    e.acks += 1;
                    if let Some(s) = state {
                        e.state.insert(node, s);
                    }
                    e.pending.extend(pending);
                }
            }
            while let Some(e) = epochs.get(&next) {
                if e.acks < expected_acks || e.position.is_none() {
                    break;
                }
                let e = epochs.remove(&next).expect("present");
                let position = e.position.expect("checked");
                let unchanged = e.pending.is_empty()
                    && e.state.is_empty()
                    && last_position.as_ref() == Some(&position);
                if !unchanged {
                    let t0 = Instant::now();
                    let mut state_paths = BTreeMap::new();
                    for (node, bytes) in e.state {
                        state_paths
                            .insert(node.clone(), store.write_state(next, &node, bytes).await?);
                    }
                    let files = e.pending.len();
                    let manifest = Manifest::new(
                        store.pipeline(),
                        next,
                        position.clone(),
                        state_paths,
                        e.pending,
                    );
                    crate::failpoint::hit("before_manifest");
                    store.commit(&manifest).await?;
                    crate::failpoint::hit("after_manifest");
                    finish_commits(&committers, &manifest.pending).await?;
                    tracing::info!(
                        epoch = next,
                        files,
                        commit_ms = t0.elapsed().as_millis() as u64,
                        since_last_ms = last_commit.elapsed().as_millis() as u64,
                        "epoch committed"
                    );
                    last_commit = Instant::now();
                    count += 1;
                    last = Some(next);
                    if let Ok(mut c) = committed.lock() {
                        *c = Some(position.clone());
                    }
                    last_position = Some(position);
                }
                next += 1;
            }
        }
        lock.release().await;
        Ok((count, last))
    }
}
