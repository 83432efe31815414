//! Micro-benchmark of the Parquet table writer on the shipped `commandes` shape: 8,192 parsed
//! orders written to a `file://` table with the shipped `dt=%Y-%m-%d` folders, through the sink
//! as the runtime drives it (`write`, then `prepare_commit`, which finishes and stores the file).
//! Encoding dominates: the store is a local folder. `cargo bench --bench parquet` (part of
//! `make bench`).

use arrow::array::{
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use connectors::parquet_sink::ParquetSinkConfig;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine_api::{BuildContext, Input, SinkConfig};
use std::sync::Arc;
use std::time::Duration;

const N: usize = 8192;

fn orders(seed: u64) -> RecordBatch {
    let mut r = fastrand::Rng::with_seed(seed);
    // What json_parse keeps of the Kafka record (all but the value), then the order's fields
    // without its items, as the shipped `orders` select leaves them.
    let kafka = engine_api::kafka_record_schema();
    let kafka = kafka.fields().iter().take(5).map(|f| f.as_ref().clone());
    let fields: Vec<Field> = kafka
        .chain([
            Field::new("order_id", DataType::Int32, true),
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("timestamp", DataType::Utf8, true),
            Field::new("total", DataType::Float64, true),
            Field::new("status", DataType::Utf8, true),
        ])
        .collect();
    let schema = Arc::new(Schema::new(fields));
    // Two event days, so rows go to two folders as a backfill across midnight does.
    let start = 1_767_225_600_000i64 - 3_600_000;
    let times: Vec<i64> = (0..N as i64).map(|i| start + i * 900).collect();
    let statuses = ["paid", "shipped", "cancelled", "pending"];
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["commandes-json"; N])),
            Arc::new(Int32Array::from(vec![0; N])),
            Arc::new(Int64Array::from_iter_values(0..N as i64)),
            Arc::new(TimestampMillisecondArray::from(times.clone()).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![None::<&str>; N])),
            Arc::new(Int32Array::from_iter_values(0..N as i32)),
            Arc::new(StringArray::from_iter_values(
                (0..N).map(|_| format!("C{:04}", r.u32(0..2000))),
            )),
            Arc::new(StringArray::from_iter_values(times.iter().map(|t| {
                chrono::DateTime::from_timestamp_millis(*t)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            }))),
            Arc::new(Float64Array::from_iter_values(
                (0..N).map(|_| r.u32(100..100_000) as f64 / 100.0),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..N).map(|_| statuses[r.usize(0..statuses.len())]),
            )),
        ],
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("engine-parquet-bench-{}", std::process::id()));
    let url = format!("file://{}", dir.display());
    let ctx = BuildContext {
        pipeline: "bench".into(),
        node: "commandes".into(),
        storage: Default::default(),
        trigger: Duration::from_secs(10),
        checkpoint: format!("{url}/_checkpoints"),
    };
    let batch = orders(7);
    let config = format!(
        "path = \"{url}/commandes\"\npartition_by = {{ time = \"timestamp\", format = \"dt=%Y-%m-%d\" }}"
    );
    let config: ParquetSinkConfig = toml::from_str(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sink = config.build(&ctx, &Input::new(batch.schema())).unwrap();
    rt.block_on(sink.open()).unwrap();

    let mut g = c.benchmark_group("parquet");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(30);
    let mut epoch = 0;
    g.bench_function("table write, 8192 orders, dt= folders", |b| {
        b.iter(|| {
            epoch += 1;
            rt.block_on(async {
                sink.write(batch.clone(), None).await.unwrap();
                sink.prepare_commit(epoch).await.unwrap()
            })
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(parquet_benches, benches);
criterion_main!(parquet_benches);
