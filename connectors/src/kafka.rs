//! `kafka`: reads one topic into micro-batches with rdkafka.
//!
//! Every row carries `topic`, `partition`, `offset`, `kafka_timestamp`, `key` and the raw
//! `value`. Offsets come from the last committed checkpoint when there is one, else from
//! `starting_offsets`. Offsets are committed back to the consumer group only to report lag.

use arrow::array::{
    BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use engine_api::{
    BuildContext, EngineError, Reason, Result, Secret, Service, Source, SourceConfig, SourceContext,
};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    pub topic: String,
    /// Where to start when there is no checkpoint: `earliest` or `latest`.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// Consumer group used to report lag; default `engine-<pipeline>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Most messages in one micro-batch (default 2,048, from 1 to 100,000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a partly filled micro-batch waits before it is sent (default `"200ms"`,
    /// from 1ms to 1m).
    #[serde(default = "default_linger")]
    pub linger: String,
    /// Extra librdkafka settings, such as `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`. Values are treated as secrets.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartingOffsets {
    #[default]
    Earliest,
    Latest,
}

/// 2,048 messages: on the orders backfill, 4% less CPU and about 30 MiB less peak memory than
/// 8,192 (smaller batches stay in cache and fewer bytes wait in mailboxes), at the same speed on
/// the smaller log and metric messages.
fn default_batch_size() -> usize {
    2048
}
fn default_linger() -> String {
    "200ms".into()
}

/// The accepted range of `batch_size`: every message of a batch is held in memory at once.
pub const BATCH_SIZE_RANGE: (usize, usize) = (1, 100_000);
/// The accepted range of `linger`.
pub const LINGER_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(60));

/// The schema of every batch the Kafka source emits.
pub fn kafka_schema() -> SchemaRef {
    engine_api::kafka_record_schema()
}

impl SourceConfig for KafkaSourceConfig {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Source>> {
        if self.brokers.trim().is_empty() {
            return Err(EngineError::invalid(
                "brokers",
                "is empty; list the brokers as host:port, comma-separated",
            ));
        }
        if self.topic.trim().is_empty() {
            return Err(EngineError::invalid("topic", "is empty"));
        }
        engine_api::check_range(
            "batch_size",
            self.batch_size,
            BATCH_SIZE_RANGE.0,
            BATCH_SIZE_RANGE.1,
        )?;
        let linger =
            engine_api::parse_duration("linger", &self.linger, LINGER_RANGE.0, LINGER_RANGE.1)?;
        if let Some(key) = self.properties.keys().find(|k| k.trim().is_empty()) {
            return Err(EngineError::invalid(
                format!("properties.{key}"),
                "a librdkafka setting needs a name",
            ));
        }
        let group = self
            .group_id
            .clone()
            .unwrap_or_else(|| format!("engine-{}", ctx.pipeline));
        Ok(Box::new(KafkaSource {
            node: ctx.node.clone(),
            cfg: self,
            linger,
            group,
            consumer: None,
            next: BTreeMap::new(),
            end: None,
        }))
    }
}

pub struct KafkaSource {
    /// The node's name, for errors.
    node: String,
    cfg: KafkaSourceConfig,
    linger: Duration,
    group: String,
    consumer: Option<Client>,
    /// Next offset to read, per partition.
    next: BTreeMap<i32, i64>,
    /// Batch mode: the end offset (high watermark at start) per partition.
    end: Option<BTreeMap<i32, i64>>,
}

/// The consumer, with a context that remembers authentication failures.
type Client = BaseConsumer<ErrorCapture>;

/// Keeps the last authentication error librdkafka reports through its error callback.
#[derive(Default)]
pub struct ErrorCapture {
    auth: Mutex<Option<String>>,
}

impl ErrorCapture {
    fn auth_failure(&self) -> Option<String> {
        self.auth.lock().ok()?.clone()
    }
}

impl ClientContext for ErrorCapture {
    fn error(&self, error: KafkaError, reason: &str) {
        let auth = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication)
                | Some(RDKafkaErrorCode::SaslAuthenticationFailed)
        );
        if auth && let Ok(mut a) = self.auth.lock() {
            *a = Some(reason.to_string());
        }
        tracing::debug!(error = %error, "kafka client error");
    }
}

