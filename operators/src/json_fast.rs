//! The fast path of `json_parse`: a decoder directed by the schema, on sonic-rs.
//!
//! It reads each message once with sonic-rs (SIMD string scanning, fast skipping of the fields the
//! schema does not declare) and appends every declared value straight to its Arrow column, with
//! no intermediate tape. It takes only what it can decode exactly as arrow-json (with the strict
//! number rules of `json_parse`) would:
//! - JSON strings into `string`, `timestamp` (parsed by the same arrow function arrow-json
//!   calls) and `date` columns; booleans into `boolean`;
//! - integers into `int`, `long` (in range), `double`, and into `timestamp` as milliseconds;
//!   numbers with a fraction or an exponent into `double` only, when finite;
//! - objects into structs (fields matched by name after unescaping, unknown fields skipped, a
//!   missing field null), arrays into lists, `null` anywhere as null.
//!
//! Anything else in a message (a type the column cannot take, a field given twice, a number
//! written with a fraction for an integer column, invalid JSON, text after the object...) makes
//! the decoder *decline* that message: its values are taken back out of the columns and the
//! caller decodes it with arrow-json, which says whether it is kept or quarantined and why. So
//! the fast path never decides a record's fate; it only decodes the common case sooner. A schema
//! with a type not listed above (such as `float`, whose rounding from text differs from a
//! double's) or a struct of more than 64 fields is not decoded here at all.

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, Date32Array, Float64Array, Int32Array,
    Int64Array, ListArray, StringArray, StructArray, TimestampMillisecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{DataType, Date32Type, FieldRef, Fields, SchemaRef, TimeUnit};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;

/// Decodes messages into the columns of a schema; see the module documentation.
pub(crate) struct FastDecoder {
    row: Struct,
}

impl FastDecoder {
    /// A decoder for `schema`, or `None` if a type in it is not one this path decodes.
    pub(crate) fn new(schema: &SchemaRef) -> Option<FastDecoder> {
        Some(FastDecoder {
            row: Struct::new(schema.fields())?,
        })
    }

    /// Decodes `bodies` (each one JSON object). Returns the columns of the messages it took, in
    /// order, and the indexes of the messages it declined.
    pub(crate) fn decode(&mut self, bodies: &[&[u8]]) -> (Vec<ArrayRef>, Vec<usize>) {
        let mut declined = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let before = self.row.len;
            if !self.row.decode_object(body) {
                self.row.truncate(before);
                declined.push(i);
            }
        }
        let columns = self.row.finish_columns();
        (columns, declined)
    }
}

/// The builder of one column.
enum Col {
    Bool(BooleanBufferBuilder, NullBufferBuilder),
    Int32(Prim<i32>),
    Int64(Prim<i64>),
    Float64(Prim<f64>),
    TimestampMs(Prim<i64>),
    Date32(Prim<i32>),
    Utf8 {
        offsets: Vec<i32>,
        data: Vec<u8>,
        nulls: NullBufferBuilder,
    },
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Col>,
    },
    Struct(Struct),
}

struct Prim<T> {
    values: Vec<T>,
    nulls: NullBufferBuilder,
}

