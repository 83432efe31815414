//! `top_n`: the first `n` rows of a complete-mode table by a column, such as the most loaded
//! servers. It reads the whole table its input emits at each trigger and emits the ranking.

use arrow::array::{Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use engine_api::{
    BuildContext, Built, Collector, EngineError, Epoch, Input, Operator, OperatorConfig,
    OutputMode, OutputPort, Result,
};
use serde::Deserialize;
use std::sync::Arc;

/// `type = "top_n"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopNConfig {
    /// The column to rank by.
    pub order_by: String,
    /// How many rows to keep (1 to 100,000).
    pub n: usize,
    /// Largest first (default true).
    #[serde(default = "yes")]
    pub descending: bool,
    /// Name of a 1-based rank column to add (default `rank`).
    #[serde(default = "rank")]
    pub rank_column: String,
}

/// The most rows a ranking keeps.
pub const MAX_N: usize = 100_000;

fn yes() -> bool {
    true
}
fn rank() -> String {
    "rank".into()
}

impl OperatorConfig for TopNConfig {
    fn build(self, _ctx: &BuildContext, input: &Input) -> Result<Built> {
        engine_api::check_range("n", self.n, 1, MAX_N)?;
        let key = crate::column_index(&input.schema, &self.order_by)
            .map_err(|e| e.for_key("order_by"))?;
        if input.mode != OutputMode::Complete {
            return Err(EngineError::config(format!(
                "top_n ranks a whole table, so its input must be in complete mode, not {}; set output_mode = \"complete\" on the aggregate",
                input.mode
            )));
        }
        let mut fields = vec![Field::new(&self.rank_column, DataType::Int64, false)];
        fields.extend(input.schema.fields().iter().map(|f| f.as_ref().clone()));
        let schema = Arc::new(Schema::new(fields));
        let op = TopN {
            key,
            n: self.n,
            descending: self.descending,
            input: input.schema.clone(),
            schema: schema.clone(),
            held: Vec::new(),
        };
        Ok(Built::new(
            op,
            vec![OutputPort::main(schema, OutputMode::Complete)],
        ))
    }
}

pub struct TopN {
    /// The `order_by` column's index in the input.
    key: usize,
    n: usize,
    descending: bool,
    input: SchemaRef,
    schema: SchemaRef,
    held: Vec<RecordBatch>,
}

impl Operator for TopN {
    fn process(&mut self, batch: RecordBatch, _out: &mut Collector) -> Result<()> {
        self.held.push(batch);
        Ok(())
    }

    fn on_barrier(&mut self, _epoch: Epoch, out: &mut Collector) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let all = concat_batches(&self.input, &std::mem::take(&mut self.held))?;
        let opts = SortOptions {
            descending: self.descending,
            nulls_first: false,
        };
        let idx = sort_to_indices(
            all.column(self.key),
            Some(opts),
            Some(self.n.min(all.num_rows())),
        )?;
        let idx = UInt32Array::from_iter_values(idx.values().iter().copied());
        let mut columns = vec![Arc::new(Int64Array::from_iter_values(1..=idx.len() as i64)) as _];
        for c in all.columns() {
            columns.push(take(c, &idx, None)?);
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}
