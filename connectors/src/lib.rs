//! Built-in connectors: the Kafka source, the Parquet object-store sink and the console sink.
//! They register through [`engine_api::Registry`] exactly as user code does.

pub mod console;
pub mod hive;
pub mod kafka;
pub mod parquet_sink;
pub mod store;

use engine_api::Registry;

/// Registers the built-in connectors.
pub fn register(registry: &mut Registry) {
    registry.register_source::<kafka::KafkaSourceConfig>("kafka");
    registry.register_sink::<parquet_sink::ParquetSinkConfig>("parquet");
    registry.register_sink::<console::ConsoleSinkConfig>("console");
}
