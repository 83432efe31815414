//! The extension API of the engine.
//!
//! Everything a pipeline node is made of lives here: the [`Message`]s that actors exchange,
//! the [`Operator`] trait (the one extension point for user code), the [`Source`] and [`Sink`]
//! traits for connectors, and the [`Registry`] that maps a TOML `type = "..."` to a factory.
//! Built-in operators and connectors register through exactly the same API as user code.

pub mod config;
pub mod error;
pub mod event_time;
pub mod failpoint;
pub mod message;
pub mod operator;
pub mod registry;
pub mod secret;
pub mod storage;
pub mod store;
/// For operator authors: run a built operator as the runtime does ([`testing::Harness`]) and check
/// the operator contract ([`testing::check_operator`]).
pub mod testing;
pub mod time;
pub mod types;

pub use config::{ConfigValue, check_range, parse_duration};
pub use error::{
    BoxError, EngineError, ErrorKind, Reason, Result, Service, is_local_address, local_stack_hint,
};
pub use event_time::{EventTime, TrackerState, WatermarkTracker};
pub use message::{Barrier, Epoch, Message, OutputMode, PartitionId, kafka_record_schema};
pub use operator::{
    Built, Claimed, Claims, Collector, Committer, Input, MAIN_PORT, OpenContext, Operator,
    OutputPort, PendingCommit, Positions, Sink, Source, SourceContext, TableFormat, TableInfo,
    TablePreview, Tally,
};
pub use registry::{
    BuildContext, Node, NodeKind, OperatorConfig, Registry, SinkConfig, SourceConfig,
};
pub use secret::Secret;
pub use storage::StorageConfig;
pub use store::Location;
pub use types::type_name;

/// Arrow types re-exported so operator authors depend on the same arrow version as the engine.
pub use arrow;
