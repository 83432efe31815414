//! The metrics endpoint of a streaming run fed in bursts, scraped over HTTP: the counts equal
//! what was produced and what a reader finds in the object store, lag reaches 0, the epoch
//! counter advances, and `/ready` turns ready, then not ready on SIGTERM.

use crate::{ENGINE, orders};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;
use test_support::*;

/// `GET path` over HTTP/1.0 (the server closes the connection after answering): the status
/// code and the body, or `None` when nothing listens.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The samples of a Prometheus text exposition: `name{labels}` (labels as written) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of metric `name` whose labels include every one of `labels`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            k.split_once('{').is_some_and(|(n, rest)| {
                n == name
                    && labels
                        .iter()
                        .all(|(l, v)| rest.contains(&format!("{l}=\"{v}\"")))
            })
        })
        .map(|(_, v)| v)
        .sum()
}

fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_was_produced_and_landed_and_ready_follows_the_run() {
    let topic = unique("it-metrics");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("metrics");
    let address = free_address();
    let env = paths.env(&[
        ("ORDERS_TOPIC", &topic),
        ("TRIGGER", "1s"),
        ("ENGINE_METRICS_ADDRESS", &address),
    ]);
    let bad = |n: usize| -> Vec<(Option<String>, Vec<u8>)> {
        (0..n)
            .map(|i| (Some(format!("k{i}")), b"{\"order_id\": 1, trunc".to_vec()))
            .collect()
    };
    let mut sent = produce(&topic, orders(120, 41, 1)).await.len();
    let mut malformed = produce(&topic, bad(4)).await.len();
    let child = ENGINE.spawn_logged(&pipeline("orders.toml"), &env, &log_file(&topic, "metrics"));
    let commandes = paths.table("commandes");
    let quarantine = paths.table(&format!("_quarantine/{topic}"));

    let mut epochs = 0.0;
    for burst in 0..2u64 {
        wait_rows(&format!("burst {burst} in bronze"), &commandes, sent).await;
        wait_rows(
            &format!("burst {burst} quarantined"),
            &quarantine,
            malformed,
        )
        .await;
        let in_bronze = rows(&read_table(&commandes).await).len() as f64;
        let in_quarantine = rows(&read_table(&quarantine).await).len() as f64;
        // Lag reaches 0 once every record is read and committed; the counts then stay put.
        let m = eventually(
            "lag 0 and every record counted",
            Duration::from_secs(30),
            || {
                let address = address.clone();
                async move {
                    let (status, body) = get(&address, "/metrics")?;
                    let m = samples(&body);
                    let caught_up = status == 200
                        && sum(&m, "engine_kafka_consumer_lag", &[]) == 0.0
                        && m.keys()
                            .any(|k| k.starts_with("engine_kafka_consumer_lag{"))
                        && sum(&m, "engine_records_received_total", &[("node", "source")])
                            == (sent + malformed) as f64;
                    caught_up.then_some(m)
                }
            },
        )
        .await;
        let node = |n: &str| sum(&m, "engine_records_received_total", &[("node", n)]);
        assert_eq!(node("commandes"), in_bronze, "the bronze sink's count");
        assert_eq!(
            node("quarantine"),
            in_quarantine,
            "the quarantine sink's count"
        );
        assert_eq!(
            sum(
                &m,
                "engine_records_sent_total",
                &[("node", "parse"), ("port", "quarantine")]
            ),
            malformed as f64
        );
        assert_eq!(sum(&m, "engine_build_info", &[("pipeline", "orders")]), 1.0);
        let now = sum(
            &m,
            "engine_epochs_committed_total",
            &[("part", "partitions")],
        );
        assert!(
            now > epochs,
            "the epoch counter advances: {epochs} then {now}"
        );
        epochs = now;
        assert_eq!(get(&address, "/ready").map(|r| r.0), Some(200));
        assert_eq!(get(&address, "/health").map(|r| r.0), Some(200));
        sent += produce(&topic, orders(80, 42 + burst, 10_000 * (burst as i64 + 1)))
            .await
            .len();
        malformed += produce(&topic, bad(3)).await.len();
    }
    wait_rows("the last burst in bronze", &commandes, sent).await;

    // SIGTERM: not ready while the last epoch commits, then nothing listens.
    kill_term(&child.id().to_string());
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some((status, _)) = get(&address, "/ready") {
        seen.push(status);
        assert!(
            std::time::Instant::now() < deadline,
            "still serving after 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The first answers may come before the signal is handled; from the first 503 on, not
    // ready until nothing listens.
    let first = seen.iter().position(|s| *s == 503);
    assert!(
        first.is_some_and(|i| seen[i..].iter().all(|s| *s == 503)),
        "/ready answered {seen:?} after SIGTERM"
    );
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "{status:?}; log: {}",
        log_file(&topic, "metrics").display()
    );
}
