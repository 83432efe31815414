//! `json_parse`: decodes a JSON column against a declared schema with arrow-json.
//!
//! A whole micro-batch is decoded in one call. When that fails, the batch is re-checked message
//! by message, and every bad message goes to the `quarantine` port with a machine-readable
//! `reason`, its raw value and its Kafka coordinates. Nothing is silently turned into nulls.

use crate::schema::schema_from_pairs;
use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_json::ReaderBuilder;
use base64::Engine as _;
use engine_api::{
    BuildContext, Built, Collector, EngineError, Input, Operator, OperatorConfig, OutputPort,
    Result,
};
use indexmap::IndexMap;
use serde::Deserialize;
use std::sync::Arc;

/// Reasons a record is quarantined (the `reason` column).
pub mod reason {
    /// The Kafka value is null (a tombstone).
    pub const NULL_VALUE: &str = "null_value";
    /// The value is empty or only whitespace.
    pub const EMPTY_VALUE: &str = "empty_value";
    /// The value is not valid JSON (truncated, invalid UTF-8, NaN, several values, ...).
    pub const NOT_JSON: &str = "not_json";
    /// Valid JSON, but not an object (an array, a string, a number, `null`).
    pub const NOT_OBJECT: &str = "not_object";
    /// A field has a type the schema cannot hold (a string where a number is expected, an
    /// integer out of range).
    pub const WRONG_TYPE: &str = "wrong_type";
    /// A required field is missing or null.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A rule declared in `rules` does not hold (such as `total >= 0`).
    pub const RULE_BROKEN: &str = "rule_broken";
}

/// What to do with a record that cannot be parsed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Send it to the `quarantine` port with its reason (the default).
    #[default]
    Quarantine,
    /// Count it, log it, and drop it.
    Drop,
    /// Stop the pipeline.
    Fail,
}

/// `type = "json_parse"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonParseConfig {
    /// The input column holding the JSON text (default `value`, the Kafka value).
    #[serde(default = "default_value_column")]
    pub value_column: String,
    /// Field name to type, in order (see the schema language in the README).
    pub schema: IndexMap<String, String>,
    /// Top-level fields that must be present and not null.
    #[serde(default)]
    pub required: Vec<String>,
    /// Conditions every record must meet, such as `"total >= 0"`, `"level in ('INFO', 'ERROR')"`,
    /// `"cpu_percent between 0 and 100"`, `"timestamp is timestamp"`, or on the elements of a
    /// list of structs, `"items.quantity > 0"` (every element must meet it). A null value does
    /// not break a rule; use `required` for presence.
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub on_error: OnError,
    /// `fast` (the default): a decoder directed by the schema takes the messages it can decode
    /// exactly as arrow-json would, and arrow-json decodes the rest. `arrow`: arrow-json decodes
    /// everything (slower; the results are the same).
    #[serde(default)]
    pub decoder: Decoder,
}

/// `decoder = "fast" | "arrow"` of `json_parse`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    #[default]
    Fast,
    Arrow,
}

fn default_value_column() -> String {
    "value".into()
}

