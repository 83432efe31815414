//! `aggregate` and `window_aggregate` driven like the engine drives them, through
//! `engine_api::testing::Harness`: batches through `process`; at a trigger, the watermark the
//! runtime computes from the declared event time (the largest event time seen per source
//! partition, the slowest partition's less the lateness) through `on_watermark`, then
//! `on_barrier`. Every expected value comes from a plain model in this file (loops over the events
//! the test generated), never from the operator's output.

mod common;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampSecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use common::ctx;
use engine_api::testing::{Harness, Script, check_operator};
use engine_api::{
    Built, Collector, ErrorKind, EventTime, Input, OperatorConfig, OutputMode, PartitionId, Tally,
};
use operators::aggregate::{AggregateConfig, WindowAggregateConfig};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

/// 2026-03-01T10:00:00Z in ms, from the calendar.
fn base() -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 3, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

// ---------------------------------------------------------------------------------------------
// Events and input batches
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Ev {
    customer: String,
    total: Option<f64>,
    qty: Option<i64>,
    level: Option<String>,
    /// Event time in ms; `None` is written as a null or as text that is not a time.
    t: Option<i64>,
}

fn ev(customer: &str, t: i64, total: f64) -> Ev {
    Ev {
        customer: customer.into(),
        total: Some(total),
        qty: Some(1),
        level: Some("INFO".into()),
        t: Some(t),
    }
}

/// How the event-time column is written.
#[derive(Debug, Clone, Copy)]
enum TimeCol {
    /// ISO-8601 text, in three spellings (Z, +01:00, and a naive `YYYY-MM-DD HH:MM:SS.fff`).
    Text,
    Ts(TimeUnit, Option<&'static str>),
}

impl TimeCol {
    fn data_type(self) -> DataType {
        match self {
            TimeCol::Text => DataType::Utf8,
            TimeCol::Ts(unit, tz) => DataType::Timestamp(unit, tz.map(Into::into)),
        }
    }
}

fn input_schema(tc: TimeCol) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, true),
        Field::new("total", DataType::Float64, true),
        Field::new("qty", DataType::Int64, true),
        Field::new("level", DataType::Utf8, true),
        Field::new("ts", tc.data_type(), true),
    ]))
}

