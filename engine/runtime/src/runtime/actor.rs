//! The generic actor loop that runs every operator and sink: take the next message (barrier
//! alignment decides which), hand it to the node, forward what it produced, acknowledge barriers
//! to the coordinator, merge watermarks by the minimum over the inputs that carry them.

use super::alignment::Alignment;
use super::coordinator::{CoordMsg, CoordinatorHandle};
use super::outputs::{Envelope, Flow, Outputs, received_counter};
use super::progress::{Phase, Work};
use arrow::array::RecordBatch;
use engine_api::{Barrier, Collector, Message, Operator, PartitionId, PendingCommit, Sink};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the node inside an actor is.
pub(crate) enum Behaviour {
    Operator {
        op: Box<dyn Operator>,
        col: Collector,
    },
    Sink {
        sink: Box<dyn Sink>,
        rows: Arc<AtomicU64>,
    },
}

impl Behaviour {
    pub(crate) fn operator(op: Box<dyn Operator>, ports: usize) -> Self {
        Behaviour::Operator {
            op,
            col: Collector::new(ports),
        }
    }

    async fn batch(
        &mut self,
        batch: RecordBatch,
        partition: Option<PartitionId>,
        out: &mut Outputs,
    ) -> Flow {
        match self {
            Behaviour::Operator { op, col } => {
                op.process(batch, col)?;
                out.collected(col, partition.as_ref()).await
            }
            Behaviour::Sink { sink, rows } => {
                rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                Ok(sink.write(batch, partition.as_ref()).await?)
            }
        }
    }

    async fn watermark(&mut self, w: i64, out: &mut Outputs) -> Flow {
        if let Behaviour::Operator { op, col } = self {
            op.on_watermark(w, col)?;
            out.collected(col, None).await?;
        }
        Ok(())
    }

    /// Handles an aligned barrier; returns the operator state and the staged output.
    async fn barrier(
        &mut self,
        b: Barrier,
        out: &mut Outputs,
    ) -> Flow<(Option<Vec<u8>>, Vec<PendingCommit>)> {
        match self {
            Behaviour::Operator { op, col } => {
                op.on_barrier(b.epoch, col)?;
                out.collected(col, None).await?;
                Ok((op.snapshot()?, Vec::new()))
            }
            Behaviour::Sink { sink, .. } => Ok((None, sink.prepare_commit(b.epoch).await?)),
        }
    }

    /// Entries held in state (`engine_state_entries`), for an operator that has state.
    fn state_size(&self) -> usize {
        match self {
            Behaviour::Operator { op, .. } => op.state_size(),
            Behaviour::Sink { .. } => 0,
        }
    }

    async fn end(&mut self, out: &mut Outputs) -> Flow {
        if let Behaviour::Operator { op, col } = self {
            op.on_end(col)?;
            out.collected(col, None).await?;
        }
        Ok(())
    }
}

/// One node's actor.
pub(crate) struct Actor {
    pub(crate) name: String,
    pub(crate) behaviour: Behaviour,
    pub(crate) rx: mpsc::Receiver<Envelope>,
    pub(crate) outputs: Outputs,
    /// Per input slot: whether watermarks arrive on it.
    pub(crate) timed: Vec<bool>,
    pub(crate) coord: CoordinatorHandle,
}

impl Actor {
    pub(crate) async fn run(self) -> Flow {
        let Actor {
            name,
            mut behaviour,
            mut rx,
            mut outputs,
            timed,
            coord,
        } = self;
        let mut align = Alignment::new(timed.len());
        let mut merge = WatermarkMerge::new(timed);
        let received = received_counter(&name);
        let depth = metrics::gauge!("engine_mailbox_depth", "node" => name.clone());
        let mut spent = Spent::default();
        while let Some(env) = align.next(&mut rx).await {
            depth.set(rx.len() as f64);
            spent.start();
            match env.msg {
                Message::Batch { batch, partition } => {
                    received.increment(batch.num_rows() as u64);
                    spent.rows += batch.num_rows() as u64;
                    behaviour.batch(batch, partition, &mut outputs).await?;
                }
                Message::Watermark(w) => {
                    if let Some(w) = merge.arrived(env.slot, w) {
                        behaviour.watermark(w, &mut outputs).await?;
                        outputs.pass_watermark(w).await?;
                    }
                }
                Message::Barrier(b) => {
                    if let Some(b) = align.barrier_arrived(env.slot, b) {
                        aligned(&name, b, &mut behaviour, &mut outputs, &coord, &mut spent).await?;
                    }
                }
                Message::EndOfInput => {
                    let (barrier, all) = align.ended(env.slot);
                    if let Some(b) = barrier {
                        aligned(&name, b, &mut behaviour, &mut outputs, &coord, &mut spent).await?;
                    }
                    // An ended input holds no watermark back.
                    if let Some(w) = merge.ended(env.slot)
                        && !all
                    {
                        behaviour.watermark(w, &mut outputs).await?;
                        outputs.pass_watermark(w).await?;
                    }
                    if all {
                        behaviour.end(&mut outputs).await?;
                        outputs.broadcast(Message::EndOfInput).await?;
                        return coord.send(CoordMsg::NodeEnded { node: name });
                    }
                }
            }
            spent.stop();
        }
        Ok(())
    }
}

