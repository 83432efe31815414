//! `console`: prints each epoch's rows as a table, like Spark's `format("console")`.

use arrow::array::RecordBatch;
use arrow::util::display::FormatOptions;
use arrow::util::pretty::pretty_format_batches_with_options;
use engine_api::{
    BuildContext, Committer, Epoch, Input, PartitionId, PendingCommit, Result, Sink, SinkConfig,
};
use serde::Deserialize;
use std::sync::Arc;

/// `type = "console"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// Rows shown per epoch (Spark's `numRows`, default 20, from 1 to 10,000).
    #[serde(default = "default_rows")]
    pub num_rows: usize,
    /// Cut values longer than 20 characters (Spark's `truncate`, default true).
    #[serde(default = "yes")]
    pub truncate: bool,
}

fn default_rows() -> usize {
    20
}
fn yes() -> bool {
    true
}

impl SinkConfig for ConsoleSinkConfig {
    fn build(self, ctx: &BuildContext, _input: &Input) -> Result<Box<dyn Sink>> {
        engine_api::check_range("num_rows", self.num_rows, 1, 10_000)?;
        Ok(Box::new(ConsoleSink {
            node: ctx.node.clone(),
            cfg: self,
            rows: Vec::new(),
            total: 0,
        }))
    }
}

pub struct ConsoleSink {
    node: String,
    cfg: ConsoleSinkConfig,
    rows: Vec<RecordBatch>,
    total: usize,
}

struct NoCommit;

#[async_trait::async_trait]
impl Committer for NoCommit {
    async fn commit(&self, _pending: &[PendingCommit]) -> Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for ConsoleSink {
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch, _: Option<&PartitionId>) -> Result<()> {
        self.total += batch.num_rows();
        let held: usize = self.rows.iter().map(|b| b.num_rows()).sum();
        if held < self.cfg.num_rows {
            self.rows
                .push(batch.slice(0, batch.num_rows().min(self.cfg.num_rows - held)));
        }
        Ok(())
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        if self.total == 0 {
            return Ok(Vec::new());
        }
        let mut batches = std::mem::take(&mut self.rows);
        if self.cfg.truncate {
            batches = batches.iter().map(truncate).collect::<Result<_>>()?;
        }
        let table = pretty_format_batches_with_options(
            &batches,
            &FormatOptions::default().with_null("null"),
        )?;
        let more = if self.total > self.cfg.num_rows {
            format!(
                "only showing top {} of {} rows\n",
                self.cfg.num_rows, self.total
            )
        } else {
            String::new()
        };
        println!(
            "-------------------------------------------\nBatch: {epoch} ({})\n-------------------------------------------\n{table}\n{more}",
            self.node
        );
        self.total = 0;
        Ok(Vec::new())
    }

    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(NoCommit)
    }

    fn describe(&self) -> String {
        format!("console, {} rows per epoch", self.cfg.num_rows)
    }
}

/// Cuts string values to 20 characters, as Spark's console sink does.
fn truncate(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{Array, StringArray};
    let cols = batch
        .columns()
        .iter()
        .map(|c| match c.as_any().downcast_ref::<StringArray>() {
            Some(s) => Arc::new(
                s.iter()
                    .map(|v| {
                        v.map(|v| {
                            if v.chars().count() > 20 {
                                format!("{}...", v.chars().take(17).collect::<String>())
                            } else {
                                v.to_string()
                            }
                        })
                    })
                    .collect::<StringArray>(),
            ) as Arc<dyn Array>,
            None => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}
