//! `aggregate` (global, per group) and `window_aggregate` (per group and event-time window).
//!
//! Aggregates: `count`, `sum`, `avg`, `min`, `max`, each with an optional `filter` condition.
//! Output modes follow Spark's rules:
//! - `append` (windows only): a window is emitted once, when the watermark closes it, and its state
//!   is dropped then;
//! - `update`: at each trigger, the rows that changed since the last one;
//! - `complete`: at each trigger with changes, the whole result.
//!
//! Event time belongs to the runtime: the pipeline declares it once, on the node where its column
//! first exists (`event_time = { column = "timestamp", lateness = "2m" }`), and the runtime sends
//! the watermark (per source partition, the slowest one less the lateness; idle partitions
//! released) before each trigger. A window aggregate groups by that column and reacts to the
//! watermark: events older than it are late (counted, logged, and left out of the windows; they
//! still reach every other branch, such as bronze), and windows it closes are emitted at the
//! trigger.

use crate::expr::{self, Expr};
use crate::time::event_times;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow_row::{RowConverter, SortField};
use engine_api::{
    BuildContext, Built, Collector, EngineError, Epoch, Input, Operator, OperatorConfig,
    OutputMode, OutputPort, Result,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// One aggregate column: `{ name = "ca_total", fn = "sum", column = "subtotal" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggSpec {
    /// The output column's name.
    pub name: String,
    #[serde(rename = "fn")]
    pub func: AggFn,
    /// The input column (not for `count`).
    #[serde(default)]
    pub column: Option<String>,
    /// Only rows where this condition holds count, such as `level = 'ERROR'`.
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AggFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// `type = "aggregate"`: a running aggregate per group, over the whole stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    #[serde(default)]
    pub group_by: Vec<String>,
    pub aggregates: Vec<AggSpec>,
    /// `complete` (default) or `update`; `append` needs windows and a watermark.
    #[serde(default = "complete")]
    pub output_mode: OutputMode,
    /// Emit at most this often (at the first trigger after it elapses), like a slower trigger
    /// for this node alone. Default: every trigger.
    #[serde(default)]
    pub emit_every: Option<String>,
}

/// `type = "window_aggregate"`: per group and event-time window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowAggregateConfig {
    /// The event-time column: by default the pipeline's, declared upstream with `event_time`;
    /// if given, it must be that one.
    #[serde(default)]
    pub time_column: Option<String>,
    /// Window length, such as `"1m"`.
    pub window: String,
    /// Hopping windows: the slide, such as `"30s"`. Tumbling when absent.
    #[serde(default)]
    pub slide: Option<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    pub aggregates: Vec<AggSpec>,
    /// `append` (default), `update` or `complete`.
    #[serde(default = "append")]
    pub output_mode: OutputMode,
    /// Emit at most this often (see `aggregate`).
    #[serde(default)]
    pub emit_every: Option<String>,
    /// Moved to the node's `event_time` declaration (`lateness`); read only to say so.
    #[serde(default)]
    watermark: Option<IgnoredAny>,
    /// Moved to the node's `event_time` declaration (`idle_timeout`); read only to say so.
    #[serde(default)]
    idle_timeout: Option<IgnoredAny>,
}

/// The error for a window option that moved to the pipeline's event-time declaration.
fn moved_to_event_time(key: &str, instead: &str) -> EngineError {
    EngineError::invalid(
        key,
        format!(
            "moved to the pipeline's event time: write `{instead}` in `event_time = {{ column = \"...\", lateness = \"2m\", idle_timeout = \"30s\" }}` on the node where the event-time column first exists (such as the parser), and remove `{key}` here"
        ),
    )
}

/// What to declare when no event time reaches a window.
fn declare_event_time(column: Option<&str>) -> EngineError {
    let column = column.unwrap_or("...");
    EngineError::invalid(
        "time_column",
        format!(
            "no event time is declared upstream, so no watermark would ever close a window; declare `event_time = {{ column = \"{column}\", lateness = \"2m\" }}` on the node where the column first exists (such as the parser)"
        ),
    )
}

