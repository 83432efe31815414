//! The schema language of the TOML pipelines.
//!
//! A schema is a TOML table from field name to type, in order:
//! `int`, `long`, `float`, `double`, `string`, `boolean`, `timestamp`, `date`,
//! `list<T>` (or `array<T>`) and `struct<name: T, ...>`, nested as deep as needed.

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use engine_api::{EngineError, Result};
use std::sync::Arc;

/// Parses one type expression such as `list<struct<product_id: int, quantity: int>>`.
pub fn parse_type(text: &str) -> Result<DataType> {
    let mut p = Parser {
        s: text,
        pos: 0,
        depth: 0,
    };
    let t = p.ty()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected text after the type"));
    }
    Ok(t)
}

/// Builds an Arrow schema from `(name, type expression)` pairs. Every field is nullable;
/// required fields are checked by the parse operator, which quarantines rows missing them.
pub fn schema_from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Schema> {
    let mut fields = Vec::new();
    for (name, ty) in pairs {
        let dt = parse_type(ty).map_err(|e| e.for_key(format!("schema.{name}")))?;
        fields.push(Field::new(name, dt, true));
    }
    if fields.is_empty() {
        return Err(EngineError::config("the schema has no fields"));
    }
    Ok(Schema::new(fields))
}

/// The type expression for an Arrow type, the inverse of [`parse_type`] (used by `engine graph`).
pub use engine_api::type_name;

/// How deep `list<...>` and `struct<...>` may nest: deeper is surely a mistake, and the parser
/// and Arrow's decoders recurse once per level.
pub const MAX_TYPE_DEPTH: usize = 32;

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(c) = self.s[self.pos..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.pos += c.len_utf8();
        }
    }

    fn err(&self, what: &str) -> EngineError {
        EngineError::config(format!(
            "bad type `{}`: {what} at character {}; types are int, long, float, double, string, boolean, timestamp, date, list<T>, struct<name: T, ...>",
            crate::quote_short(self.s),
            self.pos + 1
        ))
    }

    fn ident(&mut self) -> Result<&str> {
        self.ws();
        let start = self.pos;
        while self.s[self.pos..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a name"));
        }
        Ok(&self.s[start..self.pos])
    }

    fn expect(&mut self, c: char) -> Result<()> {
        self.ws();
        if self.s[self.pos..].starts_with(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{c}`")))
        }
    }

    fn peek(&mut self, c: char) -> bool {
        self.ws();
        self.s[self.pos..].starts_with(c)
    }

    fn ty(&mut self) -> Result<DataType> {
        self.depth += 1;
        if self.depth > MAX_TYPE_DEPTH {
            return Err(self.err(&format!("nested more than {MAX_TYPE_DEPTH} levels deep")));
        }
        let t = self.ty_inner();
        self.depth -= 1;
        t
    }

    fn ty_inner(&mut self) -> Result<DataType> {
        let name = self.ident()?.to_ascii_lowercase();
        Ok(match name.as_str() {
            "int" | "integer" | "int32" => DataType::Int32,
            "long" | "bigint" | "int64" => DataType::Int64,
            "float" | "float32" => DataType::Float32,
            "double" | "float64" => DataType::Float64,
            "string" | "str" | "utf8" => DataType::Utf8,
            "boolean" | "bool" => DataType::Boolean,
            "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            "date" => DataType::Date32,
            "list" | "array" => {
                self.expect('<')?;
                let inner = self.ty()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("item", inner, true)))
            }
            "struct" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                loop {
                    let fname = self.ident()?.to_string();
                    self.expect(':')?;
                    let fty = self.ty()?;
                    fields.push(Field::new(fname, fty, true));
                    if self.peek(',') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.expect('>')?;
                DataType::Struct(Fields::from(fields))
            }
            _ => {
                self.pos -= name.len();
                return Err(self.err(&format!("unknown type `{name}`")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_orders_items_type() {
        let t = parse_type(
            "list<struct<product_id: int, product_name: string, quantity: int, unit_price: double, subtotal: double>>",
        )
        .unwrap();
        let DataType::List(item) = &t else {
            panic!("not a list: {t}")
        };
        let DataType::Struct(fields) = item.data_type() else {
            panic!("not a struct")
        };
        let names: Vec<_> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "product_id",
                "product_name",
                "quantity",
                "unit_price",
                "subtotal"
            ]
        );
        assert_eq!(fields[0].data_type(), &DataType::Int32);
        assert_eq!(fields[3].data_type(), &DataType::Float64);
        assert_eq!(
            type_name(&t),
            "list<struct<product_id: int, product_name: string, quantity: int, unit_price: double, subtotal: double>>"
        );
    }

    #[test]
    fn scalar_aliases() {
        assert_eq!(parse_type("bigint").unwrap(), DataType::Int64);
        assert_eq!(parse_type(" Double ").unwrap(), DataType::Float64);
        assert_eq!(
            parse_type("array<string>").unwrap(),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_type("list<strin>").unwrap_err().to_string();
        assert!(e.contains("unknown type `strin`"), "{e}");
        let e = parse_type("struct<a int>").unwrap_err().to_string();
        assert!(e.contains("expected `:`"), "{e}");
        let e = parse_type("int>").unwrap_err().to_string();
        assert!(e.contains("unexpected text"), "{e}");
    }

    #[test]
    fn hostile_types_are_errors_not_panics() {
        // Multi-byte whitespace once split a character.
        assert_eq!(
            parse_type("list<\u{3000}int\u{a0}>").unwrap(),
            parse_type("list<int>").unwrap()
        );
        let deep = format!("{}int{}", "list<".repeat(100_000), ">".repeat(100_000));
        let e = parse_type(&deep).unwrap_err().to_string();
        assert!(
            e.contains("nested more than 32 levels"),
            "{}",
            &e[e.len() - 120..]
        );
        let ok = format!("{}int{}", "list<".repeat(31), ">".repeat(31));
        parse_type(&ok).unwrap();
    }
}
