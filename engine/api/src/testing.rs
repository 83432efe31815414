//! Testing operators: run a built operator the way the runtime does, and check the operator
//! contract.
//!
//! Operators are pure over batches, so literal batches are enough to test one. Two tools:
//!
//! - [`Harness`] drives one built operator step by step, as the runtime's actor does, and hands
//!   back what each step emitted ([`Output`], per port). With an [`EventTime`] it also plays the
//!   runtime's event-time part: it tracks the event-time column of the batches it is given, per
//!   source partition, with the runtime's own [`WatermarkTracker`], and at each barrier calls
//!   `on_watermark` (when the watermark advanced) and then `on_barrier`, exactly in that order.
//!   It tracks the batches it gives the operator, as though the node upstream had declared the
//!   event time; a batch with no partition ([`Step::Batch`]) counts as a partition of its own.
//!   Idleness is measured on the harness's own clock, which moves only with [`Step::Wait`], so
//!   tests never sleep and never flake.
//! - [`check_operator`] runs a [`Script`] of steps several ways and panics, with a message
//!   saying which rule broke and on which rows, unless the operator keeps the contract below.
//!   It returns the straight run's outputs, so one call both checks the contract and gives the
//!   values to assert.
//!
//! # The contract [`check_operator`] checks
//!
//! - **(a) Snapshot and restore.** The runtime snapshots the operator after every barrier. For
//!   each `Barrier` step of the script, a freshly built operator is restored from that snapshot
//!   (unless the operator is stateless, `snapshot` returning `None`) and runs the rest of the
//!   script. At every later step it must emit, on every port, the same rows as the operator that
//!   ran the whole script: compared per step and per port **as multisets of rows** (order within
//!   a step is free, since an operator may keep its state in a hash map; which step emits a row
//!   is not). It gets the same watermarks as the straight run. At the end it must report the
//!   same [`Operator::state_size`]. A rebuilt operator must declare the same ports. Columns
//!   whose values come from the wall clock are left out when the script names them
//!   ([`Script::wall_clock_column`]).
//! - **(b) End of input flushes once.** [`Operator::on_end`] emits what the operator still means
//!   to emit at the end of the input. Afterwards nothing of that is left: a second `on_end`
//!   emits nothing, and neither does `on_end` on a fresh operator restored from a snapshot taken
//!   after the first `on_end`. (State the operator keeps on purpose, such as windows the
//!   watermark has not closed, may stay: it is checkpointed for a later run; it must just not
//!   be emitted twice.) A script that does not end with `End` gets one.
//! - **(c) Empty input emits nothing.** A fresh operator given an empty batch, a barrier, a
//!   watermark far in the future (2100-01-01), another barrier and the end of input emits no row.
//! - **(d) Schemas.** Every batch emitted, in every run above, goes to a declared port and has
//!   exactly that port's schema (`RecordBatch::schema() == OutputPort::schema`: names, types,
//!   nullability and metadata).
//!
//! The harness also panics when the test itself breaks the runtime's rules: a batch whose schema
//! is not the script's input schema, or a step after `End`.
//!
//! ```ignore
//! use engine_api::testing::{Script, check_operator, build_context};
//! let input = Input::new(schema.clone());
//! let run = check_operator(
//!     || cfg.clone().build(&build_context("node"), &input),
//!     &Script::new(schema).batch(b1).barrier().batch(b2).barrier().end(),
//! );
//! assert_eq!(run.all().num_rows("out"), 42);
//! ```

use crate::event_time::{EventTime, WatermarkTracker};
use crate::time::event_times;
use crate::{
    BuildContext, Built, Collector, Epoch, MAIN_PORT, Operator, OutputPort, PartitionId, Result,
    StorageConfig, Tally,
};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The watermark check (c) sends: 2100-01-01T00:00:00Z, past any test's events.
pub const FAR_WATERMARK: i64 = 4_102_444_800_000;

/// A build context for tests: pipeline `test`, node `node`, default storage, a 10 s trigger.
pub fn build_context(node: &str) -> BuildContext {
    BuildContext {
        pipeline: "test".into(),
        node: node.into(),
        storage: StorageConfig::default(),
        trigger: Duration::from_secs(10),
        checkpoint: "file:///tmp/engine-test-checkpoint".into(),
    }
}

/// An event-time declaration for tests: `column` with `lateness_ms` of allowed lateness and the
/// runtime's default idle timeout (30 s).
pub fn event_time(column: &str, lateness_ms: i64) -> EventTime {
    EventTime {
        column: column.into(),
        lateness_ms,
        idle_timeout: Duration::from_secs(30),
    }
}

