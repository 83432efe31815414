//! The raw Kafka read rate, for `make bench`: a minimal rdkafka loop that reads a topic from its
//! start to the end offsets seen at start and touches every payload (sums its bytes), with no
//! parsing and no output. It prints one JSON line.
//!
//! `cargo run --release --example kafka_read -- <brokers> <topic>`

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = match args.as_slice() {
        [_, b, t] => (b.clone(), t.clone()),
        _ => {
            eprintln!("usage: kafka_read <brokers> <topic>");
            std::process::exit(2);
        }
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("group.id", "engine-bench-raw")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        // A larger prefetch queue than the engine's (connectors/src/kafka.rs), to measure the
        // fastest read; the 10 ms backoff is the same.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.queue.backoff.ms", "10");
    // Extra librdkafka settings to compare, e.g. KAFKA_READ_PROPERTIES="fetch.max.bytes=1048576".
    if let Ok(extra) = std::env::var("KAFKA_READ_PROPERTIES") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                config.set(k.trim(), v.trim());
            }
        }
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic");
    let mut tpl = TopicPartitionList::new();
    let mut end = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        tpl.add_partition_offset(&topic, p.id(), Offset::Offset(low))
            .expect("offset");
        end.insert(p.id(), high);
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let (mut messages, mut bytes, mut checksum) = (0u64, 0u64, 0u64);
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    while end
        .iter()
        .any(|(p, e)| next.get(p).copied().unwrap_or(0) < *e)
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(v) = m.payload() {
                bytes += v.len() as u64;
                checksum = checksum.wrapping_add(v.iter().map(|b| *b as u64).sum::<u64>());
            }
            messages += 1;
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"messages\": {messages}, \"bytes\": {bytes}, \"seconds\": {secs:.3}, \"messages_per_s\": {:.0}, \"checksum\": {checksum}}}",
        messages as f64 / secs
    );
}
