//! The runtime in-process: real actors, coordinator and checkpoint store (on a temporary
//! folder), with vector sources and memory sinks. No Kafka, no S3.

use super::coordinator::{CoordMsg, Coordinator, CoordinatorHandle};
use super::*;
use crate::checkpoint::Manifest;
use crate::config::Pipeline;
use crate::harness::{MemorySink, MemoryTable, Step, VectorSource};
use crate::test_nodes::{ints, key_n, registry, rows, schema};
use engine_api::{PartitionId, PendingCommit, Sink, TrackerState};
use std::path::Path;

fn temp_checkpoint() -> String {
    let dir = std::env::temp_dir().join(format!("engine-runtime-test-{}", uuid::Uuid::new_v4()));
    format!("file://{}", dir.display())
}

fn pipeline(checkpoint: &str, nodes: &str) -> Pipeline {
    let text = format!(
        "[pipeline]\nname = \"t\"\ncheckpoint = \"{checkpoint}\"\ntrigger = \"1h\"\n\n{nodes}"
    );
    Pipeline::parse(Path::new("t.toml"), &text).unwrap()
}

const SUM: &str = r#"
[nodes.in]
type = "src"
columns = ["key:string", "ts:string", "n"]
[nodes.sum]
type = "sum"
inputs = ["in"]
[nodes.out]
type = "sink"
inputs = ["sum"]
any_mode = true
"#;

fn p(n: i32) -> PartitionId {
    PartitionId::kafka("t", n)
}

/// Builds `nodes`, swaps in `steps` for source `in` and a memory sink on `table` for `out`.
fn graph(checkpoint: &str, nodes: &str, source: VectorSource, table: &MemoryTable) -> Graph {
    let mut g = Graph::build(pipeline(checkpoint, nodes), &registry()).unwrap();
    g.replace_source("in", Box::new(source)).unwrap();
    g.replace_sink("out", Box::new(MemorySink::new("out", table.clone())))
        .unwrap();
    g
}

async fn run_batch(g: Graph) -> Result<RunSummary> {
    run(
        g,
        RunOptions {
            batch: true,
            rebuild: None,
        },
        CancellationToken::new(),
    )
    .await
}

fn sum_script() -> Vec<Step> {
    vec![
        Step::Batch(p(0), rows(&[("a", "", 1), ("b", "", 2)])),
        Step::Barrier,
        Step::Batch(p(1), rows(&[("a", "", 3)])),
        Step::Barrier,
        Step::Batch(p(0), rows(&[("c", "", 5)])),
    ]
}

fn src(steps: Vec<Step>) -> VectorSource {
    VectorSource::new(schema(&["key:string", "ts:string", "n"]), steps)
}

async fn manifests(checkpoint: &str) -> Vec<Manifest> {
    let store = CheckpointStore::open(checkpoint, &Default::default(), "t").unwrap();
    let mut out = Vec::new();
    for e in 1..20 {
        let path = store.manifest_path(e);
        if let Ok(b) = store.read(&path).await {
            out.push(Manifest::parse(&b).unwrap());
        }
    }
    out
}

/// Every commit of the complete-mode table, one table per epoch.
fn per_epoch(table: &MemoryTable) -> Vec<Vec<(String, i64)>> {
    table
        .committed()
        .iter()
        .map(|b| key_n(std::slice::from_ref(b)))
        .collect()
}

