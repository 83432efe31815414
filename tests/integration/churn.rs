//! Churn: engine processes of the orders pipeline start, die (`kill -9`, aborts at failpoints)
//! and stop (SIGTERM) every few seconds on one checkpoint while orders keep coming and the topic
//! gains partitions. Afterwards every table equals an independent computation and, table by
//! table, what one process makes of the same topic; and the checkpoint's chains, watched all
//! along, show no commit by a process after another claimed what it wrote for.
//!
//! `SCALEOUT_ROUNDS` rounds (6 in `make test`, 24 in `make test-scaleout`).
//! `SCALEOUT_SEED=4213779824981503186` once found a partition whose owners kept failing for
//! longer than `idle_timeout`: the finalizer's wall-time rule then released it as idle and its
//! rows, read later, were late. Idleness is now the owner's to say (docs/architecture.md,
//! "Event time and windows").

use crate::ENGINE;
use crate::gold::{
    TIMED, check_customer_windows, check_product_sales, expected_customer_windows, gold_env,
    wait_gold_tables,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use test_support::*;

const MINUTE: i64 = 60_000;

/// Each started instance after the first arms one of these in turn, to abort (as `kill -9`
/// would) on its first to third hit: after a claim, inside the revoke handling, around each
/// per-partition commit and around the finalizer's (the global aggregates') commit.
const FAILPOINTS: [&str; 10] = [
    "after_claim",
    "in_release",
    "before_partition_commit",
    "after_partition_commit",
    "before_manifest",
    "after_manifest",
    "mid_commit",
    "after_finalizer_claim",
    "before_claim",
    "after_upload_created",
];

struct Instance {
    name: String,
    armed: Option<String>,
    /// Taken when the test stops the process itself.
    child: Option<Child>,
}

impl Instance {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("taken only to stop it")
    }

    fn take(mut self) -> Child {
        self.child.take().expect("taken only once")
    }
}

/// A failing test leaves no engine running: what it still holds is killed.
impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One entry of a chain, as the watcher saw it: who wrote it and whether it was a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    owner: String,
    claim: bool,
    bytes: Vec<u8>,
}

