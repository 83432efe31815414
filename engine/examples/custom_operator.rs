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

use engine::api::arrow::array::{AsArray, Float64Array, RecordBatch};
use engine::api::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use engine::api::{
    BuildContext, Built, Collector, EngineError, Input, Operator, OperatorConfig, Result,
};
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
    /// Checks the config against the input schema before anything runs (`engine validate` calls
    /// it too) and declares the output: errors keyed by the TOML key point at its line.
    fn build(self, _ctx: &BuildContext, input: &Input) -> Result<Built> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(EngineError::invalid("rate", "must be between 0 and 1"));
        }
        let column = input
            .schema
            .index_of(&self.column)
            .map_err(|_| EngineError::invalid("column", format!("no column `{}`", self.column)))?;
        if input.schema.field(column).data_type() != &DataType::Float64 {
            let msg = format!("column `{}` must be a double", self.column);
            return Err(EngineError::invalid("column", msg));
        }
        let mut fields = input.schema.fields().to_vec();
        fields.push(Arc::new(Field::new(&self.output, DataType::Float64, true)));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let op = AddTax {
            column,
            factor: 1.0 + self.rate,
            schema: schema.clone(),
        };
        // One main port, in the input's output mode.
        Ok(Built::main(op, schema, input))
    }
}

/// The built operator: ready to run, nothing left to initialise.
pub struct AddTax {
    column: usize,
    factor: f64,
    schema: SchemaRef,
}

impl Operator for AddTax {
    /// Pure over batches: no I/O, no mailboxes, no barriers.
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let values = batch.column(self.column).as_primitive::<Float64Type>();
        let taxed: Float64Array = values.unary(|v| v * self.factor);
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(taxed));
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
    use engine::api::arrow::array::Array;
    use engine::api::testing::{Script, build_context, check_operator};

    fn input() -> Input {
        Input::new(Arc::new(Schema::new(vec![Field::new(
            "total",
            DataType::Float64,
            true,
        )])))
    }

    fn totals(v: &[Option<f64>]) -> RecordBatch {
        let column = Arc::new(Float64Array::from(v.to_vec()));
        RecordBatch::try_new(input().schema, vec![column]).unwrap()
    }

    fn config(text: &str) -> AddTaxConfig {
        toml::from_str(text).unwrap()
    }

    const TAX: &str = "column = \"total\"\nrate = 0.2\noutput = \"total_ttc\"";

    /// The operator contract (restore at any trigger, flush, empty input, declared schemas) and
    /// the values, in one run.
    #[test]
    fn add_tax_computes_its_column_and_keeps_the_operator_contract() {
        let (first, second) = ([Some(10.0), None], [Some(99.99), Some(0.0)]);
        let script = Script::new(input().schema)
            .batch(totals(&first))
            .barrier()
            .batch(totals(&second))
            .barrier()
            .end();
        let ctx = build_context("with_tax");
        let run = check_operator(|| config(TAX).build(&ctx, &input()), &script);
        let out = run.all().concat("out");
        let got = out
            .column_by_name("total_ttc")
            .unwrap()
            .as_primitive::<Float64Type>();
        for (i, t) in first.iter().chain(&second).enumerate() {
            assert_eq!(got.is_valid(i), t.is_some());
            assert!(t.is_none_or(|t| (got.value(i) - t * 1.2).abs() < 1e-9));
        }
    }

    #[test]
    fn the_registry_builds_it_and_mistakes_name_their_key() {
        let ctx = build_context("with_tax");
        let build = |text: &str| {
            let cfg: toml::Value = toml::from_str(text).unwrap();
            registry().build("add_tax", cfg.into(), &ctx, Some(&input()))
        };
        let Ok(Node::Operator(built)) = build(TAX) else {
            panic!("not an operator")
        };
        let names: Vec<_> = built.ports[0]
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["total", "total_ttc"]);
        for (text, key) in [
            (TAX.replace("0.2", "2"), "rate"),
            (TAX.replace("\"total\"", "\"amount\""), "column"),
            (TAX.replace("rate", "rat"), "rat"),
        ] {
            match build(&text) {
                Err(e) => assert_eq!(e.key(), Some(key), "{text}: {e}"),
                Ok(_) => panic!("{text}: built"),
            }
        }
    }
}