fn complete() -> OutputMode {
    OutputMode::Complete
}
fn append() -> OutputMode {
    OutputMode::Append
}

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The accepted ranges of the time options, as the README documents them.
const WINDOW_RANGE: (Duration, Duration) = (
    Duration::from_millis(100),
    Duration::from_secs(31 * 24 * 3600),
);
const EMIT_EVERY_RANGE: (Duration, Duration) = (Duration::from_millis(100), DAY);
/// Most windows one event falls into (`window` / `slide`): a day of one-minute slides.
pub const MAX_WINDOWS_PER_EVENT: i64 = 1440;

fn duration_ms(key: &str, s: &str, range: (Duration, Duration)) -> Result<i64> {
    Ok(engine_api::parse_duration(key, s, range.0, range.1)?.as_millis() as i64)
}

fn emit_every(e: Option<&str>) -> Result<Option<i64>> {
    e.map(|e| duration_ms("emit_every", e, EMIT_EVERY_RANGE))
        .transpose()
}

impl OperatorConfig for AggregateConfig {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Built> {
        if self.output_mode == OutputMode::Append {
            return Err(EngineError::config(
                "output_mode = \"append\" needs event-time windows and a watermark (a running aggregate is never final); use window_aggregate, or output_mode = \"update\" or \"complete\"",
            ));
        }
        let settings = Settings {
            group_by: self.group_by,
            aggregates: self.aggregates,
            mode: self.output_mode,
            emit_every: self.emit_every,
        };
        Aggregator::build(ctx, input, None, settings)
    }
}

impl OperatorConfig for WindowAggregateConfig {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Built> {
        if self.watermark.is_some() {
            return Err(moved_to_event_time("watermark", "lateness"));
        }
        if self.idle_timeout.is_some() {
            return Err(moved_to_event_time("idle_timeout", "idle_timeout"));
        }
        let size = duration_ms("window", &self.window, WINDOW_RANGE)?;
        let slide = match &self.slide {
            Some(s) => duration_ms("slide", s, WINDOW_RANGE)?,
            None => size,
        };
        if slide > size || size % slide != 0 {
            return Err(EngineError::invalid(
                "slide",
                "`window` must be a multiple of `slide`, and `slide` at most `window`",
            ));
        }
        if size / slide > MAX_WINDOWS_PER_EVENT {
            return Err(EngineError::invalid(
                "slide",
                format!(
                    "too small: an event would fall into more than {MAX_WINDOWS_PER_EVENT} windows (`window` / `slide`)"
                ),
            ));
        }
        let column = match (self.time_column, &input.event_time) {
            (None, Some(declared)) => declared.clone(),
            (Some(given), Some(declared)) if &given == declared => given,
            (Some(given), Some(declared)) => {
                return Err(EngineError::invalid(
                    "time_column",
                    format!(
                        "`{given}` is not the pipeline's event-time column `{declared}`, which the watermark follows; remove time_column (windows use `{declared}`), or declare `{given}` as the event time"
                    ),
                ));
            }
            (given, None) => return Err(declare_event_time(given.as_deref())),
        };
        let windows = Windows {
            column,
            size,
            slide,
        };
        let settings = Settings {
            group_by: self.group_by,
            aggregates: self.aggregates,
            mode: self.output_mode,
            emit_every: self.emit_every,
        };
        Aggregator::build(ctx, input, Some(windows), settings)
    }
}

#[derive(Debug, Clone)]
struct Windows {
    column: String,
    size: i64,
    slide: i64,
}

/// What `aggregate` and `window_aggregate` share.
struct Settings {
    group_by: Vec<String>,
    aggregates: Vec<AggSpec>,
    mode: OutputMode,
    emit_every: Option<String>,
}

/// The running state of one aggregate in one group.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Acc {
    count: i64,
    sum: f64,
    isum: i64,
    min: f64,
    max: f64,
    /// Integer input: min and max as integers (a double holds them exactly only below 2^53).
    #[serde(default)]
    imin: i64,
    #[serde(default)]
    imax: i64,
}

