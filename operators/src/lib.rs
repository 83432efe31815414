//! Built-in operators. Each registers through [`engine_api::Registry`] exactly as user code does.

pub mod aggregate;
pub mod compute;
pub mod explode;
pub mod expr;
mod json_fast;
pub mod json_parse;
pub mod rules;
pub mod schema;
pub mod select;
/// Event-time parsing lives in the API, shared with the runtime's watermark tracking.
pub use engine_api::time;
pub mod top_n;

use arrow::datatypes::Schema;
use engine_api::{EngineError, Registry, Result};

/// Registers the built-in operators.
pub fn register(registry: &mut Registry) {
    registry.register_operator::<json_parse::JsonParseConfig>("json_parse");
    registry.register_operator::<explode::ExplodeConfig>("explode");
    registry.register_operator::<select::SelectConfig>("select");
    registry.register_operator::<compute::ComputeConfig>("compute");
    registry.register_operator::<aggregate::AggregateConfig>("aggregate");
    registry.register_operator::<aggregate::WindowAggregateConfig>("window_aggregate");
    registry.register_operator::<top_n::TopNConfig>("top_n");
}

/// A schema's column names, comma-separated, for messages that list them.
pub fn column_names(schema: &Schema) -> String {
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

/// `text` for an error message: cut to 60 characters, so a hostile value keeps the message to
/// one readable line.
pub(crate) fn quote_short(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(60).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}
