//! `engine produce`: realistic synthetic messages for the course's three topics, deterministic
//! for a given seed and start time.

use engine_api::{EngineError, Reason, Result, Service};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The kinds of message the generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Orders,
    Logs,
    Metrics,
}

impl Kind {
    /// The kind for one of the course's topics.
    pub fn for_topic(topic: &str) -> Option<Kind> {
        match topic {
            t if t.contains("commande") || t.contains("order") => Some(Kind::Orders),
            t if t.contains("log") => Some(Kind::Logs),
            t if t.contains("metric") => Some(Kind::Metrics),
            _ => None,
        }
    }
}

pub const PRODUCTS: [(i32, &str, f64); 12] = [
    (101, "Laptop Pro 14", 1299.0),
    (102, "Wireless Mouse", 24.9),
    (103, "Mechanical Keyboard", 89.5),
    (104, "27in Monitor", 279.0),
    (105, "USB-C Hub", 39.99),
    (106, "Noise-Cancelling Headphones", 199.0),
    (107, "Webcam HD", 59.0),
    (108, "External SSD 1TB", 109.0),
    (109, "Smartphone X", 799.0),
    (110, "Tablet 11", 449.0),
    (111, "Smartwatch", 229.0),
    (112, "Desk Lamp", 34.5),
];
const STATUSES: [&str; 5] = ["pending", "paid", "shipped", "delivered", "cancelled"];
const LEVELS: [(&str, u32); 4] = [("INFO", 70), ("DEBUG", 12), ("WARN", 12), ("ERROR", 6)];
const MODULES: [&str; 6] = ["auth", "payment", "catalog", "orders", "shipping", "search"];

#[derive(Serialize)]
struct Item {
    product_id: i32,
    product_name: &'static str,
    quantity: i32,
    unit_price: f64,
    subtotal: f64,
}

#[derive(Serialize)]
struct Order {
    order_id: i64,
    customer_id: String,
    timestamp: String,
    items: Vec<Item>,
    total: f64,
    status: &'static str,
}

#[derive(Serialize)]
struct Log {
    timestamp: String,
    level: &'static str,
    module: &'static str,
    message: String,
    request_id: String,
    user_id: String,
    duration_ms: i32,
}

#[derive(Serialize)]
struct Metric {
    timestamp: String,
    server_id: String,
    cpu_percent: f64,
    memory_percent: f64,
    disk_percent: f64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("valid time")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Generates message `i` (key, JSON value). Event times advance from `start_ms` by
/// `step_ms` per message.
pub struct Generator {
    kind: Kind,
    rng: fastrand::Rng,
    start_ms: i64,
    step_ms: i64,
}

impl Generator {
    pub fn new(kind: Kind, seed: u64, start_ms: i64) -> Self {
        let step_ms = match kind {
            Kind::Orders => 100,
            Kind::Logs => 50,
            Kind::Metrics => 1000,
        };
        Generator {
            kind,
            rng: fastrand::Rng::with_seed(seed),
            start_ms,
            step_ms,
        }
    }

    pub fn message(&mut self, i: u64) -> (String, Vec<u8>) {
        let ts = self.start_ms + i as i64 * self.step_ms + self.rng.i64(0..self.step_ms.max(1));
        self.message_at(i, ts)
    }

