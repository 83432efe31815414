//! The engine: actor runtime, TOML pipelines, graph building, checkpoints and the `engine` CLI.
//!
//! To ship your own operators, build a binary that registers them and hands over to
//! [`cli::main_with`]; see `engine/examples/custom_operator.rs`.

pub mod checkpoint;
pub mod cli;
pub mod config;
#[cfg(test)]
mod config_props;
pub mod failpoint;
pub mod graph;
pub mod produce;
#[cfg(test)]
mod repo_checks;
pub mod report;
pub mod runtime;

pub use engine_api as api;

/// A registry holding every built-in operator and connector.
pub fn builtin_registry() -> engine_api::Registry {
    let mut r = engine_api::Registry::new();
    operators::register(&mut r);
    connectors::register(&mut r);
    r
}
