//! Event time and watermarks, as the runtime computes them.
//!
//! A pipeline declares its event-time column once, on the node where that column first exists.
//! From that node's output, a [`WatermarkTracker`] keeps the largest event time seen per source
//! partition; at each trigger the watermark becomes the smallest of those maxima, less the
//! allowed lateness (Flink's model: a partition read ahead of the others in a backfill cannot
//! make theirs late). An idle partition stops holding the watermark back, unless every partition
//! is idle. Idle means its maximum has not advanced for the idle timeout (wall time), unless
//! whoever feeds the tracker says which partitions there are and which of them are idle
//! ([`WatermarkTracker::set_partitions`]): the finalizer does, from what each partition's owner
//! wrote in its chain, because it cannot tell an idle partition from one whose owners keep
//! failing, nor knows the event times of a partition it has no rows of yet (which then holds the
//! watermark where it is). The watermark never goes back.
//!
//! It lives in the API so that operator tests (see [`crate::testing`]) drive windows with the
//! same watermarks the runtime sends.

use crate::time::event_times;
use crate::{PartitionId, Result};
use arrow::array::{Array, ArrayRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A pipeline's event-time declaration, as the runtime reads it from the node that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The column: ISO-8601 text or a timestamp.
    pub column: String,
    /// How far the watermark trails the largest event time seen, in ms.
    pub lateness_ms: i64,
    /// A partition that has not advanced for this long stops holding the watermark back.
    pub idle_timeout: Duration,
}

/// What a tracker checkpoints: the largest event time per partition and the watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    /// By partition; rows with no partition (derived from several) are under `""`.
    pub max_event_time: BTreeMap<PartitionId, i64>,
    pub watermark: Option<i64>,
}

/// Tracks event time per source partition and computes the watermark.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    lateness_ms: i64,
    idle_timeout: Duration,
    state: TrackerState,
    /// When each partition's maximum last advanced (wall time; not checkpointed).
    advanced: BTreeMap<PartitionId, Instant>,
    /// Every partition, and the idle ones, once someone who knows better than wall time says.
    reported: Option<Reported>,
}

#[derive(Debug, Clone)]
struct Reported {
    partitions: BTreeSet<PartitionId>,
    idle: BTreeSet<PartitionId>,
}

fn unkeyed() -> PartitionId {
    PartitionId::new("")
}

impl WatermarkTracker {
    pub fn new(lateness_ms: i64, idle_timeout: Duration) -> Self {
        WatermarkTracker {
            lateness_ms,
            idle_timeout,
            state: TrackerState::default(),
            advanced: BTreeMap::new(),
            reported: None,
        }
    }

    pub fn for_event_time(e: &EventTime) -> Self {
        Self::new(e.lateness_ms, e.idle_timeout)
    }

    /// Takes the event times of `column` (rows of `partition`). Rows whose time does not parse
    /// are left out; they are the parser's or the window's to count.
    pub fn observe(&mut self, partition: Option<&PartitionId>, column: &ArrayRef) -> Result<()> {
        let times = event_times(column)?;
        let max = if times.null_count() == 0 {
            times.values().iter().copied().max()
        } else {
            times.iter().flatten().max()
        };
        if let Some(max) = max {
            self.observe_max(partition, max, Instant::now());
        }
        Ok(())
    }

    /// Takes one partition's largest event time in a batch.
    pub fn observe_max(&mut self, partition: Option<&PartitionId>, max: i64, now: Instant) {
        let p = partition.cloned().unwrap_or_else(unkeyed);
        let m = self
            .state
            .max_event_time
            .entry(p.clone())
            .or_insert(i64::MIN);
        if max > *m {
            *m = max;
            self.advanced.insert(p, now);
        }
    }

    /// From now on, the partitions in `idle` are the idle ones, whatever the wall time says, and
    /// a partition of `partitions` that is not idle and has no rows seen yet holds the watermark
    /// where it is (its first rows may be older than any other partition's).
    pub fn set_partitions(
        &mut self,
        partitions: BTreeSet<PartitionId>,
        idle: BTreeSet<PartitionId>,
    ) {
        self.reported = Some(Reported { partitions, idle });
    }

    fn is_idle(&self, p: &PartitionId, now: Instant) -> bool {
        match &self.reported {
            Some(r) => r.idle.contains(p),
            None => self
                .advanced
                .get(p)
                .is_some_and(|t| now.saturating_duration_since(*t) >= self.idle_timeout),
        }
    }