/// One thing the runtime does to an operator.
#[derive(Debug, Clone)]
pub enum Step {
    /// A batch whose rows come from no single source partition (an aggregate's output).
    Batch(RecordBatch),
    /// A batch read from one source partition.
    BatchFrom(PartitionId, RecordBatch),
    /// A watermark from upstream (ms since the Unix epoch). `on_watermark` is called only when
    /// it is above the last one, as the runtime does.
    Watermark(i64),
    /// Wall time passes, as the harness counts it (for idle partitions). No real waiting.
    Wait(Duration),
    /// A trigger: with an event time, the watermark computed from what was seen (and
    /// `on_watermark` if it advanced); then `on_barrier` with the next epoch (the first is 1);
    /// then `snapshot`, as the runtime does at every barrier.
    Barrier,
    /// The end of the input: `on_end`. Nothing may follow it.
    End,
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Batch(b) => format!("Batch of {} rows", b.num_rows()),
            Step::BatchFrom(p, b) => format!("BatchFrom({p}) of {} rows", b.num_rows()),
            Step::Watermark(w) => format!("Watermark({})", crate::time::fmt_ms(*w)),
            Step::Wait(d) => format!("Wait({d:?})"),
            Step::Barrier => "Barrier".into(),
            Step::End => "End".into(),
        }
    }
}

/// Steps to run an operator through, against an input schema and, optionally, the pipeline's
/// event time (declared upstream, on the column of that name in the input).
#[derive(Debug, Clone)]
pub struct Script {
    input: SchemaRef,
    event_time: Option<EventTime>,
    steps: Vec<Step>,
    /// (port, column) pairs whose values come from the wall clock.
    wall_clock: Vec<(String, String)>,
}

impl Script {
    /// An empty script over batches of `input`.
    pub fn new(input: SchemaRef) -> Self {
        Script {
            input,
            event_time: None,
            steps: Vec::new(),
            wall_clock: Vec::new(),
        }
    }

    /// Leaves `column` of port `port` out of the comparison of check (a): its values come from
    /// the wall clock (such as `json_parse`'s `ingested_at`), so a second run differs there.
    pub fn wall_clock_column(mut self, port: &str, column: &str) -> Self {
        self.wall_clock.push((port.into(), column.into()));
        self
    }

    /// Barriers compute the watermark from this event time, as the runtime does.
    pub fn with_event_time(mut self, e: EventTime) -> Self {
        self.event_time = Some(e);
        self
    }

    pub fn step(mut self, s: Step) -> Self {
        self.steps.push(s);
        self
    }

    pub fn batch(self, b: RecordBatch) -> Self {
        self.step(Step::Batch(b))
    }

    pub fn batch_from(self, p: PartitionId, b: RecordBatch) -> Self {
        self.step(Step::BatchFrom(p, b))
    }

    pub fn watermark(self, w: i64) -> Self {
        self.step(Step::Watermark(w))
    }

    pub fn wait(self, d: Duration) -> Self {
        self.step(Step::Wait(d))
    }

    pub fn barrier(self) -> Self {
        self.step(Step::Barrier)
    }

    pub fn end(self) -> Self {
        self.step(Step::End)
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn input(&self) -> &SchemaRef {
        &self.input
    }
}

/// What one port received.
#[derive(Debug, Clone)]
pub struct PortOutput {
    pub name: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// What an operator emitted, per declared port (in the order of [`Built::ports`]).
#[derive(Debug, Clone)]
pub struct Output {
    ports: Vec<PortOutput>,
    /// What the operator reported beside its rows (quarantined, dropped, late), as the
    /// runtime would count it.
    tallies: Vec<(Tally, &'static str, u64)>,
}

impl Output {
    fn new(ports: &[OutputPort]) -> Self {
        Output {
            ports: ports
                .iter()
                .map(|p| PortOutput {
                    name: p.name.clone(),
                    schema: p.schema.clone(),
                    batches: Vec::new(),
                })
                .collect(),
            tallies: Vec::new(),
        }
    }

    pub fn ports(&self) -> &[PortOutput] {
        &self.ports
    }

    /// How many rows the operator reported as `what` for `reason` in this step (`""` for
    /// [`Tally::Late`]), what the runtime adds to `engine_records_quarantined_total`,
    /// `engine_records_dropped_total` or `engine_late_events_total`.
    pub fn tallied(&self, what: Tally, reason: &str) -> u64 {
        self.tallies
            .iter()
            .filter(|(w, r, _)| *w == what && *r == reason)
            .map(|(_, _, n)| n)
            .sum()
    }

