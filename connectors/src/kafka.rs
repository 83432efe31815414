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
    BuildContext, Claims, EngineError, OpenContext, PartitionId, Positions, Reason, Result, Secret,
    Service, Source, SourceConfig, SourceContext,
};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
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
    /// The consumer group that streaming instances of the pipeline share the topic's
    /// partitions through, and that lag is reported under; default
    /// `engine-<pipeline>-<8 hex digits of the checkpoint location>`, so that unrelated
    /// deployments on one broker never join each other's group.
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
            .unwrap_or_else(|| default_group(&ctx.pipeline, &ctx.checkpoint));
        Ok(Box::new(KafkaSource {
            node: ctx.node.clone(),
            read: Reading::new(&self.topic, self.batch_size),
            cfg: self,
            linger,
            group,
            consumer: None,
        }))
    }
}

pub struct KafkaSource {
    /// The node's name, for errors.
    node: String,
    cfg: KafkaSourceConfig,
    linger: Duration,
    group: String,
    consumer: Option<Closing>,
    /// Where each partition is, and the rows read but not sent yet.
    read: Reading,
}

/// The default consumer group: the pipeline's name and a hash (FNV-1a) of its checkpoint
/// location, which together say which deployment an instance belongs to.
fn default_group(pipeline: &str, checkpoint: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in checkpoint.trim_end_matches('/').bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("engine-{pipeline}-{:08x}", h >> 32)
}

/// The consumer, with a context that remembers authentication failures and serves the
/// group's rebalances.
type Client = BaseConsumer<ErrorCapture>;

/// How long dropping the consumer waits for it to close (leave the group, stop its threads).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The source's consumer. Dropping it closes it on a thread of its own and waits at most
/// [`CLOSE_WAIT`]: rust-rdkafka's own drop polls until librdkafka says the consumer closed,
/// without a bound, and while a broker restarts that may be never, which would keep a failed
/// engine from reporting its error and exiting.
struct Closing(Option<Client>);

impl std::ops::Deref for Closing {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Taken only by `drop`.
        self.0
            .as_ref()
            .expect("the consumer is taken only when dropped")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (done, closed) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = done.send(());
            });
        if spawned.is_err() {
            tracing::warn!("could not start a thread to close the Kafka consumer; leaving it open");
            return;
        }
        if closed.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(
                wait_s = CLOSE_WAIT.as_secs(),
                "the Kafka consumer did not close in time (is the broker reachable?); leaving without it, the group hands its partitions on once session.timeout.ms passes"
            );
        }
    }
}

/// Keeps the last authentication error librdkafka reports through its error callback, and,
/// in a consumer group, claims the partitions the group assigns.
#[derive(Default)]
pub struct ErrorCapture {
    auth: Mutex<Option<String>>,
    group: Mutex<Group>,
    /// Each partition's end (high watermark) as librdkafka's statistics last reported it, for
    /// `engine_kafka_consumer_lag`. rust-rdkafka does not expose the cached watermarks.
    ends: Mutex<BTreeMap<(String, i32), i64>>,
}

/// A streaming source's membership of its consumer group.
#[derive(Default)]
struct Group {
    /// Set once `run` starts: claims what the group assigns, releases what it revokes.
    claims: Option<Box<dyn Claims>>,
    topic: String,
    starting: StartingOffsets,
    /// Assigned since `run` last looked: each partition with the offset reading starts at.
    assigned: Vec<(i32, i64)>,
    /// Revoked since `run` last looked.
    revoked: Vec<i32>,
    /// A claim that failed; the source stops with it.
    failed: Option<EngineError>,
}

