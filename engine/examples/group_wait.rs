//! For `make bench`'s scale-out runs: waits until a consumer group has committed offsets that
//! add up to `<messages>` over every partition of a topic (the engine commits its offsets to its
//! group after each epoch), polling every 100 ms, then prints one JSON line with the seconds it
//! waited. Exits 1 after `<timeout s>`.
//!
//! `cargo run --release --example group_wait -- <brokers> <group> <topic> <messages> <timeout s>`

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, group, topic, messages, timeout] = args.as_slice() else {
        eprintln!("usage: group_wait <brokers> <group> <topic> <messages> <timeout s>");
        std::process::exit(2);
    };
    let (Ok(messages), Ok(timeout)) = (messages.parse::<i64>(), timeout.parse::<u64>()) else {
        eprintln!("group_wait: <messages> and <timeout s> are whole numbers");
        std::process::exit(2);
    };
    let t0 = Instant::now();
    // Reads the group's committed offsets; it never joins the group (no subscribe, no assign).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = t0 + Duration::from_secs(timeout);
    let mut last = 0;
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
        if let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            last = committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum();
        }
        if last >= messages {
            println!(
                "{{\"seconds\": {:.3}, \"committed\": {last}}}",
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        if Instant::now() > deadline {
            eprintln!("group_wait: {last} of {messages} committed after {timeout} s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
