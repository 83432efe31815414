//! Micro-benchmarks of the hot operators on a micro-batch of 8,192 generated orders:
//! JSON parse (arrow-json, with the quarantine checks), explode of the items, and the 1-minute
//! window aggregate. `cargo bench -p operators` (part of `make bench`).

use arrow::array::{
    BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::SchemaRef;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine_api::{BuildContext, Collector, Input, Operator, OperatorConfig};
use std::sync::Arc;
use std::time::Duration;

const N: usize = 8192;

fn ctx() -> BuildContext {
    BuildContext {
        pipeline: "bench".into(),
        node: "n".into(),
        storage: Default::default(),
        trigger: Duration::from_secs(10),
        checkpoint: "file:///tmp/bench".into(),
    }
}

fn kafka_batch() -> RecordBatch {
    let mut r = xorshift(7);
    let values: Vec<String> = (0..N)
        .map(|i| {
            let items: Vec<String> = (0..(1 + r() % 4))
                .map(|_| {
                    let q = 1 + r() % 5;
                    format!(r#"{{"product_id": {}, "product_name": "Product {}", "quantity": {q}, "unit_price": 19.9, "subtotal": {:.2}}}"#, 100 + r() % 12, r() % 12, 19.9 * q as f64)
                })
                .collect();
            format!(
                r#"{{"order_id": {i}, "customer_id": "C{:04}", "timestamp": "2026-01-01T00:{:02}:{:02}.000Z", "items": [{}], "total": 99.5, "status": "paid"}}"#,
                r() % 200, (i / 600) % 60, (i / 10) % 60, items.join(", ")
            )
        })
        .collect();
    let schema = engine_api::kafka_record_schema();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["commandes-json"; N])),
            Arc::new(Int32Array::from(vec![0; N])),
            Arc::new(Int64Array::from_iter_values(0..N as i64)),
            Arc::new(TimestampMillisecondArray::from(vec![0i64; N]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["C0001"; N])),
            Arc::new(BinaryArray::from_iter_values(
                values.iter().map(|v| v.as_bytes()),
            )),
        ],
    )
    .unwrap()
}

/// A tiny deterministic generator (the benchmark must not depend on the engine's producer).
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// Builds an operator from its TOML config against `input`, as the registry does; returns it
/// with its ports' schemas.
fn build<C: OperatorConfig>(cfg: &str, input: Input) -> (Box<dyn Operator>, Vec<SchemaRef>) {
    let value: toml::Value = toml::from_str(cfg).unwrap();
    let built = C::deserialize(value)
        .unwrap()
        .build(&ctx(), &input)
        .unwrap();
    let schemas = built.ports.iter().map(|p| p.schema.clone()).collect();
    (built.operator, schemas)
}

const PARSE: &str = r#"
required = ["order_id", "customer_id", "timestamp"]
rules = ["timestamp is timestamp", "total >= 0", "items.quantity > 0"]
[schema]
order_id = "int"
customer_id = "string"
timestamp = "string"
items = "list<struct<product_id: int, product_name: string, quantity: int, unit_price: double, subtotal: double>>"
total = "double"
status = "string"
"#;

fn benches(c: &mut Criterion) {
    let raw = kafka_batch();
    let (mut parse, parsed_schemas) =
        build::<operators::json_parse::JsonParseConfig>(PARSE, Input::new(raw.schema()));
    let mut out = Collector::new(2);
    parse.process(raw.clone(), &mut out).unwrap();
    let parsed = out.port(0)[0].clone();
    assert_eq!(parsed.num_rows(), N);

    // The decoders alone (no rules, no required fields), on the same messages: rows/s and
    // bytes/s per core of the schema-directed fast path and of arrow-json.
    let bytes: usize = raw.column_by_name("value").unwrap().to_data().buffers()[1].len();
    let plain = &PARSE[PARSE.find("[schema]").unwrap()..];
    for decoder in ["fast", "arrow"] {
        let cfg = format!("decoder = \"{decoder}\"\n{plain}");
        let (mut parse, _) =
            build::<operators::json_parse::JsonParseConfig>(&cfg, Input::new(raw.schema()));
        for (unit, throughput) in [
            ("rows", Throughput::Elements(N as u64)),
            ("bytes", Throughput::Bytes(bytes as u64)),
        ] {
            let mut g = c.benchmark_group(format!("decode ({unit})"));
            g.throughput(throughput);
            g.bench_function(format!("json_parse decoder={decoder}, 8192 orders"), |b| {
                b.iter(|| {
                    let mut out = Collector::new(2);
                    parse.process(raw.clone(), &mut out).unwrap();
                    out
                })
            });
            g.finish();
        }
    }

    let mut g = c.benchmark_group("operators");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("json_parse 8192 orders", |b| {
        b.iter(|| {
            let mut out = Collector::new(2);
            parse.process(raw.clone(), &mut out).unwrap();
            out
        })
    });
    let (mut explode, _) = build::<operators::explode::ExplodeConfig>(
        "column = \"items\"\nposition = \"item_index\"",
        Input::new(parsed_schemas[0].clone()),
    );
    g.bench_function("explode 8192 orders", |b| {
        b.iter(|| {
            let mut out = Collector::new(1);
            explode.process(parsed.clone(), &mut out).unwrap();
            out
        })
    });
    // The window's event time is the one the pipeline declares on the parser.
    let window_cfg = r#"window = "1m"
group_by = ["customer_id"]
aggregates = [{ name = "n", fn = "count" }, { name = "t", fn = "sum", column = "total" }]"#;
    let (mut window, _) = build::<operators::aggregate::WindowAggregateConfig>(
        window_cfg,
        Input::new(parsed_schemas[0].clone()).with_event_time("timestamp"),
    );
    // As the runtime does at each trigger: the watermark (the latest event time less the 2
    // minutes of lateness the shipped pipelines declare), then the barrier.
    let times = engine_api::time::event_times(parsed.column_by_name("timestamp").unwrap()).unwrap();
    let watermark = times.iter().flatten().max().unwrap() - 2 * 60 * 1000;
    g.bench_function("window_aggregate 8192 orders", |b| {
        b.iter(|| {
            let mut out = Collector::new(1);
            window.process(parsed.clone(), &mut out).unwrap();
            window.on_watermark(watermark, &mut out).unwrap();
            window.on_barrier(1, &mut out).unwrap();
            out
        })
    });
    g.finish();
}

criterion_group!(operator_benches, benches);
criterion_main!(operator_benches);