impl Acc {
    fn add(&mut self, v: f64, iv: i64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
            self.imin = iv;
            self.imax = iv;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.imin = self.imin.min(iv);
            self.imax = self.imax.max(iv);
        }
        self.count += 1;
        self.sum += v;
        self.isum = self.isum.wrapping_add(iv);
    }
}

struct Spec {
    name: String,
    func: AggFn,
    column: Option<String>,
    filter: Option<Expr>,
    /// Integer input: sums, mins and maxes stay integers.
    int: bool,
}

/// The state: per (window start, group key), one accumulator per aggregate.
#[derive(Default)]
struct State {
    groups: HashMap<(i64, Vec<u8>), Vec<Acc>, ahash::RandomState>,
    /// The largest watermark received (windows only).
    watermark: Option<i64>,
    late_events: u64,
    unparsed_time: u64,
}

pub struct Aggregator {
    node: String,
    windows: Option<Windows>,
    /// The `group_by` columns' indices in the input.
    group_idx: Vec<usize>,
    /// The event-time column's index in the input (windows only).
    time_idx: Option<usize>,
    specs: Vec<Spec>,
    raw_specs: Vec<AggSpec>,
    mode: OutputMode,
    converter: RowConverter,
    schema: SchemaRef,
    state: State,
    /// Keys changed since the last trigger (update and complete modes).
    dirty: BTreeSet<(i64, Vec<u8>)>,
    reported_late: u64,
    emit_every: Option<i64>,
    last_emit: Option<std::time::Instant>,
}

impl Aggregator {
    /// Checks the settings against the input and declares the output port, in the node's own
    /// output mode.
    fn build(
        ctx: &BuildContext,
        input: &Input,
        windows: Option<Windows>,
        settings: Settings,
    ) -> Result<Built> {
        let Settings {
            group_by,
            aggregates,
            mode,
            emit_every: every,
        } = settings;
        if aggregates.is_empty() {
            return Err(EngineError::invalid("aggregates", "is empty"));
        }
        let mut specs = Vec::new();
        for (i, a) in aggregates.iter().enumerate() {
            if a.func != AggFn::Count && a.column.is_none() {
                return Err(EngineError::invalid(
                    format!("aggregates[{i}]"),
                    format!("aggregate `{}` needs a `column`", a.name),
                ));
            }
            let filter = a
                .filter
                .as_deref()
                .map(expr::parse)
                .transpose()
                .map_err(|e| e.for_key(format!("aggregates[{i}].filter")))?;
            specs.push(Spec {
                name: a.name.clone(),
                func: a.func,
                column: a.column.clone(),
                filter,
                int: false,
            });
        }
        let emit_every = emit_every(every.as_deref())?;

        let schema = &input.schema;
        let mut fields = Vec::new();
        let mut sort_fields = Vec::new();
        let mut group_idx = Vec::new();
        for (k, g) in group_by.iter().enumerate() {
            let i =
                crate::column_index(schema, g).map_err(|e| e.for_key(format!("group_by[{k}]")))?;
            let f = schema.field(i);
            fields.push(f.clone().with_nullable(true));
            sort_fields.push(SortField::new(f.data_type().clone()));
            group_idx.push(i);
        }
        let converter = RowConverter::new(sort_fields)?;
        let mut time_idx = None;
        if let Some(w) = &windows {
            let i = crate::column_index(schema, &w.column).map_err(|e| e.for_key("time_column"))?;
            match schema.field(i).data_type() {
                DataType::Utf8 | DataType::Timestamp(_, _) => {}
                other => {
                    return Err(EngineError::invalid(
                        "time_column",
                        format!(
                            "column `{}` is {other}; it must be ISO-8601 text or a timestamp",
                            w.column
                        ),
                    ));
                }
            }
            time_idx = Some(i);
            let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
            fields.push(Field::new("window_start", ts.clone(), false));
            fields.push(Field::new("window_end", ts, false));
        }
        for (k, spec) in specs.iter_mut().enumerate() {
            if let Some(c) = &spec.column {
                let key = format!("aggregates[{k}].column");
                let i = crate::column_index(schema, c).map_err(|e| e.for_key(&key))?;
                let dt = schema.field(i).data_type();
                if !dt.is_numeric() {
                    return Err(EngineError::invalid(
                        key,
                        format!(
                            "aggregate `{}`: column `{c}` is {dt}, it must be numeric",
                            spec.name
                        ),
                    ));
                }
                spec.int = dt.is_integer();
            }
            if let Some(f) = &spec.filter {
                f.check_condition(schema)
                    .map_err(|e| e.context(format!("aggregate `{}`: filter", spec.name)))?;
            }
            let dt = match (spec.func, spec.int) {
                (AggFn::Count, _) => DataType::Int64,
                (AggFn::Avg, _) => DataType::Float64,
                (_, true) => DataType::Int64,
                (_, false) => DataType::Float64,
            };
            fields.push(Field::new(&spec.name, dt, spec.func != AggFn::Count));
        }
        let mut names = BTreeSet::new();
        for f in &fields {
            if !names.insert(f.name().clone()) {
                return Err(EngineError::config(format!(
                    "two output columns are named `{}`",
                    f.name()
                )));
            }
        }
        let out = Arc::new(Schema::new(fields));
        let reads: Vec<String> = group_by
            .iter()
            .cloned()
            .chain(windows.iter().map(|w| w.column.clone()))
            .chain(specs.iter().flat_map(|s| {
                let filter = s.filter.iter().flat_map(Expr::columns);
                s.column.iter().cloned().chain(filter)
            }))
            .collect();
        let op = Aggregator {
            node: ctx.node.clone(),
            windows,
            group_idx,
            time_idx,
            specs,
            raw_specs: aggregates,
            mode,
            converter,
            schema: out.clone(),
            state: State::default(),
            dirty: BTreeSet::new(),
            reported_late: 0,
            emit_every,
            last_emit: None,
        };
        Ok(Built::new(op, vec![OutputPort::main(out, mode)]).reading(reads))
    }

