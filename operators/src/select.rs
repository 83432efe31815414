//! `select`: keep some columns (in the given order), or drop some.

use arrow::array::RecordBatch;
use engine_api::{
    BuildContext, Built, Collector, EngineError, Input, Operator, OperatorConfig, Result,
};
use serde::Deserialize;
use std::sync::Arc;

/// `type = "select"`: give exactly one of `columns` and `drop`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// Columns to keep, in this order.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Columns to drop.
    #[serde(default)]
    pub drop: Option<Vec<String>>,
}

impl OperatorConfig for SelectConfig {
    fn build(self, _ctx: &BuildContext, input: &Input) -> Result<Built> {
        let schema = &input.schema;
        let indices: Vec<usize> = match (&self.columns, &self.drop) {
            (Some(cols), None) => cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    crate::column_index(schema, c).map_err(|e| e.for_key(format!("columns[{i}]")))
                })
                .collect::<Result<_>>()?,
            (None, Some(drop)) => {
                for (i, d) in drop.iter().enumerate() {
                    crate::column_index(schema, d).map_err(|e| e.for_key(format!("drop[{i}]")))?;
                }
                (0..schema.fields().len())
                    .filter(|i| !drop.contains(schema.field(*i).name()))
                    .collect()
            }
            _ => {
                return Err(EngineError::config(
                    "select needs exactly one of `columns` and `drop`",
                ));
            }
        };
        if let Some(cols) = &self.columns
            && let Some((i, c)) = cols
                .iter()
                .enumerate()
                .find(|(i, c)| cols[..*i].contains(c))
        {
            return Err(EngineError::config(format!(
                "`columns` names `{c}` twice (positions {} and {})",
                cols.iter().position(|x| x == c).expect("found above") + 1,
                i + 1
            )));
        }
        if indices.is_empty() {
            return Err(EngineError::config(format!(
                "select keeps no column (input columns: {})",
                crate::column_names(schema)
            )));
        }
        let out = Arc::new(schema.project(&indices)?);
        Ok(Built::main(Select { indices }, out, input))
    }
}

pub struct Select {
    indices: Vec<usize>,
}

impl Operator for Select {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        out.emit(batch.project(&self.indices)?);
        Ok(())
    }
}