impl Group {
    /// Claims partitions `ids`, which the group just assigned: returns where each starts.
    fn claim(&mut self, consumer: &Client, ids: &[i32]) -> Result<Vec<(i32, i64)>> {
        let topic = self.topic.clone();
        let claims = self.claims.as_mut().ok_or_else(|| {
            EngineError::runtime("kafka: partitions assigned before the source ran")
        })?;
        let pids: Vec<PartitionId> = ids.iter().map(|p| PartitionId::kafka(&topic, *p)).collect();
        let claimed = claims.claim(&pids)?;
        // Committed positions always win; without one, a partition of a source that has committed
        // is new since (read from its start), else `starting_offsets` decides.
        let restored = (claimed.resumed || !claimed.positions.is_empty())
            .then(|| kafka_position(&topic, &claimed.positions))
            .transpose()?;
        let mut starts = Vec::with_capacity(ids.len());
        for id in ids {
            let (low, high) = consumer
                .fetch_watermarks(&topic, *id, METADATA_TIMEOUT)
                .map_err(|e| {
                    EngineError::runtime(format!(
                        "kafka: end offsets of partition {id} of `{topic}`: {e}"
                    ))
                })?;
            let start = start_offset(&topic, *id, restored.as_ref(), (low, high), self.starting)?;
            if let Some(deleted) = start.deleted_from {
                tracing::warn!(topic = %topic, partition = id, checkpoint = deleted, earliest = low,
                    "offsets in the checkpoint were deleted by retention; reading from the earliest still there");
            }
            starts.push((*id, start.offset));
        }
        Ok(starts)
    }
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

    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(mut ends) = self.ends.lock() else {
            return;
        };
        for (topic, t) in statistics.topics {
            for (id, p) in t.partitions {
                // -1 is librdkafka's internal UA partition, and an unknown end.
                if id >= 0 && p.hi_offset >= 0 {
                    ends.insert((topic.clone(), id), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for ErrorCapture {
    /// The group moved partitions (cooperative protocol: only the ones that move). Assigned
    /// ones are claimed in the checkpoint first, which fences their previous owner, and start at
    /// their committed offset, set in the assignment (librdkafka does not take a seek right
    /// after an assign). Revoked ones are released: their uncommitted rows are left to the next
    /// owner, which reads them again from the last committed offset.
    fn rebalance(&self, consumer: &Client, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let Ok(mut g) = self.group.lock() else {
            return;
        };
        let ids: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => match g.claim(consumer, &ids) {
                Ok(starts) => {
                    for (p, o) in &starts {
                        let _ = tpl.set_partition_offset(&g.topic, *p, Offset::Offset(*o));
                    }
                    if let Err(e) = consumer.incremental_assign(tpl) {
                        g.failed = Some(EngineError::runtime(format!(
                            "kafka: taking the partitions the group assigned: {e}"
                        )));
                        return;
                    }
                    tracing::info!(topic = %g.topic, partitions = ?ids, starts = ?starts.iter().map(|s| s.1).collect::<Vec<_>>(),
                            "partitions gained: claimed in the checkpoint, reading from the committed offsets");
                    g.assigned.extend(starts);
                }
                Err(e) => g.failed = Some(e),
            },
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let topic = g.topic.clone();
                let pids: Vec<PartitionId> =
                    ids.iter().map(|p| PartitionId::kafka(&topic, *p)).collect();
                if let Some(c) = g.claims.as_mut() {
                    c.release(&pids);
                }
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    tracing::warn!(error = %e, "kafka: giving revoked partitions back");
                }
                tracing::info!(topic = %topic, partitions = ?ids,
                    "partitions lost: the group moved them; what was not committed is read again by their next owner");
                g.revoked.extend(ids);
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "kafka: rebalance error");
            }
        }
    }
}

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
            // Streaming instances share partitions through the group, moving only the
            // partitions that change hands at a rebalance (KIP-429), and see partitions added
            // to the topic within 5 s.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // An instance that died is noticed after 10 s (Kafka's default is 45 s), and its
            // partitions move to the others; override with `properties`.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .set("topic.metadata.refresh.interval.ms", "5000")
            // Each partition's end offset for the lag metric, from the statistics.
            .set("statistics.interval.ms", "1000")
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

