//! The `engine` binary's crate: the built-in registry, the CLI and the demo tools (`produce`,
//! `report`). The runtime itself (loading, graph, actors, checkpoints) is `engine-runtime`,
//! which depends on `engine-api` alone; its modules are re-exported here.
//!
//! To ship your own operators, build a binary that registers them and hands over to
//! [`cli::main_with`]; see `engine/examples/custom_operator.rs`.

pub mod cli;
#[cfg(test)]
mod config_props;
#[cfg(test)]
mod layers_check;
mod metrics_server;
pub mod pipeline_tests;
pub mod produce;
#[cfg(test)]
mod repo_checks;
pub mod report;
pub mod top;

pub use engine_api as api;
/// The runtime's modules, under the paths they had when they lived in this crate.
pub use engine_runtime::{checkpoint, config, failpoint, graph, runtime};

/// A registry holding every built-in operator and connector.
pub fn builtin_registry() -> engine_api::Registry {
    let mut r = engine_api::Registry::new();
    operators::register(&mut r);
    connectors::register(&mut r);
    r
}