    /// Message `i` with its event time set to `ts_ms`.
    pub fn message_at(&mut self, i: u64, ts_ms: i64) -> (String, Vec<u8>) {
        let ts = iso(ts_ms);
        let r = &mut self.rng;
        match self.kind {
            Kind::Orders => {
                let customer_id = format!("C{:04}", r.u32(1..=200));
                let n = r.usize(1..=4);
                let items: Vec<Item> = (0..n)
                    .map(|_| {
                        let (product_id, product_name, unit_price) =
                            PRODUCTS[r.usize(0..PRODUCTS.len())];
                        let quantity = r.i32(1..=5);
                        Item {
                            product_id,
                            product_name,
                            quantity,
                            unit_price,
                            subtotal: round2(unit_price * quantity as f64),
                        }
                    })
                    .collect();
                let total = round2(items.iter().map(|it| it.subtotal).sum());
                let o = Order {
                    order_id: 1_000_000 + i as i64,
                    customer_id: customer_id.clone(),
                    timestamp: ts,
                    items,
                    total,
                    status: STATUSES[r.usize(0..STATUSES.len())],
                };
                (customer_id, serde_json::to_vec(&o).expect("serialisable"))
            }
            Kind::Logs => {
                let mut pick = r.u32(0..100);
                let level = LEVELS
                    .iter()
                    .find(|(_, w)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map(|(l, _)| *l)
                    .unwrap_or("INFO");
                let module = MODULES[r.usize(0..MODULES.len())];
                let base =
                    20 + (MODULES.iter().position(|m| *m == module).unwrap_or(0) as i32) * 35;
                let duration_ms = base + r.i32(0..200) + if level == "ERROR" { 500 } else { 0 };
                let message = match level {
                    "ERROR" => {
                        format!("{module} request failed: upstream timeout after {duration_ms} ms")
                    }
                    "WARN" => format!("{module} slow response ({duration_ms} ms)"),
                    _ => format!("{module} request handled"),
                };
                let l = Log {
                    timestamp: ts,
                    level,
                    module,
                    message,
                    request_id: format!("req-{:016x}", r.u64(..)),
                    user_id: format!("U{:05}", r.u32(1..=5000)),
                    duration_ms,
                };
                (
                    module.to_string(),
                    serde_json::to_vec(&l).expect("serialisable"),
                )
            }
            Kind::Metrics => {
                let n = r.u32(1..=10);
                let server_id = format!("srv-{n:02}");
                // Some servers run hotter than others, so "most loaded" has an answer.
                let bias = n as f64 * 4.0;
                let m = Metric {
                    timestamp: ts,
                    server_id: server_id.clone(),
                    cpu_percent: round2((15.0 + bias + r.f64() * 40.0).min(100.0)),
                    memory_percent: round2((30.0 + bias * 0.8 + r.f64() * 25.0).min(100.0)),
                    disk_percent: round2(20.0 + r.f64() * 60.0),
                };
                (server_id, serde_json::to_vec(&m).expect("serialisable"))
            }
        }
    }
}

struct Counting {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Malformed messages for `--bad-every`, one for each reason `pipelines/orders.toml` quarantines
/// a record, in this order: not_json, not_object, wrong_type, missing_field (no `timestamp`, which
/// the windows need), rule_broken (a `timestamp` that is not a time), empty_value.
pub const BAD_MESSAGES: [&str; 6] = [
    r#"{"order_id": 1, "customer_id": "C0001", "timestamp": "2026-01-01T00:00:00Z", "items": [{"#,
    r#"[1, 2, 3]"#,
    r#"{"order_id": "not a number", "customer_id": "C0001", "timestamp": "2026-01-01T00:00:00Z"}"#,
    r#"{"order_id": 3, "customer_id": "C0001", "items": [], "total": 10.0}"#,
    r#"{"order_id": 2, "customer_id": "C0001", "timestamp": "not a timestamp", "items": [], "total": 5.0}"#,
    "",
];

pub struct ProduceArgs {
    pub brokers: String,
    pub topic: String,
    pub kind: Kind,
    pub count: u64,
    pub rate: Option<f64>,
    pub seed: u64,
    pub start_ms: i64,
    /// Replace every n-th message with a malformed one (0: never).
    pub bad_every: u64,
    /// With `rate`: each message's event time (and Kafka timestamp) is its intended send time,
    /// for produce-to-visible latency measurements.
    pub stamp_send_time: bool,
}

/// Produces `count` messages, paced at `rate` per second if given. Returns the number delivered.
pub fn produce(args: &ProduceArgs) -> Result<u64> {
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create_with_context(Counting {
            delivered: delivered.clone(),
            failed: failed.clone(),
        })
        .map_err(|e| EngineError::config(format!("bad producer settings: {e}")))?;
    let md = producer.client().fetch_metadata(Some(&args.topic), Duration::from_secs(10)).map_err(|e| {
        EngineError::service(Service::Kafka, transport_reason(&e), &args.brokers, format!(
            "cannot reach Kafka at {} ({e}); check --brokers (KAFKA_BROKERS) and that the broker is running",
            args.brokers,
        ))
        .with_source(e)
    })?;
    let exists = md
        .topics()
        .iter()
        .any(|t| t.name() == args.topic && t.error().is_none() && !t.partitions().is_empty());
    if !exists {
        return Err(EngineError::service(
            Service::Kafka,
            Reason::NotFound,
            &args.brokers,
            format!(
                "topic `{}` does not exist on Kafka at {}; create it",
                args.topic, args.brokers,
            ),
        ));
    }
    let mut generator = Generator::new(args.kind, args.seed, args.start_ms);
    let started = Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let mut last_report = Instant::now();
    for i in 0..args.count {
        let mut intended_ms = None;
        if let Some(rate) = args.rate {
            // Open loop: each message has an intended send time, kept even when sending falls
            // behind, so a slow consumer cannot hide its delay (no coordinated omission).
            let offset = Duration::from_secs_f64(i as f64 / rate);
            let due = started + offset;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            intended_ms = Some(started_ms + offset.as_millis() as i64);
        }
        let stamp = intended_ms.filter(|_| args.stamp_send_time);
        let (key, mut value) = match stamp {
            Some(ts) => generator.message_at(i, ts),
            None => generator.message(i),
        };
        if args.bad_every > 0 && i % args.bad_every == args.bad_every - 1 {
            value = BAD_MESSAGES[(i / args.bad_every) as usize % BAD_MESSAGES.len()]
                .as_bytes()
                .to_vec();
        }
        let mut record = BaseRecord::to(&args.topic).key(&key).payload(&value);
        if let Some(ts) = stamp {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(EngineError::runtime(format!(
                        "producing to `{}`: {e}",
                        args.topic
                    )));
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(topic = %args.topic, sent = i + 1, of = args.count, "producing");
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| {
        EngineError::service(
            Service::Kafka,
            transport_reason(&e),
            &args.brokers,
            format!("flushing to Kafka at {}: {e}", args.brokers),
        )
        .with_source(e)
    })?;
    let (ok, bad) = (
        delivered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    if bad > 0 {
        return Err(EngineError::runtime(format!(
            "{bad} of {} messages were not delivered to `{}`",
            args.count, args.topic
        )));
    }
    Ok(ok)
}

/// Why Kafka did not answer: it timed out, or the transport failed.
fn transport_reason(e: &KafkaError) -> Reason {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            Reason::Timeout
        }
        _ => Reason::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_messages() {
        let mut a = Generator::new(Kind::Orders, 7, 0);
        let mut b = Generator::new(Kind::Orders, 7, 0);
        for i in 0..50 {
            assert_eq!(a.message(i), b.message(i));
        }
        let mut c = Generator::new(Kind::Orders, 8, 0);
        assert_ne!(a.message(50), c.message(50));
    }

    #[test]
    fn orders_are_consistent() {
        let mut g = Generator::new(Kind::Orders, 1, 1_767_225_600_000);
        for i in 0..200 {
            let (key, v) = g.message(i);
            let o: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(o["customer_id"].as_str().unwrap(), key);
            let items = o["items"].as_array().unwrap();
            assert!(!items.is_empty());
            let sum: f64 = items
                .iter()
                .map(|it| it["subtotal"].as_f64().unwrap())
                .sum();
            assert!((sum - o["total"].as_f64().unwrap()).abs() < 0.011);
            assert!(o["timestamp"].as_str().unwrap().starts_with("2026-01-01T"));
        }
    }

    /// `--bad-every` exists to show every quarantine reason (`make demo`'s report): each bad
    /// message must be quarantined by the shipped orders pipeline, each for a reason of its own.
    #[test]
    fn each_bad_message_is_quarantined_by_the_shipped_orders_pipeline_for_its_own_reason() {
        use arrow::array::{
            ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
            TimestampMillisecondArray,
        };
        use engine_api::{Collector, OperatorConfig};
        use operators::json_parse::{JsonParseConfig, reason};
        use serde::Deserialize;

        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/orders.toml");
        let pipeline = crate::config::Pipeline::load(&path).unwrap();
        let spec = pipeline.nodes.iter().find(|n| n.name == "parse").unwrap();
        assert_eq!(spec.type_name, "json_parse");
        let ctx = pipeline.build_context(spec);
        let input = engine_api::Input::new(engine_api::kafka_record_schema());
        let mut op = JsonParseConfig::deserialize(spec.config.clone())
            .unwrap()
            .build(&ctx, &input)
            .unwrap()
            .operator;

        let n = BAD_MESSAGES.len();
        let batch = RecordBatch::try_new(
            engine_api::kafka_record_schema(),
            vec![
                Arc::new(StringArray::from(vec!["commandes-json"; n])) as ArrayRef,
                Arc::new(Int32Array::from(vec![0; n])),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec!["k"; n])),
                Arc::new(BinaryArray::from_iter_values(
                    BAD_MESSAGES.iter().map(|m| m.as_bytes()),
                )),
            ],
        )
        .unwrap();
        let mut out = Collector::new(2);
        op.process(batch, &mut out).unwrap();
        let parsed: usize = out.port(0).iter().map(|b| b.num_rows()).sum();
        assert_eq!(parsed, 0, "every bad message is quarantined");
        let mut got = Vec::new();
        for b in out.port(1) {
            let offsets = b
                .column_by_name("offset")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>();
            let reasons = b.column_by_name("reason").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                got.push((offsets.value(i), reasons.value(i).to_string()));
            }
        }
        got.sort();
        let want = [
            reason::NOT_JSON,
            reason::NOT_OBJECT,
            reason::WRONG_TYPE,
            reason::MISSING_FIELD,
            reason::RULE_BROKEN,
            reason::EMPTY_VALUE,
        ];
        let want: Vec<(i64, String)> = want
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i64, r.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
