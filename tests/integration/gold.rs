//! Gold tables: each is compared with a result computed here, in plain Rust, from exactly the
//! messages the test produced.

use crate::ENGINE;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use test_support::*;

const MINUTE: i64 = 60_000;
const WATERMARK: i64 = 2 * MINUTE;

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Orders of 8 customers with 1 to 3 lines of 4 products at listed prices, all paid.
pub(crate) const TIMED: OrderShape = OrderShape {
    customer_prefix: "cust-",
    customers: 8,
    lines: 1..4,
    products: &["alpha", "beta", "gamma", "delta"],
    prices: Prices::Listed(&[2.5, 10.0, 99.99, 0.5]),
    quantity: 1..5,
    statuses: &["paid"],
    time: iso,
};

type Sales = BTreeMap<i64, (String, i64, i64, f64)>;

fn expected_product_sales(sent: &Acked) -> Sales {
    let mut out: Sales = BTreeMap::new();
    for s in sent.values() {
        let v: Value = serde_json::from_slice(&s.value).unwrap();
        for it in v["items"].as_array().unwrap() {
            let e = out.entry(it["product_id"].as_i64().unwrap()).or_insert((
                it["product_name"].as_str().unwrap().to_string(),
                0,
                0,
                0.0,
            ));
            e.1 += 1;
            e.2 += it["quantity"].as_i64().unwrap();
            e.3 += it["subtotal"].as_f64().unwrap();
        }
    }
    out
}

pub(crate) async fn check_product_sales(gold: &str, sent: &Acked) {
    let expected = expected_product_sales(sent);
    let table = table_rows(&format!("{gold}/product_sales")).await;
    assert_eq!(
        table.len(),
        expected.len(),
        "one row per product: {table:?}"
    );
    for r in &table {
        let (name, n, q, ca) = &expected[&r["product_id"].as_i64().unwrap()];
        assert_eq!(r["product_name"], json!(name));
        assert_eq!(r["nb_ventes"], json!(n));
        assert_eq!(r["quantite_totale"], json!(q));
        assert!(
            approx(r["ca_total"].as_f64().unwrap(), *ca),
            "ca_total {} vs {ca}",
            r["ca_total"]
        );
    }
}

/// Windows closed by the watermark, per customer. The watermark trails the slowest Kafka
/// partition: the smallest, over the partitions written to, of the latest event time in each,
/// minus 2 minutes.
pub(crate) fn expected_customer_windows(sent: &Acked) -> BTreeMap<(String, i64), (i64, f64)> {
    let orders: Vec<Value> = sent
        .values()
        .map(|s| serde_json::from_slice(&s.value).unwrap())
        .collect();
    let mut latest: BTreeMap<i32, i64> = BTreeMap::new();
    for ((partition, _), s) in sent {
        let o: Value = serde_json::from_slice(&s.value).unwrap();
        let t = ms(o["timestamp"].as_str().unwrap());
        let e = latest.entry(*partition).or_insert(t);
        *e = (*e).max(t);
    }
    let watermark = latest.values().min().unwrap() - WATERMARK;
    let mut out: BTreeMap<(String, i64), (i64, f64)> = BTreeMap::new();
    for o in &orders {
        let t = ms(o["timestamp"].as_str().unwrap());
        let start = t.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= watermark {
            let e = out
                .entry((o["customer_id"].as_str().unwrap().to_string(), start))
                .or_default();
            e.0 += 1;
            e.1 += o["total"].as_f64().unwrap();
        }
    }
    out
}

pub(crate) async fn check_customer_windows(
    gold: &str,
    expected: &BTreeMap<(String, i64), (i64, f64)>,
) {
    let table = table_rows(&format!("{gold}/customer_orders_1min")).await;
    let mut seen = BTreeSet::new();
    for r in &table {
        let key = (
            r["customer_id"].as_str().unwrap().to_string(),
            r["window_start"].as_i64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "window {key:?} emitted twice");
        assert_eq!(r["window_end"].as_i64().unwrap(), key.1 + MINUTE);
        let Some((n, total)) = expected.get(&key) else {
            panic!("unexpected window {key:?}: {r:?}")
        };
        assert_eq!(r["nb_commandes"], json!(n), "{key:?}");
        assert!(
            approx(r["total_commandes"].as_f64().unwrap(), *total),
            "{key:?}"
        );
    }
    assert_eq!(seen.len(), expected.len(), "every closed window, once");
}