    /// Streaming: stops the pipeline if the topic was deleted or recreated under it. (The group
    /// assigns partitions added to the topic.)
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
        for p in t.partitions() {
            let id = p.id();
            if let Some(next) = self.read.next.get(&id)
                && let Ok((_, high)) = consumer.fetch_watermarks(&topic, id, Duration::from_secs(5))
                && high < *next
            {
                return Err(EngineError::runtime(format!(
                    "partition {id} of topic `{topic}` now ends at offset {high}, below the {next} already read: the topic was deleted and recreated (or truncated); use a new checkpoint location to read it from scratch"
                )));
            }
        }
        Ok(())
    }

    /// Takes what the group's last rebalance did: gained partitions start at their claimed
    /// offsets; lost ones are forgotten, rows not sent included. True when some were lost.
    fn rebalanced(&mut self, consumer: &Client) -> Result<bool> {
        let Ok(mut g) = consumer.context().group.lock() else {
            return Ok(false);
        };
        if let Some(e) = g.failed.take() {
            return Err(e.context("claiming the partitions the consumer group assigned"));
        }
        for (p, offset) in g.assigned.drain(..) {
            self.read.next.insert(p, offset);
        }
        let lost = !g.revoked.is_empty();
        for p in g.revoked.drain(..) {
            self.read.forget(p);
        }
        Ok(lost)
    }

    /// Creates the consumer and checks that the broker answers, accepts the credentials and has
    /// the topic. No partition is assigned.
    fn connect(&self) -> Result<(Closing, rdkafka::metadata::Metadata)> {
        let consumer = Closing(Some(
            self.client_config()
                .create_with_context(ErrorCapture::default())
                .map_err(|e| {
                    EngineError::config(format!(
                        "bad Kafka settings: {}",
                        self.redact(&e.to_string())
                    ))
                })?,
        ));
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
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        kafka_schema()
    }

    fn open(&mut self, ctx: &mut dyn OpenContext) -> Result<()> {
        let (consumer, md) = self.connect()?;
        let topic = self.cfg.topic.clone();
        if !ctx.batch_mode() {
            // Streaming: the group assigns partitions once `run` subscribes.
            if let Ok(mut g) = consumer.context().group.lock() {
                g.topic = topic.clone();
                g.starting = self.cfg.starting_offsets;
            }
            tracing::info!(topic = %topic, brokers = %self.cfg.brokers, group = %self.group,
                "kafka source joining its consumer group");
            self.consumer = Some(consumer);
            return Ok(());
        }
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("connect checked the topic");
        let ids: Vec<PartitionId> = t
            .partitions()
            .iter()
            .map(|p| PartitionId::kafka(&topic, p.id()))
            .collect();
        let claimed = ctx.claim(&ids)?;
        // Committed positions always win; without one, a partition of a source that has committed
        // is new since (read from its start), else `starting_offsets` decides.
        let restored = (claimed.resumed || !claimed.positions.is_empty())
            .then(|| kafka_position(&topic, &claimed.positions))
            .transpose()?;
        let mut tpl = TopicPartitionList::new();
        let mut end = BTreeMap::new();
        for p in t.partitions() {
            let id = p.id();
            let (low, high) = consumer
                .fetch_watermarks(&topic, id, METADATA_TIMEOUT)
                .map_err(|e| self.unreachable(e))?;
            let start = start_offset(
                &topic,
                id,
                restored.as_ref(),
                (low, high),
                self.cfg.starting_offsets,
            )?;
            if let Some(deleted) = start.deleted_from {
                tracing::warn!(topic = %topic, partition = id, checkpoint = deleted, earliest = low,
                    "offsets in the checkpoint were deleted by retention; reading from the earliest still there");
            }
            tpl.add_partition_offset(&topic, id, Offset::Offset(start.offset))
                .map_err(|e| EngineError::runtime(format!("kafka: {e}")))?;
            self.read.next.insert(id, start.offset);
            end.insert(id, high);
        }
        consumer.assign(&tpl).map_err(|e| self.unreachable(e))?;
        tracing::info!(topic = %topic, brokers = %self.cfg.brokers, partitions = self.read.next.len(),
            start = ?self.read.next, end = ?end, "kafka source assigned");
        self.read.end = Some(end);
        self.consumer = Some(consumer);
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        self.connect().map(|_| ())
    }

    fn lead_partition(&self) -> Option<PartitionId> {
        Some(PartitionId::kafka(&self.cfg.topic, 0))
    }

    fn legacy_positions(&self, position: &serde_json::Value) -> Result<Positions> {
        let Some(r) = restored_position(Some(position), &self.cfg.topic)? else {
            return Ok(Positions::new());
        };
        Ok(r.offsets
            .iter()
            .map(|(p, o)| (PartitionId::kafka(&r.topic, *p), serde_json::json!(o)))
            .collect())
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        let consumer = self
            .consumer
            .take()
            .ok_or_else(|| EngineError::runtime("kafka source not opened"))?;
        let topic = self.cfg.topic.clone();
        if !ctx.batch_mode() {
            self.read.end = None;
            if let Ok(mut g) = consumer.context().group.lock() {
                g.claims = Some(ctx.claims());
            }
            consumer
                .subscribe(&[&topic])
                .map_err(|e| self.unreachable(e))?;
        }
        let poll_timeout = self.linger.min(Duration::from_millis(100));
        let mut last_warn: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        let mut lag_reported = std::collections::BTreeSet::new();
        let (mut in_poll, mut in_emit) = (Duration::ZERO, Duration::ZERO);
        // Sends batches downstream, counting the time spent waiting for room.
        let mut send = |ctx: &mut dyn SourceContext, batches: Vec<(PartitionId, RecordBatch)>| {
            let t0 = Instant::now();
            for (p, b) in batches {
                ctx.emit(&p, b)?;
            }
            in_emit += t0.elapsed();
            Ok::<_, EngineError>(())
        };
        loop {
            if ctx.stopping() || self.read.done() {
                break;
            }
            if self.read.end.is_none() && last_refresh.elapsed() >= METADATA_REFRESH {
                self.refresh(&consumer)?;
                last_refresh = Instant::now();
            }
            if let Some(pos) = ctx.take_committed() {
                let lag = report_lag(&consumer, &topic, &pos, &mut lag_reported);
                ctx.report_lag(lag);
            }
            let t0 = Instant::now();
            let polled = consumer.poll(poll_timeout);
            in_poll += t0.elapsed();
            if self.rebalanced(&consumer)? {
                // Partitions were given up: close the epoch, so that rows read before (which
                // are abandoned) and rows read after a partition is claimed again (from its last
                // commit) never share one.
                send(ctx, self.read.flush_all()?)?;
                ctx.barrier(self.read.positions())?;
            }
            match polled {
                // Nothing came within the poll timeout: send what waits.
                None => send(ctx, self.read.flush_all()?)?,
                Some(Ok(m)) => {
                    let key = m.key().map(String::from_utf8_lossy);
                    let full = self.read.accept(
                        Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            timestamp: m.timestamp().to_millis(),
                            key: key.as_deref(),
                            value: m.payload(),
                        },
                        t0,
                    )?;
                    if let Some(full) = full {
                        send(ctx, vec![full])?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.read.partition_eof(p),
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
            if self.read.lingering(self.linger) {
                send(ctx, self.read.flush_older(self.linger, Instant::now())?)?;
            }
            if ctx.checkpoint_due() {
                send(ctx, self.read.flush_all()?)?;
                ctx.barrier(self.read.positions())?;
            }
        }
        send(ctx, self.read.flush_all()?)?;
        tracing::debug!(
            poll_s = in_poll.as_secs_f64(),
            emit_s = in_emit.as_secs_f64(),
            "kafka source: time waiting for Kafka and for downstream mailboxes"
        );
        let last = self.read.positions();
        ctx.barrier(last.clone())?;
        if !ctx.batch_mode() {
            // Stay in the group until the last epoch is committed, so the partitions are handed
            // over with it rather than read again by their next owner.
            wait_for_commit(ctx, &last, HANDOVER_WAIT);
        }
        self.consumer = Some(consumer);
        Ok(())
    }
}

/// How long a stopping streaming source waits for its last epoch to commit before it leaves
/// the group anyway (its partitions are then read again from their last commit).
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// Waits until the coordinator reports `last` committed, or `within` passes.
fn wait_for_commit(ctx: &mut dyn SourceContext, last: &Positions, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ctx.take_committed().is_some_and(|c| &c == last) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(
        "the last epoch did not commit within {} s; leaving the group without it",
        within.as_secs()
    );
}

/// The position restored from a checkpoint, which must be of `topic`.
fn restored_position(
    restored: Option<&serde_json::Value>,
    topic: &str,
) -> Result<Option<KafkaPosition>> {
    let Some(v) = restored else {
        return Ok(None);
    };
    let r: KafkaPosition = serde_json::from_value(v.clone())
        .map_err(|e| EngineError::runtime(format!("bad Kafka position in the checkpoint: {e}")))?;
    if r.topic != topic {
        return Err(EngineError::config(format!(
            "the checkpoint was made reading topic `{}`, this pipeline reads `{topic}`; use a new checkpoint location",
            r.topic
        )));
    }
    Ok(Some(r))
}

/// The offsets of `topic` among committed positions, which must all be of that topic.
fn kafka_position(topic: &str, positions: &Positions) -> Result<KafkaPosition> {
    let prefix = format!("{topic}/");
    let mut offsets = BTreeMap::new();
    for (id, v) in positions {
        let p = id
            .as_str()
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok());
        let (Some(p), Some(o)) = (p, v.as_i64()) else {
            return Err(EngineError::config(format!(
                "the checkpoint holds position {v} of partition `{id}`, which is not of topic `{topic}`: it was made reading another topic; use a new checkpoint location"
            )));
        };
        offsets.insert(p, o);
    }
    Ok(KafkaPosition {
        topic: topic.to_string(),
        offsets,
    })
}

