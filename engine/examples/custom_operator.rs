//! A custom operator, registered exactly like the built-ins, in a binary of your own.
//!
//! `add_tax` adds a column holding another column times `1 + rate`:
//!
//! ```toml
//! [nodes.with_tax]
//! type = "add_tax"
//! inputs = ["parse"]
//! column = "total"     # a double column
//! rate = 0.2
//! output = "total_ttc"
//! ```
//!
//! Run it like the `engine` binary: `cargo run --release --example custom_operator -- run my.toml`.

use engine::api::arrow::array::{Array, AsArray, Float64Array, RecordBatch};
use engine::api::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use engine::api::{BuildContext, Collector, EngineError, Operator, OperatorConfig, Result};
use serde::Deserialize;
use std::sync::Arc;

/// The node's TOML keys. `deny_unknown_fields` turns a typo into an error naming the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTaxConfig {
    pub column: String,
    pub rate: f64,
    pub output: String,
}

impl OperatorConfig for AddTaxConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Box<dyn Operator>> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(EngineError::config(format!(
                "`rate` must be between 0 and 1, got {}",
                self.rate
            )));
        }
        Ok(Box::new(AddTax {
            cfg: self,
            input: 0,
            schema: Arc::new(Schema::empty()),
        }))
    }
}

pub struct AddTax {
    cfg: AddTaxConfig,
    input: usize,
    schema: SchemaRef,
}

impl Operator for AddTax {
    /// Checks the input column once, before anything runs (so `engine validate` catches mistakes).
    fn init(&mut self, input: &SchemaRef) -> Result<Vec<SchemaRef>> {
        self.input = input
            .index_of(&self.cfg.column)
            .map_err(|_| EngineError::config(format!("no column `{}`", self.cfg.column)))?;
        if input.field(self.input).data_type() != &DataType::Float64 {
            return Err(EngineError::config(format!(
                "column `{}` must be a double",
                self.cfg.column
            )));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(&self.cfg.output, DataType::Float64, true));
        self.schema = Arc::new(Schema::new(fields));
        Ok(vec![self.schema.clone()])
    }

    /// Pure over batches: no I/O, no mailboxes, no barriers.
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let values = batch.column(self.input).as_primitive::<Float64Type>();
        let taxed: Float64Array = values
            .iter()
            .map(|v| v.map(|v| v * (1.0 + self.cfg.rate)))
            .collect();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(taxed) as Arc<dyn Array>);
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

/// The built-in registry plus `add_tax`.
pub fn registry() -> engine::api::Registry {
    let mut r = engine::builtin_registry();
    r.register_operator::<AddTaxConfig>("add_tax");
    r
}

fn main() -> std::process::ExitCode {
    engine::cli::main_with(registry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::api::Node;
    use engine::config::Pipeline;
    use engine::graph::Graph;

    const PIPELINE: &str = r#"
[pipeline]
name = "taxed"
checkpoint = "file:///tmp/engine-example-checkpoints"

[nodes.source]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "commandes-json"

[nodes.parse]
type = "json_parse"
inputs = ["source"]
[nodes.parse.schema]
order_id = "int"
total = "double"

[nodes.with_tax]
type = "add_tax"
inputs = ["parse"]
column = "total"
rate = 0.2
output = "total_ttc"

[nodes.out]
type = "console"
inputs = ["with_tax"]

[nodes.bad]
type = "console"
inputs = ["parse.quarantine"]
"#;

    #[test]
    fn the_custom_operator_builds_in_a_pipeline_and_computes_its_column() {
        let pipeline = Pipeline::parse(std::path::Path::new("taxed.toml"), PIPELINE).unwrap();
        let mut graph = Graph::build(pipeline, &registry()).unwrap();
        let node = graph
            .nodes
            .iter_mut()
            .find(|n| n.spec.name == "with_tax")
            .unwrap();
        let schema = node.out_schemas[0].clone();
        assert_eq!(schema.field(schema.fields().len() - 1).name(), "total_ttc");

        assert_eq!(
            node.in_schema.as_ref().unwrap().fields().len() + 1,
            schema.fields().len()
        );

        // The same operator, built through the registry on its own, over a literal batch.
        let ctx = BuildContext {
            pipeline: "taxed".into(),
            node: "with_tax".into(),
            storage: Default::default(),
            trigger: std::time::Duration::from_secs(1),
            checkpoint: "file:///tmp/taxed".into(),
        };
        let cfg: toml::Value =
            toml::from_str("column = \"total\"\nrate = 0.2\noutput = \"total_ttc\"").unwrap();
        let Node::Operator(mut op) = registry().build("add_tax", cfg.into(), &ctx).unwrap() else {
            panic!("not an operator")
        };
        let input = Arc::new(Schema::new(vec![Field::new(
            "total",
            DataType::Float64,
            true,
        )]));
        op.init(&input).unwrap();
        let totals = [10.0, 99.99, 0.0];
        let batch =
            RecordBatch::try_new(input, vec![Arc::new(Float64Array::from(totals.to_vec()))])
                .unwrap();
        let mut out = Collector::new(1);
        op.process(batch, &mut out).unwrap();
        let got = out.port(0)[0]
            .column_by_name("total_ttc")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        for (i, t) in totals.iter().enumerate() {
            assert!((got.value(i) - t * 1.2).abs() < 1e-9);
        }
    }

    #[test]
    fn a_typo_in_the_custom_node_is_a_clear_error() {
        let text = PIPELINE.replace("rate = 0.2", "rat = 0.2");
        let pipeline = Pipeline::parse(std::path::Path::new("taxed.toml"), &text).unwrap();
        let err = Graph::build(pipeline, &registry())
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("taxed.toml:22: node `with_tax` (add_tax)"),
            "{err}"
        );
        assert!(err.contains("unknown field `rat`"), "{err}");
    }
}
