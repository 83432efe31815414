//! `compute`: adds (or replaces) columns computed from expressions, such as
//! `load_score = "(avg_cpu + avg_memory) / 2"`. See [`crate::expr`] for the language.

use crate::expr::{self, Expr};
use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use engine_api::{
    BuildContext, Built, Collector, EngineError, Input, Operator, OperatorConfig, Result,
};
use indexmap::IndexMap;
use serde::Deserialize;
use std::sync::Arc;

/// `type = "compute"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    /// Output column name to expression, in order.
    pub columns: IndexMap<String, String>,
}

impl OperatorConfig for ComputeConfig {
    fn build(self, _ctx: &BuildContext, input: &Input) -> Result<Built> {
        if self.columns.is_empty() {
            return Err(EngineError::invalid("columns", "is empty"));
        }
        let exprs = self
            .columns
            .iter()
            .map(|(name, e)| {
                Ok((
                    name.clone(),
                    expr::parse(e).map_err(|err| err.for_key(format!("columns.{name}")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut fields: Vec<Field> = input
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut slots = Vec::new();
        // Each expression sees the input columns; its result's type comes from the input's.
        for (name, e) in &exprs {
            let dt = e
                .check_types(&input.schema)
                .map_err(|err| err.for_key(format!("columns.{name}")))?;
            let f = Field::new(name, dt, true);
            match fields.iter().position(|x| x.name() == name) {
                Some(i) => {
                    fields[i] = f;
                    slots.push(Some(i));
                }
                None => {
                    fields.push(f);
                    slots.push(None);
                }
            }
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Built::main(
            Compute {
                exprs,
                schema: schema.clone(),
                slots,
            },
            schema,
            input,
        ))
    }
}

pub struct Compute {
    exprs: Vec<(String, Expr)>,
    schema: SchemaRef,
    /// Per expression: the output column it replaces, or None to append.
    slots: Vec<Option<usize>>,
}

impl Operator for Compute {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let mut columns = batch.columns().to_vec();
        for ((_, e), slot) in self.exprs.iter().zip(&self.slots) {
            let v = e.eval(&batch)?.array(batch.num_rows())?;
            match slot {
                Some(i) => columns[*i] = v,
                None => columns.push(v),
            }
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}
