//! Per-epoch progress, as Spark's `StreamingQueryProgress` gives it: each node tells the
//! coordinator, with its barrier, what it did in the epoch ([`Work`]); once the epoch commits,
//! the coordinator logs one `epoch progress` event with the totals.

use engine_api::{Epoch, PartitionId, Positions};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which phase of an epoch a node's time counts to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A source: reading (waiting for the broker included, waiting for room downstream not).
    #[default]
    Read,
    /// An operator: processing rows, watermarks and the barrier.
    Process,
    /// A sink: writing rows and staging its files at the barrier.
    Stage,
}

/// What one node did in one epoch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Work {
    pub(crate) phase: Phase,
    /// Rows taken in (a source's: records read).
    pub(crate) rows: u64,
    /// Time spent, waiting for room in a full downstream mailbox excluded.
    pub(crate) busy: Duration,
    /// Entries held in state after the barrier, for a node that keeps state.
    pub(crate) state_entries: Option<u64>,
    /// The node's watermark after the barrier, when it has one.
    pub(crate) watermark: Option<i64>,
    /// A source's lag per partition, as it last computed it.
    pub(crate) lag: BTreeMap<PartitionId, i64>,
}

/// Logs the progress of `epoch` of `part`, committed in `commit`, `since_last` after the
/// previous commit.
pub(crate) fn log(
    epoch: Epoch,
    part: &str,
    work: &BTreeMap<String, Work>,
    positions: &BTreeMap<String, Positions>,
    commit: Duration,
    since_last: Duration,
) {
    let sum = |phase: Phase| -> Duration {
        work.values()
            .filter(|w| w.phase == phase)
            .map(|w| w.busy)
            .sum()
    };
    let (read, process, stage) = (sum(Phase::Read), sum(Phase::Process), sum(Phase::Stage));
    let input_rows: u64 = work
        .values()
        .filter(|w| w.phase == Phase::Read)
        .map(|w| w.rows)
        .sum();
    let rate = |d: Duration| {
        let s = d.as_secs_f64();
        if s > 0.0 {
            (input_rows as f64 / s).round()
        } else {
            0.0
        }
    };
    let watermark = work.values().filter_map(|w| w.watermark).min();
    let state: BTreeMap<&str, u64> = work
        .iter()
        .filter_map(|(n, w)| Some((n.as_str(), w.state_entries?)))
        .collect();
    let lag: BTreeMap<String, i64> = work
        .values()
        .flat_map(|w| &w.lag)
        .map(|(p, l)| (p.to_string(), *l))
        .collect();
    let offsets: BTreeMap<String, &serde_json::Value> = positions
        .values()
        .flatten()
        .map(|(p, o)| (p.to_string(), o))
        .collect();
    tracing::info!(
        target: "engine::progress",
        epoch,
        part,
        input_rows,
        input_rows_per_second = rate(since_last),
        processed_rows_per_second = rate(process + stage + commit),
        read_ms = read.as_millis() as u64,
        process_ms = process.as_millis() as u64,
        stage_ms = stage.as_millis() as u64,
        commit_ms = commit.as_millis() as u64,
        epoch_ms = since_last.as_millis() as u64,
        watermark = watermark.map(format_ms).unwrap_or_default(),
        state_entries = json(&state),
        offsets = json(&offsets),
        lag = json(&lag),
        "epoch progress"
    );
}

/// An event time in RFC 3339, UTC.
fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A map, logged as one compact JSON object.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
