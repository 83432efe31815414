//! The one send path: every node, source or operator, sends through its [`Outputs`]. Batches
//! keep the source partition they came from; the node that declares the pipeline's event time
//! tracks it here, on what it sends, and turns it into watermarks at each trigger.

use arrow::array::RecordBatch;
use engine_api::{
    Collector, EngineError, EventTime, Message, PartitionId, Tally, TrackerState, WatermarkTracker,
};
use std::time::Instant;
use tokio::sync::mpsc;

/// A message and the input slot of the receiving node it arrives on.
pub(crate) struct Envelope {
    pub(crate) slot: usize,
    pub(crate) msg: Message,
}

/// Why an actor or source stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// It failed: this is a cause, reported to the user.
    Failed(EngineError),
    /// Another part stopped first (a downstream node, the coordinator): a consequence, which
    /// supervision reports only when no cause is known.
    Cascade(&'static str),
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Stop::Failed(e)
    }
}

impl From<arrow::error::ArrowError> for Stop {
    fn from(e: arrow::error::ArrowError) -> Self {
        Stop::Failed(e.into())
    }
}

impl Stop {
    pub(crate) fn into_error(self) -> EngineError {
        match self {
            Stop::Failed(e) => e,
            Stop::Cascade(what) => EngineError::runtime(what),
        }
    }
}

pub(crate) type Flow<T = ()> = std::result::Result<T, Stop>;

fn downstream_stopped() -> Stop {
    Stop::Cascade("a downstream node stopped")
}

/// `engine_records_received_total` of node `node`: the rows it takes in (a source's, the
/// records it reads).
pub(crate) fn received_counter(node: &str) -> metrics::Counter {
    metrics::counter!("engine_records_received_total", "node" => node.to_string())
}

/// Event time tracked on the main port.
struct Tracked {
    column: usize,
    tracker: WatermarkTracker,
}