impl ConsumerContext for ErrorCapture {}

/// The source's position in a checkpoint: the next offset per partition.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct KafkaPosition {
    pub topic: String,
    pub offsets: BTreeMap<i32, i64>,
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a streaming source looks for new partitions and a recreated topic.
const METADATA_REFRESH: Duration = Duration::from_secs(5);

impl KafkaSource {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set(
                // Start offsets are always explicit (checkpoint, or the watermarks for
                // starting_offsets); an offset out of range later means the topic was recreated
                // or truncated under us, which must stop the pipeline, not silently skip data.
                "auto.offset.reset",
                "error",
            )
            .set("fetch.wait.max.ms", "100")
            // Prefetch about 5k messages per partition, 4 MiB at most: ample at the engine's
            // rate (a bare read loop with these settings reads 1.2M messages/s here), and
            // memory stays small. librdkafka postpones a partition's next fetch by
            // `fetch.queue.backoff.ms` (1 s by default) whenever this queue is full, which left
            // a fast pipeline waiting for Kafka most of the time: 10 ms keeps it fed.
            .set("queued.min.messages", "5000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.queue.backoff.ms", "10")
            .set("client.id", format!("engine-{}", self.group));
        for (k, v) in &self.cfg.properties {
            c.set(k, v.expose());
        }
        c
    }

    /// `text` with every configured property value replaced by `***`: librdkafka's errors can
    /// quote a value, and values may be secrets.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.cfg.properties.values() {
            if v.expose().len() >= 3 {
                out = out.replace(v.expose(), "***");
            }
        }
        out
    }

    /// The broker did not answer: timed out, or the transport failed.
    fn unreachable(&self, e: KafkaError) -> EngineError {
        let reason = match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
                Reason::Timeout
            }
            _ => Reason::Unreachable,
        };
        self.unavailable(
            reason,
            format!(
                "cannot reach Kafka at {} ({e}); check `brokers` (KAFKA_BROKERS in the shipped pipelines) and that the broker is running",
                self.cfg.brokers,
            ),
        )
        .with_source(e)
    }

    fn unavailable(&self, reason: Reason, message: String) -> EngineError {
        EngineError::service(Service::Kafka, reason, &self.cfg.brokers, message)
            .with_node(&self.node)
    }

    /// Streaming: assigns partitions added since the last look, from their start, and stops
    /// the pipeline if the topic was deleted or recreated under it.
    fn refresh(&mut self, consumer: &Client) -> Result<()> {
        let topic = self.cfg.topic.clone();
        let md = match consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)) {
            Ok(md) => md,
            // The broker may be restarting: keep going, librdkafka reconnects by itself.
            Err(e) => {
                tracing::debug!(error = %e, "metadata refresh failed; retrying later");
                return Ok(());
            }
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(());
        };
        if matches!(
            t.error().map(RDKafkaErrorCode::from),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic)
        ) {
            return Err(EngineError::runtime(format!(
                "topic `{topic}` was deleted from Kafka at {} while the pipeline was reading it",
                self.cfg.brokers
            )));
        }
        let mut added = TopicPartitionList::new();
        for p in t.partitions() {
            let id = p.id();
            match self.next.get(&id) {
                Some(next) => {
                    if let Ok((_, high)) =
                        consumer.fetch_watermarks(&topic, id, Duration::from_secs(5))
                        && high < *next
                    {
                        return Err(EngineError::runtime(format!(
                            "partition {id} of topic `{topic}` now ends at offset {high}, below the {next} already read: the topic was deleted and recreated (or truncated); use a new checkpoint location to read it from scratch"
                        )));
                    }
                }
                None => {
                    let Ok((low, _)) =
                        consumer.fetch_watermarks(&topic, id, Duration::from_secs(5))
                    else {
                        continue;
                    };
                    added
                        .add_partition_offset(&topic, id, Offset::Offset(low))
                        .map_err(|e| EngineError::runtime(format!("kafka: {e}")))?;
                    self.next.insert(id, low);
                }
            }
        }
        if added.count() > 0 {
            consumer.incremental_assign(&added).map_err(|e| {
                EngineError::runtime(format!("assigning new partitions of `{topic}`: {e}"))
            })?;
            tracing::info!(topic = %topic, partitions = added.count(), "new partitions found; reading them from their start");
        }
        Ok(())
    }

    /// Creates the consumer and checks that the broker answers, accepts the credentials and has
    /// the topic. No partition is assigned.
    fn connect(&self) -> Result<(Client, rdkafka::metadata::Metadata)> {
        let consumer: Client = self
            .client_config()
            .create_with_context(ErrorCapture::default())
            .map_err(|e| {
                EngineError::config(format!(
                    "bad Kafka settings: {}",
                    self.redact(&e.to_string())
                ))
            })?;
        let topic = self.cfg.topic.clone();
        // Ask in short rounds, so an authentication failure (reported through the client's error
        // callback, while the fetch itself only times out) is said at once and plainly.
        let started = Instant::now();
        let md = loop {
            match consumer.fetch_metadata(Some(&topic), Duration::from_secs(1)) {
                Ok(md) => break md,
                Err(e) => {
                    // Serve the client's events, so its error callback runs.
                    let _ = consumer.poll(Duration::from_millis(10));
                    if let Some(auth) = consumer.context().auth_failure() {
                        return Err(self.unavailable(
                            Reason::Denied,
                            format!(
                                "Kafka at {} rejected the credentials ({}); check sasl.mechanism, sasl.username and sasl.password",
                                self.cfg.brokers,
                                self.redact(&auth)
                            ),
                        ));
                    }
                    if started.elapsed() >= METADATA_TIMEOUT {
                        return Err(self.unreachable(e));
                    }
                }
            }
        };
        let t = md.topics().iter().find(|t| t.name() == topic);
        let missing = match t {
            None => true,
            Some(t) => {
                matches!(
                    t.error().map(RDKafkaErrorCode::from),
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                        | Some(RDKafkaErrorCode::UnknownTopic)
                ) || t.partitions().is_empty()
            }
        };
        if missing {
            return Err(self.unavailable(
                Reason::NotFound,
                format!(
                    "topic `{topic}` does not exist on Kafka at {}; create it or fix `topic`",
                    self.cfg.brokers,
                ),
            ));
        }
        if let Some(err) = t.and_then(|t| t.error()) {
            let code = RDKafkaErrorCode::from(err);
            let reason = match code {
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed => Reason::Denied,
                _ => Reason::Other,
            };
            return Err(self.unavailable(
                reason,
                format!(
                    "Kafka at {} refused metadata for topic `{topic}`: {code:?}",
                    self.cfg.brokers,
                ),
            ));
        }
        Ok((consumer, md))
    }

    fn position(&self) -> serde_json::Value {
        serde_json::to_value(KafkaPosition {
            topic: self.cfg.topic.clone(),
            offsets: self.next.clone(),
        })
        .expect("serialisable")
    }

    fn done(&self) -> bool {
        match &self.end {
            Some(end) => end
                .iter()
                .all(|(p, e)| self.next.get(p).copied().unwrap_or(0) >= *e),
            None => false,
        }
    }
}

