//! A source runs on its own thread, calling the runtime through [`SourceContext`]: its batches
//! and barriers go out through the same [`Outputs`] as every other node's, and its barrier
//! positions go to the coordinator.

use super::coordinator::{Committed, CoordMsg, CoordinatorHandle};
use super::outputs::{Flow, Outputs, Stop};
use super::partitions::Partitions;
use super::progress::{Phase, Work};
use arrow::array::RecordBatch;
use engine_api::{
    Barrier, Claimed, Claims, Epoch, Message, OpenContext, PartitionId, Positions, Result,
    SourceContext,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub(crate) struct SourceCtx {
    pub(crate) name: String,
    pub(crate) outputs: Outputs,
    pub(crate) handle: Handle,
    pub(crate) coord: CoordinatorHandle,
    pub(crate) next_epoch: Epoch,
    pub(crate) last_barrier: Instant,
    pub(crate) trigger: Duration,
    /// Stop reading (Ctrl-C, SIGTERM, or a failure elsewhere).
    pub(crate) stop: CancellationToken,
    /// Another node failed: sending anything more is pointless.
    pub(crate) failed: CancellationToken,
    pub(crate) batch: bool,
    pub(crate) committed: Committed,
    pub(crate) records: Arc<AtomicU64>,
    /// `engine_records_received_total` of the source: records read.
    pub(crate) received: metrics::Counter,
    /// Set when a send failed because another part stopped first: the source's own error is
    /// then a consequence.
    pub(crate) cascade: Option<&'static str>,
    pub(crate) claims: Claiming,
    /// Records emitted since the last barrier.
    pub(crate) epoch_rows: u64,
    /// Lag per partition, as the source last reported it.
    pub(crate) lag: std::collections::BTreeMap<PartitionId, i64>,
}

/// How a source's claims are served.
#[derive(Clone)]
pub(crate) struct Claiming {
    pub(crate) source: String,
    /// `None` in the finalizer, whose sources read the checkpoint, not partitions.
    pub(crate) partitions: Option<Arc<Partitions>>,
    pub(crate) handle: Handle,
    pub(crate) batch: bool,
}

impl Claims for Claiming {
    fn claim(&mut self, partitions: &[PartitionId]) -> Result<Claimed> {
        match &self.partitions {
            Some(p) => self.handle.block_on(p.claim(&self.source, partitions)),
            None => Ok(Claimed::default()),
        }
    }

    fn release(&mut self, partitions: &[PartitionId]) {
        if let Some(p) = &self.partitions {
            p.release(partitions);
        }
    }
}

impl OpenContext for Claiming {
    fn batch_mode(&self) -> bool {
        self.batch
    }
}

impl SourceCtx {
    /// A cascade once another node has failed: nothing more is worth sending.
    fn after_failure(&self) -> Flow {
        if self.failed.is_cancelled() {
            return Err(Stop::Cascade("the pipeline is stopping after a failure"));
        }
        Ok(())
    }

    fn check_failed(&mut self) -> Result<()> {
        let f = self.after_failure();
        self.flow(f)
    }

    /// Turns the outcome of a send into the source's `Result`, remembering a cascade.
    fn flow<T>(&mut self, r: Flow<T>) -> Result<T> {
        r.map_err(|stop| {
            if let Stop::Cascade(what) = &stop {
                self.cascade = Some(what);
            }
            stop.into_error()
        })
    }

    /// The source's `run` returned: the end of its input when it succeeded. A failure that
    /// followed a cascade is a cascade too.
    pub(crate) fn finish(&mut self, ran: Result<()>) -> Flow {
        if let Err(e) = ran {
            return Err(match self.cascade {
                Some(what) => Stop::Cascade(what),
                None => Stop::Failed(e),
            });
        }
        self.after_failure()?;
        self.handle
            .block_on(self.outputs.broadcast(Message::EndOfInput))?;
        self.coord.send(CoordMsg::SourceEnded {
            source: self.name.clone(),
        })
    }
}

impl SourceContext for SourceCtx {
    fn emit(&mut self, partition: &PartitionId, batch: RecordBatch) -> Result<()> {
        self.check_failed()?;
        self.records
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.received.increment(batch.num_rows() as u64);
        self.epoch_rows += batch.num_rows() as u64;
        let sent = self
            .handle
            .block_on(self.outputs.batch(0, batch, Some(partition)));
        self.flow(sent)
    }

    fn checkpoint_due(&self) -> bool {
        self.last_barrier.elapsed() >= self.trigger
    }

    fn barrier(&mut self, positions: Positions) -> Result<Epoch> {
        self.check_failed()?;
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        if let Some(p) = &self.claims.partitions {
            p.open_epoch
                .fetch_max(self.next_epoch, std::sync::atomic::Ordering::SeqCst);
        }
        let sent = self.handle.block_on(self.outputs.advance_watermark());
        self.flow(sent)?;
        let work = Work {
            phase: Phase::Read,
            rows: std::mem::take(&mut self.epoch_rows),
            busy: self
                .last_barrier
                .elapsed()
                .saturating_sub(self.outputs.take_waited()),
            state_entries: None,
            watermark: self.outputs.last_watermark(),
            lag: self.lag.clone(),
        };
        self.last_barrier = Instant::now();
        let sent = self.coord.send(CoordMsg::Position {
            source: self.name.clone(),
            epoch,
            positions,
            event_time: self.outputs.tracker_state(),
            work,
        });
        self.flow(sent)?;
        let sent = self
            .handle
            .block_on(self.outputs.broadcast(Message::Barrier(Barrier { epoch })));
        self.flow(sent)?;
        Ok(epoch)
    }

    fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn batch_mode(&self) -> bool {
        self.batch
    }

    fn take_committed(&mut self) -> Option<Positions> {
        self.committed.lock().ok()?.remove(&self.name)
    }

    fn claims(&self) -> Box<dyn Claims> {
        Box::new(self.claims.clone())
    }

    fn report_partitions(
        &mut self,
        partitions: std::collections::BTreeSet<PartitionId>,
        idle: std::collections::BTreeSet<PartitionId>,
    ) {
        self.outputs.set_partitions(partitions, idle);
    }

    fn report_lag(&mut self, lag: std::collections::BTreeMap<PartitionId, i64>) {
        self.lag = lag;
    }
}

impl Claims for SourceCtx {
    fn claim(&mut self, partitions: &[PartitionId]) -> Result<Claimed> {
        self.check_failed()?;
        self.claims.claim(partitions)
    }

    fn release(&mut self, partitions: &[PartitionId]) {
        self.claims.release(partitions)
    }
}