/// A node's output edges, per port: the receiving node's mailbox and input slot.
pub(crate) struct Outputs {
    ports: Vec<Vec<(mpsc::Sender<Envelope>, usize)>>,
    tracked: Option<Tracked>,
    /// `engine_records_sent_total`, per port.
    sent: Vec<metrics::Counter>,
    /// The node's name, for `engine_watermark_seconds`, registered at its first watermark (a
    /// node that never has one shows none, rather than 1970).
    node: String,
    watermark: Option<metrics::Gauge>,
    /// What the node's operator reported beside its rows, per kind and reason.
    tallies: Vec<((Tally, &'static str), metrics::Counter)>,
    /// `engine_backpressure_seconds_total`: time spent waiting for room downstream.
    waited: Waited,
    /// The last watermark sent on.
    last_watermark: Option<i64>,
}

/// Time spent waiting for room in full downstream mailboxes: in the metric, and since the
/// node last asked (its epoch's [`super::progress::Work`]).
struct Waited {
    gauge: metrics::Gauge,
    nanos: std::sync::atomic::AtomicU64,
}

impl Waited {
    fn add(&self, d: std::time::Duration) {
        self.gauge.increment(d.as_secs_f64());
        self.nanos
            .fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Outputs {
    /// The outputs of node `node`, whose ports are named `port_names`.
    pub(crate) fn new(
        node: &str,
        port_names: &[String],
        ports: Vec<Vec<(mpsc::Sender<Envelope>, usize)>>,
    ) -> Self {
        let sent = port_names
            .iter()
            .map(|port| {
                metrics::counter!("engine_records_sent_total", "node" => node.to_string(), "port" => port.clone())
            })
            .collect();
        Outputs {
            ports,
            tracked: None,
            sent,
            node: node.to_string(),
            watermark: None,
            tallies: Vec::new(),
            waited: Waited {
                gauge: metrics::gauge!("engine_backpressure_seconds_total", "node" => node.to_string()),
                nanos: Default::default(),
            },
            last_watermark: None,
        }
    }

    /// Tracks `event_time` on the main port, whose column `column` holds it.
    pub(crate) fn track(&mut self, event_time: &EventTime, column: usize) {
        self.tracked = Some(Tracked {
            column,
            tracker: WatermarkTracker::for_event_time(event_time),
        });
    }

    pub(crate) fn ports(&self) -> usize {
        self.ports.len()
    }

    /// Sends a batch on `port` to every reader.
    pub(crate) async fn batch(
        &mut self,
        port: usize,
        batch: RecordBatch,
        partition: Option<&PartitionId>,
    ) -> Flow {
        if port == 0
            && let Some(t) = &mut self.tracked
        {
            t.tracker.observe(partition, batch.column(t.column))?;
        }
        if let Some(c) = self.sent.get(port) {
            c.increment(batch.num_rows() as u64);
        }
        let Some(readers) = self.ports.get(port) else {
            return Ok(());
        };
        let msg = Message::Batch {
            batch,
            partition: partition.cloned(),
        };
        send(readers, msg, &self.waited).await
    }

    /// Sends what an operator collected.
    pub(crate) async fn collected(
        &mut self,
        col: &mut Collector,
        partition: Option<&PartitionId>,
    ) -> Flow {
        for (what, reason, n) in col.drain_tallies() {
            self.tally(what, reason).increment(n);
        }
        let batches: Vec<_> = col.drain().collect();
        for (port, batch) in batches {
            self.batch(port, batch, partition).await?;
        }
        Ok(())
    }

    /// The counter of what the node reports as `what` for `reason`.
    fn tally(&mut self, what: Tally, reason: &'static str) -> &metrics::Counter {
        let i = match self.tallies.iter().position(|(k, _)| *k == (what, reason)) {
            Some(i) => i,
            None => {
                let node = self.node.clone();
                let c = match what {
                    Tally::Quarantined => {
                        metrics::counter!("engine_records_quarantined_total", "node" => node, "reason" => reason)
                    }
                    Tally::Dropped => {
                        metrics::counter!("engine_records_dropped_total", "node" => node, "reason" => reason)
                    }
                    Tally::Late => metrics::counter!("engine_late_events_total", "node" => node),
                };
                self.tallies.push(((what, reason), c));
                self.tallies.len() - 1
            }
        };
        &self.tallies[i].1
    }

    /// Time spent waiting for room downstream since the last call.
    pub(crate) fn take_waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.waited
                .nanos
                .swap(0, std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The last watermark this node sent on.
    pub(crate) fn last_watermark(&self) -> Option<i64> {
        self.last_watermark
    }

    /// Sends a control message on every port.
    pub(crate) async fn broadcast(&self, msg: Message) -> Flow {
        for readers in &self.ports {
            send(readers, msg.clone(), &self.waited).await?;
        }
        Ok(())
    }

    /// At a trigger, on the node that declares event time: the new watermark, if it advanced,
    /// is sent downstream (before the barrier that follows).
    pub(crate) async fn advance_watermark(&mut self) -> Flow {
        let advanced = match &mut self.tracked {
            Some(t) => t.tracker.advance(Instant::now()),
            None => None,
        };
        if let Some(w) = advanced {
            self.pass_watermark(w).await?;
        }
        Ok(())
    }

    /// Which partitions there are and which are idle, from now on (see
    /// [`WatermarkTracker::set_partitions`]).
    pub(crate) fn set_partitions(
        &mut self,
        partitions: std::collections::BTreeSet<PartitionId>,
        idle: std::collections::BTreeSet<PartitionId>,
    ) {
        if let Some(t) = &mut self.tracked {
            t.tracker.set_partitions(partitions, idle);
        }
    }

    /// Sends a new watermark on: this node's own, or one it merged from its inputs.
    pub(crate) async fn pass_watermark(&mut self, w: i64) -> Flow {
        self.last_watermark = Some(w);
        let node = &self.node;
        self.watermark
            .get_or_insert_with(
                || metrics::gauge!("engine_watermark_seconds", "node" => node.clone()),
            )
            .set(w as f64 / 1000.0);
        self.broadcast(Message::Watermark(w)).await
    }

    /// The event-time state to checkpoint, on the node that declares it.
    pub(crate) fn tracker_state(&self) -> Option<TrackerState> {
        self.tracked.as_ref().map(|t| t.tracker.state().clone())
    }

    /// Restores checkpointed event-time state.
    pub(crate) fn restore_tracker(&mut self, state: TrackerState) {
        if let Some(t) = &mut self.tracked {
            t.tracker.restore(state, Instant::now());
        }
    }
}

/// Sends `msg` to every reader; time spent waiting for room in a full mailbox is added to
/// `waited` (`engine_backpressure_seconds_total`).
async fn send(readers: &[(mpsc::Sender<Envelope>, usize)], msg: Message, waited: &Waited) -> Flow {
    // The last reader takes the message itself: no clone on a single edge.
    let Some(((last, last_slot), rest)) = readers.split_last() else {
        return Ok(());
    };
    for (tx, slot) in rest {
        let env = Envelope {
            slot: *slot,
            msg: msg.clone(),
        };
        deliver(tx, env, waited).await?;
    }
    let env = Envelope {
        slot: *last_slot,
        msg,
    };
    deliver(last, env, waited).await
}

async fn deliver(tx: &mpsc::Sender<Envelope>, env: Envelope, waited: &Waited) -> Flow {
    match tx.try_send(env) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(downstream_stopped()),
        Err(mpsc::error::TrySendError::Full(env)) => {
            let t0 = Instant::now();
            let sent = tx.send(env).await.map_err(|_| downstream_stopped());
            waited.add(t0.elapsed());
            sent
        }
    }
}
