//! A node's configuration as the runtime hands it to a factory: the TOML table after
//! `${VAR}` interpolation, and the serde deserializer that types it.
//!
//! Two things differ from deserializing TOML directly:
//! - text that came from an environment variable (`batch_size = "${BATCH:-2048}"`) takes the
//!   type of the field it fills, so numbers, booleans and durations can come from the
//!   environment like addresses do;
//! - no error message repeats a configured value, since any value may be a secret: messages
//!   name the key (through the path the caller tracks) and the expected type only.

use crate::{EngineError, Result};
use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Expected, IntoDeserializer, Unexpected, Visitor};
use std::fmt;
use std::time::Duration;

/// One configured value.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    String(String),
    /// Text that `${VAR}` interpolation produced: it becomes whatever type the field wants.
    Interpolated(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Array(Vec<ConfigValue>),
    /// Keys in the order the file gives them.
    Table(Vec<(String, ConfigValue)>),
}

impl ConfigValue {
    /// The value under `key` of a table.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        match self {
            ConfigValue::Table(t) => t.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Takes the value under `key` out of a table.
    pub fn remove(&mut self, key: &str) -> Option<ConfigValue> {
        match self {
            ConfigValue::Table(t) => {
                let i = t.iter().position(|(k, _)| k == key)?;
                Some(t.remove(i).1)
            }
            _ => None,
        }
    }

    /// The text of a string value, interpolated or not.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ConfigValue::String(s) | ConfigValue::Interpolated(s) => Some(s),
            _ => None,
        }
    }

    /// Deserializes a config struct. An error names the key path (`aggregates[0].fn`) and
    /// never the value.
    pub fn deserialize_into<C: DeserializeOwned>(self) -> Result<C> {
        serde_path_to_error::deserialize(self).map_err(|e| {
            let mut key = e.path().to_string();
            if key == "." {
                key.clear();
            }
            // The path already ends with an unknown key's name.
            EngineError::invalid(key, e.into_inner().message)
        })
    }
}

impl From<toml::Value> for ConfigValue {
    fn from(v: toml::Value) -> Self {
        match v {
            toml::Value::String(s) => ConfigValue::String(s),
            toml::Value::Integer(i) => ConfigValue::Integer(i),
            toml::Value::Float(f) => ConfigValue::Float(f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(b),
            toml::Value::Datetime(d) => ConfigValue::String(d.to_string()),
            toml::Value::Array(a) => ConfigValue::Array(a.into_iter().map(Into::into).collect()),
            toml::Value::Table(t) => {
                ConfigValue::Table(t.into_iter().map(|(k, v)| (k, v.into())).collect())
            }
        }
    }
}

/// A deserialization error that never quotes the value it was given.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

fn what(unexp: &Unexpected<'_>) -> &'static str {
    match unexp {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit | Unexpected::Option => "nothing",
        Unexpected::Seq => "a list",
        Unexpected::Map => "a table",
        _ => "a value of another kind",
    }
}

fn one_of(names: &'static [&'static str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConfigError {
            message: msg.to_string(),
        }
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", what(&unexp)))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let _ = unexp;
        Self::custom(format_args!("invalid value, expected {exp}"))
    }
    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {len} elements"))
    }
    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown value; expected one of {}",
            one_of(expected)
        ))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        if expected.is_empty() {
            Self::custom(format_args!("unknown field `{field}`, there are no fields"))
        } else {
            Self::custom(format_args!(
                "unknown field `{field}`, expected one of {}",
                one_of(expected)
            ))
        }
    }
    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing field `{field}`"))
    }
    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("duplicate field `{field}`"))
    }
}

fn from_env(expected: &str) -> ConfigError {
    de::Error::custom(format_args!(
        "expected {expected} after expanding the environment variable"
    ))
}

