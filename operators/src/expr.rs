//! A small expression language over columns, for rules (`total >= 0`), aggregate filters
//! (`level = 'ERROR'`) and computed columns (`(avg_cpu + avg_memory) / 2`).
//!
//! ```text
//! expr    := or
//! or      := and ('or' and)*
//! and     := not ('and' not)*
//! not     := 'not' not | cmp
//! cmp     := sum [ op sum | 'between' sum 'and' sum | ['not'] 'in' '(' literal, ... ')'
//!                | 'is' ['not'] 'null' | 'is' 'timestamp' ]      op: = == != <> < <= > >=
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '/') unary)*
//! unary   := '-' unary | number | 'string' | column | '(' expr ')'
//! ```
//! Numbers are computed as doubles. A rule whose inputs are null is not broken (use `required`
//! for presence).

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, Scalar, StringArray,
};
use arrow::compute::kernels::{boolean, cmp, numeric};
use arrow::compute::{cast, is_null};
use arrow::datatypes::{DataType, Schema};
use engine_api::{EngineError, Result};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Number(f64),
    Str(String),
    Neg(Box<Expr>),
    Arith(Box<Expr>, char, Box<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    IsNull(Box<Expr>),
    IsTimestamp(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Sym(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < c.len()
                && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == 'e' || c[i] == 'E')
            {
                i += 1;
            }
            let text: String = c[start..i].iter().collect();
            out.push(Tok::Num(text.parse().map_err(|_| {
                EngineError::config(format!(
                    "bad number `{text}` in `{}`",
                    crate::quote_short(s)
                ))
            })?));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == '\'' || ch == '"' {
            let q = ch;
            i += 1;
            let start = i;
            while i < c.len() && c[i] != q {
                i += 1;
            }
            if i == c.len() {
                return Err(EngineError::config(format!(
                    "unclosed string in `{}`",
                    crate::quote_short(s)
                )));
            }
            out.push(Tok::Str(c[start..i].iter().collect()));
            i += 1;
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if ["<=", ">=", "!=", "<>", "=="].contains(&two.as_str()) {
                out.push(Tok::Sym(two));
                i += 2;
            } else if "+-*/()<>=,".contains(ch) {
                out.push(Tok::Sym(ch.to_string()));
                i += 1;
            } else {
                return Err(EngineError::config(format!(
                    "unexpected `{ch}` in `{}`",
                    crate::quote_short(s)
                )));
            }
        }
    }
    Ok(out)
}

/// The most tokens an expression may have: expressions are evaluated recursively, so their
/// size bounds the stack they need.
pub const MAX_TOKENS: usize = 512;
/// How deep parentheses, `not` and unary minus may nest.
pub const MAX_DEPTH: usize = 64;

struct P<'a> {
    toks: Vec<Tok>,
    pos: usize,
    src: &'a str,
    depth: usize,
}