impl<T: Copy + Default> Prim<T> {
    fn new() -> Self {
        Prim {
            values: Vec::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }

    fn push(&mut self, v: T) {
        self.values.push(v);
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.values.push(T::default());
        self.nulls.append_null();
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    fn finish(&mut self) -> (ScalarBuffer<T>, Option<NullBuffer>)
    where
        T: arrow::datatypes::ArrowNativeType,
    {
        (
            ScalarBuffer::from(std::mem::take(&mut self.values)),
            self.nulls.finish(),
        )
    }
}

/// The columns of a struct (or of the row), with the fields whose names keys are matched against.
struct Struct {
    fields: Fields,
    children: Vec<Col>,
    nulls: NullBufferBuilder,
    len: usize,
}

impl Struct {
    fn new(fields: &Fields) -> Option<Struct> {
        if fields.len() > 64 {
            return None;
        }
        Some(Struct {
            fields: fields.clone(),
            children: fields
                .iter()
                .map(|f| Col::new(f.data_type()))
                .collect::<Option<_>>()?,
            nulls: NullBufferBuilder::new(0),
            len: 0,
        })
    }

    /// Appends one message's object; false (with the columns possibly half-appended) if it is
    /// declined.
    fn decode_object(&mut self, body: &[u8]) -> bool {
        let mut de = sonic_rs::Deserializer::from_slice(body);
        let ok = ObjectSeed(self).deserialize(&mut de).is_ok();
        ok && de.end().is_ok()
    }

    /// The field named `key`, trying `guess` first (producers mostly write fields in one order).
    fn field(&self, key: &str, guess: usize) -> Option<usize> {
        let same = |n: &str| n.len() == key.len() && n.as_bytes() == key.as_bytes();
        match self.fields.get(guess) {
            Some(f) if same(f.name()) => Some(guess),
            _ => self.fields.iter().position(|f| same(f.name())),
        }
    }

    fn push_null(&mut self) {
        for c in &mut self.children {
            c.push_null();
        }
        self.nulls.append_null();
        self.len += 1;
    }

    fn truncate(&mut self, len: usize) {
        for c in &mut self.children {
            c.truncate(len);
        }
        self.nulls.truncate(len);
        self.len = len;
    }

    fn finish_columns(&mut self) -> Vec<ArrayRef> {
        self.len = 0;
        self.children.iter_mut().map(Col::finish).collect()
    }

    /// Appends an object present in the input: its fields, each one not given as null.
    fn read_object<'de, A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error> {
        object(self, map)?;
        self.nulls.append_non_null();
        self.len += 1;
        Ok(())
    }
}

impl Col {
    fn new(t: &DataType) -> Option<Col> {
        Some(match t {
            DataType::Boolean => Col::Bool(BooleanBufferBuilder::new(0), NullBufferBuilder::new(0)),
            DataType::Int32 => Col::Int32(Prim::new()),
            DataType::Int64 => Col::Int64(Prim::new()),
            DataType::Float64 => Col::Float64(Prim::new()),
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if &**tz == "UTC" => {
                Col::TimestampMs(Prim::new())
            }
            DataType::Date32 => Col::Date32(Prim::new()),
            DataType::Utf8 => Col::Utf8 {
                offsets: vec![0],
                data: Vec::new(),
                nulls: NullBufferBuilder::new(0),
            },
            DataType::List(item) => Col::List {
                item: item.clone(),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
                child: Box::new(Col::new(item.data_type())?),
            },
            DataType::Struct(fields) => Col::Struct(Struct::new(fields)?),
            _ => return None,
        })
    }

    fn push_null(&mut self) {
        match self {
            Col::Bool(values, nulls) => {
                values.append(false);
                nulls.append_null();
            }
            Col::Int32(p) | Col::Date32(p) => p.push_null(),
            Col::Int64(p) | Col::TimestampMs(p) => p.push_null(),
            Col::Float64(p) => p.push_null(),
            Col::Utf8 { offsets, nulls, .. } | Col::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                nulls.append_null();
            }
            Col::Struct(s) => s.push_null(),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Col::Bool(values, nulls) => {
                values.truncate(len);
                nulls.truncate(len);
            }
            Col::Int32(p) | Col::Date32(p) => p.truncate(len),
            Col::Int64(p) | Col::TimestampMs(p) => p.truncate(len),
            Col::Float64(p) => p.truncate(len),
            Col::Utf8 {
                offsets,
                data,
                nulls,
            } => {
                offsets.truncate(len + 1);
                data.truncate(offsets[len] as usize);
                nulls.truncate(len);
            }
            Col::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                offsets.truncate(len + 1);
                child.truncate(offsets[len] as usize);
                nulls.truncate(len);
            }
            Col::Struct(s) => s.truncate(len),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(values, nulls) => {
                Arc::new(BooleanArray::new(values.finish(), nulls.finish()))
            }
            Col::Int32(p) => {
                let (v, n) = p.finish();
                Arc::new(Int32Array::new(v, n))
            }
            Col::Date32(p) => {
                let (v, n) = p.finish();
                Arc::new(Date32Array::new(v, n))
            }
            Col::Int64(p) => {
                let (v, n) = p.finish();
                Arc::new(Int64Array::new(v, n))
            }
            Col::TimestampMs(p) => {
                let (v, n) = p.finish();
                Arc::new(TimestampMillisecondArray::new(v, n).with_timezone("UTC"))
            }
            Col::Float64(p) => {
                let (v, n) = p.finish();
                Arc::new(Float64Array::new(v, n))
            }
            Col::Utf8 {
                offsets,
                data,
                nulls,
            } => {
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let data = std::mem::take(data).into();
                // Every value was appended from a `&str`: the bytes are UTF-8, cut at char
                // boundaries. `new` checks the offsets and the encoding again all the same.
                Arc::new(StringArray::new(offsets, data, nulls.finish()))
            }
            Col::List {
                item,
                offsets,
                nulls,
                child,
            } => {
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let values = child.finish();
                Arc::new(ListArray::new(
                    item.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                ))
            }
            Col::Struct(s) => {
                let len = s.len;
                let nulls = s.nulls.finish();
                let columns = s.finish_columns();
                Arc::new(
                    StructArray::try_new_with_length(s.fields.clone(), columns, nulls, len)
                        .expect("children built alike"),
                )
            }
        }
    }
}

