//! Built-in connectors: the Kafka and file sources, the Parquet and Delta Lake object-store sinks and the
//! console sink.
//! They register through [`engine_api::Registry`] exactly as user code does.

pub mod console;
pub mod delta;
pub mod file;
pub mod hive;
pub mod kafka;
pub mod parquet_sink;
pub mod store;

use engine_api::Registry;

/// Registers the built-in connectors.
pub fn register(registry: &mut Registry) {
    registry.register_source::<kafka::KafkaSourceConfig>("kafka");
    registry.register_source::<file::FileSourceConfig>("file");
    registry.register_sink::<parquet_sink::ParquetSinkConfig>("parquet");
    registry.register_sink::<delta::DeltaSinkConfig>("delta");
    registry.register_sink::<console::ConsoleSinkConfig>("console");
}

/// The index of column `name` of a sink's input, or a config error on `key` that lists the
/// columns there are.
pub(crate) fn column_index(
    key: &str,
    name: &str,
    schema: &arrow::datatypes::Schema,
) -> engine_api::Result<usize> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        engine_api::EngineError::invalid(
            key,
            format!(
                "the table has no column `{name}`; its columns are: {}",
                names.join(", ")
            ),
        )
    })
}