impl P<'_> {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn peek_sym(&self, s: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Sym(x)) if x == s)
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        let y = self.peek_kw(kw);
        if y {
            self.pos += 1;
        }
        y
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        let y = self.peek_sym(s);
        if y {
            self.pos += 1;
        }
        y
    }
    fn err(&self, what: &str) -> EngineError {
        EngineError::config(format!(
            "bad expression `{}`: {what}",
            crate::quote_short(self.src)
        ))
    }
    fn expect_sym(&mut self, s: &str) -> Result<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{s}`")))
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let mut e = self.and()?;
        while self.eat_kw("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr> {
        let mut e = self.not()?;
        while self.eat_kw("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr> {
        if self.eat_kw("not") {
            self.deeper()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.cmp()
    }
    fn deeper(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(&format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }
    fn cmp(&mut self) -> Result<Expr> {
        let left = self.sum()?;
        let ops = [
            ("=", CmpOp::Eq),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<>", CmpOp::Ne),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
        ];
        for (s, op) in ops {
            if self.eat_sym(s) {
                return Ok(Expr::Cmp(Box::new(left), op, Box::new(self.sum()?)));
            }
        }
        if self.eat_kw("between") {
            let lo = self.sum()?;
            if !self.eat_kw("and") {
                return Err(self.err("expected `and` in `between`"));
            }
            let hi = self.sum()?;
            return Ok(Expr::And(
                Box::new(Expr::Cmp(Box::new(left.clone()), CmpOp::Ge, Box::new(lo))),
                Box::new(Expr::Cmp(Box::new(left), CmpOp::Le, Box::new(hi))),
            ));
        }
        let negate = self.peek_kw("not")
            && matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in"));
        if negate {
            self.pos += 1;
        }
        if self.eat_kw("in") {
            self.expect_sym("(")?;
            let mut items = vec![self.sum()?];
            while self.eat_sym(",") {
                items.push(self.sum()?);
            }
            self.expect_sym(")")?;
            let e = Expr::In(Box::new(left), items);
            return Ok(if negate { Expr::Not(Box::new(e)) } else { e });
        }
        if self.eat_kw("is") {
            let not = self.eat_kw("not");
            if self.eat_kw("null") {
                let e = Expr::IsNull(Box::new(left));
                return Ok(if not { Expr::Not(Box::new(e)) } else { e });
            }
            if !not && self.eat_kw("timestamp") {
                return Ok(Expr::IsTimestamp(Box::new(left)));
            }
            return Err(self.err("expected `null`, `not null` or `timestamp` after `is`"));
        }
        Ok(left)
    }
    fn sum(&mut self) -> Result<Expr> {
        let mut e = self.product()?;
        loop {
            let op = if self.eat_sym("+") {
                '+'
            } else if self.eat_sym("-") {
                '-'
            } else {
                break;
            };
            e = Expr::Arith(Box::new(e), op, Box::new(self.product()?));
        }
        Ok(e)
    }
    fn product(&mut self) -> Result<Expr> {
        let mut e = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                '*'
            } else if self.eat_sym("/") {
                '/'
            } else {
                break;
            };
            e = Expr::Arith(Box::new(e), op, Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr> {
        if self.eat_sym("-") {
            self.deeper()?;
            let e = Expr::Neg(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        if self.eat_sym("(") {
            self.deeper()?;
            let e = self.or()?;
            self.expect_sym(")")?;
            self.depth -= 1;
            return Ok(e);
        }
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Number(n))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Ident(w))
                if !["and", "or", "not", "in", "is", "between"]
                    .contains(&w.to_ascii_lowercase().as_str()) =>
            {
                self.pos += 1;
                Ok(Expr::Column(w))
            }
            _ => Err(self.err("expected a column, a number or a 'string'")),
        }
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr> {
    let toks = tokenize(src)?;
    if toks.len() > MAX_TOKENS {
        return Err(EngineError::config(format!(
            "expression too long: more than {MAX_TOKENS} names, numbers and symbols"
        )));
    }
    let mut p = P {
        toks,
        pos: 0,
        src,
        depth: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err("unexpected text at the end"));
    }
    Ok(e)
}

impl Expr {
    /// Column names the expression reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Column(c) = e {
                out.push(c.clone());
            }
        });
        out
    }

    fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Neg(a) | Expr::Not(a) | Expr::IsNull(a) | Expr::IsTimestamp(a) => a.walk(f),
            Expr::Arith(a, _, b) | Expr::Cmp(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::In(a, items) => {
                a.walk(f);
                items.iter().for_each(|i| i.walk(f));
            }
            _ => {}
        }
    }

    /// Checks that every column exists in `schema`.
    pub fn check(&self, schema: &Schema) -> Result<()> {
        for c in self.columns() {
            if schema.index_of(&c).is_err() {
                return Err(EngineError::config(format!(
                    "expression names column `{c}`, which is not in the input (columns: {})",
                    crate::column_names(schema)
                )));
            }
        }
        Ok(())
    }

    /// Checks that every column exists in `schema` and that the types fit together, by
    /// evaluating over no rows (so `engine validate` finds `level > 1` on a string column);
    /// returns the type of the result.
    pub fn check_types(&self, schema: &Schema) -> Result<DataType> {
        self.check(schema)?;
        let empty = RecordBatch::new_empty(Arc::new(schema.clone()));
        let v = self
            .eval(&empty)
            .and_then(|v| v.array(0))
            .map_err(|e| EngineError::config(format!("the types do not fit: {e}")))?;
        Ok(v.data_type().clone())
    }

    /// [`Expr::check_types`] for a condition (a rule, a filter): the result must be true or false.
    pub fn check_condition(&self, schema: &Schema) -> Result<()> {
        match self.check_types(schema)? {
            DataType::Boolean => Ok(()),
            other => Err(EngineError::config(format!(
                "not a condition: it gives {other}, not true or false"
            ))),
        }
    }

    /// Evaluates over a batch.
    pub fn eval(&self, batch: &RecordBatch) -> Result<Value> {
        Ok(match self {
            Expr::Column(c) => {
                let col = batch
                    .column_by_name(c)
                    .ok_or_else(|| EngineError::runtime(format!("no column `{c}`")))?
                    .clone();
                match col.data_type() {
                    DataType::Utf8 | DataType::Boolean => Value::Array(col),
                    DataType::Timestamp(_, _) => Value::Array(
                        cast(&col, &DataType::Int64).and_then(|a| cast(&a, &DataType::Float64))?,
                    ),
                    // Adding 0.0 turns -0.0 into 0.0: arrow compares floats by total order, where
                    // -0.0 < 0.0, but a rule such as `total >= 0` must accept -0.0.
                    _ => {
                        let zero = Scalar::new(Float64Array::from(vec![0.0]));
                        Value::Array(numeric::add(&cast(&col, &DataType::Float64)?, &zero)?)
                    }
                }
            }
            Expr::Number(n) => Value::Scalar(Arc::new(Float64Array::from(vec![*n]))),
            Expr::Str(s) => Value::Scalar(Arc::new(StringArray::from(vec![s.as_str()]))),
            Expr::Neg(a) => Value::Array(numeric::neg(&a.eval(batch)?.array(batch.num_rows())?)?),
            Expr::Arith(a, op, b) => {
                let (x, y) = (a.eval(batch)?, b.eval(batch)?);
                let (x, y) = (x.datum(), y.datum());
                let r = match op {
                    '+' => numeric::add(x.as_ref(), y.as_ref())?,
                    '-' => numeric::sub(x.as_ref(), y.as_ref())?,
                    '*' => numeric::mul(x.as_ref(), y.as_ref())?,
                    _ => numeric::div(x.as_ref(), y.as_ref())?,
                };
                Value::Array(r)
            }
            Expr::Cmp(a, op, b) => {
                let (x, y) = (a.eval(batch)?, b.eval(batch)?);
                let (x, y) = (x.datum(), y.datum());
                let (x, y) = (x.as_ref(), y.as_ref());
                let r = match op {
                    CmpOp::Eq => cmp::eq(x, y)?,
                    CmpOp::Ne => cmp::neq(x, y)?,
                    CmpOp::Lt => cmp::lt(x, y)?,
                    CmpOp::Le => cmp::lt_eq(x, y)?,
                    CmpOp::Gt => cmp::gt(x, y)?,
                    CmpOp::Ge => cmp::gt_eq(x, y)?,
                };
                Value::Array(Arc::new(r))
            }
            Expr::And(a, b) => Value::Array(Arc::new(boolean::and_kleene(
                &a.bools(batch)?,
                &b.bools(batch)?,
            )?)),
            Expr::Or(a, b) => Value::Array(Arc::new(boolean::or_kleene(
                &a.bools(batch)?,
                &b.bools(batch)?,
            )?)),
            Expr::Not(a) => Value::Array(Arc::new(boolean::not(&a.bools(batch)?)?)),
            Expr::In(a, items) => {
                let mut acc: Option<BooleanArray> = None;
                for item in items {
                    let eq =
                        Expr::Cmp(a.clone(), CmpOp::Eq, Box::new(item.clone())).bools(batch)?;
                    acc = Some(match acc {
                        None => eq,
                        Some(prev) => boolean::or_kleene(&prev, &eq)?,
                    });
                }
                Value::Array(Arc::new(acc.expect("in has one item at least")))
            }
            Expr::IsNull(a) => {
                Value::Array(Arc::new(is_null(&a.eval(batch)?.array(batch.num_rows())?)?))
            }
            Expr::IsTimestamp(a) => {
                let v = a.eval(batch)?.array(batch.num_rows())?;
                let s = v
                    .as_string_opt::<i32>()
                    .ok_or_else(|| EngineError::config("`is timestamp` needs a string column"))?;
                Value::Array(Arc::new(
                    s.iter()
                        .map(|v| v.map(|t| crate::time::parse_timestamp_ms(t).is_some()))
                        .collect::<BooleanArray>(),
                ))
            }
        })
    }

    /// Evaluates to booleans (an error if the expression is not a condition).
    pub fn bools(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let a = self.eval(batch)?.array(batch.num_rows())?;
        a.as_boolean_opt()
            .cloned()
            .ok_or_else(|| EngineError::config(format!("expression {self:?} is not a condition")))
    }
}

/// The value of an expression: an array, or a literal not yet broadcast.
pub enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Value {
    fn datum(&self) -> Box<dyn arrow::array::Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a.clone()),
            Value::Scalar(a) => Box::new(Scalar::new(a.clone())),
        }
    }

    pub fn array(self, len: usize) -> Result<ArrayRef> {
        Ok(match self {
            Value::Array(a) => a,
            Value::Scalar(a) => {
                let idx = arrow::array::UInt32Array::from(vec![0u32; len]);
                arrow::compute::take(&a, &idx, None)?
            }
        })
    }
}

/// Rows where `cond` holds; null counts as "not broken" when `null_passes`.
pub fn passes(cond: &BooleanArray, null_passes: bool) -> Vec<bool> {
    (0..cond.len())
        .map(|i| {
            if cond.is_null(i) {
                null_passes
            } else {
                cond.value(i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("q", DataType::Int32, true),
                Field::new("level", DataType::Utf8, true),
                Field::new("ts", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(0), None, Some(5)])),
                Arc::new(StringArray::from(vec![
                    Some("INFO"),
                    Some("ERROR"),
                    Some("TRACE"),
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("2026-01-01T00:00:00Z"),
                    Some("yesterday"),
                    None,
                    Some("2026-01-01T00:00:00.5+01:00"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rules_evaluate_with_nulls_passing() {
        let b = batch();
        let gt = parse("q > 0").unwrap().bools(&b).unwrap();
        assert_eq!(passes(&gt, true), vec![true, false, true, true]);
        let between = parse("q between 1 and 4").unwrap().bools(&b).unwrap();
        assert_eq!(passes(&between, true), vec![true, false, true, false]);
        let set = parse("level in ('DEBUG', 'INFO', 'WARN', 'ERROR')")
            .unwrap()
            .bools(&b)
            .unwrap();
        assert_eq!(passes(&set, true), vec![true, true, false, true]);
        let not_in = parse("level not in ('ERROR')").unwrap().bools(&b).unwrap();
        assert_eq!(passes(&not_in, true), vec![true, false, true, true]);
        let ts = parse("ts is timestamp").unwrap().bools(&b).unwrap();
        assert_eq!(passes(&ts, true), vec![true, false, true, true]);
    }

    #[test]
    fn negative_zero_is_not_below_zero() {
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("t", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(vec![-0.0, 0.0, -0.5]))],
        )
        .unwrap();
        let ge = parse("t >= 0").unwrap().bools(&b).unwrap();
        assert_eq!(passes(&ge, true), vec![true, true, false]);
    }

    #[test]
    fn arithmetic_is_in_doubles() {
        let b = batch();
        let v = parse("(q + 1) * 2 / 4 - -1")
            .unwrap()
            .eval(&b)
            .unwrap()
            .array(4)
            .unwrap();
        let v = v.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(v.value(0), 2.0);
        assert_eq!(v.value(1), 1.5);
        assert!(v.is_null(2));
        assert_eq!(v.value(3), 4.0);
    }

    #[test]
    fn parse_errors_and_columns() {
        assert!(parse("q >").is_err());
        assert!(
            parse("q > 'x")
                .unwrap_err()
                .to_string()
                .contains("unclosed string")
        );
        assert!(parse("level in 'a'").is_err());
        assert_eq!(parse("a + b > c").unwrap().columns(), vec!["a", "b", "c"]);
        let e = parse("nope > 1")
            .unwrap()
            .check(&batch().schema())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn hostile_expressions_are_errors_not_stack_overflows() {
        for deep in [
            format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}1", "-".repeat(100_000)),
            format!("{}a", "not ".repeat(100_000)),
        ] {
            let e = parse(&deep).unwrap_err().to_string();
            assert!(
                e.contains("more than"),
                "{}",
                &e[e.len().saturating_sub(100)..]
            );
        }
        let long = vec!["a"; 1000].join(" + ");
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
        let e = parse(&format!("{}a{}", "(".repeat(64), ")".repeat(64)));
        assert!(e.is_ok(), "64 levels are allowed: {e:?}");
    }
}
