//! Kafka: topics, and producing messages while remembering what the broker acknowledged.

use crate::stack::brokers;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

/// A client configuration for the test's broker.
fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

/// An admin client of the test's broker.
pub fn admin() -> AdminClient<DefaultClientContext> {
    config().create().expect("admin client")
}

/// Creates a topic with `partitions` partitions, failing clearly when the stack is not up.
pub async fn create_topic(topic: &str, partitions: i32) {
    let admin = admin();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "Kafka at {} did not answer: is the stack up? run `scripts/stack up`",
            brokers()
        )
    })
    .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    // Let metadata settle so the engine sees every partition.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// One acknowledged message: where the broker put it, and what it was.
#[derive(Debug, Clone)]
pub struct Sent {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Empty for a tombstone.
    pub value: Vec<u8>,
}

/// What the broker acknowledged, keyed by (partition, offset).
pub type Acked = BTreeMap<(i32, i64), Sent>;

/// Produces messages, all in flight at once, and returns what the broker acknowledged.
pub async fn produce(topic: &str, messages: Vec<(Option<String>, Vec<u8>)>) -> Acked {
    let producer: FutureProducer = config()
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let sends = messages.into_iter().map(|(key, value)| {
        let record = Record {
            partition: None,
            key,
            value: Some(value),
        };
        send(&producer, topic, record)
    });
    let sent = futures::future::join_all(sends).await;
    sent.into_iter()
        .map(|s| ((s.partition, s.offset), s))
        .collect()
}

/// One message to send: its partition (else the producer's choice), key and value (`None`: a
/// tombstone).
struct Record {
    partition: Option<i32>,
    key: Option<String>,
    value: Option<Vec<u8>>,
}

/// Sends one message and returns it as the broker acknowledged it.
async fn send(producer: &FutureProducer, topic: &str, record: Record) -> Sent {
    let Record {
        partition,
        key,
        value,
    } = record;
    let mut rec: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(topic);
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    if let Some(k) = &key {
        rec = rec.key(k);
    }
    if let Some(v) = &value {
        rec = rec.payload(v);
    }
    let delivery = producer
        .send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    Sent {
        partition: delivery.partition,
        offset: delivery.offset,
        key,
        value: value.unwrap_or_default(),
    }
}

/// Produces messages one after the other, each acknowledged before the next is sent.
async fn produce_one_by_one(topic: &str, records: Vec<Record>) -> Acked {
    let producer: FutureProducer = config().create().expect("producer");
    let mut out = BTreeMap::new();
    for record in records {
        let s = send(&producer, topic, record).await;
        out.insert((s.partition, s.offset), s);
    }
    out
}

/// Produces `n` tombstones (null values, keys `tomb-<i>`) and returns their coordinates.
pub async fn produce_tombstones(topic: &str, n: usize) -> Acked {
    let records = (0..n)
        .map(|i| Record {
            partition: None,
            key: Some(format!("tomb-{i}")),
            value: None,
        })
        .collect();
    produce_one_by_one(topic, records).await
}

/// Produces unkeyed messages to one partition and returns what the broker acknowledged.
pub async fn produce_to(topic: &str, partition: i32, values: Vec<Vec<u8>>) -> Acked {
    let records = values
        .into_iter()
        .map(|v| Record {
            partition: Some(partition),
            key: None,
            value: Some(v),
        })
        .collect();
    produce_one_by_one(topic, records).await
}