/// Reads every chain entry under the checkpoint until stopped: partition chains
/// (`partitions/<source>/<partition>/<seq>.json`) and the finalizer's manifests
/// (`manifests/<epoch>.json`). Entries are pruned as the pipeline runs, so it polls.
async fn watch_chains(
    checkpoint: String,
    stop: Arc<AtomicBool>,
) -> BTreeMap<(String, u64), Vec<Entry>> {
    let mut seen: BTreeMap<(String, u64), Vec<Entry>> = BTreeMap::new();
    loop {
        let last = stop.load(Ordering::SeqCst);
        for (key, bytes) in all_objects(&checkpoint).await {
            let Some((chain, seq)) = chain_entry(&key) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            let entry = Entry {
                owner: v["owner"].as_str().unwrap_or("").to_string(),
                claim: v["claim"].as_bool().unwrap_or(false),
                bytes,
            };
            let versions = seen.entry((chain, seq)).or_default();
            if !versions.contains(&entry) {
                versions.push(entry);
            }
        }
        if last {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `partitions` of `topic` have a chain (some instance claimed them), or no instance
/// of `live` runs any more.
async fn wait_claimed(checkpoint: &str, topic: &str, partitions: &[i32], live: &mut [Instance]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut claimed = true;
        for p in partitions {
            let chain = format!("{checkpoint}/partitions/source/{topic}@{p}");
            claimed &= !list_all(&chain).await.is_empty();
        }
        if claimed
            || live
                .iter_mut()
                .all(|i| i.child().try_wait().unwrap().is_some())
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions {partitions:?} unclaimed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(chain, seq)` of a chain entry's key: the chain is its folder.
fn chain_entry(key: &str) -> Option<(String, u64)> {
    let (folder, file) = key.rsplit_once('/')?;
    if !(folder.ends_with("/manifests") || folder.contains("/partitions/")) {
        return None;
    }
    let seq = file.strip_suffix(".json")?.parse().ok()?;
    Some((folder.to_string(), seq))
}

/// The fence, checked on what was seen: an entry is never replaced, and an entry that is not a
/// claim was written by the owner of the entry before it (whoever claimed a partition, or the
/// finalizer's role, is the only one who commits for it until another claims it). Returns how
/// many consecutive pairs were checked.
fn check_fence(seen: &BTreeMap<(String, u64), Vec<Entry>>) -> usize {
    let mut pairs = 0;
    for ((chain, seq), versions) in seen {
        assert_eq!(
            versions.len(),
            1,
            "{chain}/{seq} was written twice: by {:?}",
            versions.iter().map(|e| &e.owner).collect::<Vec<_>>()
        );
        let entry = &versions[0];
        let Some(before) = seen.get(&(chain.clone(), seq - 1)) else {
            continue;
        };
        if !entry.claim {
            assert_eq!(
                entry.owner,
                before[0].owner,
                "{chain}/{seq} was committed by {} after {} wrote {}: a commit after a fence",
                entry.owner,
                before[0].owner,
                seq - 1
            );
        }
        pairs += 1;
    }
    pairs
}

/// Every row of a table as canonical text, sorted: floats to 6 decimals (sums over partitions
/// add in another order), and without the quarantine's `ingested_at`, the wall-clock time a
/// record was read.
async fn canonical(url: &str) -> Vec<String> {
    let mut out: Vec<String> = table_rows(url)
        .await
        .iter()
        .map(|r| {
            r.iter()
                .filter(|(k, _)| *k != "ingested_at")
                .map(|(k, v)| match v.as_f64() {
                    Some(f) if !v.is_i64() => format!("{k}={f:.6}"),
                    _ => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    out.sort();
    out
}

/// Fails with the rows only one side has, when the two tables differ.
fn assert_same(table: &str, many: &[String], single: &[String]) {
    assert!(!single.is_empty(), "{table} is empty");
    if many != single {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter()
                .filter(|r| !b.contains(r))
                .take(3)
                .cloned()
                .collect()
        };
        panic!(
            "{table} differs from one process's ({} rows vs {}): only in the shared run {:?}; only in one process {:?}",
            many.len(),
            single.len(),
            only(many, single),
            only(single, many)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_of_instances_with_kills_and_new_partitions_matches_one_process_table_by_table() {
    let rounds: usize = std::env::var("SCALEOUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::env::var("SCALEOUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("churn: {rounds} rounds, SCALEOUT_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let topic = unique("it-churn");
    create_topic(&topic, 6).await;
    let paths = EnginePaths::new("churn");
    let gold = &paths.gold;
    let mut env = gold_env(&topic, &paths);
    set_env(&mut env, "TRIGGER", "1s");
    let checkpoint = format!("{}/orders", paths.checkpoints);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_chains(checkpoint.clone(), stop.clone()));

    let t0 = ms("2026-04-06T08:00:00Z");
    let (mut good, mut bad) = (Acked::new(), Acked::new());
    let mut live: Vec<Instance> = Vec::new();
    let mut logs = Vec::new();
    let (mut starts, mut kills, mut sigterms, mut aborted) = (0, 0, 0, 0);
    let spawn = |name: String, armed: Option<String>| {
        let mut env = env.clone();
        env.push(("ENGINE_FAILPOINTS", armed.as_deref().unwrap_or("")));
        let child = ENGINE.spawn_logged(&pipeline("orders.toml"), &env, &log_file(&topic, &name));
        Instance {
            name,
            armed,
            child: Some(child),
        }
    };
    for round in 0..rounds {
        if round == rounds / 2 {
            // The topic grows from 6 to 8 partitions while instances run.
            let res = admin()
                .create_partitions(
                    &[rdkafka::admin::NewPartitions::new(&topic, 8)],
                    &rdkafka::admin::AdminOptions::new(),
                )
                .await
                .unwrap();
            res[0].as_ref().unwrap();
            // Rows sent to a partition before any process claims it are not yet known to the
            // finalizer, and event time here runs 10 minutes a round: they would be late (a
            // documented limit, harmless when event time is wall time). So the orders wait
            // until the running instances claimed the new partitions, or are all gone (the next
            // one to start claims every partition before the finalizer plans).
            wait_claimed(&checkpoint, &topic, &[6, 7], &mut live).await;
        }
        let r = round as i64;
        let orders = TIMED.values(
            40,
            300 + round as u64,
            r * 1000,
            t0 + r * 10 * MINUTE,
            2_000,
        );
        good.extend(produce(&topic, by_customer(&orders)).await);
        bad.extend(
            produce(
                &topic,
                vec![(
                    Some(format!("cust-{}", round % 8)),
                    format!("{{\"order_id\": {round}, truncated").into_bytes(),
                )],
            )
            .await,
        );
        // Instances that aborted at their failpoint.
        let mut i = 0;
        while i < live.len() {
            if let Some(status) = live[i].child().try_wait().unwrap() {
                let gone = live.remove(i);
                assert!(
                    gone.armed.is_some() && !status.success(),
                    "instance {} ended by itself ({status:?}); its log: {}",
                    gone.name,
                    log_file(&topic, &gone.name).display()
                );
                aborted += 1;
            } else {
                i += 1;
            }
        }
        if live.is_empty() || (live.len() < 3 && rng.bool()) {
            let armed = (starts > 0).then(|| {
                format!(
                    "{}=abort@{}",
                    FAILPOINTS[(starts - 1) % FAILPOINTS.len()],
                    rng.u32(1..4)
                )
            });
            let name = format!("i{starts}");
            eprintln!(
                "round {round}: start {name} {}",
                armed.as_deref().unwrap_or("")
            );
            logs.push(name.clone());
            live.push(spawn(name, armed));
            starts += 1;
        } else {
            let victim = live.remove(rng.usize(..live.len()));
            let (name, armed) = (victim.name.clone(), victim.armed.clone());
            let mut child = victim.take();
            if rng.u8(..3) == 0 {
                eprintln!("round {round}: SIGTERM {name}");
                let (status, _) = sigterm(child).await;
                // An armed instance may reach its failpoint while it hands over.
                assert!(
                    status.success() || armed.is_some(),
                    "{name} stopped with {status:?}"
                );
                sigterms += 1;
            } else {
                eprintln!("round {round}: kill -9 {name}");
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(1_000..4_000))).await;
    }
    // One instance with nothing armed finishes the work.
    let last = format!("i{starts}");
    logs.push(last.clone());
    live.push(spawn(last, None));
    starts += 1;
    wait_rows(
        "every order, after the churn",
        &paths.table("commandes"),
        good.len(),
    )
    .await;
    wait_gold_tables(gold, &good, "product sales after the churn").await;
    for instance in live {
        let (name, armed) = (instance.name.clone(), instance.armed.clone());
        let (status, _) = sigterm(instance.take()).await;
        assert!(
            status.success() || armed.is_some(),
            "{name} stopped with {status:?}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.await.unwrap();

    let log_text: Vec<String> = logs
        .iter()
        .map(|n| std::fs::read_to_string(log_file(&topic, n)).unwrap_or_default())
        .collect();
    let rebalances: usize = log_text
        .iter()
        .map(|l| l.matches("partitions gained").count() + l.matches("partitions lost").count())
        .sum();
    let fired: BTreeSet<&str> = FAILPOINTS
        .iter()
        .copied()
        .filter(|f| {
            log_text
                .iter()
                .any(|l| l.contains(&format!("failpoint `{f}` reached")))
        })
        .collect();

    // Bronze and quarantine: every produced (partition, offset) exactly once.
    crate::check_orders_tables(&paths, &topic, &good).await;
    let quarantine = paths.table(&format!("_quarantine/{topic}"));
    let q = coords(&table_rows(&quarantine).await);
    assert_eq!(q.len(), bad.len(), "quarantine rows: {q:?}");
    assert_eq!(
        q.into_iter().collect::<BTreeSet<_>>(),
        bad.keys().copied().collect::<BTreeSet<_>>(),
        "quarantine holds exactly the malformed messages"
    );
    // Gold: an independent computation.
    check_product_sales(gold, &good).await;
    check_customer_windows(gold, &expected_customer_windows(&good)).await;
    // Nothing staged or half-uploaded is left.
    for t in ["commandes", "items", &format!("_quarantine/{topic}")] {
        let staged = list_all(&format!("{}/_staging", paths.table(t))).await;
        assert!(staged.is_empty(), "left in {t}/_staging: {staged:?}");
    }
    for t in ["product_sales", "customer_orders_1min"] {
        let staged = list_all(&format!("{gold}/{t}/_staging")).await;
        assert!(staged.is_empty(), "left in {t}/_staging: {staged:?}");
    }
    for (bucket, url) in [("bronze", &paths.bronze), ("gold", gold)] {
        let prefix = format!("{}/", url.trim_start_matches(&format!("s3://{bucket}/")));
        assert_eq!(
            incomplete_uploads(bucket, &prefix),
            0,
            "uploads left in {bucket}"
        );
    }
    // The fence, on every chain entry seen while the instances ran.
    let pairs = check_fence(&seen);
    assert!(pairs > 0, "the watcher saw no consecutive chain entries");

    // The same topic through one process: every table the same, row for row.
    let one = EnginePaths::new("churn-one");
    assert_success(&ENGINE.run(
        &["run", &pipeline("orders.toml"), "--batch"],
        &gold_env(&topic, &one),
    ));
    for t in ["commandes", "items", &format!("_quarantine/{topic}")] {
        let (many, single) = (
            canonical(&paths.table(t)).await,
            canonical(&one.table(t)).await,
        );
        assert_same(t, &many, &single);
    }
    for t in ["product_sales", "customer_orders_1min"] {
        let many = canonical(&format!("{gold}/{t}")).await;
        let single = canonical(&format!("{}/{t}", one.gold)).await;
        assert_same(t, &many, &single);
    }
    eprintln!(
        "scale-out churn summary: rounds={rounds} starts={starts} kill9={kills} sigterm={sigterms} failpoint_aborts={aborted} failpoints_fired={fired:?} rebalances={rebalances} chain_pairs_checked={pairs} messages_checked={} lost=0 duplicated=0",
        good.len() + bad.len()
    );
}