/// Where a partition starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    offset: i64,
    /// The checkpoint's offset, when retention deleted it (reading starts at the earliest left).
    deleted_from: Option<i64>,
}

/// Where partition `id`, holding offsets `[low, high)`, starts: at the checkpoint's next offset
/// when it has one; at `low` for a partition new since the checkpoint; else where
/// `starting_offsets` says.
fn start_offset(
    topic: &str,
    id: i32,
    restored: Option<&KafkaPosition>,
    (low, high): (i64, i64),
    starting: StartingOffsets,
) -> Result<Start> {
    let start = match restored.and_then(|r| r.offsets.get(&id)) {
        Some(o) => *o,
        // Partitions new since the checkpoint are read from their start.
        None if restored.is_some() => low,
        None => match starting {
            StartingOffsets::Earliest => low,
            StartingOffsets::Latest => high,
        },
    };
    if start > high {
        return Err(EngineError::config(format!(
            "the checkpoint has read partition {id} of topic `{topic}` up to offset {start}, but the partition now ends at {high}: the topic was deleted and recreated (or truncated); to read it from scratch, use a new checkpoint location"
        )));
    }
    Ok(Start {
        offset: start.max(low),
        deleted_from: (start < low).then_some(start),
    })
}

/// One Kafka message, as the source reads it.
#[derive(Debug, Clone, Copy)]
struct Record<'a> {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&'a str>,
    value: Option<&'a [u8]>,
}