struct Builders {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    ts: TimestampMillisecondBuilder,
    key: StringBuilder,
    value: BinaryBuilder,
    rows: usize,
}

impl Builders {
    fn new(cap: usize) -> Self {
        Builders {
            topic: StringBuilder::with_capacity(cap, cap * 16),
            partition: Int32Builder::with_capacity(cap),
            offset: Int64Builder::with_capacity(cap),
            ts: TimestampMillisecondBuilder::with_capacity(cap).with_timezone("UTC"),
            key: StringBuilder::with_capacity(cap, cap * 8),
            value: BinaryBuilder::with_capacity(cap, cap * 512),
            rows: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.rows = 0;
        Ok(RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(self.topic.finish()),
                Arc::new(self.partition.finish()),
                Arc::new(self.offset.finish()),
                Arc::new(self.ts.finish()),
                Arc::new(self.key.finish()),
                Arc::new(self.value.finish()),
            ],
        )?)
    }
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        kafka_schema()
    }

    fn open(&mut self, restored: Option<&serde_json::Value>) -> Result<()> {
        let (consumer, md) = self.connect()?;
        let topic = self.cfg.topic.clone();
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("connect checked the topic");
        let restored: Option<KafkaPosition> = match restored {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                EngineError::runtime(format!("bad Kafka position in the checkpoint: {e}"))
            })?),
            None => None,
        };
        if let Some(r) = &restored
            && r.topic != topic
        {
            return Err(EngineError::config(format!(
                "the checkpoint was made reading topic `{}`, this pipeline reads `{topic}`; use a new checkpoint location",
                r.topic
            )));
        }
        let mut tpl = TopicPartitionList::new();
        let mut end = BTreeMap::new();
        for p in t.partitions() {
            let id = p.id();
            let (low, high) = consumer
                .fetch_watermarks(&topic, id, METADATA_TIMEOUT)
                .map_err(|e| self.unreachable(e))?;
            let start = match restored.as_ref().and_then(|r| r.offsets.get(&id)) {
                Some(o) => *o,
                None => match self.cfg.starting_offsets {
                    // Partitions new since the checkpoint are read from their start.
                    _ if restored.is_some() => low,
                    StartingOffsets::Earliest => low,
                    StartingOffsets::Latest => high,
                },
            };
            if start > high {
                return Err(EngineError::config(format!(
                    "the checkpoint has read partition {id} of topic `{topic}` up to offset {start}, but the partition now ends at {high}: the topic was deleted and recreated (or truncated); to read it from scratch, use a new checkpoint location"
                )));
            }
            if start < low {
                tracing::warn!(topic = %topic, partition = id, checkpoint = start, earliest = low,
                    "offsets in the checkpoint were deleted by retention; reading from the earliest still there");
            }
            let start = start.max(low);
            tpl.add_partition_offset(&topic, id, Offset::Offset(start))
                .map_err(|e| EngineError::runtime(format!("kafka: {e}")))?;
            self.next.insert(id, start);
            end.insert(id, high);
        }
        consumer.assign(&tpl).map_err(|e| self.unreachable(e))?;
        tracing::info!(topic = %topic, brokers = %self.cfg.brokers, partitions = self.next.len(),
            start = ?self.next, end = ?end, "kafka source assigned");
        self.end = Some(end);
        self.consumer = Some(consumer);
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        self.connect().map(|_| ())
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        if !ctx.batch_mode() {
            self.end = None;
        }
        let schema = kafka_schema();
        let consumer = self
            .consumer
            .take()
            .ok_or_else(|| EngineError::runtime("kafka source not opened"))?;
        let mut b = Builders::new(self.cfg.batch_size);
        let mut last_emit = Instant::now();
        let topic = self.cfg.topic.clone();
        let poll_timeout = self.linger.min(Duration::from_millis(100));
        let mut last_warn: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        let (mut in_poll, mut in_emit) = (Duration::ZERO, Duration::ZERO);
        loop {
            if ctx.stopping() || self.done() {
                break;
            }
            if self.end.is_none() && last_refresh.elapsed() >= METADATA_REFRESH {
                self.refresh(&consumer)?;
                last_refresh = Instant::now();
            }
            if let Some(pos) = ctx.take_committed() {
                report_lag(&consumer, &pos);
            }
            let t0 = Instant::now();
            let polled = consumer.poll(poll_timeout);
            in_poll += t0.elapsed();
            match polled {
                None => {}
                Some(Ok(m)) => {
                    let p = m.partition();
                    let offset = m.offset();
                    let past_end = self
                        .end
                        .as_ref()
                        .and_then(|e| e.get(&p))
                        .is_some_and(|e| offset >= *e);
                    if !past_end {
                        b.topic.append_value(&topic);
                        b.partition.append_value(p);
                        b.offset.append_value(offset);
                        b.ts.append_option(m.timestamp().to_millis());
                        match m.key() {
                            Some(k) => b.key.append_value(String::from_utf8_lossy(k)),
                            None => b.key.append_null(),
                        }
                        b.value.append_option(m.payload());
                        b.rows += 1;
                        self.next.insert(p, offset + 1);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Everything below the high watermark was read. In batch mode the partition is
                    // done, even when its last offsets are transaction markers that are never
                    // delivered and `next` stays below the end seen at start.
                    if let Some(end) = self.end.as_mut() {
                        let next = self.next.get(&p).copied().unwrap_or(0);
                        end.insert(p, next.min(end.get(&p).copied().unwrap_or(next)));
                    }
                }
                Some(Err(e))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) =>
                {
                    return Err(EngineError::runtime(format!(
                        "an offset of topic `{topic}` is out of range ({e}): the topic was deleted and recreated or truncated while reading; use a new checkpoint location to read it from scratch"
                    )));
                }
                Some(Err(e)) => match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                    | Some(RDKafkaErrorCode::UnknownTopic) => {
                        return Err(EngineError::runtime(format!(
                            "topic `{topic}` disappeared from Kafka at {} while reading; it was deleted or recreated",
                            self.cfg.brokers
                        )));
                    }
                    _ => {
                        // librdkafka retries by itself; say so at most every 10 s.
                        if last_warn.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10))
                        {
                            tracing::warn!(error = %e, brokers = %self.cfg.brokers, "kafka consumer error; retrying");
                            last_warn = Some(Instant::now());
                        }
                    }
                },
            }
            if b.rows >= self.cfg.batch_size || (b.rows > 0 && last_emit.elapsed() >= self.linger) {
                let t0 = Instant::now();
                ctx.emit(b.finish(&schema)?)?;
                in_emit += t0.elapsed();
                last_emit = Instant::now();
            }
            if ctx.checkpoint_due() {
                if b.rows > 0 {
                    ctx.emit(b.finish(&schema)?)?;
                    last_emit = Instant::now();
                }
                ctx.barrier(self.position())?;
            }
        }
        if b.rows > 0 {
            ctx.emit(b.finish(&schema)?)?;
        }
        tracing::debug!(
            poll_s = in_poll.as_secs_f64(),
            emit_s = in_emit.as_secs_f64(),
            "kafka source: time waiting for Kafka and for downstream mailboxes"
        );
        ctx.barrier(self.position())?;
        self.consumer = Some(consumer);
        Ok(())
    }
}