    fn get(&self, name: &str) -> &PortOutput {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
                panic!("no port `{name}`; the operator declares {names:?}")
            })
    }

    /// The batches emitted on port `name`.
    pub fn port(&self, name: &str) -> &[RecordBatch] {
        &self.get(name).batches
    }

    /// The batches emitted on the main port.
    pub fn main(&self) -> &[RecordBatch] {
        &self.ports[0].batches
    }

    /// Everything emitted on port `name`, as one batch (empty, of the port's schema, if none).
    pub fn concat(&self, name: &str) -> RecordBatch {
        let p = self.get(name);
        arrow::compute::concat_batches(&p.schema, &p.batches).expect("batches of the port schema")
    }

    /// Rows emitted on port `name`.
    pub fn num_rows(&self, name: &str) -> usize {
        self.get(name).batches.iter().map(|b| b.num_rows()).sum()
    }

    /// True when no port received a row.
    pub fn is_empty(&self) -> bool {
        self.ports
            .iter()
            .all(|p| p.batches.iter().all(|b| b.num_rows() == 0))
    }

    /// Appends what `other` (of the same operator) emitted.
    pub fn extend(&mut self, other: Output) {
        for (mine, theirs) in self.ports.iter_mut().zip(other.ports) {
            mine.batches.extend(theirs.batches);
        }
    }
}

/// Where a [`Harness`] was at a barrier: the operator's snapshot and the harness's own state
/// (epoch, watermark, event-time tracker, clock), enough to continue from there.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub epoch: Epoch,
    /// What [`Operator::snapshot`] returned.
    pub state: Option<Vec<u8>>,
    watermark: Option<i64>,
    tracker: Option<(String, WatermarkTracker)>,
    clock: Instant,
    input: Option<SchemaRef>,
}

/// Runs one built operator as the runtime's actor does. Every emitted batch is checked against
/// its declared port (index and schema), and the harness panics on a contract break.
pub struct Harness {
    operator: Box<dyn Operator>,
    ports: Vec<OutputPort>,
    input: Option<SchemaRef>,
    /// The event-time column and the runtime's tracker for it.
    tracker: Option<(String, WatermarkTracker)>,
    /// The harness's wall clock: starts now, moves only with [`Harness::wait`].
    clock: Instant,
    watermark: Option<i64>,
    epoch: Epoch,
    ended: bool,
    checkpoint: Option<Checkpoint>,
}

