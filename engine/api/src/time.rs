//! Event-time parsing: ISO-8601 / RFC 3339 text to milliseconds since the Unix epoch.

use crate::{EngineError, Result};
use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDateTime};
use std::borrow::Cow;

/// Parses the event-time text producers write, to ms since the Unix epoch:
///
/// - RFC 3339 / ISO 8601 with an offset: `2026-01-01T10:00:00Z`, `2026-01-01T10:00:00.123+02:00`
///   (Python's `isoformat()` of an aware time), `2026-01-01T10:00:00.123456789Z` (Java's
///   `Instant.toString()`), with `T` or a space between date and time;
/// - offsets written without a colon or without minutes: `+0000`, `+0200`, `+02`;
/// - no offset, taken as UTC: `2026-01-01T10:00:00`, `2026-01-01 10:00:00.123456` (Python's
///   naive `isoformat()` and `str()`);
/// - a comma before the fraction, as ISO 8601 allows: `2026-01-01 10:00:00,123` (Python
///   logging's `asctime`, log4j's default) and `2026-01-01T10:00:00,123` (log4j's `ISO8601`);
/// - lowercase `t` and `z`.
///
/// Anything else (a date alone, an epoch number, out-of-range fields) is `None`.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    // The common case first, before any copy or scan: this runs once per row (and once more per
    // node that reads the time), so the exact UTC form is read without chrono's general parser.
    if let Some(ms) = utc_rfc3339_ms(s.as_bytes()) {
        return Some(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let s = normalize(s);
    let s = s.as_ref();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // `%#z` takes `+02:00`, `+0200`, `+02` and `Z`. (`NaiveDateTime` would skip an offset, so
    // text with one is parsed as a `DateTime` first.)
    for f in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` exactly (the form of JavaScript's `toISOString`, Java's
/// `Instant` and most producers), in ms; `None` for anything else, including an impossible date
/// or a leap second, which the general parser then judges. The fraction is truncated to ms, as
/// chrono's `timestamp_millis` does.
fn utc_rfc3339_ms(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let frac = &b[19..b.len() - 1];
    let ms = match frac {
        [] => 0,
        [b'.', rest @ ..] if !rest.is_empty() && rest.len() <= 9 => {
            if !rest.iter().all(u8::is_ascii_digit) {
                return None;
            }
            rest.iter()
                .chain(std::iter::repeat(&b'0'))
                .take(3)
                .fold(0, |n, c| n * 10 + i64::from(c - b'0'))
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + ms)
}

/// A decimal comma becomes a point and `t`/`z` become upper case; text without them is not
/// copied (the common case, since this runs once per row).
fn normalize(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b',' | b't' | b'z')) {
        return Cow::Borrowed(s);
    }
    let mut owned = s.to_ascii_uppercase();
    if owned.contains(',') {
        owned = owned.replace(',', ".");
    }
    Cow::Owned(owned)
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
    use chrono::NaiveDate;

    #[test]
    fn the_exact_utc_form_is_read_as_chrono_reads_it() {
        let chrono_ms = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        let mut rng = fastrand::Rng::with_seed(5);
        let mut next = move || rng.u64(..);
        let mut checked = 0;
        for _ in 0..200_000 {
            // Fields around and beyond their ranges; fractions of 0 to 10 digits.
            let year =
                [1, 1582, 1900, 1969, 1970, 2000, 2024, 2026, 2100, 9999][(next() % 10) as usize];
            let (month, day) = (next() % 14, next() % 33);
            let (h, m, sec) = (next() % 25, next() % 61, next() % 62);
            let digits = (next() % 11) as usize;
            let frac: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let frac = if digits == 0 {
                String::new()
            } else {
                format!(".{frac}")
            };
            let s = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}{frac}Z");
            let fast = utc_rfc3339_ms(s.as_bytes());
            if fast.is_some() {
                checked += 1;
                assert_eq!(fast, chrono_ms(&s), "{s}");
            } else {
                // Declined: then the general parser decides, as before.
                assert!(
                    parse_timestamp_ms(&s) == chrono_ms(&s) || chrono_ms(&s).is_none(),
                    "{s}"
                );
            }
        }
        assert!(checked > 50_000, "{checked}");
        for s in [
            "2026-02-29T00:00:00Z",
            "2024-02-29T23:59:60Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01t00:00:00Z",
            "+2026-01-01T00:00:00Z",
        ] {
            assert_eq!(utc_rfc3339_ms(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            utc_rfc3339_ms(b"2024-02-29T23:59:59.9999Z"),
            Some(1_709_251_199_999)
        );
        assert_eq!(utc_rfc3339_ms(b"1969-12-31T23:59:59.5Z"), Some(-500));
    }

    /// Ms since the epoch of a UTC wall-clock time, computed by chrono's calendar, not by the
    /// parser under test.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, milli: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_milli_opt(h, mi, s, milli)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn parses_iso_forms() {
        let base = utc(2026, 1, 1, 0, 0, 0, 0);
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
    }

    #[test]
    fn parses_what_real_producers_write() {
        let t = utc(2026, 3, 1, 10, 0, 0, 123);
        let whole = utc(2026, 3, 1, 10, 0, 0, 0);
        let cases: [(&str, &str, i64); 19] = [
            // Python logging's default asctime (`%(asctime)s`), and log4j's default `%d`.
            ("python asctime", "2026-03-01 10:00:00,123", t),
            // log4j `%d{ISO8601}`.
            ("log4j ISO8601", "2026-03-01T10:00:00,123", t),
            (
                "log4j ISO8601 with offset",
                "2026-03-01T12:00:00,123+02:00",
                t,
            ),
            // Java `Instant.toString()` with nanoseconds and with millis.
            ("java Instant nanos", "2026-03-01T10:00:00.123456789Z", t),
            ("java Instant millis", "2026-03-01T10:00:00.123Z", t),
            ("java Instant whole", "2026-03-01T10:00:00Z", whole),
            // Python `datetime.isoformat()`: aware, naive, with and without microseconds.
            ("python aware", "2026-03-01T10:00:00.123000+00:00", t),
            ("python aware whole", "2026-03-01T10:00:00+00:00", whole),
            ("python naive", "2026-03-01T10:00:00.123000", t),
            ("python naive whole", "2026-03-01T10:00:00", whole),
            ("python str()", "2026-03-01 10:00:00.123000", t),
            ("python str() aware", "2026-03-01 10:00:00.123000+00:00", t),
            // Offsets without a colon (Java's `Z` pattern letter, strftime's `%z`), or hours only.
            ("offset +0000", "2026-03-01T10:00:00.123+0000", t),
            ("offset +0200", "2026-03-01T12:00:00.123+0200", t),
            ("offset -0530", "2026-03-01T04:30:00.123-0530", t),
            ("offset +02", "2026-03-01T12:00:00.123+02", t),
            ("space and +0000", "2026-03-01 10:00:00,123+0000", t),
            // Lowercase separators.
            ("lowercase t z", "2026-03-01t10:00:00.123z", t),
            ("lowercase t naive", "2026-03-01t10:00:00.123", t),
        ];
        for (what, text, want) in cases {
            assert_eq!(parse_timestamp_ms(text), Some(want), "{what}: {text}");
        }
        // Surrounding whitespace, as a line-oriented producer may leave.
        assert_eq!(parse_timestamp_ms(" 2026-03-01 10:00:00,123\n"), Some(t));
        // An offset moves the instant; the same wall-clock text without one is UTC.
        assert_eq!(
            parse_timestamp_ms("2026-03-01T10:00:00+02:00"),
            Some(whole - 2 * HOUR)
        );
        assert_eq!(
            parse_timestamp_ms("2026-03-01T10:00:00+0200"),
            Some(whole - 2 * HOUR)
        );
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for text in [
            "",
            "yesterday",
            "the day before yesterday",
            "2026-03-01",
            "10:00:00",
            "1772359200000",
            "2026-13-01T10:00:00Z",
            "2026-02-30 10:00:00",
            "2026-03-01T25:00:00Z",
            "2026-03-01T10:61:00",
            "2026-03-01T10:00:00,",
            "2026-03-01T10:00:00,abc",
            "2026-03-01T10:00:00,123,456",
            "2026-03-01T10:00:00.123+",
            "2026-03-01T10:00:00+25:00",
            "2026-03-01T10:00:00 garbage",
            "2026-03-01X10:00:00",
            "Sun, 01 Mar 2026 10:00:00 GMT",
        ] {
            assert_eq!(parse_timestamp_ms(text), None, "{text:?}");
        }
    }
}
