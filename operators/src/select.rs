//! `select`: keep some columns (in the given order), or drop some.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use engine_api::{BuildContext, Collector, EngineError, Operator, OperatorConfig, Result};
use serde::Deserialize;

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
    fn build(self, _ctx: &BuildContext) -> Result<Box<dyn Operator>> {
        if self.columns.is_some() == self.drop.is_some() {
            return Err(EngineError::config(
                "select needs exactly one of `columns` and `drop`",
            ));
        }
        Ok(Box::new(Select {
            cfg: self,
            indices: Vec::new(),
        }))
    }
}

pub struct Select {
    cfg: SelectConfig,
    indices: Vec<usize>,
}

impl Operator for Select {
    fn init(&mut self, input: &SchemaRef) -> Result<Vec<SchemaRef>> {
        self.indices = match (&self.cfg.columns, &self.cfg.drop) {
            (Some(cols), _) => cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    crate::column_index(input, c).map_err(|e| e.for_key(format!("columns[{i}]")))
                })
                .collect::<Result<_>>()?,
            (_, Some(drop)) => {
                for (i, d) in drop.iter().enumerate() {
                    crate::column_index(input, d).map_err(|e| e.for_key(format!("drop[{i}]")))?;
                }
                (0..input.fields().len())
                    .filter(|i| !drop.contains(input.field(*i).name()))
                    .collect()
            }
            _ => unreachable!("checked in build"),
        };
        if let Some(cols) = &self.cfg.columns
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
        if self.indices.is_empty() {
            return Err(EngineError::config(format!(
                "select keeps no column (input columns: {})",
                crate::column_names(input)
            )));
        }
        Ok(vec![std::sync::Arc::new(input.project(&self.indices)?)])
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        out.emit(batch.project(&self.indices)?);
        Ok(())
    }
}