impl OperatorConfig for JsonParseConfig {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Built> {
        let parsed_schema = Arc::new(schema_from_pairs(
            self.schema.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?);
        for (i, r) in self.required.iter().enumerate() {
            if parsed_schema.index_of(r).is_err() {
                return Err(EngineError::invalid(
                    format!("required[{i}]"),
                    format!("`{r}` is not in the schema"),
                ));
            }
        }
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok((
                    r.clone(),
                    crate::expr::parse(r).map_err(|e| e.for_key(format!("rules[{i}]")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = &input.schema;
        let col = &self.value_column;
        let value_idx = schema.index_of(col).map_err(|_| {
            EngineError::config(format!(
                "input has no column `{col}` to parse (columns: {})",
                crate::column_names(schema)
            ))
        })?;
        match schema.field(value_idx).data_type() {
            DataType::Binary | DataType::Utf8 => {}
            other => {
                return Err(EngineError::config(format!(
                    "column `{col}` is {other}, expected binary or string"
                )));
            }
        }
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|i| *i != value_idx)
            .collect();
        let mut fields: Vec<Field> = keep.iter().map(|i| schema.field(*i).clone()).collect();
        let mut q_fields = fields.clone();
        for f in parsed_schema.fields() {
            if fields.iter().any(|k| k.name() == f.name()) {
                return Err(EngineError::config(format!(
                    "schema field `{}` has the name of an input column; rename one of them",
                    f.name()
                )));
            }
            fields.push(f.as_ref().clone());
        }
        q_fields.extend(quarantine_fields());
        let out_schema = Arc::new(Schema::new(fields));
        for (i, (text, rule)) in rules.iter().enumerate() {
            crate::rules::check(rule, &out_schema).map_err(|e| {
                e.context(format!("rule `{}`", crate::quote_short(text)))
                    .for_key(format!("rules[{i}]"))
            })?;
        }
        let quarantine_schema = Arc::new(Schema::new(q_fields));
        let required_idx = self
            .required
            .iter()
            .map(|r| keep.len() + parsed_schema.index_of(r).expect("checked above"))
            .collect();
        let mut quarantine =
            OutputPort::named(QUARANTINE_PORT, quarantine_schema.clone(), input.mode);
        if self.on_error == OnError::Quarantine {
            // With `drop` or `fail` nothing is ever sent there, so it may stay unread.
            quarantine = quarantine.must_be_read("or set on_error = \"drop\"");
        }
        let ports = vec![OutputPort::main(out_schema.clone(), input.mode), quarantine];
        let fast = match self.decoder {
            Decoder::Fast => crate::json_fast::FastDecoder::new(&parsed_schema),
            Decoder::Arrow => None,
        };
        let op = JsonParse {
            fast,
            rules,
            node: ctx.node.clone(),
            on_error: self.on_error,
            parsed_schema,
            value_idx,
            keep,
            out_schema,
            quarantine_schema,
            required_idx,
            dropped: 0,
        };
        Ok(Built::new(op, ports))
    }
}

/// The name of the port bad records go to (with `on_error = "quarantine"`).
pub const QUARANTINE_PORT: &str = "quarantine";

pub struct JsonParse {
    /// The schema-directed decoder, when the schema's types allow it and `decoder` is `fast`.
    fast: Option<crate::json_fast::FastDecoder>,
    rules: Vec<(String, crate::expr::Expr)>,
    node: String,
    on_error: OnError,
    parsed_schema: SchemaRef,
    value_idx: usize,
    /// The input columns passed on (all but the value).
    keep: Vec<usize>,
    out_schema: SchemaRef,
    quarantine_schema: SchemaRef,
    required_idx: Vec<usize>,
    dropped: u64,
}

/// The columns a quarantine row adds to the input's coordinates.
pub fn quarantine_fields() -> Vec<Field> {
    vec![
        Field::new("raw_value", DataType::Utf8, true),
        Field::new("raw_encoding", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, true),
        Field::new(
            "ingested_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]
}

struct Bad {
    row: usize,
    reason: &'static str,
    detail: String,
}

impl Operator for JsonParse {
    fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
        let n = batch.num_rows();
        let values = binary_values(batch.column(self.value_idx));
        let mut bad: Vec<Bad> = Vec::new();
        let mut candidates: Vec<usize> = Vec::with_capacity(n);
        let mut bodies: Vec<&[u8]> = Vec::with_capacity(n);
        for (row, v) in values.iter().enumerate() {
            match v {
                None => bad.push(Bad {
                    row,
                    reason: reason::NULL_VALUE,
                    detail: "the Kafka value is null (tombstone)".into(),
                }),
                Some(raw) => {
                    let body = strip_bom(raw).trim_ascii();
                    if body.is_empty() {
                        bad.push(Bad {
                            row,
                            reason: reason::EMPTY_VALUE,
                            detail: "the value is empty".into(),
                        });
                    } else if body[0] != b'{' || body[body.len() - 1] != b'}' {
                        let (reason, detail) = classify(raw, None);
                        bad.push(Bad {
                            row,
                            reason,
                            detail,
                        });
                    } else {
                        candidates.push(row);
                        bodies.push(body);
                    }
                }
            }
        }

        let (good, parsed, failed) = self.decode_rows(candidates, bodies)?;
        for (row, e) in failed {
            let raw = values[row].expect("candidates are not null");
            let (reason, detail) = classify(raw, Some(e));
            bad.push(Bad {
                row,
                reason,
                detail,
            });
        }

        let kept = self.keep_columns(&batch, &good)?;
        let mut columns = kept;
        columns.extend(parsed.columns().iter().cloned());
        let mut out_batch = RecordBatch::try_new(self.out_schema.clone(), columns)?;
        let mut good = good;
        if !self.required_idx.is_empty() {
            let (ok, missing) = self.check_required(&out_batch);
            if let Some(missing) = missing {
                for (i, field) in missing {
                    bad.push(Bad {
                        row: good[i],
                        reason: reason::MISSING_FIELD,
                        detail: format!("required field `{field}` is missing or null"),
                    });
                }
                out_batch = filter_record_batch(&out_batch, &ok)?;
                good = good
                    .iter()
                    .zip(ok.values().iter())
                    .filter(|(_, k)| *k)
                    .map(|(g, _)| *g)
                    .collect();
            }
        }
        if !self.rules.is_empty() && out_batch.num_rows() > 0 {
            let mut ok = vec![true; out_batch.num_rows()];
            for (text, rule) in &self.rules {
                let holds = crate::rules::holds(rule, &out_batch)?;
                for (i, h) in holds.iter().enumerate() {
                    if ok[i] && !h {
                        ok[i] = false;
                        bad.push(Bad {
                            row: good[i],
                            reason: reason::RULE_BROKEN,
                            detail: format!("rule `{text}` is broken"),
                        });
                    }
                }
            }
            if ok.iter().any(|k| !k) {
                out_batch = filter_record_batch(&out_batch, &BooleanArray::from(ok))?;
            }
        }
        bad.sort_by_key(|b| b.row);
        if let (OnError::Fail, Some(b)) = (self.on_error, bad.first()) {
            // Nothing of the batch is emitted: the pipeline stops at the batch holding the bad record.
            return Err(EngineError::runtime(format!(
                "bad record at row {} of a batch: {} ({}); set on_error = \"quarantine\" to set such records aside",
                b.row, b.reason, b.detail
            )));
        }
        out.emit(out_batch);

        for b in &bad {
            match self.on_error {
                OnError::Quarantine => out.quarantined(b.reason, 1),
                OnError::Drop => out.dropped(b.reason, 1),
                OnError::Fail => {}
            }
        }
        if !bad.is_empty() {
            match self.on_error {
                OnError::Quarantine => {
                    out.emit_to(1, self.quarantine_batch(&batch, &values, &bad)?);
                }
                OnError::Drop => {
                    self.dropped += bad.len() as u64;
                    tracing::warn!(
                        node = %self.node,
                        count = bad.len(),
                        first_reason = bad[0].reason,
                        total_dropped = self.dropped,
                        "dropped bad records"
                    );
                }
                OnError::Fail => unreachable!("returned above"),
            }
        }
        Ok(())
    }
}

impl JsonParse {
    /// Decodes the messages `bodies` of rows `rows`: the rows decoded (in order), their columns,
    /// and the rows that failed with arrow-json's error. The fast decoder takes what it can;
    /// arrow-json decodes the rest (and everything, with `decoder = "arrow"`).
    #[allow(clippy::type_complexity)]
    fn decode_rows(
        &mut self,
        rows: Vec<usize>,
        bodies: Vec<&[u8]>,
    ) -> Result<(Vec<usize>, RecordBatch, Vec<(usize, String)>)> {
        let Some(fast) = &mut self.fast else {
            return arrow_decode(&self.parsed_schema, rows, bodies);
        };
        let (columns, declined) = fast.decode(&bodies);
        let quick = RecordBatch::try_new_with_options(
            self.parsed_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(rows.len() - declined.len())),
        )?;
        if declined.is_empty() {
            return Ok((rows, quick, Vec::new()));
        }
        let slow_rows: Vec<usize> = declined.iter().map(|i| rows[*i]).collect();
        let slow_bodies: Vec<&[u8]> = declined.iter().map(|i| bodies[*i]).collect();
        let (slow_good, slow, failed) = arrow_decode(&self.parsed_schema, slow_rows, slow_bodies)?;
        // Both parts are in row order: merge them back into it.
        let mut declined = declined.iter().peekable();
        let mut slow_good = slow_good.iter().peekable();
        let (mut good, mut take) = (Vec::new(), Vec::new());
        let (mut q, mut s) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            if declined.peek() == Some(&&i) {
                declined.next();
                if slow_good.peek() == Some(&row) {
                    slow_good.next();
                    good.push(*row);
                    take.push((1, s));
                    s += 1;
                }
            } else {
                good.push(*row);
                take.push((0, q));
                q += 1;
            }
        }
        let parsed = arrow::compute::interleave_record_batch(&[&quick, &slow], &take)?;
        Ok((good, parsed, failed))
    }

    fn keep_columns(&self, batch: &RecordBatch, rows: &[usize]) -> Result<Vec<ArrayRef>> {
        if rows.len() == batch.num_rows() {
            return Ok(self.keep.iter().map(|i| batch.column(*i).clone()).collect());
        }
        let idx = UInt32Array::from_iter_values(rows.iter().map(|r| *r as u32));
        self.keep
            .iter()
            .map(|i| take(batch.column(*i), &idx, None).map_err(Into::into))
            .collect()
    }

    /// Rows whose required fields are all present, and for the others the first missing field.
    fn check_required(&self, batch: &RecordBatch) -> (BooleanArray, Option<Vec<(usize, String)>>) {
        let mut missing = Vec::new();
        let ok: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                for i in &self.required_idx {
                    if batch.column(*i).is_null(row) {
                        missing.push((row, batch.schema().field(*i).name().clone()));
                        return Some(false);
                    }
                }
                Some(true)
            })
            .collect();
        if missing.is_empty() {
            (ok, None)
        } else {
            (ok, Some(missing))
        }
    }