macro_rules! typed_from_text {
    ($($method:ident => $ty:ty, $visit:ident, $expected:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
                match self {
                    ConfigValue::Interpolated(s) => match s.trim().parse::<$ty>() {
                        Ok(n) => visitor.$visit(n),
                        Err(_) => Err(from_env($expected)),
                    },
                    other => other.deserialize_any(visitor),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for ConfigValue {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self {
            ConfigValue::String(s) | ConfigValue::Interpolated(s) => visitor.visit_string(s),
            ConfigValue::Integer(i) => visitor.visit_i64(i),
            ConfigValue::Float(f) => visitor.visit_f64(f),
            ConfigValue::Boolean(b) => visitor.visit_bool(b),
            ConfigValue::Array(a) => {
                let mut seq = SeqDeserializer::new(a.into_iter());
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            ConfigValue::Table(t) => {
                let mut map = MapDeserializer::new(t.into_iter());
                let v = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(v)
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self {
            ConfigValue::Interpolated(s) => match s.trim() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                _ => Err(from_env("a boolean (true or false)")),
            },
            other => other.deserialize_any(visitor),
        }
    }

    typed_from_text! {
        deserialize_i8 => i64, visit_i64, "an integer";
        deserialize_i16 => i64, visit_i64, "an integer";
        deserialize_i32 => i64, visit_i64, "an integer";
        deserialize_i64 => i64, visit_i64, "an integer";
        deserialize_u8 => u64, visit_u64, "a non-negative integer";
        deserialize_u16 => u64, visit_u64, "a non-negative integer";
        deserialize_u32 => u64, visit_u64, "a non-negative integer";
        deserialize_u64 => u64, visit_u64, "a non-negative integer";
        deserialize_f32 => f64, visit_f64, "a number";
        deserialize_f64 => f64, visit_f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self {
            ConfigValue::String(s) | ConfigValue::Interpolated(s) => {
                visitor.visit_enum(s.into_deserializer())
            }
            ConfigValue::Table(t) if t.len() == 1 => visitor.visit_enum(
                MapAccessDeserializer::new(MapDeserializer::new(t.into_iter())),
            ),
            other => Err(de::Error::invalid_type(other.unexpected(), &"a string")),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

impl ConfigValue {
    fn unexpected(&self) -> Unexpected<'static> {
        match self {
            ConfigValue::String(_) | ConfigValue::Interpolated(_) => Unexpected::Str(""),
            ConfigValue::Integer(_) => Unexpected::Signed(0),
            ConfigValue::Float(_) => Unexpected::Float(0.0),
            ConfigValue::Boolean(_) => Unexpected::Bool(false),
            ConfigValue::Array(_) => Unexpected::Seq,
            ConfigValue::Table(_) => Unexpected::Map,
        }
    }
}

impl<'de> IntoDeserializer<'de, ConfigError> for ConfigValue {
    type Deserializer = ConfigValue;
    fn into_deserializer(self) -> ConfigValue {
        self
    }
}

/// Checks that `value` of `key` lies within `min..=max`; the error names the key and the range.
pub fn check_range<T: PartialOrd + fmt::Display>(key: &str, value: T, min: T, max: T) -> Result<T> {
    if value < min || value > max {
        return Err(EngineError::invalid(
            key,
            format!("out of range; it must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

/// Parses a duration such as `"500ms"`, `"5s"` or `"1m"` and checks it lies within
/// `min..=max`. The error names the key and the range, never the text.
pub fn parse_duration(key: &str, text: &str, min: Duration, max: Duration) -> Result<Duration> {
    let range = || {
        format!(
            "between {} and {}",
            format_duration(min),
            format_duration(max)
        )
    };
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        EngineError::invalid(
            key,
            format!(
                "not a duration; write it like \"500ms\", \"5s\" or \"1m\", {}",
                range()
            ),
        )
    })?;
    if d < min || d > max {
        return Err(EngineError::invalid(
            key,
            format!("out of range; it must be {}", range()),
        ));
    }
    Ok(d)
}

/// `d` as humantime writes it, but whole days as days (humantime writes 31 days as
/// `1month 13h 26m 24s`).
pub fn format_duration(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    let s = d.as_secs();
    if s >= DAY && s.is_multiple_of(DAY) && d.subsec_nanos() == 0 {
        match s / DAY {
            1 => "1day".to_string(),
            n => format!("{n}days"),
        }
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        n: usize,
        #[serde(default)]
        ratio: Option<f64>,
        #[serde(default)]
        on: bool,
        #[serde(default)]
        name: String,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Append,
        Complete,
    }

    fn table(entries: Vec<(&str, ConfigValue)>) -> ConfigValue {
        ConfigValue::Table(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    #[test]
    fn interpolated_text_takes_the_fields_type() {
        let v = table(vec![
            ("n", ConfigValue::Interpolated("2048".into())),
            ("ratio", ConfigValue::Interpolated(" 0.5".into())),
            ("on", ConfigValue::Interpolated("true".into())),
            ("name", ConfigValue::Interpolated("123".into())),
            ("mode", ConfigValue::Interpolated("complete".into())),
        ]);
        let c: Conf = v.deserialize_into().unwrap();
        assert_eq!(
            c,
            Conf {
                n: 2048,
                ratio: Some(0.5),
                on: true,
                name: "123".into(),
                mode: Some(Mode::Complete)
            }
        );
    }

    #[test]
    fn literal_text_stays_text() {
        let v = table(vec![("n", ConfigValue::String("4".into()))]);
        let e = v.deserialize_into::<Conf>().unwrap_err();
        assert_eq!(e.to_string(), "`n`: expected usize, found a string");
    }

    #[test]
    fn errors_name_the_key_never_the_value() {
        let secret = "hunter2$Top\"Secret";
        let cases = [
            table(vec![("n", ConfigValue::Interpolated(secret.into()))]),
            table(vec![("n", ConfigValue::String(secret.into()))]),
            table(vec![
                ("n", ConfigValue::Integer(1)),
                ("on", ConfigValue::Interpolated(secret.into())),
            ]),
            table(vec![
                ("n", ConfigValue::Integer(1)),
                ("mode", ConfigValue::String(secret.into())),
            ]),
            table(vec![("n", ConfigValue::Integer(-1))]),
        ];
        for v in cases {
            let e = v.deserialize_into::<Conf>().unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("Secret"), "{e}");
            assert!(e.starts_with('`'), "names the key: {e}");
        }
        let e = table(vec![("nn", ConfigValue::Integer(1))])
            .deserialize_into::<Conf>()
            .unwrap_err();
        assert_eq!(e.key(), Some("nn"), "{e:?}");
        assert!(e.message().starts_with("unknown field `nn`"), "{e:?}");
    }

    #[test]
    fn durations_and_ranges() {
        let max = Duration::from_secs(3600);
        assert_eq!(
            parse_duration("t", "1m", Duration::ZERO, max).unwrap(),
            Duration::from_secs(60)
        );
        let e = parse_duration("t", "500000000y", Duration::ZERO, max)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`t`: out of range; it must be between 0s and 1h");
        let e = parse_duration("t", "secret$x", Duration::ZERO, max)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`t`: not a duration") && !e.contains("secret"),
            "{e}"
        );
        assert!(check_range("mailbox", 0usize, 1, 1024).is_err());
        assert_eq!(check_range("mailbox", 4usize, 1, 1024).unwrap(), 4);
    }
}