/// Any reason to decline a message; the caller decodes it with arrow-json, which says why.
#[derive(Debug)]
struct Decline;

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("declined")
    }
}

fn decline<E: de::Error>() -> E {
    E::custom(Decline)
}

/// A value for one column.
struct ColSeed<'a>(&'a mut Col);

/// The top-level object of a message: the row's columns, without a null of its own.
struct ObjectSeed<'a>(&'a mut Struct);

/// A key of an object: the index of its field, or `None` for a field the schema does not have.
struct KeySeed<'a>(&'a Struct, usize);

impl<'de> DeserializeSeed<'de> for ColSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.read_object(map)
    }
}

/// Reads an object's fields into `s`'s children; every field not given is null.
fn object<'de, A: MapAccess<'de>>(s: &mut Struct, mut map: A) -> Result<(), A::Error> {
    let mut seen = 0u64;
    let mut guess = 0;
    while let Some(key) = map.next_key_seed(KeySeed(s, guess))? {
        match key {
            Some(i) => {
                guess = i + 1;
                let bit = 1u64 << i;
                if seen & bit != 0 {
                    // arrow-json keeps the last of duplicate fields: decline rather than match it.
                    return Err(decline());
                }
                seen |= bit;
                map.next_value_seed(ColSeed(&mut s.children[i]))?;
            }
            None => {
                map.next_value_seed(Skip)?;
            }
        }
    }
    for (i, c) in s.children.iter_mut().enumerate() {
        if seen & (1u64 << i) == 0 {
            c.push_null();
        }
    }
    Ok(())
}

/// A value of a field the schema does not have. It is read in full, not skipped over: arrow-json
/// rejects a message whose unknown fields hold a bad escape (a lone surrogate) or bad UTF-8, and
/// a skip would not look inside their strings.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.field(v, self.1))
    }
}