/// Waits (up to 60 s) until `product_sales` counts every item line of `sent` and
/// `customer_orders_1min` holds as many windows as `sent` closes: both gold tables caught up,
/// before a test stops the instances and checks them.
pub(crate) async fn wait_gold_tables(gold: &str, sent: &Acked, what: &str) {
    let expected: i64 = expected_product_sales(sent).values().map(|e| e.1).sum();
    let windows = expected_customer_windows(sent).len();
    let (sales, closed) = (
        format!("{gold}/product_sales"),
        format!("{gold}/customer_orders_1min"),
    );
    eventually(what, Duration::from_secs(60), || {
        let (sales, closed) = (sales.clone(), closed.clone());
        async move {
            let t = table_rows(&sales).await;
            let n: i64 = t.iter().map(|r| r["nb_ventes"].as_i64().unwrap()).sum();
            (n == expected && table_rows(&closed).await.len() == windows).then_some(())
        }
    })
    .await;
}

pub(crate) fn gold_env<'a>(topic: &'a str, paths: &'a EnginePaths) -> Vec<(&'a str, &'a str)> {
    paths.env(&[
        ("ORDERS_TOPIC", topic),
        // One epoch per batch run, so the watermark moves once, at its end.
        ("TRIGGER", "1h"),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_gold_tables_equal_an_independent_computation_and_late_events_skip_the_windows() {
    let topic = unique("it-gold");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("gold");
    let gold = &paths.gold;
    let env = gold_env(&topic, &paths);
    let t0 = ms("2026-04-01T08:00:00Z");

    // 12 minutes of orders, one every 2 s.
    let mut sent = produce(&topic, by_customer(&TIMED.values(360, 5, 1, t0, 2_000))).await;
    assert_success(&ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env));
    check_product_sales(gold, &sent).await;
    let first_windows = expected_customer_windows(&sent);
    assert!(first_windows.len() > 20);
    check_customer_windows(gold, &first_windows).await;

    // A late order (its window closed long ago) and 5 more minutes of orders.
    let late = produce(
        &topic,
        by_customer(&TIMED.values(1, 99, 50_000, t0 + 30_000, 0)),
    )
    .await;
    let more = produce(
        &topic,
        by_customer(&TIMED.values(150, 6, 1_000, t0 + 12 * MINUTE, 2_000)),
    )
    .await;
    let out = ENGINE.run(&["run", &pipeline("orders.toml"), "--batch"], &env);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("late_events=1"),
        "the late event is counted and logged: {stderr}"
    );

    // The late order reaches bronze...
    let bronze: BTreeSet<_> = coords(&table_rows(&paths.table("commandes")).await)
        .into_iter()
        .collect();
    for k in late.keys().chain(more.keys()).chain(sent.keys()) {
        assert!(bronze.contains(k), "{k:?} missing from bronze");
    }
    // ...and product sales (a running total has no watermark), but not the windows.
    let mut all = sent.clone();
    all.extend(late.clone());
    all.extend(more.clone());
    check_product_sales(gold, &all).await;
    sent.extend(more);
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gold_tables_after_a_streaming_run_fed_in_bursts() {
    let topic = unique("it-gold-stream");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("gold-stream");
    let gold = &paths.gold;
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TRIGGER", "1s");
    let t0 = ms("2026-04-02T08:00:00Z");

    let child = ENGINE.spawn(&pipeline("orders.toml"), &env);
    let mut sent = BTreeMap::new();
    // Bursts 10 minutes of event time apart, so no event is ever late.
    for burst in 0..3i64 {
        sent.extend(
            produce(
                &topic,
                by_customer(&TIMED.values(
                    120,
                    40 + burst as u64,
                    burst * 1000,
                    t0 + burst * 10 * MINUTE,
                    2_000,
                )),
            )
            .await,
        );
        wait_rows(
            &format!("burst {burst} in bronze"),
            &paths.table("commandes"),
            sent.len(),
        )
        .await;
        // Product sales follow the stream at each trigger.
        wait_gold_tables(gold, &sent, &format!("product sales after burst {burst}")).await;
    }
    let (status, stderr) = sigterm(child).await;
    assert!(status.success(), "{stderr}");

    check_product_sales(gold, &sent).await;
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_metrics_gold_tables_equal_an_independent_computation() {
    let mut r = fastrand::Rng::with_seed(21);

    // Logs: per level, and count and average duration per module.
    let topic = unique("it-gold-logs");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("gold-logs");
    let gold = &paths.gold;
    let msgs: Vec<_> = (0..400)
        .map(|i| {
            let v = json!({"timestamp": iso(ms("2026-04-03T09:00:00Z") + i * 1000),
                "level": (["INFO", "WARN", "ERROR", "DEBUG"][r.usize(0..4)]), "module": (["auth", "payment", "search"][r.usize(0..3)]),
                "message": "m", "request_id": format!("r{i}"), "user_id": "u", "duration_ms": r.i32(0..1000)});
            (None, serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let sent = produce(&topic, msgs).await;
    let env = paths.env(&[("LOGS_TOPIC", &topic), ("TRIGGER", "1h")]);
    assert_success(&ENGINE.run(&["run", &pipeline("logs.toml"), "--batch"], &env));
    let mut levels: BTreeMap<String, i64> = BTreeMap::new();
    let mut modules: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for s in sent.values() {
        let v: Value = serde_json::from_slice(&s.value).unwrap();
        *levels
            .entry(v["level"].as_str().unwrap().into())
            .or_default() += 1;
        let m = modules
            .entry(v["module"].as_str().unwrap().into())
            .or_default();
        m.0 += 1;
        m.1 += v["duration_ms"].as_f64().unwrap();
    }
    let table = table_rows(&format!("{gold}/log_levels")).await;
    let got: BTreeMap<String, i64> = table
        .iter()
        .map(|r| {
            (
                r["level"].as_str().unwrap().to_string(),
                r["nb_logs"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, levels);
    let table = table_rows(&format!("{gold}/log_modules")).await;
    assert_eq!(table.len(), modules.len());
    for row in &table {
        let (n, sum) = modules[row["module"].as_str().unwrap()];
        assert_eq!(row["nb_logs"], json!(n));
        assert!(approx(
            row["duree_moyenne_ms"].as_f64().unwrap(),
            sum / n as f64
        ));
    }

    // Metrics: averages and maxima per server, and the five most loaded.
    let topic = unique("it-gold-metrics");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("gold-metrics");
    let gold = &paths.gold;
    let msgs: Vec<_> = (0..300)
        .map(|i| {
            let n = r.u8(0..8);
            let v = json!({"timestamp": iso(ms("2026-04-03T09:00:00Z") + i * 1000), "server_id": format!("srv-{n}"),
                "cpu_percent": (r.f64() * 50.0 + n as f64 * 6.0), "memory_percent": (r.f64() * 60.0 + n as f64 * 4.0), "disk_percent": 50.0});
            (None, serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let sent = produce(&topic, msgs).await;
    let env = paths.env(&[("METRICS_TOPIC", &topic), ("TRIGGER", "1h")]);
    assert_success(&ENGINE.run(&["run", &pipeline("metrics.toml"), "--batch"], &env));
    let mut servers: BTreeMap<String, (f64, f64, f64, f64, f64)> = BTreeMap::new();
    for s in sent.values() {
        let v: Value = serde_json::from_slice(&s.value).unwrap();
        let e = servers
            .entry(v["server_id"].as_str().unwrap().into())
            .or_insert((0.0, 0.0, f64::MIN, 0.0, f64::MIN));
        let (c, m) = (
            v["cpu_percent"].as_f64().unwrap(),
            v["memory_percent"].as_f64().unwrap(),
        );
        e.0 += 1.0;
        e.1 += c;
        e.2 = e.2.max(c);
        e.3 += m;
        e.4 = e.4.max(m);
    }
    let mut loads: Vec<(f64, String)> = servers
        .iter()
        .map(|(k, e)| ((e.1 / e.0 + e.3 / e.0) / 2.0, k.clone()))
        .collect();
    loads.sort_by(|a, b| b.0.total_cmp(&a.0));
    let stats = table_rows(&format!("{gold}/server_stats")).await;
    assert_eq!(stats.len(), servers.len());
    for row in &stats {
        let e = servers[row["server_id"].as_str().unwrap()];
        assert!(approx(row["avg_cpu"].as_f64().unwrap(), e.1 / e.0));
        assert!(approx(row["max_cpu"].as_f64().unwrap(), e.2));
        assert!(approx(row["avg_memory"].as_f64().unwrap(), e.3 / e.0));
        assert!(approx(row["max_memory"].as_f64().unwrap(), e.4));
    }
    let mut ranking = table_rows(&format!("{gold}/most_loaded_servers")).await;
    ranking.sort_by_key(|r| r["rank"].as_i64().unwrap());
    assert_eq!(ranking.len(), 5);
    for (i, row) in ranking.iter().enumerate() {
        assert_eq!(row["rank"], json!(i as i64 + 1));
        assert_eq!(row["server_id"], json!(loads[i].1), "rank {}", i + 1);
        assert!(approx(row["load_score"].as_f64().unwrap(), loads[i].0));
    }
}

/// How one foreign producer writes a log line's level and time.
struct Producer {
    levels: &'static [&'static str],
    /// The event time `ms` as this producer writes it.
    time: fn(i64) -> String,
}

/// Log lines as applications we did not write send them: Python's logging (asctime, and a JSON
/// formatter's isoformat), log4j (its default and ISO8601 layouts), a Java service stamping
/// `Instant.toString()`, syslog severities, lowercase levels and a local time with an offset.
const FOREIGN: [Producer; 6] = [
    Producer {
        levels: &["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        time: |ms| utc(ms, "%Y-%m-%d %H:%M:%S,%3f"),
    },
    Producer {
        levels: &["INFO", "WARNING", "CRITICAL"],
        time: |ms| utc(ms, "%Y-%m-%dT%H:%M:%S%.6f+00:00"),
    },
    Producer {
        levels: &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
        time: |ms| utc(ms, "%Y-%m-%dT%H:%M:%S,%3f"),
    },
    Producer {
        levels: &["TRACE", "INFO", "FATAL"],
        time: |ms| utc(ms, "%Y-%m-%dT%H:%M:%S%.9fZ"),
    },
    Producer {
        levels: &["notice", "err", "emerg", "alert", "crit", "info"],
        time: |ms| utc(ms, "%Y-%m-%dT%H:%M:%S%.3f+0000"),
    },
    Producer {
        levels: &["warn", "info", "debug", "error"],
        // Local time two hours ahead of UTC, with its offset.
        time: |ms| utc(ms + 2 * 3_600_000, "%Y-%m-%dT%H:%M:%S%.3f+02:00"),
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn logs_from_foreign_producers_all_land_and_the_gold_tables_count_them() {
    let topic = unique("it-foreign-logs");
    create_topic(&topic, 3).await;
    let paths = EnginePaths::new("foreign-logs");
    let gold = &paths.gold;
    let t0 = ms("2026-04-05T09:00:00Z");
    let mut r = fastrand::Rng::with_seed(47);
    // Event time of each line, by request id, as generated (not parsed back from the text).
    let mut event_ms: BTreeMap<String, i64> = BTreeMap::new();
    let msgs: Vec<_> = (0..480)
        .map(|i| {
            let p = &FOREIGN[i % FOREIGN.len()];
            let t = t0 + i as i64 * 1_000;
            let request_id = format!("r{i}");
            event_ms.insert(request_id.clone(), t);
            let module = ["auth", "payment", "search"][r.usize(0..3)];
            let mut v = json!({"timestamp": (p.time)(t), "level": p.levels[r.usize(0..p.levels.len())],
                "module": module, "message": format!("line {i}"), "request_id": request_id,
                "user_id": "u", "duration_ms": r.i32(-50..1000)});
            // A few lines without a level, or with a null module: stored and counted as null.
            if i % 97 == 5 {
                v.as_object_mut().unwrap().remove("level");
            }
            if i % 89 == 7 {
                v["module"] = Value::Null;
            }
            (Some(module.to_string()), serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let sent = produce(&topic, msgs).await;
    let env = paths.env(&[("LOGS_TOPIC", &topic), ("TRIGGER", "1h")]);
    assert_success(&ENGINE.run(&["run", &pipeline("logs.toml"), "--batch"], &env));

    // Bronze: every line once, with its level and time text as written; nothing quarantined.
    let quarantine = table_rows(&paths.table(&format!("_quarantine/{topic}"))).await;
    assert!(
        quarantine.is_empty(),
        "foreign log lines were quarantined: {:?}",
        quarantine
            .iter()
            .take(5)
            .map(|q| (&q["reason"], &q["detail"], &q["raw_value"]))
            .collect::<Vec<_>>()
    );
    let bronze = table_rows(&paths.table("logs")).await;
    let mut seen = BTreeSet::new();
    for row in &bronze {
        let k = coord(row);
        assert!(seen.insert(k), "{k:?} twice in bronze");
        let v: Value = serde_json::from_slice(&sent[&k].value).unwrap();
        for f in ["timestamp", "level", "module", "request_id", "duration_ms"] {
            assert_eq!(row[f], v[f], "{f} of {k:?}");
        }
    }
    assert_eq!(
        seen,
        sent.keys().copied().collect::<BTreeSet<_>>(),
        "bronze holds exactly the acknowledged lines"
    );

    // Gold, computed here from the lines sent.
    let lines: Vec<(i32, Value)> = sent
        .iter()
        .map(|((partition, _), s)| (*partition, serde_json::from_slice(&s.value).unwrap()))
        .collect();
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut levels: BTreeMap<Option<String>, i64> = BTreeMap::new();
    let mut modules: BTreeMap<Option<String>, (i64, f64)> = BTreeMap::new();
    for (_, v) in &lines {
        *levels.entry(text(&v["level"])).or_default() += 1;
        let m = modules.entry(text(&v["module"])).or_default();
        m.0 += 1;
        m.1 += v["duration_ms"].as_f64().unwrap();
    }
    assert!(
        levels.len() >= 15,
        "most level names were produced: {levels:?}"
    );
    assert!(levels.contains_key(&None), "some lines have no level");
    let got: BTreeMap<Option<String>, i64> = table_rows(&format!("{gold}/log_levels"))
        .await
        .iter()
        .map(|r| (text(&r["level"]), r["nb_logs"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, levels, "log_levels");
    let table = table_rows(&format!("{gold}/log_modules")).await;
    assert_eq!(table.len(), modules.len());
    for row in &table {
        let (n, sum) = modules[&text(&row["module"])];
        assert_eq!(row["nb_logs"], json!(n));
        assert!(approx(
            row["duree_moyenne_ms"].as_f64().unwrap(),
            sum / n as f64
        ));
    }

    // The 1-minute error-rate windows place every line by its event time, whatever its layout:
    // the windows the watermark (slowest partition's latest time minus 2 minutes) closed.
    let time_of = |v: &Value| event_ms[v["request_id"].as_str().unwrap()];
    let mut latest: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, v) in &lines {
        let e = latest.entry(*partition).or_insert(i64::MIN);
        *e = (*e).max(time_of(v));
    }
    let watermark = latest.values().min().unwrap() - WATERMARK;
    let mut windows: BTreeMap<(Option<String>, i64), (i64, i64)> = BTreeMap::new();
    for (_, v) in &lines {
        let start = time_of(v).div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= watermark {
            let w = windows.entry((text(&v["module"]), start)).or_default();
            w.0 += 1;
            w.1 += i64::from(v["level"] == "ERROR");
        }
    }
    assert!(windows.len() >= 15, "{windows:?}");
    let table = table_rows(&format!("{gold}/log_error_rate_1min")).await;
    let got: BTreeMap<(Option<String>, i64), (i64, i64)> = table
        .iter()
        .map(|r| {
            let n = r["nb_logs"].as_i64().unwrap();
            let e = r["nb_errors"].as_i64().unwrap();
            assert!(approx(
                r["error_rate"].as_f64().unwrap(),
                e as f64 / n as f64
            ));
            (
                (text(&r["module"]), r["window_start"].as_i64().unwrap()),
                (n, e),
            )
        })
        .collect();
    assert_eq!(got.len(), table.len(), "each window once");
    assert_eq!(got, windows, "log_error_rate_1min");
}

/// Three instances of the orders pipeline share a 6-partition topic, joining and leaving while
/// bursts arrive. The finalizer's role moves with the lead partition (and is fenced when it
/// moves), and at the end the gold tables equal an independent computation: every product sale
/// counted once, every closed window once and complete.
#[tokio::test(flavor = "multi_thread")]
async fn gold_tables_stay_exact_while_instances_join_and_leave() {
    let topic = unique("it-gold-scale");
    create_topic(&topic, 6).await;
    let paths = EnginePaths::new("gold-scale");
    let gold = &paths.gold;
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TRIGGER", "1s");
    let t0 = ms("2026-04-03T08:00:00Z");
    let mut sent = BTreeMap::new();
    let burst = |n: i64| {
        produce(
            &topic,
            by_customer(&TIMED.values(120, 70 + n as u64, n * 1000, t0 + n * 10 * MINUTE, 2_000)),
        )
    };
    let a = ENGINE.spawn(&pipeline("orders.toml"), &env);
    sent.extend(burst(0).await);
    wait_rows("burst 0", &paths.table("commandes"), sent.len()).await;
    let b = ENGINE.spawn(&pipeline("orders.toml"), &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent.extend(burst(1).await);
    wait_rows("burst 1", &paths.table("commandes"), sent.len()).await;
    // The first instance leaves; a third joins.
    let (status, stderr_a) = sigterm(a).await;
    assert!(status.success(), "{stderr_a}");
    let c = ENGINE.spawn(&pipeline("orders.toml"), &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent.extend(burst(2).await);
    wait_rows("burst 2", &paths.table("commandes"), sent.len()).await;
    wait_gold_tables(gold, &sent, "product sales of every burst").await;
    let (status_b, stderr_b) = sigterm(b).await;
    let (status_c, stderr_c) = sigterm(c).await;
    assert!(status_b.success(), "{stderr_b}");
    assert!(status_c.success(), "{stderr_c}");
    let roles = [&stderr_a, &stderr_b, &stderr_c]
        .iter()
        .map(|e| e.matches("finalizer role taken").count())
        .sum::<usize>();
    assert!(
        roles >= 2,
        "the finalizer's role moved when its holder left:\n{stderr_a}\n{stderr_b}\n{stderr_c}"
    );

    super::check_orders_tables(&paths, &topic, &sent).await;
    check_product_sales(gold, &sent).await;
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;
}

/// Sends `signal` (`STOP`, `CONT`) to a child process.
pub(crate) fn signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// A zombie: an instance paused (SIGSTOP) past the group's session timeout while orders keep
/// coming, then resumed (SIGCONT). Its partitions, and the finalizer's role if it held it,
/// moved meanwhile; nothing it had staged becomes visible, it says it lost them, and every
/// table stays exact.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "scale-out scenario, about 40 s: make test-scaleout"]
async fn a_paused_instance_that_comes_back_never_commits_for_what_moved() {
    let topic = unique("it-zombie");
    create_topic(&topic, 6).await;
    let paths = EnginePaths::new("zombie");
    let gold = &paths.gold;
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TRIGGER", "1s");
    let t0 = ms("2026-04-04T08:00:00Z");
    let burst = |n: i64| {
        produce(
            &topic,
            by_customer(&TIMED.values(120, 90 + n as u64, n * 1000, t0 + n * 10 * MINUTE, 2_000)),
        )
    };
    let mut sent = BTreeMap::new();
    // Logs go to files, which stay for a look when a wait times out.
    let log = |name: &str| log_file(&topic, name);
    let spawn = |name: &str| ENGINE.spawn_logged(&pipeline("orders.toml"), &env, &log(name));
    let a = spawn("a");
    sent.extend(burst(0).await);
    wait_rows("burst 0", &paths.table("commandes"), sent.len()).await;
    let b = spawn("b");
    tokio::time::sleep(Duration::from_secs(4)).await;
    sent.extend(burst(1).await);
    // Paused mid-stream, past the 10 s session timeout: the group gives everything to `b`.
    signal(&a, "STOP");
    sent.extend(burst(2).await);
    wait_rows(
        "bursts 1 and 2, by the survivor",
        &paths.table("commandes"),
        sent.len(),
    )
    .await;
    signal(&a, "CONT");
    tokio::time::sleep(Duration::from_secs(5)).await;
    sent.extend(burst(3).await);
    wait_rows("burst 3", &paths.table("commandes"), sent.len()).await;
    wait_gold_tables(gold, &sent, "product sales of every burst").await;
    let (status_a, _) = sigterm(a).await;
    let (status_b, _) = sigterm(b).await;
    let stderr_a = std::fs::read_to_string(log("a")).unwrap();
    let stderr_b = std::fs::read_to_string(log("b")).unwrap();
    assert!(status_a.success(), "{stderr_a}");
    assert!(status_b.success(), "{stderr_b}");
    assert!(
        stderr_a.contains("lost"),
        "the paused instance says what it lost:\n{stderr_a}"
    );
    super::check_orders_tables(&paths, &topic, &sent).await;
    check_product_sales(gold, &sent).await;
    check_customer_windows(gold, &expected_customer_windows(&sent)).await;
}
