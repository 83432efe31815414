//! Built-in operators. Each registers through [`engine_api::Registry`] exactly as user code does.

pub mod explode;
pub mod json_parse;
pub mod schema;
pub mod select;

use arrow::datatypes::Schema;
use engine_api::{EngineError, Registry, Result};

/// Registers the built-in operators.
pub fn register(registry: &mut Registry) {
    registry.register_operator::<json_parse::JsonParseConfig>("json_parse");
    registry.register_operator::<explode::ExplodeConfig>("explode");
    registry.register_operator::<select::SelectConfig>("select");
}

pub(crate) fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn column_index(schema: &Schema, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        EngineError::config(format!(
            "no column `{name}` (columns: {})",
            column_names(schema)
        ))
    })
}