impl<'de> Visitor<'de> for ColSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value of the column's type")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push_null();
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.push_null();
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.0 {
            Col::Bool(values, nulls) => {
                values.append(v);
                nulls.append_non_null();
                Ok(())
            }
            _ => Err(decline()),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.0 {
            Col::Int32(p) => p.push(i32::try_from(v).map_err(|_| decline())?),
            Col::Int64(p) | Col::TimestampMs(p) => p.push(v),
            // A zero may have been written `-0`, which a double keeps as -0.0: arrow-json decides.
            Col::Float64(_) if v == 0 => return Err(decline()),
            // Rounded to the nearest double, as parsing the digits would.
            Col::Float64(p) => p.push(v as f64),
            _ => return Err(decline()),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => match self.0 {
                Col::Float64(p) => {
                    p.push(v as f64);
                    Ok(())
                }
                _ => Err(decline()),
            },
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.0 {
            Col::Float64(p) if v.is_finite() && v != 0.0 => {
                p.push(v);
                Ok(())
            }
            _ => Err(decline()),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.0 {
            Col::Utf8 {
                offsets,
                data,
                nulls,
            } => {
                data.extend_from_slice(v.as_bytes());
                offsets.push(i32::try_from(data.len()).map_err(|_| decline())?);
                nulls.append_non_null();
            }
            Col::TimestampMs(p) => {
                let t = string_to_datetime(&chrono::Utc, v).map_err(|_| decline())?;
                p.push(t.timestamp_millis());
            }
            Col::Date32(p) => p.push(Date32Type::parse(v).ok_or_else(decline)?),
            _ => return Err(decline()),
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Col::List {
            offsets,
            nulls,
            child,
            ..
        } = self.0
        else {
            return Err(decline());
        };
        let mut n = *offsets.last().expect("starts with 0");
        while seq.next_element_seed(ColSeed(child))?.is_some() {
            n = n.checked_add(1).ok_or_else(decline)?;
        }
        offsets.push(n);
        nulls.append_non_null();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Col::Struct(s) = self.0 else {
            return Err(decline());
        };
        s.read_object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Schema};

    fn decoder() -> FastDecoder {
        let schema = crate::schema::schema_from_pairs([
            ("id", "int"),
            ("name", "string"),
            ("at", "timestamp"),
            ("items", "list<struct<sku: long, price: double>>"),
            ("ok", "boolean"),
        ])
        .unwrap();
        FastDecoder::new(&Arc::new(schema)).unwrap()
    }

    #[test]
    fn takes_plain_messages_and_declines_what_arrow_json_must_judge() {
        let taken: [&[u8]; 4] = [
            br#"{"id": 1, "name": "a\u00e9", "at": "2026-01-01T00:00:01.5Z", "items": [{"sku": 7, "price": 1.5}], "ok": true}"#,
            br#"{"extra": {"deep": [1, "x", null]}, "id": null, "items": null}"#,
            br#"{"ok": false, "items": [null, {"price": 2}], "at": 1767225600000}"#,
            br#"{}"#,
        ];
        let declined: [&[u8]; 10] = [
            br#"{"id": 1.5}"#,               // a fraction for an int
            br#"{"id": 4294967296}"#,        // out of range
            br#"{"id": "1"}"#,               // a string for a number
            br#"{"name": 1}"#,               // a number for a string
            br#"{"id": 1, "id": 2}"#,        // twice
            br#"{"at": "not a time"}"#,      // arrow-json says why
            br#"{"items": [{"price": 0}]}"#, // zero: maybe written -0
            br#"{"x": "\ud800"}"#,           // a lone surrogate, even where unread
            b"{\"name\": \"raw\nnewline\"}", // arrow-json takes it, strict JSON does not
            br#"{"id": 1} {"id": 2}"#,       // two values
        ];
        let mut d = decoder();
        let all: Vec<&[u8]> = taken.iter().chain(declined.iter()).copied().collect();
        let (columns, out) = d.decode(&all);
        assert_eq!(out, (taken.len()..all.len()).collect::<Vec<_>>());
        let ids = columns[0].as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(ids.iter().collect::<Vec<_>>(), [Some(1), None, None, None]);
        let names = columns[1].as_string::<i32>();
        assert_eq!(names.value(0), "aé");
        let at = columns[2].as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(
            at.iter().collect::<Vec<_>>(),
            [Some(1_767_225_601_500), None, Some(1_767_225_600_000), None]
        );
        let items = columns[3].as_list::<i32>();
        assert_eq!(items.value_offsets(), [0, 1, 1, 3, 3]);
        assert!(items.is_null(1) && items.is_valid(2));
        let structs = items.values().as_struct();
        assert!(structs.is_null(1) && structs.is_valid(2));
        let price = structs
            .column(1)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(price.value(0), 1.5);
        assert_eq!(price.value(2), 2.0);
        // The declined messages left nothing behind: the next batch starts clean.
        let (columns, out) = d.decode(&[br#"{"id": 9}"#]);
        assert!(out.is_empty());
        assert_eq!(columns[0].len(), 1);
    }

    #[test]
    fn types_it_does_not_decode_leave_the_schema_to_arrow_json() {
        for t in [DataType::Float32, DataType::Int16, DataType::LargeUtf8] {
            let schema = Arc::new(Schema::new(vec![Field::new("x", t, true)]));
            assert!(FastDecoder::new(&schema).is_none());
        }
    }
}