    fn quarantine_batch(
        &self,
        batch: &RecordBatch,
        values: &[Option<&[u8]>],
        bad: &[Bad],
    ) -> Result<RecordBatch> {
        let rows: Vec<usize> = bad.iter().map(|b| b.row).collect();
        let mut columns = self.keep_columns(batch, &rows)?;
        let mut raw = StringBuilder::new();
        let mut enc = StringBuilder::new();
        for b in bad {
            match values[b.row] {
                None => {
                    raw.append_null();
                    enc.append_value("null");
                }
                Some(v) => match std::str::from_utf8(v) {
                    Ok(s) => {
                        raw.append_value(s);
                        enc.append_value("utf8");
                    }
                    Err(_) => {
                        raw.append_value(base64::engine::general_purpose::STANDARD.encode(v));
                        enc.append_value("base64");
                    }
                },
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        columns.push(Arc::new(raw.finish()));
        columns.push(Arc::new(enc.finish()));
        columns.push(Arc::new(StringArray::from_iter_values(
            bad.iter().map(|b| b.reason),
        )));
        columns.push(Arc::new(StringArray::from_iter_values(
            bad.iter().map(|b| b.detail.as_str()),
        )));
        columns.push(Arc::new(
            TimestampMillisecondArray::from_iter_values(std::iter::repeat_n(now, bad.len()))
                .with_timezone("UTC"),
        ));
        Ok(RecordBatch::try_new(
            self.quarantine_schema.clone(),
            columns,
        )?)
    }
}

fn binary_values(col: &ArrayRef) -> Vec<Option<&[u8]>> {
    if let Some(b) = col.as_any().downcast_ref::<BinaryArray>() {
        b.iter().collect()
    } else if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
        s.iter().map(|v| v.map(str::as_bytes)).collect()
    } else {
        unreachable!("checked in build")
    }
}

fn strip_bom(raw: &[u8]) -> &[u8] {
    raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
}

/// Decodes with arrow-json: the whole batch in one call, and if that fails, in halves down to
/// the single bad messages. A few bad records in a large batch cost a few small decodes each,
/// not one decode per message. Returns the rows decoded, their columns and the failed rows.
#[allow(clippy::type_complexity)]
fn arrow_decode(
    schema: &SchemaRef,
    rows: Vec<usize>,
    bodies: Vec<&[u8]>,
) -> Result<(Vec<usize>, RecordBatch, Vec<(usize, String)>)> {
    if let Ok(p) = decode(schema, &bodies) {
        return Ok((rows, p, Vec::new()));
    }
    let rows: Vec<(usize, &[u8])> = rows.into_iter().zip(bodies).collect();
    let (mut good, mut parts, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    bisect(schema, &rows, &mut good, &mut parts, &mut failed);
    let parsed = if parts.is_empty() {
        RecordBatch::new_empty(schema.clone())
    } else {
        arrow::compute::concat_batches(schema, &parts)?
    };
    Ok((good, parsed, failed))
}

/// Decodes messages, each one JSON object, into one batch with one row per message, in order.
///
/// Each message is fed to arrow-json's streaming decoder on its own and must take it exactly one
/// complete row further. Concatenating the messages first is not safe: the decoder would let an
/// unterminated string in one message run on into the next one (it accepts raw newlines in
/// strings), so two bad messages could decode as two plausible rows holding each other's data.
fn decode(schema: &SchemaRef, bodies: &[&[u8]]) -> std::result::Result<RecordBatch, String> {
    if bodies.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(bodies.len() + 1)
        .with_decoder_factory(Arc::new(strict::StrictDecoders))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for (i, body) in bodies.iter().enumerate() {
        let used = decoder.decode(body).map_err(|e| e.to_string())?;
        if decoder.has_partial_record() {
            return Err("the JSON object is not complete".into());
        }
        if used != body.len() || decoder.len() != i + 1 {
            return Err("the value holds more than one JSON value".into());
        }
    }
    let batch = decoder
        .flush()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if batch.num_rows() != bodies.len() {
        return Err(format!(
            "expected {} rows, decoded {}",
            bodies.len(),
            batch.num_rows()
        ));
    }
    Ok(batch)
}

/// Decodes `rows` in halves until every message is either in a decoded part (in order) or
/// known to fail on its own.
fn bisect(
    schema: &SchemaRef,
    rows: &[(usize, &[u8])],
    good: &mut Vec<usize>,
    parts: &mut Vec<RecordBatch>,
    failed: &mut Vec<(usize, String)>,
) {
    let bodies: Vec<&[u8]> = rows.iter().map(|(_, b)| *b).collect();
    match decode(schema, &bodies) {
        Ok(batch) => {
            good.extend(rows.iter().map(|(r, _)| *r));
            parts.push(batch);
        }
        Err(e) if rows.len() == 1 => failed.push((rows[0].0, e)),
        Err(_) => {
            let (left, right) = rows.split_at(rows.len() / 2);
            bisect(schema, left, good, parts, failed);
            bisect(schema, right, good, parts, failed);
        }
    }
}

/// Says why a message did not decode.
fn classify(raw: &[u8], arrow_error: Option<String>) -> (&'static str, String) {
    let text = match std::str::from_utf8(strip_bom(raw)) {
        Ok(t) => t,
        Err(e) => return (reason::NOT_JSON, format!("invalid UTF-8: {e}")),
    };
    if text.trim().is_empty() {
        return (reason::EMPTY_VALUE, "the value is empty".into());
    }
    // serde_json stops at 128 levels of nesting, so hostile nesting is reported, never a stack overflow.
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) if e.to_string().contains("out of range") => {
            (reason::WRONG_TYPE, format!("a number is out of range: {e}"))
        }
        Err(e) => (reason::NOT_JSON, e.to_string()),
        Ok(serde_json::Value::Object(_)) => (
            reason::WRONG_TYPE,
            arrow_error.unwrap_or_else(|| "the object does not match the schema".into()),
        ),
        Ok(serde_json::Value::Null) => (
            reason::NOT_OBJECT,
            "the value is JSON null, expected an object".into(),
        ),
        Ok(v) => (
            reason::NOT_OBJECT,
            format!("the value is a JSON {}, expected an object", kind(&v)),
        ),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Decoders that keep arrow-json from changing values silently.
///
/// Left alone, arrow-json 60 parses a quoted number into a number column (`"123"` becomes 123,
/// `"NaN"` becomes NaN), truncates a fraction into an integer column (1.7 becomes 1), turns a
/// number beyond the range of a float into infinity (1e400), and cannot decode the schema's
/// `timestamp` type at all (`Timestamp(ms, "UTC")` needs arrow's `chrono-tz` feature). These
/// decoders wrap arrow-json's own: numbers must be JSON numbers, integers must be whole numbers in
/// range, floats must be finite, and a UTC timestamp is decoded as a timestamp without a zone
/// (which arrow-json reads as UTC) and then labelled `UTC`.
mod strict {
    use arrow::array::{Array, ArrayRef, AsArray, make_array};
    use arrow::datatypes::{DataType, Field, FieldRef, Float16Type, Float32Type, Float64Type};
    use arrow::error::ArrowError;
    use arrow_json::{ArrayDecoder, DecoderContext, DecoderFactory, Tape, TapeElement};
    use std::sync::Arc;

    #[derive(Debug)]
    pub struct StrictDecoders;

    impl DecoderFactory for StrictDecoders {
        fn make_default_decoder(
            &self,
            ctx: &DecoderContext,
            field: &FieldRef,
            is_nullable: bool,
        ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
            let dt = field.data_type();
            if dt.is_integer() || dt.is_floating() {
                return Ok(Some(Box::new(StrictNumber {
                    inner: ctx.make_builtin_decoder(field, is_nullable)?,
                    integer: dt.is_integer(),
                })));
            }
            if let DataType::Timestamp(unit, Some(tz)) = dt
                && tz.eq_ignore_ascii_case("UTC")
            {
                let naive: FieldRef = Arc::new(Field::new(
                    field.name(),
                    DataType::Timestamp(*unit, None),
                    field.is_nullable(),
                ));
                return Ok(Some(Box::new(Relabel {
                    inner: ctx.make_builtin_decoder(&naive, is_nullable)?,
                    data_type: dt.clone(),
                })));
            }
            Ok(None)
        }
    }

    /// 2^53: every integer below it in magnitude is exact as a double.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

    /// True when the JSON number `s` (as written, so without rounding) has no fractional part.
    pub(super) fn is_whole(s: &str) -> bool {
        let s = s.strip_prefix('-').unwrap_or(s);
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i64>()),
            None => (s, Ok(0)),
        };
        let Ok(exp) = exp else { return false };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return false;
        }
        let zeros = |d: &str| d.bytes().all(|b| b == b'0');
        if exp >= 0 {
            // The point moves right: digits of `frac` past the exponent stay fractional.
            let moved = usize::try_from(exp).unwrap_or(usize::MAX).min(frac.len());
            zeros(&frac[moved..])
        } else {
            // The point moves left: all of `frac` and the last digits of `int` are fractional.
            let moved = usize::try_from(exp.unsigned_abs()).unwrap_or(usize::MAX);
            zeros(frac) && zeros(&int[int.len().saturating_sub(moved)..])
        }
    }