impl Harness {
    pub fn new(built: Built) -> Self {
        assert!(
            !built.ports.is_empty() && built.ports[0].name == MAIN_PORT,
            "an operator declares its main port `{MAIN_PORT}` first; it declares {:?}",
            built.ports.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
        for (i, p) in built.ports.iter().enumerate() {
            assert!(
                !built.ports[..i].iter().any(|q| q.name == p.name),
                "port `{}` is declared twice",
                p.name
            );
        }
        Harness {
            operator: built.operator,
            ports: built.ports,
            input: None,
            tracker: None,
            clock: Instant::now(),
            watermark: None,
            epoch: 0,
            ended: false,
            checkpoint: None,
        }
    }

    /// A harness for `script`: batches are checked against its input schema and barriers use
    /// its event time.
    pub fn for_script(built: Built, script: &Script) -> Self {
        let mut h = Harness::new(built).with_input(script.input.clone());
        if let Some(e) = &script.event_time {
            h = h.with_event_time(e);
        }
        h
    }

    /// Checks every batch given against `schema` (the schema the operator was built against).
    pub fn with_input(mut self, schema: SchemaRef) -> Self {
        if let Some((column, _)) = &self.tracker {
            assert_event_time_column(&schema, column);
        }
        self.input = Some(schema);
        self
    }

    /// Tracks `e.column` of the batches given, per source partition, and sends the watermark
    /// at each barrier as the runtime does.
    pub fn with_event_time(mut self, e: &EventTime) -> Self {
        if let Some(schema) = &self.input {
            assert_event_time_column(schema, &e.column);
        }
        self.tracker = Some((e.column.clone(), WatermarkTracker::for_event_time(e)));
        self
    }

    /// Continues from `checkpoint` with a freshly built operator: restores its state (when the
    /// checkpoint has one) and takes the harness's epoch, watermark, tracker and clock as they
    /// were, so it gets the same watermarks as the harness it came from.
    pub fn restore(built: Built, checkpoint: &Checkpoint) -> Result<Self> {
        let mut h = Harness::new(built);
        h.resume(checkpoint)?;
        Ok(h)
    }

    /// [`Harness::restore`] for a harness just made (and configured) around a fresh operator.
    pub fn resume(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if let Some(state) = &checkpoint.state {
            self.operator.restore(state)?;
        }
        self.epoch = checkpoint.epoch;
        self.watermark = checkpoint.watermark;
        self.tracker = checkpoint.tracker.clone();
        self.clock = checkpoint.clock;
        self.input = checkpoint.input.clone();
        self.checkpoint = Some(checkpoint.clone());
        Ok(())
    }

    pub fn ports(&self) -> &[OutputPort] {
        &self.ports
    }

    pub fn operator(&self) -> &dyn Operator {
        self.operator.as_ref()
    }

    pub fn operator_mut(&mut self) -> &mut dyn Operator {
        self.operator.as_mut()
    }

    /// [`Operator::state_size`].
    pub fn state_size(&self) -> usize {
        self.operator.state_size()
    }

    /// The last watermark given to `on_watermark`.
    pub fn current_watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The epoch of the last barrier (0 before any).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Where the harness was at the last barrier.
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// A batch with no source partition.
    pub fn process(&mut self, batch: RecordBatch) -> Result<Output> {
        self.batch(None, batch)
    }

    /// A batch read from source partition `p`.
    pub fn process_from(&mut self, p: &PartitionId, batch: RecordBatch) -> Result<Output> {
        self.batch(Some(p), batch)
    }

    fn batch(&mut self, p: Option<&PartitionId>, batch: RecordBatch) -> Result<Output> {
        self.not_ended("a batch");
        if let Some(schema) = &self.input {
            assert!(
                batch.schema() == *schema,
                "the test gave a batch whose schema is not the input's:\n  batch: {:?}\n  input: {:?}",
                batch.schema(),
                schema
            );
        }
        if let Some((column, tracker)) = &mut self.tracker {
            let col = batch.column_by_name(column).unwrap_or_else(|| {
                panic!("the batch has no event-time column `{column}`");
            });
            let times = event_times(col)?;
            if let Some(max) = times.iter().flatten().max() {
                tracker.observe_max(p, max, self.clock);
            }
        }
        self.call(|op, out| op.process(batch, out))
    }

    /// A watermark from upstream: `on_watermark` when it is above the last one.
    pub fn watermark(&mut self, w: i64) -> Result<Output> {
        self.not_ended("a watermark");
        self.give_watermark(w)
    }

    fn give_watermark(&mut self, w: i64) -> Result<Output> {
        if self.watermark.is_some_and(|old| old >= w) {
            return Ok(Output::new(&self.ports));
        }
        self.watermark = Some(w);
        self.call(|op, out| op.on_watermark(w, out))
    }

    /// Moves the harness's clock (idle partitions are measured on it).
    pub fn wait(&mut self, d: Duration) {
        self.clock += d;
    }

    /// A trigger: the event-time watermark (if it advanced), `on_barrier`, then `snapshot`.
    /// Returns what `on_watermark` and `on_barrier` emitted.
    pub fn barrier(&mut self) -> Result<Output> {
        self.not_ended("a barrier");
        let mut out = Output::new(&self.ports);
        let wm = match &mut self.tracker {
            Some((_, t)) => t.advance(self.clock),
            None => None,
        };
        if let Some(wm) = wm {
            out.extend(self.give_watermark(wm)?);
        }
        self.epoch += 1;
        let epoch = self.epoch;
        out.extend(self.call(|op, out| op.on_barrier(epoch, out))?);
        let state = self.operator.snapshot()?;
        self.checkpoint = Some(Checkpoint {
            epoch,
            state,
            watermark: self.watermark,
            tracker: self.tracker.clone(),
            clock: self.clock,
            input: self.input.clone(),
        });
        Ok(out)
    }

    /// The end of the input: `on_end`.
    pub fn end(&mut self) -> Result<Output> {
        self.not_ended("the end of input");
        self.ended = true;
        self.call(|op, out| op.on_end(out))
    }

    /// [`Operator::snapshot`], outside a barrier.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        self.operator.snapshot()
    }

    /// Runs one step.
    pub fn step(&mut self, step: &Step) -> Result<Output> {
        match step {
            Step::Batch(b) => self.process(b.clone()),
            Step::BatchFrom(p, b) => self.process_from(p, b.clone()),
            Step::Watermark(w) => self.watermark(*w),
            Step::Wait(d) => {
                self.wait(*d);
                Ok(Output::new(&self.ports))
            }
            Step::Barrier => self.barrier(),
            Step::End => self.end(),
        }
    }