/// Handles a barrier every input has delivered: the node emits what the trigger makes visible
/// and snapshots, a node that declares event time sends its new watermark, the coordinator gets
/// the acknowledgement, and the barrier goes on downstream.
async fn aligned(
    name: &str,
    b: Barrier,
    behaviour: &mut Behaviour,
    outputs: &mut Outputs,
    coord: &CoordinatorHandle,
    spent: &mut Spent,
) -> Flow {
    let (state, pending) = behaviour.barrier(b, outputs).await?;
    let state_entries = state.is_some().then(|| behaviour.state_size() as u64);
    if let Some(n) = state_entries {
        metrics::gauge!("engine_state_entries", "node" => name.to_string()).set(n as f64);
    }
    outputs.advance_watermark().await?;
    let (rows, busy) = spent.take();
    let work = Work {
        phase: match behaviour {
            Behaviour::Operator { .. } => Phase::Process,
            Behaviour::Sink { .. } => Phase::Stage,
        },
        rows,
        busy: busy.saturating_sub(outputs.take_waited()),
        state_entries,
        watermark: outputs.last_watermark(),
        lag: Default::default(),
    };
    coord.send(CoordMsg::Ack {
        node: name.to_string(),
        epoch: b.epoch,
        state,
        event_time: outputs.tracker_state(),
        pending,
        work,
    })?;
    outputs.broadcast(Message::Barrier(b)).await
}

/// What an actor did since its last barrier: rows taken in, and time spent on messages.
#[derive(Default)]
pub(crate) struct Spent {
    rows: u64,
    busy: Duration,
    since: Option<Instant>,
}

impl Spent {
    /// A message is being handled from now.
    fn start(&mut self) {
        self.since = Some(Instant::now());
    }

    /// The message is handled.
    fn stop(&mut self) {
        if let Some(t) = self.since.take() {
            self.busy += t.elapsed();
        }
    }

    /// The epoch's rows and time, up to now; the rest of the message counts to the next one.
    fn take(&mut self) -> (u64, Duration) {
        let handling = self.since.is_some();
        self.stop();
        if handling {
            self.start();
        }
        (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.busy),
        )
    }
}

/// The watermark of a node with several inputs: the smallest over the inputs that carry one
/// (and have not ended), once each of them has sent one. It never goes back.
pub(crate) struct WatermarkMerge {
    /// Per slot: `None` for inputs that carry no watermarks or have ended, else the latest.
    latest: Vec<Option<i64>>,
    counts: Vec<bool>,
    current: Option<i64>,
}

impl WatermarkMerge {
    pub(crate) fn new(timed: Vec<bool>) -> Self {
        WatermarkMerge {
            latest: vec![None; timed.len()],
            counts: timed,
            current: None,
        }
    }

    /// Records `w` on `slot`; returns the merged watermark when it advanced.
    pub(crate) fn arrived(&mut self, slot: usize, w: i64) -> Option<i64> {
        if !self.counts[slot] {
            return None;
        }
        self.latest[slot] = Some(self.latest[slot].map_or(w, |old| old.max(w)));
        self.recompute()
    }

    /// Records that `slot` ended; returns the merged watermark when that advanced it.
    pub(crate) fn ended(&mut self, slot: usize) -> Option<i64> {
        if !self.counts[slot] {
            return None;
        }
        self.counts[slot] = false;
        self.latest[slot] = None;
        self.recompute()
    }

    fn recompute(&mut self) -> Option<i64> {
        let mut low: Option<i64> = None;
        for (w, counts) in self.latest.iter().zip(&self.counts) {
            if !counts {
                continue;
            }
            let w = (*w)?;
            low = Some(low.map_or(w, |l| l.min(w)));
        }
        let low = low?;
        if self.current.is_some_and(|c| c >= low) {
            return None;
        }
        self.current = Some(low);
        Some(low)
    }
}

#[cfg(test)]
mod tests {
    use super::WatermarkMerge;

    #[test]
    fn the_merged_watermark_is_the_minimum_once_every_timed_input_has_one() {
        let mut m = WatermarkMerge::new(vec![true, true, false]);
        assert_eq!(m.arrived(0, 100), None, "input 1 has sent none yet");
        assert_eq!(m.arrived(2, 5), None, "input 2 carries no event time");
        assert_eq!(m.arrived(1, 50), Some(50));
        assert_eq!(m.arrived(1, 80), Some(80));
        assert_eq!(m.arrived(1, 300), Some(100), "input 0 holds it now");
        assert_eq!(m.arrived(0, 90), None, "never back");
        assert_eq!(m.arrived(0, 200), Some(200));
    }

    #[test]
    fn an_ended_input_stops_holding_the_watermark_back() {
        let mut m = WatermarkMerge::new(vec![true, true]);
        m.arrived(0, 10);
        assert_eq!(m.arrived(1, 500), Some(10));
        assert_eq!(m.ended(0), Some(500));
        assert_eq!(m.ended(1), None, "nothing left to merge");
    }
}