    struct StrictNumber {
        inner: Box<dyn ArrayDecoder>,
        integer: bool,
    }

    impl ArrayDecoder for StrictNumber {
        fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
            for p in pos {
                match tape.get(*p) {
                    TapeElement::String(idx) => {
                        return Err(ArrowError::JsonError(format!(
                            "expected a number, got the string {:?}",
                            tape.get_string(idx)
                        )));
                    }
                    TapeElement::Number(idx) if self.integer => {
                        let s = tape.get_string(idx);
                        // arrow-json would read 1.7 as 1: accept a fraction or an exponent only
                        // when the value is a whole number (2.0, 1e3) that a double holds exactly.
                        if s.contains(['.', 'e', 'E'])
                            && !(is_whole(s) && s.parse::<f64>().is_ok_and(|v| v.abs() < MAX_EXACT))
                        {
                            return Err(ArrowError::JsonError(format!(
                                "expected an integer, got {s}"
                            )));
                        }
                    }
                    _ => {}
                }
            }
            let array = self.inner.decode(tape, pos)?;
            let finite = match array.data_type() {
                DataType::Float64 => array
                    .as_primitive::<Float64Type>()
                    .iter()
                    .all(|v| v.is_none_or(f64::is_finite)),
                DataType::Float32 => array
                    .as_primitive::<Float32Type>()
                    .iter()
                    .all(|v| v.is_none_or(f32::is_finite)),
                DataType::Float16 => array
                    .as_primitive::<Float16Type>()
                    .iter()
                    .all(|v| v.is_none_or(|v| v.is_finite())),
                _ => true,
            };
            if !finite {
                return Err(ArrowError::JsonError(format!(
                    "a number is out of range for {}",
                    array.data_type()
                )));
            }
            Ok(array)
        }
    }

    /// Decodes with `inner`, then gives the result `data_type` (the same values, another label).
    struct Relabel {
        inner: Box<dyn ArrayDecoder>,
        data_type: DataType,
    }

    impl ArrayDecoder for Relabel {
        fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
            let data = self.inner.decode(tape, pos)?.into_data();
            Ok(make_array(
                data.into_builder()
                    .data_type(self.data_type.clone())
                    .build()?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strict::is_whole;

    #[test]
    fn whole_numbers_as_written() {
        for s in [
            "0", "-0", "12", "2.0", "-3.000", "1e3", "1E+3", "1.50e1", "1.5e1", "100e-2", "0.0e-5",
            "0e400",
        ] {
            assert!(is_whole(s), "{s}");
        }
        for s in [
            "1.7",
            "-0.5",
            "15e-1",
            "1e-1",
            "1.25e1",
            "9007199254740991.4",
            "",
            "-",
            ".5",
            "1e",
            "1e99999999999999999999",
            "0x10",
        ] {
            assert!(!is_whole(s), "{s}");
        }
    }
}