fn iso(t: i64, variant: usize) -> String {
    let utc = chrono::DateTime::from_timestamp_millis(t).unwrap();
    match variant % 3 {
        0 => utc.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        1 => (utc + chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%S%.3f+01:00")
            .to_string(),
        _ => utc.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    }
}

fn batch(evs: &[Ev], tc: TimeCol) -> RecordBatch {
    let ts: ArrayRef = match tc {
        TimeCol::Text => Arc::new(StringArray::from_iter(evs.iter().enumerate().map(
            |(i, e)| match e.t {
                Some(t) => Some(iso(t, i)),
                None if i % 2 == 0 => None,
                None => Some("not a time".to_string()),
            },
        ))),
        TimeCol::Ts(unit, tz) => {
            let tz = tz.map(Arc::<str>::from);
            let times = evs.iter().map(|e| e.t);
            match unit {
                TimeUnit::Second => Arc::new(
                    TimestampSecondArray::from_iter(times.map(|t| {
                        t.map(|t| {
                            assert_eq!(t % SEC, 0, "whole seconds");
                            t / SEC
                        })
                    }))
                    .with_timezone_opt(tz),
                ),
                TimeUnit::Millisecond => {
                    Arc::new(TimestampMillisecondArray::from_iter(times).with_timezone_opt(tz))
                }
                TimeUnit::Microsecond => Arc::new(
                    TimestampMicrosecondArray::from_iter(times.map(|t| t.map(|t| t * 1000)))
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Nanosecond => unreachable!("not used"),
            }
        }
    };
    RecordBatch::try_new(
        input_schema(tc),
        vec![
            Arc::new(StringArray::from_iter_values(
                evs.iter().map(|e| e.customer.as_str()),
            )),
            Arc::new(Float64Array::from_iter(evs.iter().map(|e| e.total))),
            Arc::new(Int64Array::from_iter(evs.iter().map(|e| e.qty))),
            Arc::new(StringArray::from_iter(
                evs.iter().map(|e| e.level.as_deref()),
            )),
            ts,
        ],
    )
    .unwrap()
}

/// xorshift64*: a deterministic stream of numbers for generated inputs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

/// `n` events with times in `[from - disorder, from + span)`, over `customers` customers. Totals
/// are multiples of 0.25 (so every sum is exact), some totals and quantities are null.
fn gen_events(
    rng: &mut Rng,
    n: usize,
    from: i64,
    span: i64,
    disorder: i64,
    customers: u64,
) -> Vec<Ev> {
    (0..n)
        .map(|_| {
            let mut t = from + rng.below(span as u64) as i64;
            if disorder > 0 {
                t -= rng.below(disorder as u64) as i64;
            }
            Ev {
                customer: format!("C{:02}", rng.below(customers)),
                total: (rng.below(8) != 0).then(|| rng.below(400) as f64 * 0.25 - 20.0),
                qty: (rng.below(9) != 0).then(|| rng.below(20) as i64 - 2),
                level: Some(if rng.below(4) == 0 { "ERROR" } else { "INFO" }.to_string()),
                t: Some(t),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The operators under test
// ---------------------------------------------------------------------------------------------

/// The aggregates every test reads: all five functions, on a float and an int column, and a
/// filtered count.
fn all_aggregates() -> Value {
    json!([
        { "name": "n", "fn": "count" },
        { "name": "sum_total", "fn": "sum", "column": "total" },
        { "name": "avg_total", "fn": "avg", "column": "total" },
        { "name": "min_total", "fn": "min", "column": "total" },
        { "name": "max_total", "fn": "max", "column": "total" },
        { "name": "qty", "fn": "sum", "column": "qty" },
        { "name": "qty_max", "fn": "max", "column": "qty" },
        { "name": "errors", "fn": "count", "filter": "level = 'ERROR'" },
    ])
}

/// `{ group_by = ["customer"], aggregates = all }` plus `extra`.
fn window_config(extra: Value) -> WindowAggregateConfig {
    let mut v = json!({
        "group_by": ["customer"],
        "aggregates": all_aggregates(),
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn global_config(extra: Value) -> AggregateConfig {
    let mut v = json!({ "group_by": ["customer"], "aggregates": all_aggregates() });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// A global aggregate over [`input_schema`], in a harness.
fn init(cfg: impl OperatorConfig, tc: TimeCol) -> Harness {
    let built = cfg.build(&ctx(), &Input::new(input_schema(tc))).unwrap();
    assert_eq!(built.ports.len(), 1);
    Harness::new(built).with_input(input_schema(tc))
}

/// The pipeline's event time for the window tests: the `ts` column, with the lateness and idle
/// timeout the old window options gave (`watermark`, default 2m; `idle_timeout`, default 30s),
/// taken out of `extra`.
fn event_time(extra: &mut Value) -> EventTime {
    let mut ms = |key: &str, default: &str| -> i64 {
        let v = extra
            .as_object_mut()
            .unwrap()
            .remove(key)
            .map(|v| v.as_str().unwrap().to_string())
            .unwrap_or_else(|| default.to_string());
        humantime::parse_duration(&v).unwrap().as_millis() as i64
    };
    let lateness_ms = ms("watermark", "2m");
    let idle = ms("idle_timeout", "30s");
    EventTime {
        column: "ts".into(),
        lateness_ms,
        idle_timeout: std::time::Duration::from_millis(idle as u64),
    }
}

/// The input of a window aggregate: [`input_schema`], with `ts` declared as the event time.
fn window_input(tc: TimeCol) -> Input {
    Input::new(input_schema(tc)).with_event_time("ts")
}

fn build_window(extra: Value, tc: TimeCol) -> engine_api::Result<Built> {
    window_config(extra).build(&ctx(), &window_input(tc))
}

/// A window aggregate in a harness that sends it the runtime's watermark at each trigger; the
/// old `watermark` and `idle_timeout` keys of `extra` set the declared event time.
fn windowed(mut extra: Value, tc: TimeCol) -> Harness {
    let e = event_time(&mut extra);
    Harness::new(build_window(extra, tc).unwrap())
        .with_input(input_schema(tc))
        .with_event_time(&e)
}

/// Feeds events; returns how many the operator reported late (and dropped as late).
fn feed(op: &mut Harness, evs: &[Ev], tc: TimeCol) -> u64 {
    let out = op.process(batch(evs, tc)).unwrap();
    assert!(out.is_empty(), "an aggregate emits at triggers only");
    let late = out.tallied(Tally::Late, "");
    assert_eq!(out.tallied(Tally::Dropped, "late"), late);
    late
}

/// Fires a trigger (the watermark, then the barrier); returns what it emitted.
fn trigger(op: &mut Harness) -> Vec<RecordBatch> {
    op.barrier().unwrap().main().to_vec()
}

fn snapshot_json(op: &mut Harness) -> Value {
    serde_json::from_slice(&op.snapshot().unwrap().expect("stateful")).unwrap()
}

fn config_error<T>(r: engine_api::Result<T>) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::Config => e.to_string(),
        Err(e) => panic!("expected a config error, got {e:?}"),
        Ok(_) => panic!("expected a config error, got Ok"),
    }
}

// ---------------------------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------------------------

/// One result row, as the aggregates in [`all_aggregates`] define it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    n: i64,
    sum_total: Option<f64>,
    avg_total: Option<f64>,
    min_total: Option<f64>,
    max_total: Option<f64>,
    qty: Option<i64>,
    qty_max: Option<i64>,
    errors: i64,
}

/// The aggregates over `evs`, by plain loops.
fn expected_row(evs: &[Ev]) -> Row {
    let mut sum = 0.0;
    let mut n_totals = 0;
    let mut min: Option<f64> = None;
    let mut max: Option<f64> = None;
    let mut qty = 0i64;
    let mut n_qty = 0;
    let mut qty_max: Option<i64> = None;
    let mut errors = 0;
    for e in evs {
        if let Some(t) = e.total {
            sum += t;
            n_totals += 1;
            if min.is_none_or(|m| t < m) {
                min = Some(t);
            }
            if max.is_none_or(|m| t > m) {
                max = Some(t);
            }
        }
        if let Some(q) = e.qty {
            qty += q;
            n_qty += 1;
            if qty_max.is_none_or(|m| q > m) {
                qty_max = Some(q);
            }
        }
        if e.level.as_deref() == Some("ERROR") {
            errors += 1;
        }
    }
    Row {
        n: evs.len() as i64,
        sum_total: (n_totals > 0).then_some(sum),
        avg_total: (n_totals > 0).then(|| sum / n_totals as f64),
        min_total: min,
        max_total: max,
        qty: (n_qty > 0).then_some(qty),
        qty_max,
        errors,
    }
}

type Key = (i64, String);

/// The semantics of a window aggregate fed from one source partition, written out: the watermark
/// is the largest event time seen minus the lateness, advanced at each trigger; an event older
/// than the watermark is late.
struct Model {
    size: i64,
    slide: i64,
    delay: i64,
    watermark: Option<i64>,
    max_time: Option<i64>,
    /// Events per (window start, customer), in arrival order.
    windows: BTreeMap<Key, Vec<Ev>>,
    /// Windows whose final row was emitted (append) or that were dropped (update).
    closed: BTreeSet<Key>,
    changed: BTreeSet<Key>,
    late: u64,
    unparsed: u64,
    /// The largest event time per source partition, for inputs read from several.
    partition_max: BTreeMap<i32, i64>,
}

impl Model {
    fn new(size: i64, slide: i64, delay: i64) -> Self {
        Model {
            size,
            slide,
            delay,
            watermark: None,
            max_time: None,
            windows: BTreeMap::new(),
            closed: BTreeSet::new(),
            changed: BTreeSet::new(),
            late: 0,
            unparsed: 0,
            partition_max: BTreeMap::new(),
        }
    }

    /// Events read from source partition `p`: the watermark follows the slowest partition.
    fn feed_from(&mut self, p: i32, evs: &[Ev]) {
        if let Some(t) = evs.iter().filter_map(|e| e.t).max() {
            let m = self.partition_max.entry(p).or_insert(i64::MIN);
            *m = (*m).max(t);
        }
        self.feed(evs);
    }

    /// Starts of the windows `[s, s + size)` holding `t`, with `s` a multiple of the slide.
    fn starts(&self, t: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut s = t.div_euclid(self.slide) * self.slide;
        while s + self.size > t {
            out.push(s);
            s -= self.slide;
        }
        out
    }

    fn feed(&mut self, evs: &[Ev]) {
        for e in evs {
            let Some(t) = e.t else {
                self.unparsed += 1;
                continue;
            };
            if self.watermark.is_some_and(|w| t < w) {
                self.late += 1;
                continue;
            }
            self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
            for s in self.starts(t) {
                let key = (s, e.customer.clone());
                assert!(
                    !self.closed.contains(&key),
                    "model: event in a closed window"
                );
                self.windows.entry(key.clone()).or_default().push(e.clone());
                self.changed.insert(key);
            }
        }
    }

    fn advance(&mut self) {
        let base = if self.partition_max.is_empty() {
            self.max_time
        } else {
            self.partition_max.values().copied().min()
        };
        if let Some(m) = base {
            let w = m - self.delay;
            self.watermark = Some(self.watermark.map_or(w, |old| old.max(w)));
        }
    }

    fn is_closed(&self, start: i64) -> bool {
        self.watermark.is_some_and(|w| start + self.size <= w)
    }

    fn row(&self, key: &Key) -> Row {
        expected_row(&self.windows[key])
    }

    /// Append mode: the windows the trigger closes, each once.
    fn trigger_append(&mut self) -> BTreeMap<Key, Row> {
        self.advance();
        self.changed.clear();
        let keys: Vec<Key> = self
            .windows
            .keys()
            .filter(|k| self.is_closed(k.0) && !self.closed.contains(*k))
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        for k in keys {
            out.insert(k.clone(), self.row(&k));
            self.closed.insert(k);
        }
        out
    }

    /// Update mode: the windows changed since the last trigger; closed windows are then dropped.
    fn trigger_update(&mut self) -> BTreeMap<Key, Row> {
        self.advance();
        let out = std::mem::take(&mut self.changed)
            .into_iter()
            .map(|k| {
                let r = self.row(&k);
                (k, r)
            })
            .collect();
        let drop: Vec<Key> = self
            .windows
            .keys()
            .filter(|k| self.is_closed(k.0))
            .cloned()
            .collect();
        self.closed.extend(drop);
        out
    }

    /// Complete mode: every window ever seen, when something changed since the last trigger.
    fn trigger_complete(&mut self) -> BTreeMap<Key, Row> {
        self.advance();
        if std::mem::take(&mut self.changed).is_empty() {
            return BTreeMap::new();
        }
        self.windows
            .keys()
            .map(|k| (k.clone(), self.row(k)))
            .collect()
    }

    /// Windows still held: seen, and not closed.
    fn held(&self) -> usize {
        self.windows
            .keys()
            .filter(|k| !self.closed.contains(*k))
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the output
// ---------------------------------------------------------------------------------------------

fn f64_at(b: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Float64, "`{name}`");
    let c = c.as_primitive::<Float64Type>();
    c.is_valid(row).then(|| c.value(row))
}

fn i64_at(b: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Int64, "`{name}`");
    let c = c.as_primitive::<Int64Type>();
    c.is_valid(row).then(|| c.value(row))
}

/// The rows emitted by one trigger, keyed by (window start, customer); global aggregates have
/// start 0. Checks `window_end = window_start + size` and that no key appears twice.
fn read(batches: &[RecordBatch], size: Option<i64>) -> BTreeMap<Key, Row> {
    let mut out = BTreeMap::new();
    for b in batches {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        for row in 0..b.num_rows() {
            let start = match size {
                Some(size) => {
                    let s = b.column_by_name("window_start").unwrap();
                    let e = b.column_by_name("window_end").unwrap();
                    assert_eq!(s.data_type(), &ts);
                    assert_eq!(e.data_type(), &ts);
                    let s = s.as_primitive::<TimestampMillisecondType>().value(row);
                    let e = e.as_primitive::<TimestampMillisecondType>().value(row);
                    assert_eq!(e - s, size, "window_end - window_start");
                    s
                }
                None => {
                    assert!(b.column_by_name("window_start").is_none());
                    0
                }
            };
            let customer = b
                .column_by_name("customer")
                .unwrap()
                .as_string::<i32>()
                .value(row)
                .to_string();
            let r = Row {
                n: i64_at(b, "n", row).expect("count is never null"),
                sum_total: f64_at(b, "sum_total", row),
                avg_total: f64_at(b, "avg_total", row),
                min_total: f64_at(b, "min_total", row),
                max_total: f64_at(b, "max_total", row),
                qty: i64_at(b, "qty", row),
                qty_max: i64_at(b, "qty_max", row),
                errors: i64_at(b, "errors", row).expect("count is never null"),
            };
            let key = (start, customer);
            assert!(
                out.insert(key.clone(), r).is_none(),
                "{key:?} emitted twice by one trigger"
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Tumbling windows in append mode
// ---------------------------------------------------------------------------------------------

/// Several batches of disordered events, a trigger after each: each trigger emits exactly the
/// windows the watermark closes, with the model's values, and a window is emitted once.
fn tumbling_append(tc: TimeCol) {
    let mut op = windowed(json!({ "window": "1m", "watermark": "30s" }), tc);
    let mut model = Model::new(MIN, MIN, 30 * SEC);
    let mut rng = Rng(0x5eed_1234);
    let mut emitted_ever = BTreeSet::new();
    let mut triggers_with_output = 0;
    let mut late_tallied = 0;
    let base = base();
    for b in 0..8 {
        // 40 s of event time per batch, up to 45 s out of order: some events are late.
        let evs = gen_events(&mut rng, 40, base + b * 40 * SEC, 40 * SEC, 45 * SEC, 4);
        let evs: Vec<Ev> = match tc {
            TimeCol::Ts(TimeUnit::Second, _) => evs
                .into_iter()
                .map(|mut e| {
                    e.t = e.t.map(|t| t - t.rem_euclid(SEC));
                    e
                })
                .collect(),
            _ => evs,
        };
        late_tallied += feed(&mut op, &evs, tc);
        model.feed(&evs);
        let got = read(&trigger(&mut op), Some(MIN));
        let want = model.trigger_append();
        assert_eq!(got, want, "trigger after batch {b}");
        let wm = model.watermark.unwrap();
        for (start, c) in got.keys() {
            assert!(
                start + MIN <= wm,
                "window {start} emitted before the watermark {wm}"
            );
            assert!(
                emitted_ever.insert((*start, c.clone())),
                "{start} {c} emitted again"
            );
        }
        if !got.is_empty() {
            triggers_with_output += 1;
        }
        assert_eq!(op.state_size(), model.held(), "state after batch {b}");
    }
    assert!(
        triggers_with_output >= 4,
        "the test must close windows as it goes"
    );
    assert!(model.late > 0, "the disorder must make some events late");
    assert_eq!(snapshot_json(&mut op)["late_events"], json!(model.late));
    assert_eq!(
        late_tallied, model.late,
        "late events reported to the runtime"
    );
    // A trigger without new events emits nothing.
    assert!(trigger(&mut op).is_empty());
    // An event an hour later closes every window still open, except its own.
    let far = vec![ev("Z", base + 60 * MIN + 5 * SEC, 1.0)];
    feed(&mut op, &far, tc);
    model.feed(&far);
    let got = read(&trigger(&mut op), Some(MIN));
    assert_eq!(got, model.trigger_append());
    for k in got.keys() {
        assert!(emitted_ever.insert(k.clone()), "{k:?} emitted again");
    }
    let all: BTreeSet<Key> = model.windows.keys().cloned().collect();
    let mut want_all = all.clone();
    want_all.remove(&(base + 60 * MIN, "Z".to_string()));
    assert_eq!(
        emitted_ever, want_all,
        "every window but the last one, once"
    );
    assert_eq!(op.state_size(), 1);
}

#[test]
fn tumbling_append_with_iso_text_times() {
    tumbling_append(TimeCol::Text);
}

#[test]
fn tumbling_append_with_timestamp_ms_utc() {
    tumbling_append(TimeCol::Ts(TimeUnit::Millisecond, Some("UTC")));
}

#[test]
fn tumbling_append_with_other_timestamp_units() {
    tumbling_append(TimeCol::Ts(TimeUnit::Microsecond, None));
    tumbling_append(TimeCol::Ts(TimeUnit::Second, Some("UTC")));
}

#[test]
fn output_schema_of_a_window_aggregate() {
    let built = build_window(json!({ "window": "1m" }), TimeCol::Text).unwrap();
    let schema = built.ports[0].schema.clone();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let got: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let want: Vec<(String, DataType)> = [
        ("customer", DataType::Utf8),
        ("window_start", ts.clone()),
        ("window_end", ts),
        ("n", DataType::Int64),
        ("sum_total", DataType::Float64),
        ("avg_total", DataType::Float64),
        ("min_total", DataType::Float64),
        ("max_total", DataType::Float64),
        ("qty", DataType::Int64),
        ("qty_max", DataType::Int64),
        ("errors", DataType::Int64),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect();
    assert_eq!(got, want);
    assert_eq!(built.ports[0].mode, OutputMode::Append);
    assert_eq!(built.ports[0].name, "out");
    // Declared output modes win over the input's.
    let built = build_window(
        json!({ "window": "1m", "output_mode": "update" }),
        TimeCol::Text,
    )
    .unwrap();
    assert_eq!(built.ports[0].mode, OutputMode::Update);
}

#[test]
fn a_window_closes_when_the_watermark_reaches_its_end() {
    let tc = TimeCol::Text;
    let mut op = windowed(json!({ "window": "1m", "watermark": "30s" }), tc);
    let b = base();
    feed(
        &mut op,
        &[ev("A", b + 10 * SEC, 2.5), ev("A", b + 50 * SEC, 4.0)],
        tc,
    );
    assert!(trigger(&mut op).is_empty(), "watermark 09:59:50");
    // Watermark 10:00:59.999: one ms short of the window's end.
    feed(&mut op, &[ev("B", b + 90 * SEC - 1, 1.0)], tc);
    assert!(
        trigger(&mut op).is_empty(),
        "watermark one ms before the end"
    );
    // Watermark 10:01:00, the end of [10:00, 10:01): it closes, [10:01, 10:02) does not.
    feed(&mut op, &[ev("B", b + 90 * SEC, 1.0)], tc);
    let got = read(&trigger(&mut op), Some(MIN));
    let want_a = expected_row(&[ev("A", 0, 2.5), ev("A", 0, 4.0)]);
    assert_eq!(want_a.n, 2);
    assert_eq!(want_a.sum_total, Some(6.5));
    assert_eq!(got, BTreeMap::from([((b, "A".to_string()), want_a)]));
    assert_eq!(op.state_size(), 1, "B's window is still open");
    assert!(trigger(&mut op).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Late events
// ---------------------------------------------------------------------------------------------

#[test]
fn events_older_than_the_watermark_are_left_out() {
    let tc = TimeCol::Text;
    let mut op = windowed(json!({ "window": "1m", "watermark": "30s" }), tc);
    let b = base();
    // Before the first trigger there is no watermark: out-of-order events all count.
    let first = vec![
        ev("A", b + 40 * SEC, 2.0),
        ev("A", b + 5 * SEC, 1.0),
        ev("A", b + 80 * SEC, 4.0),
        ev("B", b + 105 * SEC, 8.0),
    ];
    feed(&mut op, &first, tc);
    // Watermark = 10:01:45 - 30 s = 10:01:15: [10:00, 10:01) closes.
    let got = read(&trigger(&mut op), Some(MIN));
    assert_eq!(
        got,
        BTreeMap::from([((b, "A".to_string()), expected_row(&first[..2]))])
    );
    let late = vec![
        // Its window was emitted already.
        ev("A", b + 30 * SEC, 100.0),
        // Its window [10:01, 10:02) is still open, but it is older than the watermark.
        ev("A", b + 75 * SEC - 1, 200.0),
        ev("B", b + 61 * SEC, 300.0),
    ];
    let on_time = vec![
        // Exactly at the watermark: not late.
        ev("B", b + 75 * SEC, 16.0),
        ev("A", b + 110 * SEC, 32.0),
    ];
    let mut second = late.clone();
    second.extend(on_time.clone());
    assert_eq!(feed(&mut op, &second, tc), late.len() as u64);
    // The largest event time is still 10:01:50: the watermark moves to 10:01:20, nothing closes.
    assert!(trigger(&mut op).is_empty());
    assert_eq!(snapshot_json(&mut op)["late_events"], json!(late.len()));
    // An event at 10:03:00 moves the watermark to 10:02:30: [10:01, 10:02) closes.
    feed(&mut op, &[ev("C", b + 180 * SEC, 64.0)], tc);
    let got = read(&trigger(&mut op), Some(MIN));
    let in_window = |c: &str| -> Vec<Ev> {
        first
            .iter()
            .chain(&on_time)
            .filter(|e| e.customer == c && (b + MIN..b + 2 * MIN).contains(&e.t.unwrap()))
            .cloned()
            .collect()
    };
    let want = BTreeMap::from([
        ((b + MIN, "A".to_string()), expected_row(&in_window("A"))),
        ((b + MIN, "B".to_string()), expected_row(&in_window("B"))),
    ]);
    assert_eq!(got, want);
    // None of the late totals (100, 200, 300) reached a window.
    assert_eq!(got[&(b + MIN, "A".to_string())].sum_total, Some(4.0 + 32.0));
    assert_eq!(got[&(b + MIN, "B".to_string())].sum_total, Some(8.0 + 16.0));
    // Late events do not move the watermark either: it is still from 10:03:00.
    assert_eq!(snapshot_json(&mut op)["watermark"], json!(b + 150 * SEC));
}

#[test]
fn late_events_do_not_mark_windows_changed_in_update_mode() {
    let tc = TimeCol::Text;
    let mut op = windowed(
        json!({ "window": "1m", "watermark": "10s", "output_mode": "update" }),
        tc,
    );
    let b = base();
    feed(
        &mut op,
        &[ev("A", b + 30 * SEC, 1.0), ev("A", b + 90 * SEC, 2.0)],
        tc,
    );
    assert_eq!(read(&trigger(&mut op), Some(MIN)).len(), 2);
    // Watermark 10:01:20: [10:00, 10:01) was emitted and dropped from state.
    assert_eq!(op.state_size(), 1);
    feed(
        &mut op,
        &[ev("A", b + 20 * SEC, 5.0), ev("A", b + 79 * SEC, 5.0)],
        tc,
    );
    assert!(trigger(&mut op).is_empty(), "late events change nothing");
}

// ---------------------------------------------------------------------------------------------
// 3. Bounded state
// ---------------------------------------------------------------------------------------------

/// 200 batches, event time advancing 30 s per batch, 50 keys, a trigger after each batch: the
/// state holds only the windows the watermark has not closed, so it does not grow with time.
fn bounded_state(mode: &str) {
    let tc = TimeCol::Ts(TimeUnit::Millisecond, Some("UTC"));
    let (size, delay, step, keys) = (MIN, MIN, 30 * SEC, 50u64);
    let mut op = windowed(
        json!({ "window": "1m", "watermark": "1m", "output_mode": mode }),
        tc,
    );
    let mut model = Model::new(size, size, delay);
    let mut rng = Rng(42);
    // After a trigger, the open windows end after the watermark (max - delay) and start at or
    // before the largest event time: their starts lie in (max - delay - size, max], which holds
    // at most (delay + size) / slide + 1 multiples of the slide.
    let bound = keys as usize * ((delay + size) / size + 1) as usize;
    let mut sizes = Vec::new();
    let mut counted = 0i64;
    let mut sent = 0i64;
    for b in 0..200 {
        // Every key twice per batch, in [b * 30 s, (b + 1) * 30 s), shuffled within the batch.
        let mut evs: Vec<Ev> = (0..keys * 2)
            .map(|k| {
                let t = base() + b * step + rng.below(step as u64) as i64;
                Ev {
                    customer: format!("K{:02}", k % keys),
                    total: Some(rng.below(100) as f64),
                    qty: Some(1),
                    level: Some("INFO".into()),
                    t: Some(t),
                }
            })
            .collect();
        for i in (1..evs.len()).rev() {
            evs.swap(i, rng.below(i as u64 + 1) as usize);
        }
        sent += evs.len() as i64;
        feed(&mut op, &evs, tc);
        model.feed(&evs);
        let got = read(&trigger(&mut op), Some(size));
        let want = if mode == "append" {
            model.trigger_append()
        } else {
            model.trigger_update()
        };
        assert_eq!(got, want, "trigger {b}");
        if mode == "append" {
            counted += got.values().map(|r| r.n).sum::<i64>();
        }
        assert_eq!(op.state_size(), model.held(), "state after batch {b}");
        assert!(
            op.state_size() <= bound,
            "{} > {bound} after batch {b}",
            op.state_size()
        );
        sizes.push(op.state_size());
    }
    assert_eq!(model.late, 0, "batches do not overlap in time");
    let early = sizes[10..100].iter().max().unwrap();
    let late = sizes[100..].iter().max().unwrap();
    assert!(late <= early, "state grew: {early} then {late}");
    if mode == "append" {
        // Every event is in exactly one emitted or one held window.
        let held: i64 = model
            .windows
            .iter()
            .filter(|(k, _)| !model.closed.contains(*k))
            .map(|(_, v)| v.len() as i64)
            .sum();
        assert_eq!(counted + held, sent);
    }
}

#[test]
fn append_state_is_bounded_by_the_watermark() {
    bounded_state("append");
}

#[test]
fn update_state_is_bounded_by_the_watermark() {
    bounded_state("update");
}

// ---------------------------------------------------------------------------------------------
// 4. Hopping windows
// ---------------------------------------------------------------------------------------------

#[test]
fn hopping_windows_count_each_event_twice() {
    let tc = TimeCol::Text;
    let mut op = windowed(
        json!({ "window": "1m", "slide": "30s", "watermark": "10s" }),
        tc,
    );
    let mut model = Model::new(MIN, 30 * SEC, 10 * SEC);
    let mut rng = Rng(7);
    let b = base();
    let mut emitted = BTreeMap::new();
    let mut sent = 0;
    for i in 0..6 {
        // No disorder: none late.
        let evs = gen_events(&mut rng, 30, b + i * 45 * SEC, 45 * SEC, 0, 3);
        let evs: Vec<Ev> = {
            let mut e = evs;
            e.sort_by_key(|e| e.t);
            e
        };
        sent += evs.len() as i64;
        feed(&mut op, &evs, tc);
        model.feed(&evs);
        let got = read(&trigger(&mut op), Some(MIN));
        assert_eq!(got, model.trigger_append(), "trigger {i}");
        for (k, r) in got {
            assert!(emitted.insert(k, r).is_none());
        }
    }
    let flush = vec![ev("Z", b + 2 * 60 * MIN, 0.0)];
    feed(&mut op, &flush, tc);
    model.feed(&flush);
    let got = read(&trigger(&mut op), Some(MIN));
    assert_eq!(got, model.trigger_append());
    emitted.extend(got);
    assert_eq!(model.late, 0);
    for (start, _) in emitted.keys() {
        assert_eq!(start % (30 * SEC), 0, "starts are multiples of the slide");
    }
    let counted: i64 = emitted.values().map(|r| r.n).sum();
    assert_eq!(counted, 2 * sent, "every event is in two windows");

    // One event at 10:00:45 is in [10:00:00, 10:01:00) and [10:00:30, 10:01:30).
    let mut op = windowed(
        json!({ "window": "1m", "slide": "30s", "watermark": "0s" }),
        tc,
    );
    feed(&mut op, &[ev("A", b + 45 * SEC, 3.0)], tc);
    feed(&mut op, &[ev("A", b + 10 * MIN, 0.0)], tc);
    let got = read(&trigger(&mut op), Some(MIN));
    let one = expected_row(&[ev("A", 0, 3.0)]);
    assert_eq!(
        got,
        BTreeMap::from([
            ((b, "A".to_string()), one.clone()),
            ((b + 30 * SEC, "A".to_string()), one),
        ])
    );
}

#[test]
fn window_and_slide_are_checked() {
    for (window, slide, want) in [
        (
            "1m",
            "40s",
            "`slide`: `window` must be a multiple of `slide`",
        ),
        (
            "30s",
            "1m",
            "`slide`: `window` must be a multiple of `slide`",
        ),
        (
            "0s",
            "0s",
            "`window`: out of range; it must be between 100ms and 31days",
        ),
        ("500000000y", "1s", "`window`: out of range"),
        (
            "1d",
            "1s",
            "`slide`: too small: an event would fall into more than 1440 windows",
        ),
    ] {
        let e = config_error(build_window(
            json!({ "window": window, "slide": slide }),
            TimeCol::Text,
        ));
        assert!(e.starts_with(want), "{e}");
    }
    // A day of one-minute slides is the most windows per event allowed.
    build_window(json!({ "window": "1d", "slide": "1m" }), TimeCol::Text).unwrap();
    let e = config_error(build_window(
        json!({ "window": "one minute" }),
        TimeCol::Text,
    ));
    assert!(e.contains("`window`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 5. Output modes and emit_every
// ---------------------------------------------------------------------------------------------

/// The running result per customer over all `evs`, by plain loops.
fn per_customer(evs: &[Ev]) -> BTreeMap<Key, Row> {
    let mut groups: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    for e in evs {
        groups
            .entry(e.customer.clone())
            .or_default()
            .push(e.clone());
    }
    groups
        .into_iter()
        .map(|(c, v)| ((0, c), expected_row(&v)))
        .collect()
}

fn only(all: BTreeMap<Key, Row>, customers: &[&str]) -> BTreeMap<Key, Row> {
    all.into_iter()
        .filter(|((_, c), _)| customers.contains(&c.as_str()))
        .collect()
}

#[test]
fn update_mode_emits_the_groups_changed_since_the_last_trigger() {
    let tc = TimeCol::Text;
    let mut op = init(global_config(json!({ "output_mode": "update" })), tc);
    assert_eq!(op.ports()[0].mode, OutputMode::Update);
    let mut rng = Rng(99);
    let mut seen = Vec::new();
    let first = gen_events(&mut rng, 30, base(), MIN, 0, 3);
    seen.extend(first.clone());
    feed(&mut op, &first, tc);
    assert_eq!(read(&trigger(&mut op), None), per_customer(&seen));
    // Only C01 changes: only its row is emitted, with its running values.
    let second: Vec<Ev> = gen_events(&mut rng, 10, base(), MIN, 0, 1)
        .into_iter()
        .map(|mut e| {
            e.customer = "C01".into();
            e
        })
        .collect();
    seen.extend(second.clone());
    feed(&mut op, &second, tc);
    assert_eq!(
        read(&trigger(&mut op), None),
        only(per_customer(&seen), &["C01"])
    );
    assert!(trigger(&mut op).is_empty(), "nothing changed");
    // An empty batch changes nothing.
    feed(&mut op, &[], tc);
    assert!(trigger(&mut op).is_empty());
    let third = vec![
        ev("C00", base(), 1.0),
        ev("C02", base(), 2.0),
        ev("C00", base(), 3.0),
    ];
    seen.extend(third.clone());
    feed(&mut op, &third, tc);
    assert_eq!(
        read(&trigger(&mut op), None),
        only(per_customer(&seen), &["C00", "C02"])
    );
    assert_eq!(op.state_size(), 3);
}

#[test]
fn update_mode_on_windows_emits_changed_windows_only() {
    let tc = TimeCol::Text;
    let mut op = windowed(
        json!({ "window": "1m", "watermark": "5m", "output_mode": "update" }),
        tc,
    );
    let mut model = Model::new(MIN, MIN, 5 * MIN);
    let mut rng = Rng(3);
    for i in 0..5 {
        // Batches alternate between two customers, and overlap in time.
        let mut evs = gen_events(&mut rng, 20, base() + i * 20 * SEC, MIN, 0, 1);
        for e in &mut evs {
            e.customer = if i % 2 == 0 { "EVEN" } else { "ODD" }.into();
        }
        feed(&mut op, &evs, tc);
        model.feed(&evs);
        let got = read(&trigger(&mut op), Some(MIN));
        let want = model.trigger_update();
        assert!(want.keys().all(|(_, c)| c == &evs[0].customer));
        assert_eq!(got, want, "trigger {i}");
    }
}

#[test]
fn complete_mode_emits_the_whole_table_when_something_changed() {
    let tc = TimeCol::Text;
    let mut op = init(global_config(json!({})), tc);
    assert_eq!(
        op.ports()[0].mode,
        OutputMode::Complete,
        "complete is the default of `aggregate`"
    );
    let mut seen = Vec::new();
    let mut rng = Rng(11);
    let first = gen_events(&mut rng, 25, base(), MIN, 0, 4);
    seen.extend(first.clone());
    feed(&mut op, &first, tc);
    assert_eq!(read(&trigger(&mut op), None), per_customer(&seen));
    assert!(trigger(&mut op).is_empty(), "nothing changed");
    let second = vec![ev("C01", base(), 10.0)];
    seen.extend(second.clone());
    feed(&mut op, &second, tc);
    let got = read(&trigger(&mut op), None);
    assert_eq!(got.len(), 4, "the whole table, not only C01");
    assert_eq!(got, per_customer(&seen));
    assert!(trigger(&mut op).is_empty());
}

#[test]
fn complete_mode_on_windows_keeps_every_window() {
    let tc = TimeCol::Text;
    let mut op = windowed(
        json!({ "window": "1m", "watermark": "0s", "output_mode": "complete" }),
        tc,
    );
    let mut model = Model::new(MIN, MIN, 0);
    let mut rng = Rng(5);
    for i in 0..4 {
        let evs = gen_events(&mut rng, 15, base() + i * MIN, MIN, 0, 2);
        feed(&mut op, &evs, tc);
        model.feed(&evs);
        model.advance();
        let want: BTreeMap<Key, Row> = model
            .windows
            .keys()
            .map(|k| (k.clone(), model.row(k)))
            .collect();
        assert_eq!(read(&trigger(&mut op), Some(MIN)), want, "trigger {i}");
    }
    assert!(trigger(&mut op).is_empty());
}

#[test]
fn a_running_aggregate_cannot_be_in_append_mode() {
    let e = config_error(
        global_config(json!({ "output_mode": "append" }))
            .build(&ctx(), &Input::new(input_schema(TimeCol::Text))),
    );
    assert!(
        e.contains("append") && e.contains("window_aggregate"),
        "{e}"
    );
}

#[test]
fn emit_every_holds_results_until_the_interval_elapses() {
    let tc = TimeCol::Text;
    let mut op = init(
        global_config(json!({ "output_mode": "update", "emit_every": "300ms" })),
        tc,
    );
    let mut seen = vec![ev("A", base(), 1.0), ev("B", base(), 2.0)];
    feed(&mut op, &seen, tc);
    // The first trigger emits.
    assert_eq!(read(&trigger(&mut op), None), per_customer(&seen));
    let start = std::time::Instant::now();
    let a = vec![ev("A", base(), 4.0)];
    seen.extend(a.clone());
    feed(&mut op, &a, tc);
    let held_1 = trigger(&mut op);
    let c = vec![ev("C", base(), 8.0)];
    seen.extend(c.clone());
    feed(&mut op, &c, tc);
    let held_2 = trigger(&mut op);
    if start.elapsed() < std::time::Duration::from_millis(300) {
        assert!(
            held_1.is_empty() && held_2.is_empty(),
            "within the interval"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(350));
    // Everything changed since the last emission, with running values.
    let got = read(&trigger(&mut op), None);
    assert_eq!(got, only(per_customer(&seen), &["A", "C"]));
    assert!(trigger(&mut op).is_empty());

    let e = config_error(
        global_config(json!({ "emit_every": "often" }))
            .build(&ctx(), &Input::new(input_schema(TimeCol::Text))),
    );
    assert!(e.contains("emit_every"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 6. Filters, types and nulls
// ---------------------------------------------------------------------------------------------

#[test]
fn filters_types_and_null_values() {
    // Int32 and Float32 inputs too: sums of integers are Int64, of floats Float64.
    let schema = Arc::new(Schema::new(vec![
        Field::new("level", DataType::Utf8, true),
        Field::new("small", DataType::Int32, true),
        Field::new("ratio", DataType::Float32, true),
    ]));
    let cfg: AggregateConfig = serde_json::from_value(json!({
        "aggregates": [
            { "name": "errors", "fn": "count", "filter": "level = 'ERROR'" },
            { "name": "rows", "fn": "count" },
            { "name": "small_values", "fn": "count", "column": "small" },
            { "name": "small_sum", "fn": "sum", "column": "small" },
            { "name": "small_avg", "fn": "avg", "column": "small" },
            { "name": "small_min", "fn": "min", "column": "small" },
            { "name": "small_max", "fn": "max", "column": "small" },
            { "name": "ratio_sum", "fn": "sum", "column": "ratio" },
            { "name": "ratio_max", "fn": "max", "column": "ratio" },
            { "name": "error_small", "fn": "sum", "column": "small", "filter": "level = 'ERROR'" },
            { "name": "warn_ratio", "fn": "min", "column": "ratio", "filter": "level = 'WARN' and ratio > 0" },
        ],
    }))
    .unwrap();
    let built = cfg.build(&ctx(), &Input::new(schema.clone())).unwrap();
    let out_schema = built.ports[0].schema.clone();
    let mut op = Harness::new(built).with_input(schema.clone());
    let types: Vec<(&str, DataType)> = out_schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    use DataType::{Float64, Int64};
    assert_eq!(
        types,
        [
            ("errors", Int64),
            ("rows", Int64),
            ("small_values", Int64),
            ("small_sum", Int64),
            ("small_avg", Float64),
            ("small_min", Int64),
            ("small_max", Int64),
            ("ratio_sum", Float64),
            ("ratio_max", Float64),
            ("error_small", Int64),
            ("warn_ratio", Float64),
        ]
    );
    let levels = [
        Some("ERROR"),
        Some("INFO"),
        None,
        Some("WARN"),
        Some("ERROR"),
        Some("WARN"),
    ];
    let mut rng = Rng(17);
    let mut rows: Vec<(Option<&str>, Option<i32>, Option<f32>)> = Vec::new();
    let mut batches = Vec::new();
    for _ in 0..3 {
        let part: Vec<_> = (0..40)
            .map(|_| {
                let level = levels[rng.below(levels.len() as u64) as usize];
                // Large values: the Int64 sum must not go through a float.
                let small = (rng.below(5) != 0)
                    .then(|| (rng.below(2_000_000_000) as i64 - 500_000_000) as i32);
                let ratio = (rng.below(5) != 0).then(|| rng.below(64) as f32 * 0.5 - 8.0);
                (level, small, ratio)
            })
            .collect();
        rows.extend(part.clone());
        batches.push(
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter(part.iter().map(|r| r.0))) as ArrayRef,
                    Arc::new(Int32Array::from_iter(part.iter().map(|r| r.1))),
                    Arc::new(Float32Array::from_iter(part.iter().map(|r| r.2))),
                ],
            )
            .unwrap(),
        );
    }
    for b in batches {
        op.process(b).unwrap();
    }
    let out = trigger(&mut op);
    assert_eq!(out.len(), 1);
    let b = &out[0];
    assert_eq!(b.num_rows(), 1, "no group_by: one row");

    let smalls: Vec<i64> = rows.iter().filter_map(|r| r.1.map(i64::from)).collect();
    let ratios: Vec<f64> = rows.iter().filter_map(|r| r.2.map(f64::from)).collect();
    let error_smalls: Vec<i64> = rows
        .iter()
        .filter(|r| r.0 == Some("ERROR"))
        .filter_map(|r| r.1.map(i64::from))
        .collect();
    let warn_ratios: Vec<f64> = rows
        .iter()
        .filter(|r| r.0 == Some("WARN"))
        .filter_map(|r| r.2.map(f64::from))
        .filter(|r| *r > 0.0)
        .collect();
    let small_sum: i64 = smalls.iter().sum();
    assert!(
        small_sum.unsigned_abs() > 1 << 31,
        "the sum must not fit an i32"
    );
    assert_eq!(
        i64_at(b, "errors", 0),
        Some(rows.iter().filter(|r| r.0 == Some("ERROR")).count() as i64)
    );
    assert_eq!(i64_at(b, "rows", 0), Some(rows.len() as i64));
    assert_eq!(i64_at(b, "small_values", 0), Some(smalls.len() as i64));
    assert!(smalls.len() < rows.len(), "some values are null");
    assert_eq!(i64_at(b, "small_sum", 0), Some(small_sum));
    let avg = f64_at(b, "small_avg", 0).unwrap();
    let want_avg = small_sum as f64 / smalls.len() as f64;
    assert!(
        (avg - want_avg).abs() <= want_avg.abs() * 1e-12,
        "{avg} {want_avg}"
    );
    assert_eq!(i64_at(b, "small_min", 0), smalls.iter().min().copied());
    assert_eq!(i64_at(b, "small_max", 0), smalls.iter().max().copied());
    assert_eq!(f64_at(b, "ratio_sum", 0), Some(ratios.iter().sum()));
    assert_eq!(
        f64_at(b, "ratio_max", 0),
        ratios.iter().copied().reduce(f64::max)
    );
    assert_eq!(i64_at(b, "error_small", 0), Some(error_smalls.iter().sum()));
    assert_eq!(
        f64_at(b, "warn_ratio", 0),
        warn_ratios.iter().copied().reduce(f64::min)
    );
}

#[test]
fn a_group_whose_values_are_all_null_has_null_sums() {
    let tc = TimeCol::Text;
    let mut op = init(global_config(json!({})), tc);
    let mut evs = vec![
        ev("A", base(), 1.0),
        ev("N", base(), 0.0),
        ev("N", base(), 0.0),
    ];
    for e in &mut evs[1..] {
        e.total = None;
        e.qty = None;
        e.level = None;
    }
    feed(&mut op, &evs, tc);
    let got = read(&trigger(&mut op), None);
    let n = &got[&(0, "N".to_string())];
    assert_eq!(n, &expected_row(&evs[1..]));
    assert_eq!(n.n, 2, "count counts rows");
    assert_eq!(
        (n.sum_total, n.avg_total, n.min_total, n.qty),
        (None, None, None, None)
    );
    assert_eq!(n.errors, 0, "a null level is not 'ERROR'");
}

#[test]
fn rows_without_an_event_time_are_skipped() {
    for tc in [
        TimeCol::Text,
        TimeCol::Ts(TimeUnit::Millisecond, Some("UTC")),
    ] {
        let mut op = windowed(json!({ "window": "1m", "watermark": "0s" }), tc);
        let mut model = Model::new(MIN, MIN, 0);
        let mut rng = Rng(23);
        let mut evs = gen_events(&mut rng, 40, base(), 2 * MIN, 0, 2);
        for (i, e) in evs.iter_mut().enumerate() {
            if i % 5 == 1 || i % 5 == 2 {
                // A null, or (as text) "not a time".
                e.t = None;
            }
        }
        feed(&mut op, &evs, tc);
        model.feed(&evs);
        let flush = vec![ev("Z", base() + 10 * MIN, 0.0)];
        feed(&mut op, &flush, tc);
        model.feed(&flush);
        assert_eq!(read(&trigger(&mut op), Some(MIN)), model.trigger_append());
        assert_eq!(model.unparsed, 16);
        let snap = snapshot_json(&mut op);
        assert_eq!(snap["unparsed_time"], json!(model.unparsed));
        assert_eq!(snap["late_events"], json!(0));
    }
}

#[test]
fn configuration_mistakes() {
    let schema = input_schema(TimeCol::Text);
    let build_init = |v: Value| -> String {
        let cfg: AggregateConfig = serde_json::from_value(v).unwrap();
        config_error(cfg.build(&ctx(), &Input::new(schema.clone())))
    };
    let e = build_init(json!({ "aggregates": [{ "name": "s", "fn": "sum" }] }));
    assert!(e.contains("`s`") && e.contains("column"), "{e}");
    let e = build_init(json!({ "aggregates": [] }));
    assert!(e.contains("empty"), "{e}");
    let e = build_init(json!({ "aggregates": [{ "name": "s", "fn": "sum", "column": "level" }] }));
    assert!(e.contains("`level`") && e.contains("numeric"), "{e}");
    let e = build_init(json!({ "aggregates": [{ "name": "s", "fn": "sum", "column": "nope" }] }));
    assert!(e.contains("`nope`"), "{e}");
    let e =
        build_init(json!({ "group_by": ["nope"], "aggregates": [{ "name": "n", "fn": "count" }] }));
    assert!(e.contains("`nope`"), "{e}");
    let e = build_init(
        json!({ "aggregates": [{ "name": "n", "fn": "count", "filter": "lvl = 'ERROR'" }] }),
    );
    assert!(e.contains("`lvl`"), "{e}");
    // A filter's types are checked at build too, before any data.
    for filter in ["level > 1", "total + 1", "total is timestamp"] {
        let e =
            build_init(json!({ "aggregates": [{ "name": "n", "fn": "count", "filter": filter }] }));
        assert!(e.contains("aggregate `n`: filter"), "{filter}: {e}");
    }
    let e =
        build_init(json!({ "aggregates": [{ "name": "n", "fn": "count", "filter": "level = " }] }));
    assert!(e.contains("level ="), "{e}");
    let e = build_init(
        json!({ "group_by": ["customer"], "aggregates": [{ "name": "customer", "fn": "count" }] }),
    );
    assert!(e.contains("`customer`") && e.contains("two"), "{e}");
    assert!(
        serde_json::from_value::<AggregateConfig>(
            json!({ "aggregates": [{ "name": "m", "fn": "median", "column": "total" }] })
        )
        .is_err()
    );
    // The time column must be text or a timestamp.
    let e = config_error(
        window_config(json!({ "window": "1m" }))
            .build(&ctx(), &Input::new(schema.clone()).with_event_time("qty")),
    );
    assert!(e.starts_with("`time_column`") && e.contains("`qty`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 7. Snapshot and restore
// ---------------------------------------------------------------------------------------------

/// Feeds `batches` to one operator with a trigger after each; and to a second one that is
/// snapshotted after trigger `cut` and replaced by a fresh operator restored from that snapshot
/// (with the runtime's event-time state of that trigger). Both must emit the same rows at every
/// trigger.
fn restore_continues(
    make: &dyn Fn() -> Harness,
    batches: &[Vec<Ev>],
    tc: TimeCol,
    cut: usize,
    size: Option<i64>,
) {
    let mut whole = make();
    let mut first = make();
    let mut want_all = Vec::new();
    let mut got_all = Vec::new();
    for (i, evs) in batches.iter().enumerate() {
        feed(&mut whole, evs, tc);
        want_all.push(read(&trigger(&mut whole), size));
        feed(&mut first, evs, tc);
        got_all.push(read(&trigger(&mut first), size));
        if i == cut {
            let checkpoint = first.last_checkpoint().unwrap().clone();
            assert!(checkpoint.state.is_some(), "stateful");
            first = make();
            first.resume(&checkpoint).unwrap();
            assert_eq!(first.state_size(), whole.state_size());
        }
    }
    assert!(want_all.iter().filter(|r| !r.is_empty()).count() >= 2);
    assert_eq!(got_all, want_all);
    assert_eq!(first.state_size(), whole.state_size());
    assert_eq!(
        normalized(snapshot_json(&mut first)),
        normalized(snapshot_json(&mut whole))
    );
}

/// A snapshot with its groups (a map dumped in no particular order) sorted.
fn normalized(mut v: Value) -> Value {
    if let Some(g) = v["groups"].as_array_mut() {
        g.sort_by_key(|x| x.to_string());
    }
    v
}

/// Ten disordered batches (some events late), then one event an hour later that closes the rest.
fn restore_batches() -> Vec<Vec<Ev>> {
    let mut rng = Rng(1234);
    (0..10)
        .map(|i| gen_events(&mut rng, 30, base() + i * 30 * SEC, 30 * SEC, 40 * SEC, 4))
        .chain(std::iter::once(vec![ev("Z", base() + 60 * MIN, 0.0)]))
        .collect()
}

#[test]
fn restore_continues_like_an_uninterrupted_window_aggregate() {
    for tc in [
        TimeCol::Text,
        TimeCol::Ts(TimeUnit::Millisecond, Some("UTC")),
    ] {
        let batches = restore_batches();
        for mode in ["append", "update", "complete"] {
            let make = || {
                windowed(
                    json!({ "window": "1m", "slide": "30s", "watermark": "30s", "output_mode": mode }),
                    tc,
                )
            };
            restore_continues(&make, &batches, tc, 4, Some(MIN));
        }
    }
}

#[test]
fn restore_continues_like_an_uninterrupted_running_aggregate() {
    let tc = TimeCol::Text;
    let batches = restore_batches();
    for mode in ["update", "complete"] {
        let make = || init(global_config(json!({ "output_mode": mode })), tc);
        restore_continues(&make, &batches, tc, 5, None);
    }
}

#[test]
fn restore_keeps_what_emit_every_held_back() {
    // The snapshot is taken after a trigger that emit_every held back: the changes it held must
    // still be emitted after a restore.
    let tc = TimeCol::Text;
    for mode in ["update", "complete"] {
        let make = || {
            init(
                global_config(json!({ "output_mode": mode, "emit_every": "200ms" })),
                tc,
            )
        };
        let mut op = make();
        feed(&mut op, &[ev("A", base(), 1.0)], tc);
        assert_eq!(read(&trigger(&mut op), None).len(), 1);
        let more = vec![ev("A", base(), 1.0), ev("B", base(), 2.0)];
        feed(&mut op, &more, tc);
        assert!(trigger(&mut op).is_empty(), "held back");
        let state = op.snapshot().unwrap().unwrap();
        let mut restored = make();
        restored.operator_mut().restore(&state).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let want = read(&trigger(&mut op), None);
        assert_eq!(want.len(), 2, "{mode}: A and B changed");
        assert_eq!(read(&trigger(&mut restored), None), want, "{mode}");
    }
}

#[test]
fn restore_refuses_state_of_other_aggregates() {
    let tc = TimeCol::Text;
    let mut op = windowed(json!({ "window": "1m" }), tc);
    feed(&mut op, &[ev("A", base(), 1.0)], tc);
    let state = op.snapshot().unwrap().unwrap();
    let cfg: WindowAggregateConfig = serde_json::from_value(json!({
        "window": "1m",
        "group_by": ["customer"],
        "aggregates": [{ "name": "n", "fn": "count" }],
    }))
    .unwrap();
    let mut other = cfg.build(&ctx(), &window_input(tc)).unwrap().operator;
    let e = config_error(other.restore(&state));
    assert!(e.contains("checkpoint"), "{e}");
    assert!(matches!(
        other.restore(b"not json"),
        Err(e) if e.kind() == ErrorKind::Runtime
    ));
}

#[test]
fn integer_min_max_and_sum_are_exact_beyond_2_pow_53() {
    // 2^53 + 1 is not a double: an integer min or max must not go through one.
    let big = (1i64 << 53) + 1;
    let values = [Some(big), Some(big + 2), None, Some(-big - 2), Some(3)];
    let tc = TimeCol::Text;
    let mut op = init(global_config(json!({})), tc);
    let evs: Vec<Ev> = values
        .iter()
        .map(|q| {
            let mut e = ev("A", base(), 1.0);
            e.qty = *q;
            e
        })
        .collect();
    feed(&mut op, &evs, tc);
    let got = read(&trigger(&mut op), None);
    let row = &got[&(0, "A".to_string())];
    let present: Vec<i64> = values.iter().flatten().copied().collect();
    assert_eq!(row.qty_max, present.iter().max().copied());
    assert_eq!(row.qty, Some(present.iter().sum()));
    let cfg: AggregateConfig = serde_json::from_value(json!({
        "aggregates": [{ "name": "qty_min", "fn": "min", "column": "qty" }],
    }))
    .unwrap();
    let mut op = init(cfg, tc);
    feed(&mut op, &evs, tc);
    let out = trigger(&mut op);
    assert_eq!(i64_at(&out[0], "qty_min", 0), present.iter().min().copied());
}

#[test]
fn a_null_group_key_is_a_group_of_its_own() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, true),
        Field::new("region", DataType::Int32, true),
        Field::new("total", DataType::Float64, true),
    ]));
    let cfg: AggregateConfig = serde_json::from_value(json!({
        "group_by": ["customer", "region"],
        "aggregates": [
            { "name": "n", "fn": "count" },
            { "name": "s", "fn": "sum", "column": "total" },
        ],
    }))
    .unwrap();
    let built = cfg.build(&ctx(), &Input::new(schema.clone())).unwrap();
    let mut op = Harness::new(built).with_input(schema.clone());
    let rows: Vec<(Option<&str>, Option<i32>, f64)> = vec![
        (Some("A"), Some(1), 1.0),
        (None, Some(1), 2.0),
        (Some("A"), None, 4.0),
        (None, None, 8.0),
        (None, Some(1), 16.0),
        (Some("A"), Some(1), 32.0),
        (Some("A"), Some(2), 64.0),
    ];
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    op.process(b).unwrap();
    let out = trigger(&mut op);
    let mut want: BTreeMap<(Option<String>, Option<i32>), (i64, f64)> = BTreeMap::new();
    for (c, r, t) in &rows {
        let e = want.entry((c.map(str::to_string), *r)).or_default();
        e.0 += 1;
        e.1 += t;
    }
    let mut got = BTreeMap::new();
    for b in &out {
        let c = b.column_by_name("customer").unwrap().as_string::<i32>();
        let r = b
            .column_by_name("region")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int32Type>();
        for i in 0..b.num_rows() {
            let key = (
                c.is_valid(i).then(|| c.value(i).to_string()),
                r.is_valid(i).then(|| r.value(i)),
            );
            let v = (i64_at(b, "n", i).unwrap(), f64_at(b, "s", i).unwrap());
            assert!(got.insert(key, v).is_none());
        }
    }
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// 8. The runtime's watermark: per source partition, and from upstream
// ---------------------------------------------------------------------------------------------

fn p(n: i32) -> PartitionId {
    PartitionId::kafka("orders", n)
}

fn feed_from(op: &mut Harness, partition: i32, evs: &[Ev]) {
    let out = op
        .process_from(&p(partition), batch(evs, TimeCol::Text))
        .unwrap();
    assert!(out.is_empty(), "an aggregate emits at triggers only");
}

#[test]
fn the_watermark_follows_the_slowest_partition() {
    let mut op = windowed(json!({ "window": "1m", "watermark": "30s" }), TimeCol::Text);
    let b = base();
    // Partition 0 is read 10 minutes ahead of partition 1, as in a backfill.
    feed_from(&mut op, 0, &[ev("A", b + 10 * MIN, 1.0)]);
    feed_from(&mut op, 1, &[ev("B", b + 20 * SEC, 2.0)]);
    // Watermark = min(10:10:00, 10:00:20) - 30 s = 09:59:50: nothing closes.
    assert!(trigger(&mut op).is_empty());
    assert_eq!(op.current_watermark(), Some(b - 10 * SEC));
    assert_eq!(snapshot_json(&mut op)["watermark"], json!(b - 10 * SEC));
    // Partition 1 catches up with events 5 minutes behind partition 0: not late.
    let catch_up = [ev("B", b + 30 * SEC, 4.0), ev("C", b + 5 * MIN, 8.0)];
    feed_from(&mut op, 1, &catch_up);
    assert_eq!(snapshot_json(&mut op)["late_events"], json!(0));
    // Watermark = 10:05:00 - 30 s = 10:04:30: B's window [10:00, 10:01) closes with both events.
    let got = read(&trigger(&mut op), Some(MIN));
    let want_b = expected_row(&[ev("B", 0, 2.0), ev("B", 0, 4.0)]);
    assert_eq!(got, BTreeMap::from([((b, "B".to_string()), want_b)]));
    assert_eq!(
        snapshot_json(&mut op)["watermark"],
        json!(b + 4 * MIN + 30 * SEC)
    );
    // Under the global rule (10:10:00 - 30 s), the catch-up events would have been late.
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    let mut op = windowed(
        json!({ "window": "1m", "watermark": "0s", "idle_timeout": "200ms" }),
        TimeCol::Text,
    );
    let b = base();
    feed_from(&mut op, 0, &[ev("A", b + 10 * SEC, 1.0)]);
    feed_from(&mut op, 1, &[ev("B", b + 5 * MIN, 2.0)]);
    assert!(
        trigger(&mut op).is_empty(),
        "partition 0 holds it at 10:00:10"
    );
    // The harness's clock, not a real wait.
    op.wait(std::time::Duration::from_millis(300));
    // Partition 0 has been idle past the timeout; partition 1 advances.
    feed_from(&mut op, 1, &[ev("B", b + 6 * MIN, 4.0)]);
    let got = read(&trigger(&mut op), Some(MIN));
    assert!(
        got.contains_key(&(b, "A".to_string())),
        "A's window closed once partition 0 was idle: {got:?}"
    );
    assert_eq!(snapshot_json(&mut op)["watermark"], json!(b + 6 * MIN));
}

/// A window aggregate downstream of another node gets the watermark from upstream: it closes
/// windows at the next trigger, never goes back, and makes older events late.
#[test]
fn a_watermark_from_upstream_closes_windows_at_the_next_trigger() {
    let tc = TimeCol::Text;
    let built = build_window(json!({ "window": "1m" }), tc).unwrap();
    // No event time in the harness: watermarks come only as upstream sends them.
    let mut op = Harness::new(built).with_input(input_schema(tc));
    let b = base();
    let first = [ev("A", b + 10 * SEC, 1.0), ev("A", b + 70 * SEC, 2.0)];
    feed(&mut op, &first, tc);
    assert!(trigger(&mut op).is_empty(), "no watermark yet");
    assert!(
        op.watermark(b + MIN).unwrap().is_empty(),
        "emits at triggers only"
    );
    let got = read(&trigger(&mut op), Some(MIN));
    assert_eq!(
        got,
        BTreeMap::from([((b, "A".to_string()), expected_row(&first[..1]))])
    );
    // A lower watermark (from a slower input, say) does not move it back.
    let mut out = Collector::new(1);
    op.operator_mut()
        .on_watermark(b + 5 * SEC, &mut out)
        .unwrap();
    assert!(out.port(0).is_empty());
    assert_eq!(snapshot_json(&mut op)["watermark"], json!(b + MIN));
    // Older than the watermark: late, counted, in no window.
    feed(
        &mut op,
        &[ev("A", b + 59 * SEC, 100.0), ev("A", b + 61 * SEC, 4.0)],
        tc,
    );
    assert_eq!(snapshot_json(&mut op)["late_events"], json!(1));
    op.watermark(b + 2 * MIN).unwrap();
    let got = read(&trigger(&mut op), Some(MIN));
    let want = expected_row(&[ev("A", 0, 2.0), ev("A", 0, 4.0)]);
    assert_eq!(got, BTreeMap::from([((b + MIN, "A".to_string()), want)]));
    assert_eq!(op.state_size(), 0);
}

// ---------------------------------------------------------------------------------------------
// 9. Event time is declared on the pipeline, not on the window
// ---------------------------------------------------------------------------------------------

fn invalid(r: engine_api::Result<Built>) -> (String, String) {
    match r {
        Err(e) if e.key().is_some() => (
            e.key().unwrap_or_default().to_string(),
            e.message().to_string(),
        ),
        Err(e) => panic!("expected an invalid key, got {e:?}"),
        Ok(_) => panic!("expected an error, got Ok"),
    }
}

#[test]
fn the_time_column_is_the_declared_event_time() {
    let tc = TimeCol::Text;
    // By default, the declared one; naming it again is fine.
    for extra in [
        json!({ "window": "1m" }),
        json!({ "window": "1m", "time_column": "ts" }),
    ] {
        let mut op = Harness::new(build_window(extra, tc).unwrap())
            .with_input(input_schema(tc))
            .with_event_time(&engine_api::testing::event_time("ts", 0));
        feed(
            &mut op,
            &[ev("A", base(), 1.0), ev("A", base() + MIN, 1.0)],
            tc,
        );
        assert_eq!(read(&trigger(&mut op), Some(MIN)).len(), 1);
    }
    // Another column than the one the watermark follows.
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, true),
        Field::new("ts", DataType::Utf8, true),
        Field::new("created", DataType::Utf8, true),
        Field::new("total", DataType::Float64, true),
    ]));
    let cfg = |extra: Value| -> WindowAggregateConfig {
        let mut v = json!({ "window": "1m", "aggregates": [{ "name": "n", "fn": "count" }] });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    };
    let declared = Input::new(schema.clone()).with_event_time("ts");
    let (key, message) = invalid(cfg(json!({ "time_column": "created" })).build(&ctx(), &declared));
    assert_eq!(key, "time_column");
    assert!(
        message.contains("`created`") && message.contains("`ts`") && message.contains("watermark"),
        "{message}"
    );
    // No event time declared upstream: say how to declare it.
    let undeclared = Input::new(schema.clone());
    for extra in [json!({}), json!({ "time_column": "created" })] {
        let (key, message) = invalid(cfg(extra.clone()).build(&ctx(), &undeclared));
        assert_eq!(key, "time_column");
        assert!(
            message.contains("event_time = { column = ")
                && message.contains("lateness = \"2m\"")
                && message.contains("where the column first exists"),
            "{message}"
        );
        if extra.get("time_column").is_some() {
            assert!(message.contains("column = \"created\""), "{message}");
        }
    }
}

#[test]
fn watermark_and_idle_timeout_moved_to_the_event_time_declaration() {
    let tc = TimeCol::Text;
    for (key, instead) in [("watermark", "lateness"), ("idle_timeout", "idle_timeout")] {
        let mut extra = json!({ "window": "1m" });
        extra[key] = json!("2m");
        let (k, message) = invalid(build_window(extra, tc));
        assert_eq!(k, key);
        assert!(
            message.contains("event_time = {")
                && message.contains(&format!("`{instead}`"))
                && message.contains("moved"),
            "{message}"
        );
    }
    // Through the registry, from TOML (as the pipeline loader hands it over), with a value from
    // the environment too.
    let mut registry = engine_api::Registry::new();
    operators::register(&mut registry);
    for (text, key) in [
        ("window = \"1m\"\nwatermark = \"2m\"", "watermark"),
        ("window = \"1m\"\nidle_timeout = \"30s\"", "idle_timeout"),
    ] {
        let text = format!("{text}\naggregates = [{{ name = \"n\", fn = \"count\" }}]");
        let mut cfg: engine_api::ConfigValue = toml::from_str::<toml::Value>(&text).unwrap().into();
        if key == "idle_timeout" {
            cfg.remove(key);
            if let engine_api::ConfigValue::Table(t) = &mut cfg {
                t.push((
                    key.into(),
                    engine_api::ConfigValue::Interpolated("30s".into()),
                ));
            }
        }
        match registry.build("window_aggregate", cfg, &ctx(), Some(&window_input(tc))) {
            Err(e) if e.key().is_some() => {
                assert_eq!(e.key(), Some(key));
                assert!(e.message().contains("moved"), "{}", e.message());
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("built with `{key}`"),
        }
    }
    // Whatever the value: the key itself is the mistake, not its value.
    let (k, _) = invalid(build_window(json!({ "window": "1m", "watermark": 5 }), tc));
    assert_eq!(k, "watermark");
    // Other unknown keys are still refused by name.
    let e = serde_json::from_value::<WindowAggregateConfig>(json!({
        "window": "1m", "aggregates": [], "lateness": "2m",
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `lateness`"), "{e}");
}

#[test]
fn snapshots_from_before_the_runtime_owned_event_time_still_load() {
    let tc = TimeCol::Text;
    let extra = json!({ "window": "1m", "watermark": "30s" });
    let mut op = windowed(extra.clone(), tc);
    let b = base();
    feed(
        &mut op,
        &[ev("A", b + 10 * SEC, 1.0), ev("B", b + 50 * SEC, 2.0)],
        tc,
    );
    feed(&mut op, &[ev("A", b + 65 * SEC, 4.0)], tc);
    assert!(trigger(&mut op).is_empty());
    let mut snap = snapshot_json(&mut op);
    assert_eq!(
        snap["watermark"],
        json!(b + 35 * SEC),
        "the watermark is kept"
    );
    assert!(snap.get("partition_max").is_none() && snap.get("max_event_time").is_none());
    // As an older version wrote it: with its own event-time tracking.
    snap["max_event_time"] = json!(b + 65 * SEC);
    snap["partition_max"] = json!({ "0": b + 65 * SEC, "1": b + 50 * SEC });
    let old = serde_json::to_vec(&snap).unwrap();
    let mut restored = build_window(json!({ "window": "1m" }), tc)
        .unwrap()
        .operator;
    restored.restore(&old).unwrap();
    assert_eq!(restored.state_size(), 3);
    // The restored watermark still makes older events late...
    let mut out = Collector::new(1);
    let late = batch(&[ev("A", b + 20 * SEC, 100.0)], tc);
    restored.process(late, &mut out).unwrap();
    let snap: Value = serde_json::from_slice(&restored.snapshot().unwrap().unwrap()).unwrap();
    assert_eq!(snap["late_events"], json!(1));
    // ...and the runtime's next watermark closes the windows it passes.
    restored.on_watermark(b + 61 * SEC, &mut out).unwrap();
    restored.on_barrier(2, &mut out).unwrap();
    let got = read(out.port(0), Some(MIN));
    assert_eq!(
        got,
        BTreeMap::from([
            ((b, "A".to_string()), expected_row(&[ev("A", 0, 1.0)])),
            ((b, "B".to_string()), expected_row(&[ev("B", 0, 2.0)])),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The operator contract (engine_api::testing::check_operator)
// ---------------------------------------------------------------------------------------------

/// What a model of several source partitions expects at a trigger.
fn model_trigger(model: &mut Model, mode: &str) -> BTreeMap<Key, Row> {
    match mode {
        "append" => model.trigger_append(),
        "update" => model.trigger_update(),
        _ => model.trigger_complete(),
    }
}

/// Three partitions, the third read two minutes behind the others at first, disordered events
/// (some late once the third catches up) and a trigger after every third batch. Each trigger's rows must be the model's, and the
/// operator must keep the contract: restored from any trigger it continues alike, and so on.
fn windows_over_partitions(mode: &str, slide: &str) {
    let tc = TimeCol::Text;
    let mut extra =
        json!({ "window": "1m", "slide": slide, "watermark": "20s", "output_mode": mode });
    let e = event_time(&mut extra);
    let slide_ms = humantime::parse_duration(slide).unwrap().as_millis() as i64;
    let mut model = Model::new(MIN, slide_ms, 20 * SEC);
    let mut rng = Rng(0xfeed);
    let mut script = Script::new(input_schema(tc)).with_event_time(e);
    let mut batches = Vec::new();
    for b in 0..12i64 {
        let part = (b % 3) as i32;
        // Partition 2 is two minutes behind for two rounds, then catches up.
        let round = b / 3;
        let lag = if part == 2 && round < 2 { 2 * MIN } else { 0 };
        let evs = gen_events(
            &mut rng,
            25,
            base() + round * 40 * SEC - lag,
            40 * SEC,
            MIN,
            3,
        );
        script = script.batch_from(p(part), batch(&evs, tc));
        batches.push((part, evs));
        if part == 2 {
            script = script.barrier();
        }
    }
    let run = check_operator(|| build_window(extra.clone(), tc), &script.end());
    // The model, step by step.
    let mut batches = batches.into_iter();
    let mut emitted = 0;
    for (i, step) in script_steps(&run).iter().enumerate() {
        match step {
            StepKind::Batch => {
                let (part, evs) = batches.next().unwrap();
                model.feed_from(part, &evs);
                assert!(run.steps[i].is_empty());
            }
            StepKind::Barrier => {
                let want = model_trigger(&mut model, mode);
                let got = read(run.steps[i].main(), Some(MIN));
                assert_eq!(got, want, "{mode} {slide}: step {i}");
                emitted += got.len();
            }
            StepKind::End => assert!(run.steps[i].is_empty()),
        }
    }
    assert!(model.late > 0, "some events must be late");
    assert!(emitted > 0, "some windows must be emitted");
}

enum StepKind {
    Batch,
    Barrier,
    End,
}

/// The kind of each step of a run of [`windows_over_partitions`]'s script (batches, barriers
/// and the end, in that script's pattern: a barrier after every third batch).
fn script_steps(run: &engine_api::testing::Run) -> Vec<StepKind> {
    let n = run.steps.len();
    (0..n)
        .map(|i| {
            if i + 1 == n {
                StepKind::End
            } else if i % 4 == 3 {
                StepKind::Barrier
            } else {
                StepKind::Batch
            }
        })
        .collect()
}

#[test]
fn tumbling_windows_over_partitions_keep_the_contract_in_every_mode() {
    for mode in ["append", "update", "complete"] {
        windows_over_partitions(mode, "1m");
    }
}

#[test]
fn hopping_windows_over_partitions_keep_the_contract_in_every_mode() {
    for mode in ["append", "update", "complete"] {
        windows_over_partitions(mode, "20s");
    }
}

/// Idle partitions, watermarks from upstream and rows without a time, for the contract alone.
#[test]
fn windows_keep_the_contract_with_idle_partitions_and_upstream_watermarks() {
    let tc = TimeCol::Text;
    for mode in ["append", "update", "complete"] {
        let mut extra = json!({ "window": "1m", "watermark": "10s", "idle_timeout": "1s", "output_mode": mode });
        let e = event_time(&mut extra);
        let mut rng = Rng(99);
        let mut no_time = gen_events(&mut rng, 10, base(), MIN, 0, 2);
        no_time.iter_mut().step_by(3).for_each(|e| e.t = None);
        let script = Script::new(input_schema(tc))
            .with_event_time(e)
            .batch_from(
                p(0),
                batch(&gen_events(&mut rng, 30, base(), MIN, 20 * SEC, 3), tc),
            )
            .batch_from(
                p(1),
                batch(&gen_events(&mut rng, 30, base(), 30 * SEC, 0, 3), tc),
            )
            .barrier()
            .wait(std::time::Duration::from_secs(2))
            .batch_from(
                p(0),
                batch(
                    &gen_events(&mut rng, 30, base() + MIN, MIN, 40 * SEC, 3),
                    tc,
                ),
            )
            .barrier()
            .watermark(base() + 3 * MIN)
            .batch_from(p(1), batch(&no_time, tc))
            .barrier()
            .batch(batch(
                &gen_events(&mut rng, 10, base() + 10 * MIN, MIN, 0, 3),
                tc,
            ))
            .barrier()
            .end();
        let run = check_operator(|| build_window(extra.clone(), tc), &script);
        assert!(!run.all().is_empty(), "{mode}");
    }
}

#[test]
fn running_aggregates_keep_the_contract() {
    let tc = TimeCol::Text;
    for mode in ["update", "complete"] {
        let mut rng = Rng(7);
        let mut script = Script::new(input_schema(tc));
        let mut seen = Vec::new();
        let mut since: Vec<String> = Vec::new();
        let mut want = Vec::new();
        for b in 0..6 {
            let evs = gen_events(&mut rng, 20, base(), MIN, 0, 4);
            seen.extend(evs.clone());
            since.extend(evs.iter().map(|e| e.customer.clone()));
            script = script.batch_from(p(b % 2), batch(&evs, tc));
            if b % 2 == 1 {
                script = script.barrier();
                // Complete: every group; update: the groups changed since the last trigger.
                let changed: Vec<&str> = since.iter().map(String::as_str).collect();
                want.push(match mode {
                    "complete" => per_customer(&seen),
                    _ => only(per_customer(&seen), &changed),
                });
                since.clear();
            }
        }
        let cfg = global_config(json!({ "output_mode": mode }));
        let run = check_operator(
            || cfg.clone().build(&ctx(), &Input::new(input_schema(tc))),
            &script.end(),
        );
        // Triggers are steps 2, 5 and 8.
        for (k, i) in [2, 5, 8].into_iter().enumerate() {
            let got = read(run.steps[i].main(), None);
            assert_eq!(got, want[k], "{mode}: trigger {k}");
        }
    }
}
