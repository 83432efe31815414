//! The engine's runtime: loading a pipeline file ([`config`]), building and checking its graph
//! ([`graph`]), running it as actors ([`runtime`]) with the checkpoint coordinator and store
//! ([`checkpoint`]), what a health endpoint reads ([`health`]), and test failpoints
//! ([`failpoint`]). It counts through the `metrics` facade (names in docs/monitoring.md); the
//! binary installs the recorder.
//!
//! It depends on `engine-api` alone: the built-in operators and connectors reach it through the
//! [`engine_api::Registry`] the binary assembles, exactly like a user's own.

pub mod checkpoint;
pub mod config;
pub use engine_api::failpoint;
pub mod graph;
pub mod harness;
pub mod health;
pub mod runtime;

#[cfg(test)]
mod test_nodes;