/// The source's bookkeeping, apart from Kafka: the next offset per partition, the end offsets
/// of a batch run, and the rows read but not sent, one batch per partition (every batch the
/// source emits holds one partition's rows, in offset order).
struct Reading {
    topic: String,
    batch_size: usize,
    /// Next offset to read, per partition.
    next: BTreeMap<i32, i64>,
    /// Batch mode: the end offset (high watermark at start) per partition.
    end: Option<BTreeMap<i32, i64>>,
    pending: BTreeMap<i32, Pending>,
    /// When the oldest row still pending was read.
    oldest: Option<Instant>,
}

/// One partition's rows not sent yet.
struct Pending {
    id: PartitionId,
    rows: Builders,
    /// When its first row was read.
    since: Option<Instant>,
}

impl Reading {
    fn new(topic: &str, batch_size: usize) -> Self {
        Reading {
            topic: topic.to_string(),
            batch_size,
            next: BTreeMap::new(),
            end: None,
            pending: BTreeMap::new(),
            oldest: None,
        }
    }

    /// Takes a message read at `now`; returns its partition's batch once it is full. A batch
    /// run skips messages past the end seen at start.
    fn accept(
        &mut self,
        r: Record<'_>,
        now: Instant,
    ) -> Result<Option<(PartitionId, RecordBatch)>> {
        let past_end = self
            .end
            .as_ref()
            .and_then(|e| e.get(&r.partition))
            .is_some_and(|e| r.offset >= *e);
        if past_end {
            return Ok(None);
        }
        self.next.insert(r.partition, r.offset + 1);
        let (topic, batch_size) = (&self.topic, self.batch_size);
        let p = self.pending.entry(r.partition).or_insert_with(|| Pending {
            id: PartitionId::kafka(topic, r.partition),
            rows: Builders::new(batch_size),
            since: None,
        });
        let b = &mut p.rows;
        b.topic.append_value(topic);
        b.partition.append_value(r.partition);
        b.offset.append_value(r.offset);
        b.ts.append_option(r.timestamp);
        b.key.append_option(r.key);
        b.value.append_option(r.value);
        b.rows += 1;
        if p.since.is_none() {
            p.since = Some(now);
            self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
        }
        if b.rows >= batch_size {
            p.since = None;
            let batch = (p.id.clone(), p.rows.finish()?);
            self.oldest = self.pending.values().filter_map(|p| p.since).min();
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// True when a pending row has waited `linger` or more.
    fn lingering(&self, linger: Duration) -> bool {
        self.oldest.is_some_and(|t| t.elapsed() >= linger)
    }

    /// The batches of partitions whose first pending row was read `linger` or more before `now`.
    fn flush_older(
        &mut self,
        linger: Duration,
        now: Instant,
    ) -> Result<Vec<(PartitionId, RecordBatch)>> {
        let mut out = Vec::new();
        for p in self.pending.values_mut() {
            if p.since
                .is_some_and(|t| now.saturating_duration_since(t) >= linger)
            {
                p.since = None;
                out.push((p.id.clone(), p.rows.finish()?));
            }
        }
        self.oldest = self.pending.values().filter_map(|p| p.since).min();
        Ok(out)
    }

    /// Every pending batch (before a barrier, when Kafka is quiet, at the end).
    fn flush_all(&mut self) -> Result<Vec<(PartitionId, RecordBatch)>> {
        let mut out = Vec::new();
        for p in self.pending.values_mut() {
            if p.since.take().is_some() {
                out.push((p.id.clone(), p.rows.finish()?));
            }
        }
        self.oldest = None;
        Ok(out)
    }

    /// Everything below the high watermark of partition `p` was read. In batch mode the
    /// partition is done, even when its last offsets are transaction markers that are never
    /// delivered and `next` stays below the end seen at start.
    fn partition_eof(&mut self, p: i32) {
        if let Some(end) = self.end.as_mut() {
            let next = self.next.get(&p).copied().unwrap_or(0);
            end.insert(p, next.min(end.get(&p).copied().unwrap_or(next)));
        }
    }

    /// Forgets partition `p` (the group moved it away): its position and the rows not sent.
    fn forget(&mut self, p: i32) {
        self.next.remove(&p);
        self.pending.remove(&p);
        self.oldest = self.pending.values().filter_map(|p| p.since).min();
    }

    /// Batch mode: every partition read up to its end.
    fn done(&self) -> bool {
        match &self.end {
            Some(end) => end
                .iter()
                .all(|(p, e)| self.next.get(p).copied().unwrap_or(0) >= *e),
            None => false,
        }
    }

    /// The positions a barrier records: the next offset of each partition. Rows pending are not
    /// covered by them, so the source sends them before the barrier.
    fn positions(&self) -> Positions {
        debug_assert!(self.oldest.is_none(), "rows pending at a barrier");
        self.next
            .iter()
            .map(|(p, o)| (PartitionId::kafka(&self.topic, *p), serde_json::json!(o)))
            .collect()
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

    fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        Ok(RecordBatch::try_new(
            kafka_schema(),
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

/// Commits checkpointed offsets to the consumer group so `kafka-consumer-groups` shows lag, and
/// sets `engine_kafka_committed_offset` and `engine_kafka_consumer_lag` (the partition's end, as
/// the consumer last heard it, less the committed next offset) for the partitions this process
/// reads. A partition in `reported` but not in `positions` moved to another process: its lag
/// here becomes 0, so that a sum over the instances counts it once. Returns the lag of the
/// partitions whose end is known, for the epochs' progress.
fn report_lag(
    consumer: &Client,
    topic: &str,
    positions: &Positions,
    reported: &mut std::collections::BTreeSet<i32>,
) -> BTreeMap<PartitionId, i64> {
    let mut lag = BTreeMap::new();
    let Ok(pos) = kafka_position(topic, positions) else {
        return lag;
    };
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &pos.offsets {
        let _ = tpl.add_partition_offset(&pos.topic, *p, Offset::Offset(*o));
        let labels = [("topic", pos.topic.clone()), ("partition", p.to_string())];
        metrics::gauge!("engine_kafka_committed_offset", &labels).set(*o as f64);
        let end = consumer
            .context()
            .ends
            .lock()
            .ok()
            .and_then(|e| e.get(&(pos.topic.clone(), *p)).copied());
        if let Some(high) = end {
            let behind = (high - o).max(0);
            metrics::gauge!("engine_kafka_consumer_lag", &labels).set(behind as f64);
            lag.insert(PartitionId::kafka(&pos.topic, *p), behind);
        }
    }
    for gone in reported.iter().filter(|p| !pos.offsets.contains_key(p)) {
        let labels = [
            ("topic", pos.topic.clone()),
            ("partition", gone.to_string()),
        ];
        metrics::gauge!("engine_kafka_consumer_lag", &labels).set(0.0);
    }
    *reported = pos.offsets.keys().copied().collect();
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "could not commit offsets to the consumer group (lag report only)");
    }
    lag
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
            read: Reading::new("t", default_batch_size()),
        }
    }

    use arrow::array::{AsArray, Int32Array};
    use arrow::datatypes::{Int32Type, Int64Type};

    const TOPIC: &str = "orders";

    fn position(offsets: &[(i32, i64)]) -> KafkaPosition {
        KafkaPosition {
            topic: TOPIC.into(),
            offsets: offsets.iter().copied().collect(),
        }
    }

    fn start(
        id: i32,
        restored: Option<&KafkaPosition>,
        range: (i64, i64),
        starting: StartingOffsets,
    ) -> Result<Start> {
        start_offset(TOPIC, id, restored, range, starting)
    }

    #[test]
    fn a_restored_partition_starts_at_its_next_offset() {
        let r = position(&[(0, 40), (1, 7)]);
        for starting in [StartingOffsets::Earliest, StartingOffsets::Latest] {
            let s = start(0, Some(&r), (10, 100), starting).unwrap();
            assert_eq!(
                s,
                Start {
                    offset: 40,
                    deleted_from: None
                }
            );
            // Read up to the end exactly: it starts at the end.
            let s = start(1, Some(&r), (0, 7), starting).unwrap();
            assert_eq!(s.offset, 7);
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

    #[test]
    fn a_partition_new_since_the_checkpoint_starts_at_its_beginning() {
        let r = position(&[(0, 40)]);
        for starting in [StartingOffsets::Earliest, StartingOffsets::Latest] {
            let s = start(2, Some(&r), (5, 90), starting).unwrap();
            assert_eq!(
                s,
                Start {
                    offset: 5,
                    deleted_from: None
                },
                "{starting:?}"
            );
        }
    }

    #[test]
    fn without_a_checkpoint_starting_offsets_decides() {
        assert_eq!(
            start(0, None, (5, 90), StartingOffsets::Earliest)
                .unwrap()
                .offset,
            5
        );
        assert_eq!(
            start(0, None, (5, 90), StartingOffsets::Latest)
                .unwrap()
                .offset,
            90
        );
    }

    #[test]
    fn offsets_deleted_by_retention_start_at_the_earliest_left() {
        let r = position(&[(0, 3)]);
        let s = start(0, Some(&r), (10, 20), StartingOffsets::Earliest).unwrap();
        assert_eq!(
            s,
            Start {
                offset: 10,
                deleted_from: Some(3)
            }
        );
    }

    #[test]
    fn a_checkpoint_past_the_end_means_the_topic_was_recreated() {
        let r = position(&[(0, 50)]);
        let e = start(0, Some(&r), (0, 20), StartingOffsets::Earliest).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.contains("partition 0 of topic `orders` up to offset 50")
                && text.contains("ends at 20")
                && text.contains("new checkpoint location"),
            "{text}"
        );
    }

    #[test]
    fn the_restored_position_must_be_of_this_topic() {
        assert!(restored_position(None, TOPIC).unwrap().is_none());
        let v = serde_json::to_value(position(&[(0, 4), (1, 9)])).unwrap();
        let r = restored_position(Some(&v), TOPIC).unwrap().unwrap();
        assert_eq!(r.offsets, BTreeMap::from([(0, 4), (1, 9)]));
        let e = restored_position(Some(&v), "logs").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("topic `orders`, this pipeline reads `logs`")
        );
        let e = restored_position(Some(&serde_json::json!({ "offsets": 3 })), TOPIC).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Runtime, "{e:?}");
    }

    fn record(partition: i32, offset: i64) -> Record<'static> {
        Record {
            partition,
            offset,
            timestamp: Some(1_000 + offset),
            key: (offset % 2 == 0).then_some("k"),
            value: Some(b"{}"),
        }
    }