/// Commits checkpointed offsets to the consumer group so `kafka-consumer-groups` shows lag.
fn report_lag(consumer: &Client, position: &serde_json::Value) {
    let Ok(pos) = serde_json::from_value::<KafkaPosition>(position.clone()) else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &pos.offsets {
        let _ = tpl.add_partition_offset(&pos.topic, *p, Offset::Offset(*o));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "could not commit offsets to the consumer group (lag report only)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::ErrorKind;

    fn source(brokers: &str) -> KafkaSource {
        KafkaSource {
            node: "orders_in".into(),
            cfg: KafkaSourceConfig {
                brokers: brokers.into(),
                topic: "t".into(),
                starting_offsets: StartingOffsets::Earliest,
                group_id: None,
                batch_size: default_batch_size(),
                linger: default_linger(),
                properties: BTreeMap::new(),
            },
            linger: Duration::from_millis(200),
            group: "g".into(),
            consumer: None,
            next: BTreeMap::new(),
            end: None,
        }
    }

    #[test]
    fn a_silent_broker_is_unreachable_or_timed_out_by_its_error_code() {
        let s = source("127.0.0.1:1");
        for (code, reason) in [
            (
                RDKafkaErrorCode::BrokerTransportFailure,
                Reason::Unreachable,
            ),
            (RDKafkaErrorCode::AllBrokersDown, Reason::Unreachable),
            (RDKafkaErrorCode::OperationTimedOut, Reason::Timeout),
        ] {
            let e = s.unreachable(KafkaError::MetadataFetch(code));
            assert_eq!(
                e.kind(),
                ErrorKind::Unavailable {
                    service: Service::Kafka,
                    reason
                },
                "{code:?}"
            );
            assert_eq!((e.exit_code(), e.node()), (3, Some("orders_in")));
            assert_eq!(e.address(), Some("127.0.0.1:1"));
            assert!(
                e.to_string()
                    .starts_with("cannot reach Kafka at 127.0.0.1:1 ("),
                "{e}"
            );
            let source = std::error::Error::source(&e).expect("the Kafka error");
            assert!(source.downcast_ref::<KafkaError>().is_some());
        }
    }
}