    /// Runs the steps; returns what each emitted.
    pub fn run(&mut self, steps: &[Step]) -> Result<Vec<Output>> {
        steps.iter().map(|s| self.step(s)).collect()
    }

    fn not_ended(&self, what: &str) {
        assert!(
            !self.ended,
            "{what} after the end of input: the runtime sends nothing after End"
        );
    }

    /// Calls the operator with a collector, then checks and sorts what it emitted per port.
    fn call(
        &mut self,
        f: impl FnOnce(&mut dyn Operator, &mut Collector) -> Result<()>,
    ) -> Result<Output> {
        let mut col = Collector::new(self.ports.len());
        f(self.operator.as_mut(), &mut col)?;
        let mut out = Output::new(&self.ports);
        out.tallies = col.drain_tallies().collect();
        for (i, batch) in col.drain() {
            let Some(port) = self.ports.get(i) else {
                panic!(
                    "(d) the operator emitted on port {i}, but declares {} port(s): {:?}",
                    self.ports.len(),
                    self.ports.iter().map(|p| &p.name).collect::<Vec<_>>()
                );
            };
            assert!(
                batch.schema() == port.schema,
                "(d) a batch emitted on port `{}` does not have the port's declared schema:\n  emitted:  {:?}\n  declared: {:?}",
                port.name,
                batch.schema(),
                port.schema
            );
            out.ports[i].batches.push(batch);
        }
        Ok(out)
    }
}

fn assert_event_time_column(schema: &SchemaRef, column: &str) {
    assert!(
        schema.index_of(column).is_ok(),
        "the event-time column `{column}` is not in the input schema"
    );
}

/// The straight run of a [`check_operator`] script.
#[derive(Debug, Clone)]
pub struct Run {
    pub ports: Vec<OutputPort>,
    /// What each step emitted, in the script's order (with the `End` added to a script
    /// without one).
    pub steps: Vec<Output>,
}

impl Run {
    /// Everything the run emitted.
    pub fn all(&self) -> Output {
        let mut all = Output::new(&self.ports);
        for s in &self.steps {
            all.extend(s.clone());
        }
        all
    }
}

/// Runs `script` through operators from `build` and panics unless they keep the contract
/// described in the [module documentation](self): (a) restoring the snapshot of any barrier
/// into a fresh operator continues exactly like the straight run, (b) `on_end` flushes once,
/// (c) empty input emits nothing, (d) every emitted batch has its port's declared schema.
/// Returns the straight run's outputs.
///
/// `build` is called once per run (the straight one, one per barrier, two more): it must build
/// the same operator each time.
pub fn check_operator(build: impl Fn() -> Result<Built>, script: &Script) -> Run {
    let make = || build().unwrap_or_else(|e| panic!("building the operator failed: {e}"));
    let mut steps = script.steps.clone();
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::End))
        && i + 1 != steps.len()
    {
        panic!("the script has steps after End (step {i}); the runtime sends nothing after it");
    }
    if !matches!(steps.last(), Some(Step::End)) {
        steps.push(Step::End);
    }

    // The straight run, keeping where it was at every barrier.
    let built = make();
    let ports = built.ports.clone();
    let mut h = Harness::for_script(built, script);
    let mut outputs = Vec::with_capacity(steps.len());
    let mut checkpoints = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let out = h
            .step(s)
            .unwrap_or_else(|e| panic!("step {i} ({}) failed: {e}", s.describe()));
        if matches!(s, Step::Barrier) {
            checkpoints.push((i, h.last_checkpoint().expect("a barrier").clone()));
        }
        outputs.push(out);
    }
    let final_size = h.state_size();

    // (b) What on_end emitted is not emitted again.
    let again = h
        .call(|op, out| op.on_end(out))
        .unwrap_or_else(|e| panic!("a second on_end failed: {e}"));
    assert_nothing(
        &again,
        "(b) a second on_end emitted rows after the first one flushed",
    );
    let state = h
        .snapshot()
        .unwrap_or_else(|e| panic!("snapshot after on_end failed: {e}"));
    let mut after = Harness::new(make());
    if let Some(state) = &state {
        after
            .operator
            .restore(state)
            .unwrap_or_else(|e| panic!("restoring the snapshot taken after on_end failed: {e}"));
    }
    let out = after
        .end()
        .unwrap_or_else(|e| panic!("on_end of the restored operator failed: {e}"));
    assert_nothing(
        &out,
        "(b) on_end of an operator restored from a snapshot taken after on_end emitted rows",
    );

    // (a) From every barrier's snapshot, the rest of the script gives the same rows.
    for (at, cp) in &checkpoints {
        let built = make();
        assert_same_ports(&ports, &built.ports);
        let mut r = Harness::restore(built, cp).unwrap_or_else(|e| {
            panic!(
                "restoring the snapshot of step {at} (epoch {}) failed: {e}",
                cp.epoch
            )
        });
        for (j, s) in steps.iter().enumerate().skip(at + 1) {
            let got = r.step(s).unwrap_or_else(|e| {
                panic!(
                    "after a restore from the snapshot of step {at} (epoch {}), step {j} ({}) failed: {e}",
                    cp.epoch,
                    s.describe()
                )
            });
            if let Some(diff) = diff(&outputs[j], &got, &script.wall_clock) {
                panic!(
                    "(a) after a restore from the snapshot of step {at} (epoch {}), step {j} ({}) emitted other rows than the run without a restore:\n{diff}",
                    cp.epoch,
                    s.describe()
                );
            }
        }
        assert_eq!(
            r.state_size(),
            final_size,
            "(a) after a restore from the snapshot of step {at} (epoch {}), the operator ends with another state_size than the run without a restore",
            cp.epoch
        );
    }

    // (c) Empty input emits nothing.
    let built = make();
    assert_same_ports(&ports, &built.ports);
    let mut e = Harness::for_script(built, script);
    let empty = RecordBatch::new_empty(script.input.clone());
    for s in [
        Step::Batch(empty),
        Step::Barrier,
        Step::Watermark(FAR_WATERMARK),
        Step::Barrier,
        Step::End,
    ] {
        let out = e
            .step(&s)
            .unwrap_or_else(|err| panic!("(c) on empty input, {} failed: {err}", s.describe()));
        assert_nothing(
            &out,
            &format!("(c) on empty input, {} emitted rows", s.describe()),
        );
    }

    Run {
        ports,
        steps: outputs,
    }
}