    /// Checks a batch holds partition `p`'s rows at `offsets`, in order, and says so in its id.
    fn assert_batch(batch: &(PartitionId, RecordBatch), p: i32, offsets: &[i64]) {
        let (id, b) = batch;
        assert_eq!(id, &PartitionId::kafka(TOPIC, p));
        assert_eq!(id.as_str(), format!("{TOPIC}/{p}"));
        assert_eq!(b.schema(), kafka_schema());
        let parts = b.column(1).as_primitive::<Int32Type>();
        assert!(
            parts.iter().all(|v| v == Some(p)),
            "one partition per batch"
        );
        let got: Vec<i64> = b.column(2).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(got, offsets);
        assert!(
            b.column(0)
                .as_string::<i32>()
                .iter()
                .all(|t| t == Some(TOPIC))
        );
    }

    #[test]
    fn batches_hold_one_partition_each_and_fill_up_to_batch_size() {
        let now = Instant::now();
        let mut r = Reading::new(TOPIC, 3);
        let mut full = Vec::new();
        // Interleaved partitions, as librdkafka delivers them.
        for (p, o) in [
            (0, 10),
            (1, 70),
            (0, 11),
            (1, 71),
            (2, 5),
            (0, 12),
            (1, 72),
            (0, 13),
        ] {
            full.extend(r.accept(record(p, o), now).unwrap());
        }
        assert_eq!(full.len(), 2, "partitions 0 and 1 filled a batch of 3");
        assert_batch(&full[0], 0, &[10, 11, 12]);
        assert_batch(&full[1], 1, &[70, 71, 72]);
        let rest = r.flush_all().unwrap();
        assert_eq!(rest.len(), 2);
        assert_batch(&rest[0], 0, &[13]);
        assert_batch(&rest[1], 2, &[5]);
        assert!(r.flush_all().unwrap().is_empty(), "nothing left");
        // Timestamps, keys and values go along with their rows.
        let b = &full[0].1;
        let ts: Vec<i64> = b
            .column(3)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .values()
            .to_vec();
        assert_eq!(ts, [1010, 1011, 1012]);
        let keys: Vec<Option<&str>> = b.column(4).as_string::<i32>().iter().collect();
        assert_eq!(keys, [Some("k"), None, Some("k")]);
        assert_eq!(b.column(5).as_binary::<i32>().value(1), b"{}");
    }

