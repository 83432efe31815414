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
    join_and_leave("scale", &[]).await;
}

/// The same with Delta tables (`TABLE_FORMAT=delta`), read back by delta-rs: the instances
/// commit to one log at once, each partition's commits under its own app id, and a commit that
/// finds its log version taken is made again on the newer one.
#[tokio::test(flavor = "multi_thread")]
async fn instances_appending_to_one_delta_table_land_every_record_once() {
    join_and_leave("scale-delta", &[("TABLE_FORMAT", "delta")]).await;
}

async fn join_and_leave(name: &str, extra_env: &[(&str, &str)]) {
    let topic = unique(&format!("it-{name}"));
    create_topic(&topic, 6).await;
    let paths = EnginePaths::new(name);
    let file = bronze_only_pipeline();
    let mut env = paths.env(&[("ORDERS_TOPIC", &topic), ("TRIGGER", "1s")]);
    for (k, v) in extra_env {
        set_env(&mut env, k, v);
    }
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

/// A complete-mode table on S3 is replaced only by a newer epoch's result: a finalizer that
/// lost its role while paused, and commits its older result afterwards, changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_writer_never_overwrites_a_newer_complete_table() {
    use engine_api::arrow::array::{Int64Array, RecordBatch};
    use engine_api::arrow::datatypes::{DataType, Field, Schema};
    use engine_api::{BuildContext, Input, SinkConfig};
    let table = format!("s3://gold/it/{}/stale", unique("stale"));
    let storage: engine_api::StorageConfig = serde_json::from_value(json!({
        "endpoint": s3_endpoint(),
        "access_key_id": env_or("AWS_ACCESS_KEY_ID", "minioadmin"),
        "secret_access_key": env_or("AWS_SECRET_ACCESS_KEY", "minioadmin"),
    }))
    .unwrap();
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let sink = || {
        let cfg: connectors::parquet_sink::ParquetSinkConfig =
            serde_json::from_value(json!({ "path": table, "mode": "complete" })).unwrap();
        let ctx = BuildContext {
            pipeline: "stale".into(),
            node: "product_sales".into(),
            storage: storage.clone(),
            trigger: Duration::from_secs(1),
            checkpoint: format!("{table}/_checkpoint"),
        };
        cfg.build(
            &ctx,
            &Input::new(schema.clone()).with_mode(engine_api::OutputMode::Complete),
        )
        .unwrap()
    };
    let batch = |ns: &[i64]| {
        RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Int64Array::from(ns.to_vec()))],
        )
        .unwrap()
    };
    let read = || async {
        let rows = table_rows(&table).await;
        rows.iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    // The old holder staged epoch 5, then paused; the new one committed epoch 6.
    let (mut old, mut new) = (sink(), sink());
    old.write(batch(&[1]), None).await.unwrap();
    let stale = old.prepare_commit(5).await.unwrap();
    new.write(batch(&[2, 3]), None).await.unwrap();
    let fresh = new.prepare_commit(6).await.unwrap();
    new.committer().commit(&fresh).await.unwrap();
    assert_eq!(read().await, [2, 3]);
    old.committer().commit(&stale).await.unwrap();
    assert_eq!(
        read().await,
        [2, 3],
        "the stale result must not replace the newer one"
    );
    // A newer epoch still replaces it, and finishing a commit twice is harmless.
    new.write(batch(&[4]), None).await.unwrap();
    let next = new.prepare_commit(7).await.unwrap();
    new.committer().commit(&next).await.unwrap();
    new.committer().commit(&next).await.unwrap();
    assert_eq!(read().await, [4]);
}
