//! Event-time parsing: ISO-8601 / RFC 3339 text to milliseconds since the Unix epoch.

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDateTime};
use engine_api::{EngineError, Result};

/// Parses `2026-01-01T10:00:00Z`, `2026-01-01T10:00:00.123+02:00`, and, taken as UTC,
/// `2026-01-01T10:00:00` or `2026-01-01 10:00:00(.fff)`.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// Event times in ms of a string or timestamp column; unparseable or null values are null.
pub fn event_times(col: &ArrayRef) -> Result<Int64Array> {
    match col.data_type() {
        DataType::Utf8 => Ok(col
            .as_string::<i32>()
            .iter()
            .map(|v| v.and_then(parse_timestamp_ms))
            .collect()),
        DataType::Timestamp(unit, _) => {
            let raw = arrow::compute::cast(col, &DataType::Int64)?;
            let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
            let div = match unit {
                TimeUnit::Second => -1000,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            Ok(raw
                .iter()
                .map(|v| v.map(|v| if div < 0 { v * 1000 } else { v / div }))
                .collect())
        }
        other => Err(EngineError::config(format!(
            "an event-time column must be a string or a timestamp, not {other}"
        ))),
    }
}

/// Formats ms as RFC 3339 (for messages).
pub fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_forms() {
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(parse_timestamp_ms("2026-01-01T00:00:00Z"), Some(base));
        assert_eq!(
            parse_timestamp_ms("2026-01-01T01:00:00.250+01:00"),
            Some(base + 250)
        );
        assert_eq!(parse_timestamp_ms("2026-01-01T00:00:01"), Some(base + 1000));
        assert_eq!(
            parse_timestamp_ms("2026-01-01 00:00:01.5"),
            Some(base + 1500)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }
}
