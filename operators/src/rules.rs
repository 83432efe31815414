//! Record rules for `json_parse`: conditions on top-level columns, or on the fields of a list of
//! structs (`items.quantity > 0`), where every element must meet the condition.

use crate::expr::Expr;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use engine_api::{EngineError, Result};
use std::sync::Arc;

/// The list column a rule's dotted names point into, if any.
fn list_prefix(rule: &Expr) -> Result<Option<String>> {
    let mut prefix: Option<String> = None;
    for c in rule.columns() {
        if let Some((p, _)) = c.split_once('.') {
            match &prefix {
                Some(q) if q != p => {
                    return Err(EngineError::config(
                        "a rule may look inside one list column only",
                    ));
                }
                _ => prefix = Some(p.to_string()),
            }
        } else if prefix.is_some() {
            return Err(EngineError::config(
                "a rule on list elements may not mix in top-level columns",
            ));
        }
    }
    Ok(prefix)
}

fn strip(rule: &Expr, prefix: &str) -> Expr {
    map_columns(rule, &|c: &str| {
        c.strip_prefix(&format!("{prefix}."))
            .unwrap_or(c)
            .to_string()
    })
}

fn map_columns(e: &Expr, f: &dyn Fn(&str) -> String) -> Expr {
    use Expr::*;
    let b = |x: &Expr| Box::new(map_columns(x, f));
    match e {
        Column(c) => Column(f(c)),
        Number(_) | Str(_) => e.clone(),
        Neg(a) => Neg(b(a)),
        Not(a) => Not(b(a)),
        IsNull(a) => IsNull(b(a)),
        IsTimestamp(a) => IsTimestamp(b(a)),
        Arith(x, op, y) => Arith(b(x), *op, b(y)),
        Cmp(x, op, y) => Cmp(b(x), *op, b(y)),
        And(x, y) => And(b(x), b(y)),
        Or(x, y) => Or(b(x), b(y)),
        In(x, items) => In(b(x), items.iter().map(|i| map_columns(i, f)).collect()),
    }
}

/// Checks a rule's columns and types against the parsed schema.
pub fn check(rule: &Expr, schema: &Schema) -> Result<()> {
    match list_prefix(rule)? {
        None => rule.check_condition(schema),
        Some(p) => {
            let f = schema
                .field_with_name(&p)
                .map_err(|_| EngineError::config(format!("no column `{p}`")))?;
            match f.data_type() {
                DataType::List(item) => match item.data_type() {
                    DataType::Struct(fields) => {
                        strip(rule, &p).check_condition(&Schema::new(fields.clone()))
                    }
                    _ => Err(EngineError::config(format!(
                        "`{p}` is a list, but not of structs"
                    ))),
                },
                other => Err(EngineError::config(format!(
                    "`{p}` is {other}, not a list of structs"
                ))),
            }
        }
    }
}

/// Per row: does the rule hold? Nulls hold.
pub fn holds(rule: &Expr, batch: &RecordBatch) -> Result<Vec<bool>> {
    match list_prefix(rule)? {
        None => Ok(crate::expr::passes(&rule.bools(batch)?, true)),
        Some(p) => {
            let list = batch.column_by_name(&p).expect("checked").as_list::<i32>();
            let values = list.values().as_struct();
            let child = RecordBatch::try_new(
                Arc::new(Schema::new(values.fields().clone())),
                values.columns().to_vec(),
            )?;
            let inner = crate::expr::passes(&strip(rule, &p).bools(&child)?, true);
            let offsets = list.value_offsets();
            Ok((0..list.len())
                .map(|row| {
                    list.is_null(row)
                        || (offsets[row] as usize..offsets[row + 1] as usize)
                            .all(|j| values.is_null(j) || inner[j])
                })
                .collect())
        }
    }
}
