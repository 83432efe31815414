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

/// The metric names in the shipped Grafana dashboard's queries are ones the engine exports.
fn dashboard_queries_use_exported_names(scraped: &BTreeMap<String, f64>) {
    let path = repo_root().join("docs/grafana/engine-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(q)) => {
                            out.push(q.clone())
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() >= 15, "{found:?}");
    let exported: std::collections::BTreeSet<&str> = scraped
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    for q in &found {
        let names: Vec<&str> = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("engine_"))
            .collect();
        assert!(!names.is_empty(), "a query without an engine metric: {q}");
        for n in names {
            assert!(
                exported.contains(n),
                "the dashboard queries `{n}`, which the engine does not export: {q}"
            );
        }
    }
}

/// `engine top --once` (standard output not a terminal): one view, whose partition lines give
/// the committed offsets the test expects.
fn engine_top_shows_the_partitions(address: &str, topic: &str, next: &BTreeMap<i32, i64>) {
    let out = ENGINE.run(&["top", "--metrics-address", address, "--once"], &[]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut shown = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim_matches(|c| c == '│' || c == ' ')
            .split_whitespace()
            .collect();
        if let [t, p, committed, lag] = cells[..]
            && t == topic
        {
            assert_eq!(lag, "0", "{text}");
            shown.insert(p.parse::<i32>().unwrap(), committed.parse::<i64>().unwrap());
        }
    }
    assert_eq!(&shown, next, "{text}");
    for node in [
        "source",
        "parse",
        "explode",
        "commandes",
        "customer_windows",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("│{node} "))),
            "no line for {node}: {text}"
        );
    }
}

/// `engine top` under a pseudo-terminal: it draws the view (the topic's partitions in it) and
/// quits on `q`, leaving the terminal as it found it.
fn engine_top_runs_in_a_terminal(address: &str, topic: &str) {
    use nix::pty::{Winsize, openpty};
    let size = Winsize {
        ws_row: 40,
        ws_col: 110,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let tty = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = ENGINE
        .command()
        .args(["top", "--metrics-address", address, "--interval", "300ms"])
        .stdin(tty())
        .stdout(tty())
        .stderr(tty())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        let mut master = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = |s: &str| String::from_utf8_lossy(&screen.lock().unwrap()).contains(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The first view has no rates yet; the second has.
    while !(shown(topic) && shown("rows/s") && shown("partitions")) {
        assert!(
            std::time::Instant::now() < deadline,
            "engine top drew no view in 20 s: {}",
            String::from_utf8_lossy(&screen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(700));
    master.write_all(b"q").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "engine top did not quit on q"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(master);
    let _ = reader.join();
    let text = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    // ratatui's alternate screen is entered and left again.
    assert!(
        text.contains("\x1b[?1049h") && text.contains("\x1b[?1049l"),
        "{text:?}"
    );
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
    // Malformed records of two kinds, as other producers send them: cut-off JSON (a logger's
    // line split by a buffer) and a JSON array (another serializer's framing).
    let truncated = |n: usize| -> Vec<(Option<String>, Vec<u8>)> {
        (0..n)
            .map(|i| (Some(format!("k{i}")), b"{\"order_id\": 1, trunc".to_vec()))
            .collect()
    };
    let arrays = |n: usize| -> Vec<(Option<String>, Vec<u8>)> {
        (0..n)
            .map(|i| (None, format!("[{i}, \"order\"]").into_bytes()))
            .collect()
    };
    let mut acked = produce(&topic, orders(120, 41, 1)).await;
    let mut sent = acked.len();
    let mut not_json = produce(&topic, truncated(4)).await;
    let mut not_object = produce(&topic, arrays(2)).await;
    let mut malformed = not_json.len() + not_object.len();
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
        let in_bronze = table_rows(&commandes).await.len() as f64;
        let in_quarantine = table_rows(&quarantine).await.len() as f64;
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
        let quarantined = |reason: &str| {
            sum(
                &m,
                "engine_records_quarantined_total",
                &[("node", "parse"), ("reason", reason)],
            )
        };
        assert_eq!(quarantined("not_json"), not_json.len() as f64);
        assert_eq!(quarantined("not_object"), not_object.len() as f64);
        assert_eq!(
            sum(&m, "engine_records_quarantined_total", &[]),
            malformed as f64,
            "no other reason"
        );
        // What the sinks say they wrote is what a reader lists in the store.
        for table in ["commandes", "items"] {
            let files = table_file_sizes(&paths.table(table)).await;
            let bytes: u64 = files.iter().map(|(_, n)| n).sum();
            assert_eq!(
                sum(&m, "engine_sink_files_committed_total", &[("node", table)]),
                files.len() as f64,
                "{table}: files"
            );
            assert_eq!(
                sum(&m, "engine_sink_bytes_written_total", &[("node", table)]),
                bytes as f64,
                "{table}: bytes"
            );
        }
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
        let more = produce(&topic, orders(80, 42 + burst, 10_000 * (burst as i64 + 1))).await;
        sent += more.len();
        acked.extend(more);
        let (a, b) = (
            produce(&topic, truncated(3)).await,
            produce(&topic, arrays(1)).await,
        );
        malformed += a.len() + b.len();
        not_json.extend(a);
        not_object.extend(b);
    }
    wait_rows("the last burst in bronze", &commandes, sent).await;
    acked.extend(not_json);
    acked.extend(not_object);
    // Each partition's committed offset is one past the last record the broker acknowledged.
    let mut next = BTreeMap::<i32, i64>::new();
    for (p, o) in acked.keys() {
        let n = next.entry(*p).or_default();
        *n = (*n).max(o + 1);
    }
    // Lag 0 and every record read can come one commit before the last epoch's offsets are
    // committed, so the wait is for the offsets themselves.
    let m = eventually(
        "every partition's committed offset one past its last acknowledged record, lag 0",
        Duration::from_secs(30),
        || {
            let (address, topic, next) = (address.clone(), topic.clone(), next.clone());
            async move {
                let m = samples(&get(&address, "/metrics")?.1);
                let lag = sum(&m, "engine_kafka_consumer_lag", &[]);
                let read = sum(&m, "engine_records_received_total", &[("node", "source")]);
                let offsets = next.iter().all(|(p, o)| {
                    let labels = [("topic", topic.as_str()), ("partition", &p.to_string())];
                    sum(&m, "engine_kafka_committed_offset", &labels) == *o as f64
                });
                (lag == 0.0 && read == (sent + malformed) as f64 && offsets).then_some(m)
            }
        },
    )
    .await;
    // Nodes report state, queues and waits; the window aggregate's state is not empty.
    assert!(sum(&m, "engine_state_entries", &[("node", "customer_windows")]) > 0.0);
    for node in ["parse", "explode", "commandes"] {
        for metric in ["engine_mailbox_depth", "engine_backpressure_seconds_total"] {
            let key = format!("{metric}{{pipeline=\"orders\",node=\"{node}\"}}");
            assert!(m.contains_key(&key), "{key} missing");
        }
    }
    dashboard_queries_use_exported_names(&m);
    engine_top_shows_the_partitions(&address, &topic, &next);
    engine_top_runs_in_a_terminal(&address, &topic);

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
