//! Event times: epoch milliseconds to and from RFC 3339 text.

use chrono::DateTime;

/// Milliseconds since the epoch of an RFC 3339 time, such as `2026-04-01T08:00:00Z`.
pub fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("`{rfc3339}` is not an RFC 3339 time: {e}"))
        .timestamp_millis()
}

/// `ms` as UTC RFC 3339 text with milliseconds: `2026-04-01T08:00:00.250Z`.
pub fn iso(ms: i64) -> String {
    utc(ms, "%Y-%m-%dT%H:%M:%S%.3fZ")
}

/// `ms` as UTC RFC 3339 text in whole seconds: `2026-04-01T08:00:00Z` (as `engine report`
/// prints a window's start).
pub fn iso_seconds(ms: i64) -> String {
    utc(ms, "%Y-%m-%dT%H:%M:%SZ")
}

/// `ms` as UTC time in a chrono `layout`.
pub fn utc(ms: i64, layout: &str) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format(layout)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back() {
        let t = ms("2026-04-01T08:00:00.250Z");
        assert_eq!(iso(t), "2026-04-01T08:00:00.250Z");
        assert_eq!(iso_seconds(t), "2026-04-01T08:00:00Z");
        assert_eq!(ms(&iso(t)), t);
        assert_eq!(ms("2026-04-01T10:00:00.250+02:00"), t);
    }
}
