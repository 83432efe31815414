//! Supervision: every actor and source runs as a task; the first failure stops the whole
//! pipeline (sources stop reading, the other nodes stop or drain, and whatever is still busy
//! after [`DRAIN`] is aborted) and is reported with the failing node's name. A failure that is only a consequence of another (a downstream node or
//! the coordinator gone) is reported only when no cause is known.

use super::coordinator::Progress;
use super::outputs::{Flow, Stop};
use engine_api::{EngineError, Result};
use std::future::Future;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long the other nodes may take to stop by themselves after a failure.
const DRAIN: Duration = Duration::from_secs(10);

pub(crate) struct Supervisor {
    tasks: JoinSet<(String, Flow)>,
    /// Cancelled on the first failure: sources stop sending.
    failed: CancellationToken,
    /// Stops the sources (a failure, or the caller's cancellation through its parent).
    stop_sources: CancellationToken,
}

impl Supervisor {
    pub(crate) fn new(failed: CancellationToken, stop_sources: CancellationToken) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            failed,
            stop_sources,
        }
    }

    pub(crate) fn spawn(&mut self, node: String, f: impl Future<Output = Flow> + Send + 'static) {
        self.tasks.spawn(async move { (node, f.await) });
    }

    pub(crate) fn spawn_blocking(
        &mut self,
        node: String,
        f: impl FnOnce() -> Flow + Send + 'static,
    ) {
        self.tasks.spawn_blocking(move || (node, f()));
    }

    /// Waits for every task, then for the coordinator; returns what it committed, or the
    /// first cause of failure.
    pub(crate) async fn supervise(
        mut self,
        coordinator: JoinHandle<Result<Progress>>,
    ) -> Result<Progress> {
        let mut cause: Option<EngineError> = None;
        let mut cascade: Option<(String, &'static str)> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let joined = match deadline {
                None => self.tasks.join_next().await,
                Some(d) => match tokio::time::timeout_at(d, self.tasks.join_next()).await {
                    Ok(j) => j,
                    Err(_) => {
                        tracing::warn!(
                            "nodes still busy {DRAIN:?} after the failure; stopping them"
                        );
                        self.tasks.abort_all();
                        deadline = None;
                        continue;
                    }
                },
            };
            let Some(joined) = joined else { break };
            let (node, stop) = match joined {
                Ok((_, Ok(()))) => continue,
                Err(e) if e.is_cancelled() => continue,
                Ok((node, Err(stop))) => (node, stop),
                Err(e) => (
                    "?".to_string(),
                    Stop::Failed(EngineError::runtime(format!("an actor panicked: {e}"))),
                ),
            };
            let first = cause.is_none() && cascade.is_none();
            match stop {
                Stop::Failed(e) if cause.is_none() => {
                    tracing::error!(node = %node, error = %e, "node failed; stopping the pipeline");
                    cause = Some(e.with_node(&node).context(format!("node `{node}` failed")));
                }
                Stop::Cascade(what) if cascade.is_none() => cascade = Some((node, what)),
                _ => {}
            }
            if first {
                // Sources stop reading; the nodes upstream of the failure stop when their sends
                // fail, those downstream drain what they hold (acknowledging the barriers in it,
                // so complete epochs still commit) and end when their inputs close.
                self.failed.cancel();
                self.stop_sources.cancel();
                deadline = Some(tokio::time::Instant::now() + DRAIN);
            }
        }
        if let Some(e) = cause {
            // Epochs every node acknowledged before the failure are still committed: the
            // coordinator ends once the stopped tasks have dropped their handles.
            match tokio::time::timeout(Duration::from_secs(10), coordinator).await {
                Ok(Ok(Err(ce))) => {
                    tracing::warn!(error = %ce, "the checkpoint coordinator failed too")
                }
                Ok(_) => {}
                Err(_) => tracing::warn!("the checkpoint coordinator did not stop within 10 s"),
            }
            return Err(e);
        }
        if let Some((node, what)) = cascade {
            // Nothing failed on its own: the coordinator must have.
            return match tokio::time::timeout(Duration::from_secs(5), coordinator).await {
                Ok(Ok(Err(e))) => Err(e.context("checkpoint coordinator failed")),
                _ => Err(EngineError::runtime(format!(
                    "node `{node}` stopped: {what}"
                ))),
            };
        }
        coordinator
            .await
            .map_err(|e| EngineError::runtime(format!("checkpoint coordinator panicked: {e}")))?
            .map_err(|e| e.context("checkpoint coordinator failed"))
    }
}