    #[test]
    fn the_position_at_a_barrier_is_the_next_offset_per_partition() {
        let now = Instant::now();
        let mut r = Reading::new(TOPIC, 100);
        r.next = BTreeMap::from([(0, 10), (1, 70), (2, 0)]);
        for (p, o) in [(0, 10), (0, 11), (1, 70)] {
            assert!(r.accept(record(p, o), now).unwrap().is_none());
        }
        let sent = r.flush_all().unwrap();
        assert_eq!(sent.len(), 2);
        let positions = r.positions();
        // Partition 2 read nothing: it restarts where it was.
        let expected: Positions = [(0, 12), (1, 71), (2, 0)]
            .into_iter()
            .map(|(p, o)| (PartitionId::kafka(TOPIC, p), serde_json::json!(o)))
            .collect();
        assert_eq!(positions, expected);
        // The positions restore to where reading continues.
        let restored = kafka_position(TOPIC, &positions).unwrap();
        assert_eq!(restored.offsets, BTreeMap::from([(0, 12), (1, 71), (2, 0)]));
        for (p, next) in [(0, 12), (1, 71), (2, 0)] {
            let s = start(p, Some(&restored), (0, 100), StartingOffsets::Latest).unwrap();
            assert_eq!(s.offset, next, "partition {p}");
        }
        // Another topic's positions are refused.
        let other: Positions = [(PartitionId::kafka("logs", 0), serde_json::json!(3))].into();
        let e = kafka_position(TOPIC, &other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(
            e.to_string().contains("use a new checkpoint location"),
            "{e}"
        );
    }

    #[test]
    fn linger_sends_partitions_whose_rows_waited_long_enough() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(200);
        let mut r = Reading::new(TOPIC, 100);
        r.accept(record(0, 1), t0).unwrap();
        r.accept(record(1, 1), t0 + Duration::from_millis(150))
            .unwrap();
        r.accept(record(0, 2), t0 + Duration::from_millis(160))
            .unwrap();
        assert!(
            r.flush_older(linger, t0 + Duration::from_millis(199))
                .unwrap()
                .is_empty()
        );
        let sent = r
            .flush_older(linger, t0 + Duration::from_millis(200))
            .unwrap();
        assert_eq!(sent.len(), 1);
        assert_batch(&sent[0], 0, &[1, 2]);
        // Partition 1's row is now the oldest pending one.
        assert_eq!(r.oldest, Some(t0 + Duration::from_millis(150)));
        let sent = r
            .flush_older(linger, t0 + Duration::from_millis(350))
            .unwrap();
        assert_batch(&sent[0], 1, &[1]);
        assert_eq!(r.oldest, None);
        assert!(!r.lingering(linger));
    }

