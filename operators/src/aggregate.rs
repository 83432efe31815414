//! `aggregate` (global, per group) and `window_aggregate` (per group and event-time window).
//!
//! Aggregates: `count`, `sum`, `avg`, `min`, `max`, each with an optional `filter` condition.
//! Output modes follow Spark's rules:
//! - `append` (windows only): a window is emitted once, when the watermark closes it, and its state
//!   is dropped then;
//! - `update`: at each trigger, the rows that changed since the last one;
//! - `complete`: at each trigger with changes, the whole result.
//!
//! The watermark is the largest event time seen minus `watermark` (default 2 minutes), advanced at
//! each trigger. When the input carries Kafka's `partition` column, "largest event time seen" is
//! taken per partition and the smallest of those counts (as Flink does), so a partition read
//! ahead of the others in a backfill cannot make theirs late; a partition that has not advanced
//! for `idle_timeout` (default 30 s of wall time) stops holding the watermark back. Events older
//! than the watermark are late: counted, logged, and left out of the windows (they still reach
//! every other branch, such as bronze).

use crate::expr::{self, Expr};
use crate::time::event_times;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use arrow_row::{RowConverter, SortField};
use engine_api::{
    BuildContext, Collector, EngineError, Epoch, Operator, OperatorConfig, OutputMode, Result,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The event-time column: ISO-8601 text or a timestamp.
    pub time_column: String,
    /// Window length, such as `"1m"`.
    pub window: String,
    /// Hopping windows: the slide, such as `"30s"`. Tumbling when absent.
    #[serde(default)]
    pub slide: Option<String>,
    /// How late an event may be, behind the largest event time seen (default `"2m"`).
    #[serde(default = "two_minutes")]
    pub watermark: String,
    #[serde(default)]
    pub group_by: Vec<String>,
    pub aggregates: Vec<AggSpec>,
    /// `append` (default), `update` or `complete`.
    #[serde(default = "append")]
    pub output_mode: OutputMode,
    /// Emit at most this often (see `aggregate`).
    #[serde(default)]
    pub emit_every: Option<String>,
    /// A Kafka partition whose largest event time has not advanced for this long (wall time)
    /// no longer holds the watermark back (default `"30s"`).
    #[serde(default = "thirty_seconds")]
    pub idle_timeout: String,
}

fn thirty_seconds() -> String {
    "30s".into()
}

fn complete() -> OutputMode {
    OutputMode::Complete
}
fn append() -> OutputMode {
    OutputMode::Append
}
fn two_minutes() -> String {
    "2m".into()
}

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The accepted ranges of the time options, as the README documents them.
const WINDOW_RANGE: (Duration, Duration) = (
    Duration::from_millis(100),
    Duration::from_secs(31 * 24 * 3600),
);
const WATERMARK_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(31 * 24 * 3600));
const IDLE_RANGE: (Duration, Duration) = (Duration::ZERO, DAY);
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
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Operator>> {
        if self.output_mode == OutputMode::Append {
            return Err(EngineError::config(
                "output_mode = \"append\" needs event-time windows and a watermark (a running aggregate is never final); use window_aggregate, or output_mode = \"update\" or \"complete\"",
            ));
        }
        let mut a = Aggregator::new(ctx, None, self.group_by, self.aggregates, self.output_mode)?;
        a.emit_every = emit_every(self.emit_every.as_deref())?;
        Ok(Box::new(a))
    }
}

impl OperatorConfig for WindowAggregateConfig {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Operator>> {
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
        let windows = Windows {
            column: self.time_column,
            size,
            slide,
            delay: duration_ms("watermark", &self.watermark, WATERMARK_RANGE)?,
            idle: Duration::from_millis(
                duration_ms("idle_timeout", &self.idle_timeout, IDLE_RANGE)? as u64,
            ),
        };
        let mut a = Aggregator::new(
            ctx,
            Some(windows),
            self.group_by,
            self.aggregates,
            self.output_mode,
        )?;
        a.emit_every = emit_every(self.emit_every.as_deref())?;
        Ok(Box::new(a))
    }
}

#[derive(Debug, Clone)]
struct Windows {
    column: String,
    size: i64,
    slide: i64,
    delay: i64,
    /// A partition idle this long stops holding the watermark back.
    idle: Duration,
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
#[derive(Default, Serialize, Deserialize)]
struct State {
    groups: HashMap<(i64, Vec<u8>), Vec<Acc>, ahash::RandomState>,
    watermark: Option<i64>,
    max_event_time: Option<i64>,
    /// The largest event time per Kafka partition, when the input has a `partition` column.
    partition_max: BTreeMap<i32, i64>,
    late_events: u64,
    unparsed_time: u64,
}

pub struct Aggregator {
    node: String,
    windows: Option<Windows>,
    group_by: Vec<String>,
    specs: Vec<Spec>,
    raw_specs: Vec<AggSpec>,
    mode: OutputMode,
    converter: Option<RowConverter>,
    schema: SchemaRef,
    state: State,
    /// Keys changed since the last trigger (update and complete modes).
    dirty: BTreeSet<(i64, Vec<u8>)>,
    /// When each partition's largest event time last advanced (wall time, not checkpointed).
    partition_advanced: HashMap<i32, Instant>,
    reported_late: u64,
    emit_every: Option<i64>,
    last_emit: Option<std::time::Instant>,
}

impl Aggregator {
    /// The event time the watermark trails: the smallest of the partitions' largest event
    /// times, leaving out partitions idle past `idle_timeout` (unless all are), or the largest
    /// event time seen when the input has no partition column.
    fn watermark_base(&self, w: &Windows) -> Option<i64> {
        if self.state.partition_max.is_empty() {
            return self.state.max_event_time;
        }
        let active = self
            .state
            .partition_max
            .iter()
            .filter(|(p, _)| {
                self.partition_advanced
                    .get(p)
                    .is_none_or(|t| t.elapsed() < w.idle)
            })
            .map(|(_, m)| *m)
            .min();
        active.or_else(|| self.state.partition_max.values().copied().min())
    }

