//! `explode`: one output row per element of a list column, like Spark's `explode`.
//! Rows whose list is null or empty produce no output row.

use arrow::array::{
    Array, ArrayRef, Int32Array, ListArray, RecordBatch, StructArray, UInt32Array, make_array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use engine_api::{
    BuildContext, Built, Collector, EngineError, Input, Operator, OperatorConfig, Result,
};
use serde::Deserialize;
use std::sync::Arc;

/// `type = "explode"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplodeConfig {
    /// The list column to explode.
    pub column: String,
    /// When the elements are structs, make each struct field a top-level column (default true).
    #[serde(default = "yes")]
    pub flatten: bool,
    /// Optional name of a column holding the element's position in its list (0-based).
    #[serde(default)]
    pub position: Option<String>,
    /// Other input columns to keep; default all of them.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

impl OperatorConfig for ExplodeConfig {
    fn build(self, _ctx: &BuildContext, input: &Input) -> Result<Built> {
        let schema = &input.schema;
        let col = &self.column;
        let list_idx = schema.index_of(col).map_err(|_| {
            EngineError::invalid(
                "column",
                format!(
                    "no column `{col}` to explode (columns: {})",
                    crate::column_names(schema)
                ),
            )
        })?;
        let DataType::List(item) = schema.field(list_idx).data_type() else {
            return Err(EngineError::invalid(
                "column",
                format!(
                    "column `{col}` is {}, explode needs a list",
                    schema.field(list_idx).data_type()
                ),
            ));
        };
        let keep: Vec<usize> = match &self.columns {
            Some(cols) => cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    crate::column_index(schema, c).map_err(|e| e.for_key(format!("columns[{i}]")))
                })
                .collect::<Result<_>>()?,
            None => (0..schema.fields().len())
                .filter(|i| *i != list_idx)
                .collect(),
        };
        let mut fields: Vec<Field> = keep.iter().map(|i| schema.field(*i).clone()).collect();
        if let Some(p) = &self.position {
            fields.push(Field::new(p, DataType::Int32, false));
        }
        let flatten = match item.data_type() {
            DataType::Struct(children) if self.flatten => {
                fields.extend(
                    children
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true)),
                );
                true
            }
            other => {
                fields.push(Field::new(col, other.clone(), true));
                false
            }
        };
        let mut seen = std::collections::HashSet::new();
        for f in &fields {
            if !seen.insert(f.name()) {
                return Err(EngineError::config(format!(
                    "exploding `{col}` gives two columns named `{}`; drop one with `columns`",
                    f.name()
                )));
            }
        }
        let out = Arc::new(Schema::new(fields));
        let op = Explode {
            list_idx,
            keep,
            schema: out.clone(),
            flatten,
            position: self.position.is_some(),
        };
        Ok(Built::main(op, out, input))
    }
}

pub struct Explode {
    list_idx: usize,
    keep: Vec<usize>,
    schema: SchemaRef,
    /// Struct elements become top-level columns.
    flatten: bool,
    /// Add the element's position.
    position: bool,
}

impl Operator for Explode {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let list = batch
            .column(self.list_idx)
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| EngineError::runtime("explode: input column is not a list"))?;
        let offsets = list.value_offsets();
        // At most one output row per element: sized once, no reallocation while filling.
        let elements = (offsets[list.len()] - offsets[0]) as usize;
        let mut parents = Vec::with_capacity(elements);
        let mut children = Vec::with_capacity(elements);
        let mut positions = Vec::with_capacity(if self.position { elements } else { 0 });
        for row in 0..list.len() {
            if list.is_null(row) {
                continue;
            }
            let (start, end) = (offsets[row], offsets[row + 1]);
            for j in start..end {
                parents.push(row as u32);
                children.push(j as u32);
            }
            if self.position {
                positions.extend(0..end - start);
            }
        }
        let parents = UInt32Array::from(parents);
        let children = UInt32Array::from(children);
        let mut columns: Vec<ArrayRef> = self
            .keep
            .iter()
            .map(|i| take(batch.column(*i), &parents, None))
            .collect::<Result<_, _>>()?;
        if self.position {
            columns.push(Arc::new(Int32Array::from(positions)));
        }
        let values = take(list.values(), &children, None)?;
        if self.flatten {
            let s = values
                .as_any()
                .downcast_ref::<StructArray>()
                .expect("checked in build");
            // A null element has no fields: its null must reach every flattened column, whatever
            // values its children hold under it.
            for child in s.columns() {
                columns.push(with_parent_nulls(child, s.nulls())?);
            }
        } else {
            columns.push(values);
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

/// `child` with a null wherever `parent` (the struct holding it) is null.
fn with_parent_nulls(child: &ArrayRef, parent: Option<&NullBuffer>) -> Result<ArrayRef> {
    let Some(parent) = parent.filter(|n| n.null_count() > 0) else {
        return Ok(child.clone());
    };
    let nulls = NullBuffer::union(Some(parent), child.nulls());
    let data = child.to_data().into_builder().nulls(nulls).build()?;
    Ok(make_array(data))
}
