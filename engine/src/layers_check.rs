//! The layering: the runtime depends on `engine-api` alone, never on the built-in operators
//! and connectors, which reach it through the registry like a user's own.

const RUNTIME_MANIFEST: &str = include_str!("../runtime/Cargo.toml");
const API_MANIFEST: &str = include_str!("../api/Cargo.toml");

fn dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn the_runtime_depends_on_the_api_alone_among_the_workspace_crates() {
    let deps = dependencies(RUNTIME_MANIFEST);
    assert!(deps.contains(&"engine-api"), "{deps:?}");
    for crate_name in ["operators", "connectors", "engine", "rdkafka", "parquet"] {
        assert!(
            !deps.contains(&crate_name),
            "engine-runtime depends on {crate_name}"
        );
    }
    let api = dependencies(API_MANIFEST);
    for crate_name in ["operators", "connectors", "engine-runtime", "engine"] {
        assert!(
            !api.contains(&crate_name),
            "engine-api depends on {crate_name}"
        );
    }
}
