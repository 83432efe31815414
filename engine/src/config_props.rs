//! Property test: no pipeline file, however broken, makes loading or building panic, and no
//! error shows a secret. Each case takes a shipped pipeline and replaces, adds or removes keys
//! with generated values (extreme numbers, durations, hostile text with `$`, `${`, quotes,
//! non-ASCII), then loads it and builds its graph as `engine validate` does.
//!
//! The case count is bounded (64 by default) so it runs in CI; `PROPTEST_CASES` raises it.

use crate::config::Pipeline;
use crate::graph::Graph;
use proptest::prelude::*;
use std::path::Path;

const SHIPPED: [(&str, &str); 4] = [
    ("orders.toml", include_str!("../../pipelines/orders.toml")),
    ("logs.toml", include_str!("../../pipelines/logs.toml")),
    ("metrics.toml", include_str!("../../pipelines/metrics.toml")),
    (
        "orders_console.toml",
        include_str!("../../pipelines/orders_console.toml"),
    ),
];

/// Marks generated secrets; it must never show in an error.
const SENTINEL: &str = "Zq7SENTINELx";

/// A TOML value, as text.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        Just(i64::MAX.to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        Just("inf".to_string()),
        Just("nan".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        (
            0u64..u64::MAX,
            prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "y", "", "parsecs"])
        )
            .prop_map(|(n, u)| format!("\"{n}{u}\"")),
        "\\PC{0,40}".prop_map(|s| toml::Value::String(s).to_string()),
        prop::sample::select(vec![
            "\"${ENGINE_PROPTEST_UNSET}\"",
            "\"${ENGINE_PROPTEST_UNSET:-42}\"",
            "\"${ENGINE_PROPTEST_UNSET:-true}\"",
            "\"${ENGINE_PROPTEST_UNSET:-9223372036854775807}\"",
            "\"${ENGINE_PROPTEST_UNSET:-500000000y}\"",
            "\"${\"",
            "\"$$\"",
            "\"list<list<list<int>>>\"",
            "\"struct<a: int, b: list<string>>\"",
            "\"append\"",
            "\"complete\"",
            "\"update\"",
            "\"count\"",
            "\"((((a))))\"",
            "\"a > 1 and not b\"",
            "1979-05-27T07:32:00Z",
        ])
        .prop_map(str::to_string),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// A secret holding the sentinel among characters that interpolation treats specially.
fn secret() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["$", "${", "$$", "\"", "\\", "é", "${X", "$(", "}"]),
        "[a-zA-Z0-9]{0,6}",
    )
        .prop_map(|(special, tail)| {
            toml::Value::String(format!("{SENTINEL}{special}{tail}{SENTINEL}")).to_string()
        })
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value of the n-th `key = value` line.
    Replace(usize, String),
    /// Insert `key = value` after the n-th line.
    Insert(usize, String, String),
    /// Remove the n-th line.
    Remove(usize),
    /// Put a secret in a secret-bearing key.
    Secret(&'static str, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "type",
            "inputs",
            "trigger",
            "mailbox",
            "checkpoint",
            "batch_size",
            "linger",
            "window",
            "slide",
            "watermark",
            "idle_timeout",
            "emit_every",
            "n",
            "num_rows",
            "target_file_mb",
            "row_group_rows",
            "compression",
            "mode",
            "output_mode",
            "rules",
            "required",
            "schema",
            "group_by",
            "aggregates",
            "columns",
            "on_error",
            "path",
            "topic",
            "brokers",
            "time_column",
            "event_time",
            "lateness",
            "order_by",
            "column",
            "properties",
        ])
        .prop_map(str::to_string),
        "[a-z_.]{1,12}",
    ];
    prop_oneof![
        4 => (any::<usize>(), value()).prop_map(|(n, v)| Edit::Replace(n, v)),
        3 => (any::<usize>(), key, value()).prop_map(|(n, k, v)| Edit::Insert(n, k, v)),
        1 => any::<usize>().prop_map(Edit::Remove),
        2 => (
            prop::sample::select(vec![
                "secret_access_key",
                "access_key_id",
                "\"sasl.password\"",
            ]),
            secret()
        )
            .prop_map(|(k, s)| Edit::Secret(k, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Replace(i, v) => {
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&j| {
                        lines[j].contains(" = ") && !lines[j].trim_start().starts_with('#')
                    })
                    .collect();
                if !assignments.is_empty() {
                    let j = assignments[i % assignments.len()];
                    let key = lines[j].split(" = ").next().unwrap_or_default().to_string();
                    lines[j] = format!("{key} = {v}");
                }
            }
            Edit::Insert(i, k, v) => {
                lines.insert((i % n) + 1.min(lines.len()), format!("{k} = {v}"))
            }
            Edit::Remove(i) => {
                if !lines.is_empty() {
                    lines.remove(i % n);
                }
            }
            Edit::Secret(k, s) => {
                let section = if k.contains("sasl") {
                    "[nodes.source]"
                } else {
                    "[storage]"
                };
                if let Some(j) = lines.iter().position(|l| l.trim() == section) {
                    let key = if k.contains("sasl") {
                        format!("properties.{k}")
                    } else {
                        k.to_string()
                    };
                    lines.insert(j + 1, format!("{key} = {s}"));
                }
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_pipeline_file_panics_or_shows_a_secret(
        which in 0..SHIPPED.len(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let (name, text) = SHIPPED[which];
        let text = apply(text, &edits);
        let registry = crate::builtin_registry();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pipeline::parse(Path::new(name), &text).and_then(|p| Graph::build(p, &registry))
        }));
        let result = match outcome {
            Ok(r) => r,
            Err(_) => panic!("loading panicked on:\n{text}"),
        };
        if let Err(e) = result {
            let msg = e.to_string();
            prop_assert_eq!(e.exit_code(), 2, "{}", msg);
            prop_assert!(!msg.contains('\n'), "more than one line: {}", msg);
            prop_assert!(msg.starts_with(name), "does not name the file: {}", msg);
            prop_assert!(!msg.contains(SENTINEL), "shows a secret: {}", msg);
        }
    }
}

#[test]
fn a_shipped_pipeline_loads_unchanged() {
    let registry = crate::builtin_registry();
    for (name, text) in SHIPPED {
        let p = Pipeline::parse(Path::new(name), &apply(text, &[])).unwrap();
        Graph::build(p, &registry).unwrap();
    }
}