    #[test]
    fn a_batch_run_stops_at_the_end_seen_at_start() {
        let now = Instant::now();
        let mut r = Reading::new(TOPIC, 100);
        r.next = BTreeMap::from([(0, 0), (1, 0)]);
        r.end = Some(BTreeMap::from([(0, 2), (1, 5)]));
        assert!(!r.done());
        for o in 0..3 {
            r.accept(record(0, o), now).unwrap();
        }
        let sent = r.flush_all().unwrap();
        assert_batch(&sent[0], 0, &[0, 1]);
        assert_eq!(r.next[&0], 2, "offset 2 is past the end: skipped");
        assert!(!r.done(), "partition 1 is not read yet");
        // Partition 1's last offsets are transaction markers: its end of partition comes at 3.
        for o in 0..3 {
            r.accept(record(1, o), now).unwrap();
        }
        r.partition_eof(1);
        assert!(r.done());
        assert_eq!(r.end.as_ref().unwrap()[&1], 3);
    }

    #[test]
    fn an_empty_partition_column_is_never_sent() {
        let mut r = Reading::new(TOPIC, 2);
        assert!(r.flush_all().unwrap().is_empty());
        assert!(!r.lingering(Duration::ZERO));
        let full = r.accept(record(4, 0), Instant::now()).unwrap();
        assert!(full.is_none());
        let full = r.accept(record(4, 1), Instant::now()).unwrap().unwrap();
        let parts: &Int32Array = full.1.column(1).as_primitive();
        assert_eq!(parts.values().to_vec(), [4, 4]);
        assert!(r.flush_all().unwrap().is_empty());
    }
}