    /// Recomputes the watermark (at a trigger); returns it when it advanced.
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let maxima = &self.state.max_event_time;
        if let Some(r) = &self.reported
            && r.partitions
                .iter()
                .any(|p| !maxima.contains_key(p) && !r.idle.contains(p))
        {
            return None;
        }
        let active = maxima
            .iter()
            .filter(|(p, _)| !self.is_idle(p, now))
            .map(|(_, m)| *m)
            .min();
        let base = active.or_else(|| maxima.values().copied().min())?;
        let wm = base.saturating_sub(self.lateness_ms);
        if self.state.watermark.is_some_and(|old| old >= wm) {
            return None;
        }
        self.state.watermark = Some(wm);
        Some(wm)
    }

    pub fn watermark(&self) -> Option<i64> {
        self.state.watermark
    }

    pub fn state(&self) -> &TrackerState {
        &self.state
    }

    /// Restores a checkpointed state. Idleness restarts: every partition counts until it proves
    /// idle again.
    pub fn restore(&mut self, state: TrackerState, now: Instant) {
        self.advanced = state
            .max_event_time
            .keys()
            .map(|p| (p.clone(), now))
            .collect();
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> PartitionId {
        PartitionId::kafka("t", n)
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark_until_it_is_idle() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(1_000, Duration::from_secs(30));
        assert_eq!(w.advance(t0), None, "nothing seen, no watermark");
        w.observe_max(Some(&p(0)), 100_000, t0);
        w.observe_max(Some(&p(1)), 40_000, t0);
        assert_eq!(w.advance(t0), Some(39_000));
        // Partition 0 runs ahead; 1 stays: the watermark does not move.
        w.observe_max(Some(&p(0)), 200_000, t0 + Duration::from_secs(20));
        assert_eq!(w.advance(t0 + Duration::from_secs(20)), None);
        // 31 s after partition 1 last advanced it is idle: 0 alone counts.
        assert_eq!(
            w.advance(t0 + Duration::from_secs(31)),
            Some(199_000),
            "idle partition released"
        );
        // Partition 1 wakes up behind: the watermark never goes back.
        w.observe_max(Some(&p(1)), 50_000, t0 + Duration::from_secs(32));
        assert_eq!(w.advance(t0 + Duration::from_secs(32)), None);
        assert_eq!(w.watermark(), Some(199_000));
    }

    #[test]
    fn every_partition_idle_means_the_smallest_maximum_counts() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.observe_max(Some(&p(0)), 10, t0);
        w.observe_max(Some(&p(1)), 20, t0);
        assert_eq!(w.advance(t0 + Duration::from_secs(5)), Some(10));
    }

    #[test]
    fn restore_keeps_maxima_and_watermark_and_restarts_idleness() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(10));
        w.observe_max(Some(&p(0)), 10, t0);
        w.observe_max(None, 30, t0);
        w.advance(t0);
        let saved = w.state().clone();
        let mut r = WatermarkTracker::new(0, Duration::from_secs(10));
        r.restore(saved.clone(), t0 + Duration::from_secs(100));
        assert_eq!(r.state(), &saved);
        assert_eq!(r.watermark(), Some(10));
        // Not idle right after the restore, so partition 0 still holds it.
        r.observe_max(None, 50, t0 + Duration::from_secs(101));
        assert_eq!(r.advance(t0 + Duration::from_secs(101)), None);
        assert_eq!(r.advance(t0 + Duration::from_millis(110_500)), Some(50));
    }

    #[test]
    fn once_told_which_partitions_are_idle_wall_time_no_longer_decides() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.observe_max(Some(&p(0)), 100, t0);
        w.observe_max(Some(&p(1)), 40, t0);
        let both = BTreeSet::from([p(0), p(1)]);
        w.set_partitions(both.clone(), BTreeSet::new());
        // An hour without progress: partition 1 still holds the watermark (its owners may be
        // failing, with records left to read).
        assert_eq!(w.advance(t0 + Duration::from_secs(3600)), Some(40));
        w.observe_max(Some(&p(0)), 200, t0 + Duration::from_secs(3601));
        assert_eq!(w.advance(t0 + Duration::from_secs(3601)), None);
        // Its owner says it is idle: partition 0 alone counts.
        w.set_partitions(both.clone(), BTreeSet::from([p(1)]));
        assert_eq!(w.advance(t0 + Duration::from_secs(3602)), Some(200));
        // Both idle: the smallest maximum, which is behind the watermark already.
        w.set_partitions(both.clone(), both);
        assert_eq!(w.advance(t0 + Duration::from_secs(3603)), None);
        assert_eq!(w.watermark(), Some(200));
    }

    #[test]
    fn a_partition_with_no_rows_yet_holds_the_watermark_until_it_has_some_or_is_idle() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.observe_max(Some(&p(0)), 100, t0);
        // Partition 2 was just claimed (added to the topic, say): its rows, still unread, may be
        // older than anything seen.
        w.set_partitions(BTreeSet::from([p(0), p(2)]), BTreeSet::new());
        assert_eq!(w.advance(t0), None);
        w.observe_max(Some(&p(2)), 40, t0);
        assert_eq!(w.advance(t0), Some(40));
        // An empty partition stops holding it once its owner says it is idle.
        w.observe_max(Some(&p(0)), 300, t0);
        w.set_partitions(BTreeSet::from([p(0), p(2), p(3)]), BTreeSet::new());
        assert_eq!(w.advance(t0), None);
        w.set_partitions(
            BTreeSet::from([p(0), p(2), p(3)]),
            BTreeSet::from([p(2), p(3)]),
        );
        assert_eq!(w.advance(t0), Some(300));
    }
}
