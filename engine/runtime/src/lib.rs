//! The engine's runtime: loading a pipeline file ([`config`]), building and checking its graph
//! ([`graph`]), running it as actors ([`runtime`]) with the checkpoint coordinator and store
//! ([`checkpoint`]), and test failpoints ([`failpoint`]).
//!
//! It depends on `engine-api` alone: the built-in operators and connectors reach it through the
//! [`engine_api::Registry`] the binary assembles, exactly like a user's own.

pub mod checkpoint;
pub mod config;
pub use engine_api::failpoint;
pub mod graph;
pub mod harness;
pub mod runtime;

#[cfg(test)]
mod test_nodes;