    fn new(
        ctx: &BuildContext,
        windows: Option<Windows>,
        group_by: Vec<String>,
        aggregates: Vec<AggSpec>,
        mode: OutputMode,
    ) -> Result<Self> {
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
        Ok(Aggregator {
            node: ctx.node.clone(),
            windows,
            group_by,
            specs,
            raw_specs: aggregates,
            mode,
            converter: None,
            schema: Arc::new(Schema::empty()),
            state: State::default(),
            dirty: BTreeSet::new(),
            partition_advanced: HashMap::new(),
            reported_late: 0,
            emit_every: None,
            last_emit: None,
        })
    }

    fn emit_keys(&mut self, keys: Vec<(i64, Vec<u8>)>, out: &mut Collector) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let conv = self.converter.as_ref().expect("init");
        let parser = conv.parser();
        let mut columns: Vec<ArrayRef> = if self.group_by.is_empty() {
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

impl Operator for Aggregator {
    fn init(&mut self, input: &SchemaRef) -> Result<Vec<SchemaRef>> {
        let mut fields = Vec::new();
        let mut sort_fields = Vec::new();
        for (k, g) in self.group_by.iter().enumerate() {
            let i =
                crate::column_index(input, g).map_err(|e| e.for_key(format!("group_by[{k}]")))?;
            let f = input.field(i);
            fields.push(f.clone().with_nullable(true));
            sort_fields.push(SortField::new(f.data_type().clone()));
        }
        self.converter = Some(RowConverter::new(sort_fields)?);
        if let Some(w) = &self.windows {
            let i = crate::column_index(input, &w.column).map_err(|e| e.for_key("time_column"))?;
            match input.field(i).data_type() {
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
            let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
            fields.push(Field::new("window_start", ts.clone(), false));
            fields.push(Field::new("window_end", ts, false));
        }
        for (k, spec) in self.specs.iter_mut().enumerate() {
            if let Some(c) = &spec.column {
                let key = format!("aggregates[{k}].column");
                let i = crate::column_index(input, c).map_err(|e| e.for_key(&key))?;
                let dt = input.field(i).data_type();
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
                f.check_condition(input)
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
        self.schema = Arc::new(Schema::new(fields));
        Ok(vec![self.schema.clone()])
    }

    fn output_mode(&self, _input: OutputMode) -> Result<OutputMode> {
        Ok(self.mode)
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        let conv = self.converter.as_ref().expect("init");
        let keys: Vec<Vec<u8>> = if self.group_by.is_empty() {
            vec![Vec::new(); n]
        } else {
            let cols: Vec<ArrayRef> = self
                .group_by
                .iter()
                .map(|g| batch.column_by_name(g).expect("checked").clone())
                .collect();
            let rows = conv.convert_columns(&cols)?;
            (0..n).map(|i| rows.row(i).as_ref().to_vec()).collect()
        };
        let times = match &self.windows {
            Some(w) => Some(event_times(
                batch.column_by_name(&w.column).expect("checked"),
            )?),
            None => None,
        };
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
        // Kafka's partition column, for the per-partition watermark.
        let partitions = batch
            .column_by_name("partition")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .cloned();
        let mut advanced: Vec<i32> = Vec::new();
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
                    self.state.max_event_time =
                        Some(self.state.max_event_time.map_or(t, |m| m.max(t)));
                    if let Some(p) = partitions.as_ref().filter(|p| p.is_valid(row)) {
                        let p = p.value(row);
                        let m = self.state.partition_max.entry(p).or_insert(i64::MIN);
                        if t > *m {
                            *m = t;
                            if !advanced.contains(&p) {
                                advanced.push(p);
                            }
                        }
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
        if !advanced.is_empty() {
            let now = Instant::now();
            for p in advanced {
                self.partition_advanced.insert(p, now);
            }
        }
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: Epoch, out: &mut Collector) -> Result<()> {
        // Advance the watermark at the trigger, as Spark does between micro-batches.
        if let Some(w) = &self.windows
            && let Some(max) = self.watermark_base(w)
        {
            let wm = max - w.delay;
            self.state.watermark = Some(self.state.watermark.map_or(wm, |old| old.max(wm)));
        }
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
            max_event_time: self.state.max_event_time,
            partition_max: self.state.partition_max.clone(),
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
            max_event_time: snap.max_event_time,
            partition_max: snap.partition_max,
            late_events: snap.late_events,
            unparsed_time: snap.unparsed_time,
        };
        // Idleness restarts from the restore: every partition counts until it proves idle.
        let now = Instant::now();
        self.partition_advanced = self.state.partition_max.keys().map(|p| (*p, now)).collect();
        self.reported_late = self.state.late_events;
        // Changes a trigger held back (`emit_every`) are still to be emitted.
        self.dirty = snap.dirty.into_iter().collect();
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.state.groups.len()
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    groups: Vec<(i64, Vec<u8>, Vec<Acc>)>,
    watermark: Option<i64>,
    max_event_time: Option<i64>,
    #[serde(default)]
    partition_max: BTreeMap<i32, i64>,
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
