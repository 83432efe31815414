//! What the engine's integration suite (`tests/integration`) and fault suite (`tests/faults`)
//! share: a real Kafka broker and a real S3 server, reached at the addresses the local stack
//! uses (`KAFKA_BROKERS`, `S3_ENDPOINT`, `AWS_*`, `STACK_DIR`), the `engine` binary under test,
//! and the orders the tests produce.
//!
//! The tests produce their own messages (not with `engine produce`), remember what the broker
//! acknowledged, and read the tables back with the parquet crate's reader over object_store, or,
//! for Delta tables, with delta-rs ([`table_rows`] picks by the table's `_delta_log`): nothing
//! here shares code with the engine's sinks.
//!
//! Everything is re-exported at the crate root, so a suite writes `use test_support::*;`.
//! The one thing a suite gives: the binary, as `Engine(env!("CARGO_BIN_EXE_engine"))`, because
//! Cargo sets that variable only when it compiles an integration test, not this library.

mod engine;
mod kafka;
mod orders;
mod readers;
mod s3;
mod stack;
mod tables;
mod time;

pub use engine::*;
pub use kafka::*;
pub use orders::*;
pub use readers::*;
pub use s3::*;
pub use stack::*;
pub use tables::*;
pub use time::*;