    fn emit_keys(&mut self, keys: Vec<(i64, Vec<u8>)>, out: &mut Collector) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let conv = &self.converter;
        let parser = conv.parser();
        let mut columns: Vec<ArrayRef> = if self.group_idx.is_empty() {
            Vec::new()
        } else {
            conv.convert_rows(keys.iter().map(|(_, k)| parser.parse(k)))?
        };
        if let Some(w) = &self.windows {
            columns.push(Arc::new(
                TimestampMillisecondArray::from_iter_values(keys.iter().map(|(s, _)| *s))
                    .with_timezone("UTC"),
            ));
            columns.push(Arc::new(
                TimestampMillisecondArray::from_iter_values(keys.iter().map(|(s, _)| s + w.size))
                    .with_timezone("UTC"),
            ));
        }
        for (i, spec) in self.specs.iter().enumerate() {
            let accs = keys.iter().map(|k| self.state.groups[k][i]);
            let col: ArrayRef = match (spec.func, spec.int) {
                (AggFn::Count, _) => Arc::new(Int64Array::from_iter_values(accs.map(|a| a.count))),
                (AggFn::Sum, true) => Arc::new(Int64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.isum)),
                )),
                (AggFn::Sum, false) => Arc::new(Float64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.sum)),
                )),
                (AggFn::Avg, _) => Arc::new(Float64Array::from_iter(
                    accs.map(|a| (a.count > 0).then(|| a.sum / a.count as f64)),
                )),
                (AggFn::Min, true) => Arc::new(Int64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.imin)),
                )),
                (AggFn::Min, false) => Arc::new(Float64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.min)),
                )),
                (AggFn::Max, true) => Arc::new(Int64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.imax)),
                )),
                (AggFn::Max, false) => Arc::new(Float64Array::from_iter(
                    accs.map(|a| (a.count > 0).then_some(a.max)),
                )),
            };
            columns.push(col);
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