fn assert_nothing(out: &Output, what: &str) {
    if !out.is_empty() {
        let mut text = String::new();
        for p in &out.ports {
            for b in &p.batches {
                for row in 0..b.num_rows() {
                    let _ = writeln!(text, "  {}: {}", p.name, row_text(b, row));
                }
            }
        }
        panic!("{what}:\n{text}");
    }
}

fn assert_same_ports(first: &[OutputPort], again: &[OutputPort]) {
    let key = |ports: &[OutputPort]| -> Vec<String> {
        ports
            .iter()
            .map(|p| format!("{} {} {:?} {:?}", p.name, p.mode, p.must_read, p.schema))
            .collect()
    };
    assert_eq!(
        key(first),
        key(again),
        "building the operator again declared other ports"
    );
}

/// Rows of `batches` as comparable keys (the row format; text for types it cannot encode),
/// each with its text for messages.
fn row_keys(schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<(Vec<u8>, String)> {
    let fields: Vec<SortField> = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::supports_fields(&fields)
        .then(|| RowConverter::new(fields).expect("supported fields"));
    let mut out = Vec::new();
    for b in batches {
        let rows = converter.as_ref().map(|c| {
            c.convert_columns(b.columns())
                .expect("rows of the port schema")
        });
        for i in 0..b.num_rows() {
            let text = row_text(b, i);
            let key = match &rows {
                Some(r) => r.row(i).as_ref().to_vec(),
                None => text.clone().into_bytes(),
            };
            out.push((key, text));
        }
    }
    out
}

/// One row as `name: value, ...`, with text values quoted (so a null and the text "null"
/// differ).
fn row_text(b: &RecordBatch, row: usize) -> String {
    let opts = FormatOptions::default().with_null("null");
    b.schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| {
            let v = if c.is_null(row) {
                "null".to_string()
            } else {
                let s = ArrayFormatter::try_new(c.as_ref(), &opts)
                    .and_then(|fmt| fmt.value(row).try_to_string())
                    .unwrap_or_else(|e| format!("<{e}>"));
                if matches!(
                    f.data_type(),
                    arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8
                ) {
                    format!("{s:?}")
                } else {
                    s
                }
            };
            format!("{}: {v}", f.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `batches` of `schema` without the columns named in `skip`.
fn without(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    skip: &[&str],
) -> (SchemaRef, Vec<RecordBatch>) {
    if skip.is_empty() {
        return (schema.clone(), batches.to_vec());
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !skip.contains(&schema.field(*i).name().as_str()))
        .collect();
    let projected = std::sync::Arc::new(schema.project(&keep).expect("columns of the schema"));
    let batches = batches
        .iter()
        .map(|b| b.project(&keep).expect("columns of the schema"))
        .collect();
    (projected, batches)
}

/// Per port, the rows one output has and the other lacks (as multisets), leaving out the
/// wall-clock columns; `None` when equal.
fn diff(want: &Output, got: &Output, wall_clock: &[(String, String)]) -> Option<String> {
    let mut text = String::new();
    for (w, g) in want.ports.iter().zip(&got.ports) {
        let skip: Vec<&str> = wall_clock
            .iter()
            .filter(|(p, _)| *p == w.name)
            .map(|(_, c)| c.as_str())
            .collect();
        let mut count: BTreeMap<Vec<u8>, (i64, String)> = BTreeMap::new();
        let (schema, batches) = without(&w.schema, &w.batches, &skip);
        for (k, t) in row_keys(&schema, &batches) {
            count.entry(k).or_insert((0, t)).0 += 1;
        }
        let (schema, batches) = without(&g.schema, &g.batches, &skip);
        for (k, t) in row_keys(&schema, &batches) {
            count.entry(k).or_insert((0, t)).0 -= 1;
        }
        let (mut missing, mut extra) = (Vec::new(), Vec::new());
        for (n, t) in count.into_values() {
            if n > 0 {
                missing.push(format!("    {n} x {t}"));
            } else if n < 0 {
                extra.push(format!("    {} x {t}", -n));
            }
        }
        if missing.is_empty() && extra.is_empty() {
            continue;
        }
        let _ = writeln!(text, "  port `{}`:", w.name);
        for (what, rows) in [("missing", missing), ("extra", extra)] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(text, "   {what} rows:");
            for r in rows.iter().take(20) {
                let _ = writeln!(text, "{r}");
            }
            if rows.len() > 20 {
                let _ = writeln!(text, "    ... and {} more", rows.len() - 20);
            }
        }
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputMode;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Utf8, false),
        ]))
    }

    fn batch(rows: &[(&str, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn count_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    /// Counts rows; emits the count at barriers (or at the end, when `at_end`). Its flaws are
    /// switched on one at a time.
    #[derive(Default, Clone, Copy)]
    struct Flaws {
        forget_state: bool,
        emit_at_end_twice: bool,
        emit_when_empty: bool,
        wrong_schema: bool,
    }

    struct Counter {
        n: i64,
        flaws: Flaws,
        /// The calls it got, for the tests that check their order.
        calls: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Operator for Counter {
        fn process(&mut self, batch: RecordBatch, _out: &mut Collector) -> Result<()> {
            self.n += batch.num_rows() as i64;
            self.calls.lock().unwrap().push("process".into());
            Ok(())
        }
        fn on_watermark(&mut self, w: i64, _out: &mut Collector) -> Result<()> {
            self.calls.lock().unwrap().push(format!("watermark {w}"));
            Ok(())
        }
        fn on_barrier(&mut self, epoch: Epoch, out: &mut Collector) -> Result<()> {
            self.calls.lock().unwrap().push(format!("barrier {epoch}"));
            if self.n > 0 || self.flaws.emit_when_empty {
                let b = if self.flaws.wrong_schema {
                    let s = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
                    RecordBatch::try_new(s, vec![Arc::new(Int64Array::from(vec![self.n]))])?
                } else {
                    RecordBatch::try_new(
                        count_schema(),
                        vec![Arc::new(Int64Array::from(vec![self.n]))],
                    )?
                };
                out.emit(b);
            }
            Ok(())
        }
        fn on_end(&mut self, out: &mut Collector) -> Result<()> {
            if self.flaws.emit_at_end_twice {
                out.emit(RecordBatch::try_new(
                    count_schema(),
                    vec![Arc::new(Int64Array::from(vec![-1]))],
                )?);
            }
            Ok(())
        }
        fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
            Ok(Some(self.n.to_le_bytes().to_vec()))
        }
        fn restore(&mut self, state: &[u8]) -> Result<()> {
            if !self.flaws.forget_state {
                self.n = i64::from_le_bytes(state.try_into().unwrap());
            }
            Ok(())
        }
    }

    fn counter_logging(flaws: Flaws, calls: Arc<std::sync::Mutex<Vec<String>>>) -> Built {
        Built::new(
            Counter { n: 0, flaws, calls },
            vec![OutputPort::main(count_schema(), OutputMode::Complete)],
        )
    }

    fn counter(flaws: Flaws) -> impl Fn() -> Result<Built> {
        move || Ok(counter_logging(flaws, Default::default()))
    }

    fn script() -> Script {
        Script::new(schema())
            .batch(batch(&[("a", "2026-01-01T00:00:00Z")]))
            .barrier()
            .batch(batch(&[("b", "2026-01-01T00:01:00Z"), ("c", "bad")]))
            .barrier()
            .end()
    }

    fn counts(out: &Output) -> Vec<i64> {
        out.main()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn a_well_behaved_operator_passes_and_the_run_is_returned() {
        let run = check_operator(counter(Flaws::default()), &script());
        assert_eq!(run.steps.len(), 5);
        assert_eq!(counts(&run.steps[1]), [1]);
        assert_eq!(counts(&run.steps[3]), [3]);
        assert_eq!(counts(&run.all()), [1, 3]);
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let e = std::panic::catch_unwind(f).expect_err("must panic");
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn each_broken_rule_is_named() {
        let cases = [
            (
                Flaws {
                    forget_state: true,
                    ..Flaws::default()
                },
                "(a) after a restore from the snapshot of step 1 (epoch 1), step 3 (Barrier)",
            ),
            (
                Flaws {
                    emit_at_end_twice: true,
                    ..Flaws::default()
                },
                "(b) a second on_end emitted rows",
            ),
            (
                Flaws {
                    emit_when_empty: true,
                    ..Flaws::default()
                },
                "(c) on empty input, Barrier emitted rows",
            ),
            (
                Flaws {
                    wrong_schema: true,
                    ..Flaws::default()
                },
                "(d) a batch emitted on port `out` does not have the port's declared schema",
            ),
        ];
        for (flaws, want) in cases {
            let text = panic_text(move || {
                check_operator(counter(flaws), &script());
            });
            assert!(text.contains(want), "want {want:?} in:\n{text}");
        }
        let text = panic_text(|| {
            check_operator(counter(Flaws::default()), &script().barrier());
        });
        assert!(text.contains("steps after End"), "{text}");
    }

    #[test]
    fn a_restore_that_loses_state_shows_the_rows() {
        let text = panic_text(|| {
            check_operator(
                counter(Flaws {
                    forget_state: true,
                    ..Flaws::default()
                }),
                &script(),
            );
        });
        assert!(text.contains("missing rows:\n    1 x n: 3"), "{text}");
        assert!(text.contains("extra rows:\n    1 x n: 2"), "{text}");
    }

    #[test]
    fn barriers_send_the_runtime_watermark_first() {
        let e = EventTime {
            column: "t".into(),
            lateness_ms: 1_000,
            idle_timeout: Duration::from_secs(30),
        };
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut h = Harness::new(counter_logging(Flaws::default(), calls.clone()))
            .with_input(schema())
            .with_event_time(&e);
        let (p0, p1) = (PartitionId::kafka("t", 0), PartitionId::kafka("t", 1));
        let t0 = crate::time::parse_timestamp_ms("2026-01-01T00:00:00Z").unwrap();
        h.process_from(&p0, batch(&[("a", "2026-01-01T00:10:00Z")]))
            .unwrap();
        h.process_from(&p1, batch(&[("b", "2026-01-01T00:00:00Z"), ("c", "x")]))
            .unwrap();
        h.barrier().unwrap();
        assert_eq!(
            h.current_watermark(),
            Some(t0 - 1_000),
            "the slowest partition"
        );
        // Partition 1 idle past the timeout: partition 0 alone counts.
        h.wait(Duration::from_secs(31));
        h.process_from(&p0, batch(&[("a", "2026-01-01T00:11:00Z")]))
            .unwrap();
        h.barrier().unwrap();
        assert_eq!(h.current_watermark(), Some(t0 + 11 * 60_000 - 1_000));
        // An upstream watermark below the current one is not given.
        assert!(h.watermark(t0).unwrap().is_empty());
        assert_eq!(h.epoch(), 2);
        let w1 = t0 - 1_000;
        let w2 = t0 + 11 * 60_000 - 1_000;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "process".to_string(),
                "process".into(),
                format!("watermark {w1}"),
                "barrier 1".into(),
                "process".into(),
                format!("watermark {w2}"),
                "barrier 2".into(),
            ],
            "each watermark once, before its barrier"
        );
        let cp = h.last_checkpoint().unwrap().clone();
        assert_eq!(cp.epoch, 2);
        let r = Harness::restore(counter(Flaws::default())().unwrap(), &cp).unwrap();
        assert_eq!(r.current_watermark(), h.current_watermark());
    }
}