fn kv(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// What [`sum_script`] makes visible, epoch by epoch, computed by hand: the running sums per key
/// after each of its three barriers (two in the script, one at its end).
fn sum_script_tables() -> Vec<Vec<(String, i64)>> {
    vec![
        kv(&[("a", 1), ("b", 2)]),
        kv(&[("a", 1 + 3), ("b", 2)]),
        kv(&[("a", 1 + 3), ("b", 2), ("c", 5)]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_epoch_commits_once_with_the_state_and_positions_it_covers() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let s = run_batch(graph(&cp, SUM, src(sum_script()), &table))
        .await
        .unwrap();
    assert_eq!(s.records, 4);
    assert_eq!((s.epochs_committed, s.last_epoch), (3, Some(3)));
    assert_eq!(per_epoch(&table), sum_script_tables());
    let m = manifests(&cp).await;
    assert_eq!(m.len(), 3);
    // Each partition's chain: its claim (1), then one entry per epoch that moved it. Partition 0
    // moved in epochs 1 (a, b) and 3 (c); partition 1 in epoch 1 (its first position, 0) and 2.
    assert_eq!(
        m[2].positions["in.out"],
        serde_json::json!({ "t/0": 3, "t/1": 3 }),
        "how far the finalizer consumed each partition chain"
    );
    assert!(m[2].state.contains_key("sum"));
    assert_eq!(table.staged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_resumes_from_the_last_committed_epoch_with_its_state_and_nothing_twice() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    // Dies after epoch 1 committed and epoch 2's rows were read (step 3 is its barrier).
    let e = run_batch(graph(&cp, SUM, src(sum_script()).crash_before(3), &table))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("node `in` failed"), "{e}");
    assert_eq!(per_epoch(&table), [kv(&[("a", 1), ("b", 2)])]);
    // The restart replays from step 2 with the state of epoch 1.
    let s = run_batch(graph(&cp, SUM, src(sum_script()), &table))
        .await
        .unwrap();
    assert_eq!(s.records, 2, "only what epoch 1 did not cover");
    assert_eq!(per_epoch(&table), sum_script_tables());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_to_stage_stops_the_run_and_commits_nothing_of_that_epoch() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let mut g = graph(&cp, SUM, src(sum_script()), &table);
    g.replace_sink(
        "out",
        Box::new(MemorySink::new("out", table.clone()).fail_prepare_of(2)),
    )
    .unwrap();
    let e = run_batch(g).await.unwrap_err();
    assert!(e.to_string().contains("node `out` failed"), "{e}");
    assert!(e.to_string().contains("refuses epoch 2"), "{e}");
    assert_eq!(e.exit_code(), 3, "the sink's own error kind");
    assert_eq!(per_epoch(&table), [kv(&[("a", 1), ("b", 2)])]);
    assert_eq!(manifests(&cp).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_after_its_manifest_is_finished_by_the_next_run() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    table.fail_commit_of(2);
    let e = run_batch(graph(&cp, SUM, src(sum_script()), &table))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("checkpoint coordinator failed"),
        "{e}"
    );
    assert_eq!(per_epoch(&table), [kv(&[("a", 1), ("b", 2)])]);
    assert_eq!(
        manifests(&cp).await.len(),
        2,
        "epoch 2's manifest is the commit point"
    );
    let s = run_batch(graph(&cp, SUM, src(sum_script()), &table))
        .await
        .unwrap();
    assert_eq!(
        s.records, 0,
        "the per-partition part committed every epoch in the first run: nothing is read again"
    );
    assert_eq!(
        per_epoch(&table),
        sum_script_tables(),
        "the finalizer finishes its epoch 2 and takes epoch 3 from the partition chains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_is_named_and_nothing_after_its_last_barrier_commits() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let mut steps = sum_script();
    steps.insert(3, Step::Batch(p(1), rows(&[("bad", "", -1)])));
    let e = run_batch(graph(&cp, SUM, src(steps), &table))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "node `sum` failed: negative n");
    assert_eq!(per_epoch(&table), [kv(&[("a", 1), ("b", 2)])]);
}

const WATERMARKS: &str = r#"
[nodes.in]
type = "src"
columns = ["key:string", "ts:string", "n"]
[nodes.parse]
type = "op"
inputs = ["in"]
event_time = { column = "ts", lateness = "1s", idle_timeout = "1h" }
[nodes.w]
type = "watermarks"
inputs = ["parse"]
[nodes.out]
type = "sink"
inputs = ["w"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_trail_the_slowest_partition_and_precede_their_barrier() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let t = |s: u32| format!("2026-01-01T00:00:{s:02}Z");
    let ms = |s: i64| 1_767_225_600_000 + s * 1000;
    let steps = vec![
        Step::Batch(p(0), rows(&[("a", &t(30), 1), ("a", &t(50), 1)])),
        Step::Batch(p(1), rows(&[("a", &t(10), 1)])),
        Step::Barrier,
        // Partition 0 jumps ahead; 1 holds the watermark at 20 s.
        Step::Batch(p(0), rows(&[("a", &t(59), 1)])),
        Step::Batch(p(1), rows(&[("a", &t(20), 1), ("a", "not a time", 1)])),
        Step::Barrier,
        Step::Barrier,
    ];
    run_batch(graph(&cp, WATERMARKS, src(steps), &table))
        .await
        .unwrap();
    assert_eq!(
        ints(&table.committed()),
        [ms(9), -1, ms(19), -2, -3, -4],
        "watermark (min of partition maxima less 1 s) before each barrier marker; none when it does not advance"
    );
    let m = manifests(&cp).await;
    let last = m.last().unwrap();
    assert_eq!(
        last.tracker_state("parse.out"),
        Some(TrackerState {
            max_event_time: [(p(0), ms(59)), (p(1), ms(20))].into_iter().collect(),
            watermark: Some(ms(19)),
        })
    );
    assert_eq!(last.partitions[&p(1)].max_event_time["parse.out"], ms(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_state_is_restored_so_a_restart_does_not_lower_the_watermark() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let t = |s: u32| format!("2026-01-01T00:01:{s:02}Z");
    let ms = |s: i64| 1_767_225_660_000 + s * 1000;
    let steps = vec![
        Step::Batch(p(0), rows(&[("a", &t(40), 1)])),
        Step::Batch(p(1), rows(&[("a", &t(30), 1)])),
        Step::Barrier,
        // Only partition 0 after the restart: partition 1's maximum still holds.
        Step::Batch(p(0), rows(&[("a", &t(50), 1)])),
        Step::Barrier,
    ];
    run_batch(graph(
        &cp,
        WATERMARKS,
        src(steps.clone()).crash_before(3),
        &table,
    ))
    .await
    .unwrap_err();
    run_batch(graph(&cp, WATERMARKS, src(steps), &table))
        .await
        .unwrap();
    assert_eq!(ints(&table.committed()), [ms(29), -1, -2, -3]);
}

const TWO_SOURCES: &str = r#"
[nodes.in]
type = "src"
columns = ["key:string", "ts:string", "n"]
[nodes.in2]
type = "src"
columns = ["key:string", "ts:string", "n"]
[nodes.sum]
type = "sum"
inputs = ["in", "in2"]
[nodes.out]
type = "sink"
inputs = ["sum"]
any_mode = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sources_align_their_barriers_and_each_keeps_its_position() {
    let cp = temp_checkpoint();
    let table = MemoryTable::new();
    let mut g = graph(&cp, TWO_SOURCES, src(sum_script()), &table);
    let other = vec![Step::Batch(p(7), rows(&[("z", "", 10)])), Step::Barrier];
    g.replace_source("in2", Box::new(src(other))).unwrap();
    let s = run_batch(g).await.unwrap();
    assert_eq!(s.records, 5);
    let all = per_epoch(&table);
    assert_eq!(
        all.last().unwrap(),
        &kv(&[("a", 4), ("b", 2), ("c", 5), ("z", 10)])
    );
    assert_eq!(
        all[0],
        kv(&[("a", 1), ("b", 2), ("z", 10)]),
        "epoch 1 covers both sources' first batches"
    );
    let m = manifests(&cp).await;
    let last = m.last().unwrap();
    // The finalizer's exchange sources take the same plans, so record the same positions: the
    // chain of `in`'s partitions 0 and 1 (claim, then epochs 1 and 3, and 1 and 2) and of
    // `in2`'s partition 7 (claim, then epoch 1).
    let expected = serde_json::json!({ "t/0": 3, "t/1": 3, "t/7": 2 });
    assert_eq!(last.positions["in.out"], expected);
    assert_eq!(last.positions["in2.out"], expected);
}

fn coordinator(cp: &str, acks_needed: usize) -> Coordinator {
    Coordinator {
        lock: None,
        store: Arc::new(CheckpointStore::open(cp, &Default::default(), "t").unwrap()),
        acks_needed,
        sources: ["in".to_string()].into_iter().collect(),
        first_epoch: 1,
        committers: HashMap::new(),
        committed: Default::default(),
        chain: Chain::Finalizer {
            last: None,
            planner: None,
            owner: None,
            lost: None,
        },
    }
}

fn position(epoch: Epoch) -> CoordMsg {
    CoordMsg::Position {
        source: "in".into(),
        epoch,
        positions: [(p(0), serde_json::json!(epoch))].into(),
        event_time: None,
        work: Default::default(),
    }
}

fn ack(node: &str, epoch: Epoch) -> CoordMsg {
    CoordMsg::Ack {
        node: node.into(),
        epoch,
        state: Some(vec![epoch as u8]),
        event_time: None,
        pending: Vec::new(),
        work: Default::default(),
    }
}

#[tokio::test]
async fn a_lost_ack_holds_back_its_epoch_and_every_later_one() {
    let cp = temp_checkpoint();
    let (tx, rx) = mpsc::unbounded_channel();
    let h = CoordinatorHandle(tx);
    let task = tokio::spawn(coordinator(&cp, 2).run(rx));
    for m in [position(1), ack("a", 1), ack("b", 1)] {
        h.send(m).unwrap();
    }
    // Epoch 2 loses b's ack; epoch 3 is complete but must wait behind 2.
    for m in [
        position(2),
        ack("a", 2),
        position(3),
        ack("a", 3),
        ack("b", 3),
    ] {
        h.send(m).unwrap();
    }
    drop(h);
    let progress = task.await.unwrap().unwrap();
    assert_eq!((progress.epochs, progress.last), (1, Some(1)));
    let m = manifests(&cp).await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].state.len(), 2);
}

/// A finalizer whose role moved commits nothing more: its nodes end as it stops, and the epoch
/// they leave would otherwise commit without the state of a node that ended before acking it.
#[tokio::test]
async fn a_finalizer_whose_role_moved_commits_nothing_more() {
    let cp = temp_checkpoint();
    let (tx, rx) = mpsc::unbounded_channel();
    let h = CoordinatorHandle(tx);
    let lost = CancellationToken::new();
    let mut c = coordinator(&cp, 2);
    if let Chain::Finalizer { lost: l, .. } = &mut c.chain {
        *l = Some(lost.clone());
    }
    let task = tokio::spawn(c.run(rx));
    for m in [position(1), ack("a", 1), ack("b", 1)] {
        h.send(m).unwrap();
    }
    // Once epoch 1 is committed, the role moves; `b` ends without acknowledging epoch 2.
    while manifests(&cp).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lost.cancel();
    for m in [
        position(2),
        ack("a", 2),
        CoordMsg::NodeEnded { node: "b".into() },
    ] {
        h.send(m).unwrap();
    }
    drop(h);
    let progress = task.await.unwrap().unwrap();
    assert_eq!((progress.epochs, progress.last), (1, Some(1)));
    let m = manifests(&cp).await;
    assert_eq!(m.len(), 1, "only the epoch committed before the role moved");
    assert_eq!(m[0].state.len(), 2);
}

#[tokio::test]
async fn a_committed_manifest_refuses_a_second_writer_of_the_same_epoch() {
    let cp = temp_checkpoint();
    for attempt in 0..2 {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = CoordinatorHandle(tx);
        let task = tokio::spawn(coordinator(&cp, 1).run(rx));
        h.send(position(1)).unwrap();
        h.send(ack("a", 1)).unwrap();
        drop(h);
        let r = task.await.unwrap();
        if attempt == 0 {
            assert_eq!(r.unwrap().epochs, 1);
        } else {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("epoch 1 of pipeline `t` was already committed"),
                "{e}"
            );
        }
    }
}

#[test]
fn version_1_manifests_still_load() {
    let v1 = serde_json::json!({
        "version": 1,
        "pipeline": "orders",
        "epoch": 7,
        "created_at": "2026-11-30T10:00:00Z",
        "position": { "commandes": { "0": 42 } },
        "state": { "windows": "ckpt/state/7/windows.bin" },
        "pending": [{ "node": "bronze", "data": { "path": "x.parquet" } }]
    });
    let m = Manifest::parse(v1.to_string().as_bytes()).unwrap();
    assert_eq!(m.version, crate::checkpoint::MANIFEST_VERSION);
    assert_eq!(m.epoch, 7);
    let mut two = m.clone();
    two.name_v1_position(&["kafka", "files"]);
    assert_eq!(
        two.positions.get("kafka"),
        None,
        "ambiguous with several sources"
    );
    let mut m = m;
    m.name_v1_position(&["kafka"]);
    assert_eq!(
        m.positions,
        [(
            "kafka".to_string(),
            serde_json::json!({ "commandes": { "0": 42 } })
        )]
        .into_iter()
        .collect()
    );
    assert_eq!(
        m.pending,
        [PendingCommit::new(
            "bronze",
            serde_json::json!({ "path": "x.parquet" })
        )]
    );
    assert_eq!(m.tracker_state("parse"), None);
    // Written back as version 2, it reads the same.
    let again = Manifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn a_manifest_from_a_newer_engine_is_refused() {
    let e = Manifest::parse(br#"{"version": 9, "pipeline": "p", "epoch": 1, "created_at": "", "state": {}, "pending": []}"#)
        .unwrap_err();
    assert!(e.contains("newer than this engine's"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_by_the_previous_engine_is_resumed_and_upgraded() {
    let cp = temp_checkpoint();
    let dir = cp.trim_start_matches("file://").to_string();
    // What the engine before manifest version 2 wrote after epoch 1 of `sum_script`.
    std::fs::create_dir_all(format!("{dir}/manifests")).unwrap();
    std::fs::create_dir_all(format!("{dir}/state")).unwrap();
    let state = format!("{}/state/sum.bin", dir.trim_start_matches('/'));
    std::fs::write(format!("/{state}"), br#"{"a":1,"b":2}"#).unwrap();
    let v1 = serde_json::json!({
        "version": 1, "pipeline": "t", "epoch": 1, "created_at": "2026-11-30T10:00:00Z",
        "position": { "next_step": 2 }, "state": { "sum": state }, "pending": []
    });
    std::fs::write(
        format!("{dir}/manifests/{:020}.json", 1),
        serde_json::to_vec(&v1).unwrap(),
    )
    .unwrap();
    let table = MemoryTable::new();
    let s = run_batch(graph(&cp, SUM, src(sum_script()), &table))
        .await
        .unwrap();
    assert_eq!(s.records, 2, "resumed at step 2");
    assert_eq!(per_epoch(&table), sum_script_tables()[1..]);
    let last = manifests(&cp).await.pop().unwrap();
    assert_eq!(last.version, crate::checkpoint::MANIFEST_VERSION);
    // The old position is gone: the partition chains start at it. Each holds its claim (at
    // the position the old manifest gave) and one epoch's entry.
    assert_eq!(
        last.positions,
        [(
            "in.out".to_string(),
            serde_json::json!({ "t/0": 2, "t/1": 2 })
        )]
        .into_iter()
        .collect()
    );
}

/// A process's claims and commits of partitions, sharing a topic through a group, with one
/// memory sink `out`.
fn owner_of(store: &Arc<CheckpointStore>, owner: &str, sink: &MemorySink) -> Partitions {
    Partitions {
        store: store.clone(),
        committers: HashMap::from([("out".to_string(), sink.committer())]),
        owner: owner.into(),
        owned: Default::default(),
        legacy: Default::default(),
        resumed: Default::default(),
        prune: false,
        planner: Default::default(),
        local_epoch: Default::default(),
        open_epoch: Default::default(),
        released: Default::default(),
        shared: true,
        lead: None,
        idle_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_the_previous_owner_whose_output_is_never_made_visible() {
    let cp = temp_checkpoint();
    let store = Arc::new(CheckpointStore::open(&cp, &Default::default(), "t").unwrap());
    let table = MemoryTable::new();
    let mut sink_a = MemorySink::new("out", table.clone());
    let mut sink_b = MemorySink::new("out", table.clone());
    let owner = |name: &str, sink: &MemorySink| owner_of(&store, name, sink);
    let (a, b) = (owner("a", &sink_a), owner("b", &sink_b));
    let at = |n: u64| -> BTreeMap<String, Positions> {
        [("in".to_string(), [(p(0), serde_json::json!(n))].into())].into()
    };
    assert!(a.claim("in", &[p(0)]).await.unwrap().positions.is_empty());
    sink_a
        .write(rows(&[("x", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    let staged_a = sink_a.prepare_commit(1).await.unwrap();
    // `a` pauses past the group's session timeout; `b` is given the partition and claims it.
    assert!(b.claim("in", &[p(0)]).await.unwrap().positions.is_empty());
    // `a` comes back: its commit finds its sequence number taken, and nothing of it shows.
    assert_eq!(
        a.commit(1, at(1), staged_a, &BTreeMap::new())
            .await
            .unwrap(),
        (0, 0)
    );
    assert!(table.committed().is_empty());
    assert_eq!(
        table.staged(),
        0,
        "the fenced owner's staged output is aborted"
    );
    // `b` reads the row again from the last committed position and commits it once.
    sink_b
        .write(rows(&[("x", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    let staged_b = sink_b.prepare_commit(1).await.unwrap();
    assert_eq!(
        b.commit(1, at(1), staged_b, &BTreeMap::new())
            .await
            .unwrap(),
        (1, 1)
    );
    assert_eq!(key_n(&table.committed()), kv(&[("x", 1)]));
    // The chain: a's claim, b's claim, b's commit.
    assert_eq!(store.partition_seqs("in", &p(0)).await.unwrap(), [1, 2, 3]);
    let owners: Vec<(String, bool)> = {
        let mut v = Vec::new();
        for seq in 1..=3 {
            let m = store.partition_manifest("in", &p(0), seq).await.unwrap();
            v.push((m.owner, m.claim));
        }
        v
    };
    assert_eq!(
        owners,
        [("a".into(), true), ("b".into(), true), ("b".into(), false)]
    );
    // A later claim resumes where `b` committed.
    let c = owner("c", &sink_b);
    let claimed = c.claim("in", &[p(0)]).await.unwrap();
    assert_eq!(claimed.positions[&p(0)], serde_json::json!(1));
}

/// The finalizer removes chain entries it consumed, below each chain's newest, which leaves
/// holes: a paused owner whose put-if-absent lands in one finds the newer entry and is fenced
/// all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lands_where_a_consumed_entry_was_removed_is_fenced() {
    let cp = temp_checkpoint();
    let store = Arc::new(CheckpointStore::open(&cp, &Default::default(), "t").unwrap());
    let table = MemoryTable::new();
    let mut sink_a = MemorySink::new("out", table.clone());
    let mut sink_b = MemorySink::new("out", table.clone());
    let (a, b) = (
        owner_of(&store, "a", &sink_a),
        owner_of(&store, "b", &sink_b),
    );
    let at = |n: u64| -> BTreeMap<String, Positions> {
        [("in".to_string(), [(p(0), serde_json::json!(n))].into())].into()
    };
    a.claim("in", &[p(0)]).await.unwrap();
    sink_a
        .write(rows(&[("x", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    let staged_a = sink_a.prepare_commit(1).await.unwrap();
    // `a` pauses; `b` claims the partition (entry 2) and commits (entry 3), and entry 2 is
    // removed as consumed.
    b.claim("in", &[p(0)]).await.unwrap();
    sink_b
        .write(rows(&[("y", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    let staged_b = sink_b.prepare_commit(1).await.unwrap();
    assert_eq!(
        b.commit(1, at(5), staged_b, &BTreeMap::new())
            .await
            .unwrap(),
        (1, 1)
    );
    store.remove_partition_entry("in", &p(0), 2).await;
    // `a` comes back: its entry 2 is written, into the hole, but it is fenced by entry 3.
    assert_eq!(
        a.commit(1, at(1), staged_a, &BTreeMap::new())
            .await
            .unwrap(),
        (0, 0)
    );
    assert_eq!(key_n(&table.committed()), kv(&[("y", 1)]));
    assert_eq!(table.staged(), 0, "the fenced owner's output is aborted");
    assert_eq!(
        a.commit(2, at(2), Vec::new(), &BTreeMap::new())
            .await
            .unwrap(),
        (0, 0),
        "`a` gave the partition up"
    );
    // The chain's newest entry is still `b`'s, and a claim resumes from it.
    let c = owner_of(&store, "c", &sink_b);
    assert_eq!(
        c.claim("in", &[p(0)]).await.unwrap().positions[&p(0)],
        serde_json::json!(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_given_up_and_claimed_again_commits_nothing_it_read_before() {
    let cp = temp_checkpoint();
    let store = Arc::new(CheckpointStore::open(&cp, &Default::default(), "t").unwrap());
    let table = MemoryTable::new();
    let mut sink = MemorySink::new("out", table.clone());
    let parts = owner_of(&store, "a", &sink);
    parts
        .open_epoch
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let at = |n: u64| -> BTreeMap<String, Positions> {
        [("in".to_string(), [(p(0), serde_json::json!(n))].into())].into()
    };
    parts.claim("in", &[p(0)]).await.unwrap();
    // Epoch 1 reads a row; then the group takes the partition away and gives it back (a
    // rebalance after the broker restarted) before epoch 1 commits.
    sink.write(rows(&[("x", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    parts.release(&[p(0)]);
    let claimed = parts.claim("in", &[p(0)]).await.unwrap();
    assert!(claimed.positions.is_empty(), "nothing was committed yet");
    let epoch1 = sink.prepare_commit(1).await.unwrap();
    parts
        .open_epoch
        .store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        parts
            .commit(1, at(1), epoch1, &BTreeMap::new())
            .await
            .unwrap(),
        (0, 0)
    );
    assert!(
        table.committed().is_empty(),
        "epoch 1 was read under the old claim"
    );
    assert_eq!(table.staged(), 0, "and its output is aborted");
    // Read again from the claimed position, in epoch 2: committed once.
    sink.write(rows(&[("x", "", 1)]), Some(&p(0)))
        .await
        .unwrap();
    let epoch2 = sink.prepare_commit(2).await.unwrap();
    assert_eq!(
        parts
            .commit(2, at(1), epoch2, &BTreeMap::new())
            .await
            .unwrap(),
        (1, 1)
    );
    assert_eq!(key_n(&table.committed()), kv(&[("x", 1)]));
}

/// Whether a partition is idle is its owner's to say, in its chain: an owner that sees the
/// partition's event time stand still for the idle timeout writes an entry saying so, and the
/// finalizer's plans name the partitions whose newest entry does. A partition whose owners
/// stopped, or keep failing, writes nothing and is never idle, however long that lasts (the
/// finalizer's own wall time made its rows late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_idle_for_the_finalizer_only_once_its_owner_says_so() {
    use super::exchange::Planner;
    let cp = temp_checkpoint();
    let store = Arc::new(CheckpointStore::open(&cp, &Default::default(), "t").unwrap());
    let sink = MemorySink::new("out", MemoryTable::new());
    let mut a = owner_of(&store, "a", &sink);
    let idle_after = Duration::from_millis(300);
    a.idle_after = Some(idle_after);
    let at = |p0: u64, p1: u64| -> BTreeMap<String, Positions> {
        let positions = [(p(0), serde_json::json!(p0)), (p(1), serde_json::json!(p1))];
        [("in".to_string(), positions.into())].into()
    };
    let max = |p0: i64, p1: i64| BTreeMap::from([(p(0), p0), (p(1), p1)]);
    let planner = |consumed: &Positions| {
        Planner::new(
            store.clone(),
            vec!["in".into()],
            vec!["x".into()],
            consumed,
            "finalizer".into(),
            0,
        )
    };
    let fin = planner(&Positions::new());
    let idle_in = |plan: &super::exchange::Plan| plan.idle.iter().cloned().collect::<Vec<_>>();

    a.claim("in", &[p(0), p(1)]).await.unwrap();
    assert_eq!(
        a.commit(1, at(1, 1), Vec::new(), &max(10, 10))
            .await
            .unwrap(),
        (2, 0)
    );
    assert!(idle_in(&fin.plan(0).await.unwrap()).is_empty());
    tokio::time::sleep(idle_after + Duration::from_millis(50)).await;
    // Partition 0 has newer events; partition 1 none since the idle timeout: its owner says so
    // once, in an entry at the same position.
    assert_eq!(
        a.commit(2, at(2, 1), Vec::new(), &max(20, 10))
            .await
            .unwrap(),
        (2, 0)
    );
    assert_eq!(
        a.commit(3, at(2, 1), Vec::new(), &max(20, 10))
            .await
            .unwrap(),
        (0, 0)
    );
    let newest = store.partition_latest("in", &p(1)).await.unwrap().unwrap();
    assert!(newest.idle && !newest.claim);
    assert_eq!(newest.position, Some(serde_json::json!(1)));
    let plan = fin.plan(1).await.unwrap();
    assert_eq!(idle_in(&plan), [p(1)]);
    assert_eq!(
        plan.partitions.iter().cloned().collect::<Vec<_>>(),
        [p(0), p(1)],
        "every claimed partition, to hold the watermark until its first rows"
    );
    // A finalizer that starts afresh (restart, or the role moved) reads it from the entry its
    // predecessor consumed last.
    assert_eq!(
        idle_in(&planner(&plan.positions).plan(0).await.unwrap()),
        [p(1)]
    );
    // Rows with newer events on partition 1: active again.
    assert_eq!(
        a.commit(4, at(2, 2), Vec::new(), &max(20, 30))
            .await
            .unwrap(),
        (1, 0)
    );
    assert!(idle_in(&fin.plan(2).await.unwrap()).is_empty());
    // The owner stops committing (it failed, and the next one has not claimed yet): nothing
    // is idle, however long it lasts.
    tokio::time::sleep(idle_after + Duration::from_millis(50)).await;
    assert!(idle_in(&fin.plan(3).await.unwrap()).is_empty());
    // The next owner's claim says it is not idle either, until it has seen the timeout pass.
    let b = owner_of(&store, "b", &sink);
    b.claim("in", &[p(1)]).await.unwrap();
    assert!(idle_in(&fin.plan(4).await.unwrap()).is_empty());
}

#[tokio::test]
async fn a_store_that_refuses_a_second_put_if_absent_is_confirmed_and_the_probe_removed() {
    let cp = temp_checkpoint();
    let store = CheckpointStore::open(&cp, &Default::default(), "t").unwrap();
    store.confirm_conditional_writes("me").await.unwrap();
    let dir = cp.trim_start_matches("file://");
    let probe = std::path::Path::new(dir).join("_probe/me");
    assert!(!probe.exists(), "the probe object is removed");
}