impl Aggregator {
    /// Adds a batch's rows to the groups (the body of [`Operator::process`]).
    fn add(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        let keys: Vec<Vec<u8>> = if self.group_idx.is_empty() {
            vec![Vec::new(); n]
        } else {
            let cols: Vec<ArrayRef> = self
                .group_idx
                .iter()
                .map(|i| batch.column(*i).clone())
                .collect();
            let rows = self.converter.convert_columns(&cols)?;
            (0..n).map(|i| rows.row(i).as_ref().to_vec()).collect()
        };
        let times = self
            .time_idx
            .map(|i| event_times(batch.column(i)))
            .transpose()?;
        // Per aggregate: values as f64 and i64, and the filter mask.
        let mut values: Vec<(
            Option<Float64Array>,
            Option<Int64Array>,
            Option<BooleanArray>,
        )> = Vec::new();
        for spec in &self.specs {
            let (f, i) = match &spec.column {
                Some(c) => {
                    let col = batch.column_by_name(c).expect("checked");
                    let f = cast(col, &DataType::Float64)?
                        .as_primitive::<Float64Type>()
                        .clone();
                    let i = spec.int.then(|| cast(col, &DataType::Int64)).transpose()?;
                    (Some(f), i.map(|a| a.as_primitive::<Int64Type>().clone()))
                }
                None => (None, None),
            };
            let mask = spec.filter.as_ref().map(|e| e.bools(&batch)).transpose()?;
            values.push((f, i, mask));
        }
        let track = self.mode != OutputMode::Append;
        let n_specs = self.specs.len();
        for (row, mut key) in keys.into_iter().enumerate() {
            let (first, n_starts, slide) = match (&self.windows, &times) {
                (Some(w), Some(t)) => {
                    if t.is_null(row) {
                        self.state.unparsed_time += 1;
                        continue;
                    }
                    let t = t.value(row);
                    if self.state.watermark.is_some_and(|wm| t < wm) {
                        self.state.late_events += 1;
                        continue;
                    }
                    // The windows holding `t`: `first`, then `slide` back, while they reach `t`.
                    let first = t.div_euclid(w.slide) * w.slide;
                    let n = (0..w.size / w.slide)
                        .take_while(|k| first - k * w.slide + w.size > t)
                        .count();
                    (first, n, w.slide)
                }
                _ => (0, 1, 0),
            };
            for k in 0..n_starts {
                let start = first - k as i64 * slide;
                // The last window takes the key itself: one allocation per row when tumbling.
                let bytes = if k + 1 == n_starts {
                    std::mem::take(&mut key)
                } else {
                    key.clone()
                };
                let gk = (start, bytes);
                if track {
                    self.dirty.insert(gk.clone());
                }
                let accs = self
                    .state
                    .groups
                    .entry(gk)
                    .or_insert_with(|| vec![Acc::default(); n_specs]);
                for (i, (f, iv, mask)) in values.iter().enumerate() {
                    if mask
                        .as_ref()
                        .is_some_and(|m| m.is_null(row) || !m.value(row))
                    {
                        continue;
                    }
                    match f {
                        None => accs[i].add(0.0, 0),
                        Some(f) if f.is_null(row) => {}
                        Some(f) => {
                            accs[i].add(f.value(row), iv.as_ref().map_or(0, |a| a.value(row)))
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Operator for Aggregator {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let (late_before, unparsed_before) = (self.state.late_events, self.state.unparsed_time);
        let added = self.add(batch);
        let late = self.state.late_events - late_before;
        out.late(late);
        out.dropped("late", late);
        out.dropped(
            "null_event_time",
            self.state.unparsed_time - unparsed_before,
        );
        added
    }

    /// The runtime's watermark: events older than it are late from now on. Windows it closes
    /// are emitted at the trigger that follows.
    fn on_watermark(&mut self, watermark_ms: i64, _out: &mut Collector) -> Result<()> {
        if self.windows.is_some() {
            self.state.watermark = Some(
                self.state
                    .watermark
                    .map_or(watermark_ms, |old| old.max(watermark_ms)),
            );
        }
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: Epoch, out: &mut Collector) -> Result<()> {
        if self.state.late_events > self.reported_late {
            tracing::warn!(
                node = %self.node,
                late_events = self.state.late_events - self.reported_late,
                total_late_events = self.state.late_events,
                watermark = %self.state.watermark.map(crate::time::fmt_ms).unwrap_or_default(),
                "events older than the watermark were left out of the windows"
            );
            self.reported_late = self.state.late_events;
        }
        if let (Some(every), Some(last)) = (self.emit_every, self.last_emit)
            && (last.elapsed().as_millis() as i64) < every
        {
            return Ok(());
        }
        self.last_emit = Some(std::time::Instant::now());
        let closed = |s: &i64, w: &Windows, wm: Option<i64>| wm.is_some_and(|wm| s + w.size <= wm);
        match self.mode {
            OutputMode::Append => {
                let w = self.windows.clone().expect("append needs windows");
                let wm = self.state.watermark;
                let mut keys: Vec<_> = self
                    .state
                    .groups
                    .keys()
                    .filter(|(s, _)| closed(s, &w, wm))
                    .cloned()
                    .collect();
                keys.sort();
                self.emit_keys(keys.clone(), out)?;
                for k in keys {
                    self.state.groups.remove(&k);
                }
            }
            OutputMode::Update => {
                let keys: Vec<_> = std::mem::take(&mut self.dirty).into_iter().collect();
                self.emit_keys(keys, out)?;
                if let Some(w) = self.windows.clone() {
                    let wm = self.state.watermark;
                    self.state.groups.retain(|(s, _), _| !closed(s, &w, wm));
                }
            }
            OutputMode::Complete => {
                if !self.dirty.is_empty() {
                    self.dirty.clear();
                    let mut keys: Vec<_> = self.state.groups.keys().cloned().collect();
                    keys.sort();
                    self.emit_keys(keys, out)?;
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        let groups: Vec<_> = self
            .state
            .groups
            .iter()
            .map(|((s, k), v)| (*s, k.clone(), v.clone()))
            .collect();
        let snap = Snapshot {
            groups,
            watermark: self.state.watermark,
            late_events: self.state.late_events,
            unparsed_time: self.state.unparsed_time,
            specs: self.raw_specs.iter().map(|s| s.name.clone()).collect(),
            dirty: self.dirty.iter().cloned().collect(),
        };
        Ok(Some(serde_json::to_vec(&snap).map_err(|e| {
            EngineError::runtime(format!("snapshot: {e}"))
        })?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let snap: Snapshot = serde_json::from_slice(state)
            .map_err(|e| EngineError::runtime(format!("corrupt state: {e}")))?;
        let names: Vec<_> = self.raw_specs.iter().map(|s| s.name.clone()).collect();
        if snap.specs != names {
            return Err(EngineError::config(format!(
                "node `{}`: the checkpointed state has aggregates {:?}, the pipeline now has {:?}; use a new checkpoint location after changing aggregates",
                self.node, snap.specs, names
            )));
        }
        self.state = State {
            groups: snap
                .groups
                .into_iter()
                .map(|(s, k, v)| ((s, k), v))
                .collect(),
            watermark: snap.watermark,
            late_events: snap.late_events,
            unparsed_time: snap.unparsed_time,
        };
        self.reported_late = self.state.late_events;
        // Changes a trigger held back (`emit_every`) are still to be emitted.
        self.dirty = snap.dirty.into_iter().collect();
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.state.groups.len()
    }
}

/// The checkpointed state, as JSON. Snapshots from before the runtime owned event time also
/// hold `max_event_time` and `partition_max`: unknown fields are ignored, so they still load
/// (the runtime's own tracker has those maxima now).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    groups: Vec<(i64, Vec<u8>, Vec<Acc>)>,
    watermark: Option<i64>,
    late_events: u64,
    unparsed_time: u64,
    specs: Vec<String>,
    /// Keys changed since the last emission (update and complete modes): not empty when
    /// `emit_every` held a trigger back.
    #[serde(default)]
    dirty: Vec<(i64, Vec<u8>)>,
}

impl Aggregator {
    /// Events left out of the windows for being older than the watermark.
    pub fn late_events(&self) -> u64 {
        self.state.late_events
    }
}
