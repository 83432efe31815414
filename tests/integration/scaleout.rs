//! Scale-out: engine processes started on the same pipeline and checkpoint share the topic's
//! partitions through the source's consumer group, and every record still lands exactly once
//! while instances join and leave.

use super::*;

/// The shipped `orders_bronze.toml`: the orders job without its aggregates and windows, so
/// every node runs per partition and the pipeline scales out.
fn bronze_only_pipeline() -> String {
    pipeline("orders_bronze.toml")
}

/// What one instance logged about the partitions it gained.
fn gained(stderr: &str) -> usize {
    stderr.matches("partitions gained").count()
}

/// Two instances share a 6-partition topic while orders keep coming; one stops with SIGTERM
/// and the other takes its partitions over; a third joins. Every acknowledged order is in
/// `commandes` exactly once, with its items, and no staged object or upload is left.
#[tokio::test(flavor = "multi_thread")]
async fn instances_share_a_topic_and_every_record_lands_once_as_they_join_and_leave() {
    let topic = unique("it-scale");
    create_topic(&topic, 6).await;
    let paths = EnginePaths::new("scale");
    let file = bronze_only_pipeline();
    let env = paths.env(&[("ORDERS_TOPIC", &topic), ("TRIGGER", "1s")]);
    let mut sent = produce(&topic, orders(120, 61, 1)).await;
    let a = ENGINE.spawn(&file, &env);
    wait_rows(
        "the first instance's orders",
        &paths.table("commandes"),
        sent.len(),
    )
    .await;

    // A second instance joins: the group moves some partitions to it.
    let b = ENGINE.spawn(&file, &env);
    for burst in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sent.extend(produce(&topic, orders(60, 62 + burst, 1_000 * (burst as i64 + 1))).await);
    }
    wait_rows(
        "orders read by two instances",
        &paths.table("commandes"),
        sent.len(),
    )
    .await;

    // The first leaves with SIGTERM: a final commit, and the second takes its partitions.
    let (status, stderr_a) = sigterm(a).await;
    assert!(status.success(), "{status:?}\n{stderr_a}");
    sent.extend(produce(&topic, orders(60, 70, 10_000)).await);
    // A third joins while the second runs.
    let c = ENGINE.spawn(&file, &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent.extend(produce(&topic, orders(60, 71, 20_000)).await);
    wait_rows(
        "orders after a leave and a join",
        &paths.table("commandes"),
        sent.len(),
    )
    .await;
    let (status_b, stderr_b) = sigterm(b).await;
    let (status_c, stderr_c) = sigterm(c).await;
    assert!(status_b.success(), "{status_b:?}\n{stderr_b}");
    assert!(status_c.success(), "{status_c:?}\n{stderr_c}");
    for (name, err) in [("a", &stderr_a), ("b", &stderr_b), ("c", &stderr_c)] {
        assert!(
            gained(err) >= 1,
            "instance {name} gained no partition:\n{err}"
        );
    }
    assert!(
        stderr_b.matches("partitions gained").count() >= 2,
        "the second instance took the first one's partitions when it left:\n{stderr_b}"
    );

    check_orders_tables(&paths, &topic, &sent).await;
    for t in ["commandes", "items"] {
        let staged = list_all(&format!("{}/_staging", paths.table(t))).await;
        assert!(staged.is_empty(), "left in {t}/_staging: {staged:?}");
    }
    let prefix = format!("{}/", paths.bronze.trim_start_matches("s3://bronze/"));
    assert_eq!(
        incomplete_uploads("bronze", &prefix),
        0,
        "no upload left open"
    );
}

/// A batch run is refused, in one line, while streaming instances are in the group.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_run_is_refused_while_streaming_instances_run() {
    let topic = unique("it-scale-batch");
    create_topic(&topic, 2).await;
    let paths = EnginePaths::new("scale-batch");
    let file = bronze_only_pipeline();
    let env = paths.env(&[("ORDERS_TOPIC", &topic), ("TRIGGER", "1s")]);
    let sent = produce(&topic, orders(20, 81, 1)).await;
    let a = ENGINE.spawn(&file, &env);
    wait_rows("the stream's orders", &paths.table("commandes"), sent.len()).await;
    let out = ENGINE.run(&["run", &file, "--batch"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("running in streaming mode")
            && errors[0].contains("stop the streaming instances"),
        "{stderr}"
    );
    let (status, stderr_a) = sigterm(a).await;
    assert!(status.success(), "{stderr_a}");
    check_orders_tables(&paths, &topic, &sent).await;
}
