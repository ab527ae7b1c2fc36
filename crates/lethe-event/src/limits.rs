//! What one event may carry. Past a limit the event is refused with a 400 that names the
//! field and the limit: nothing is cut, rounded or dropped after a 200. Every accepted value
//! is stored in its canonical JSON form and exported as the same JSON value.

use serde_json::Value;

/// Keys in one event's `event_properties`, and in all of its `user_properties` operations
/// together (Amplitude's limit per event).
pub const MAX_PROPERTIES: usize = 1000;
/// Characters in a property key (Amplitude's string limit; longer keys are refused, never
/// cut, so two keys can never become one).
pub const MAX_KEY_CHARS: usize = 1024;
/// Bytes of one property value's JSON text (and of `groups`, `group_properties`).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Levels of arrays and objects inside one property value.
pub const MAX_DEPTH: usize = 32;
/// Every time is UTC milliseconds before 2100-01-01 (so the export can render it).
pub const MAX_TIME_MS: i64 = 4_102_444_800_000;
/// An imported `server_upload_time` is not before 2000-01-01.
pub const MIN_UPLOAD_TIME_MS: i64 = 946_684_800_000;
/// An import's `server_upload_time` may be at most this far after the server's clock, so
/// every stored event is in reach of a deletion task (whose end may not be in the future).
pub const MAX_UPLOAD_SKEW_MS: i64 = 5 * 60 * 1000;
/// Distinct event-property keys one project may use on one day (by upload time): bounds the
/// width of every segment, whatever a client with the project's API key sends.
pub const MAX_EVENT_KEYS_PER_DAY: usize = 4000;
/// Distinct user-property keys the events of one project may carry on one day.
pub const MAX_USER_KEYS_PER_DAY: usize = 2000;
/// Distinct group-property keys the events of one project may carry on one day.
pub const MAX_GROUP_KEYS_PER_DAY: usize = 2000;
/// Group types one event may name, and group values across them (Amplitude's limits).
pub const MAX_GROUP_TYPES: usize = 5;
pub const MAX_GROUP_VALUES: usize = 10;
/// Integer fields (`session_id`, `event_id`) given as a float must be exact doubles.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// Which limit a refused field broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// More than [`MAX_PROPERTIES`] keys.
    Properties,
    /// A key longer than [`MAX_KEY_CHARS`].
    KeyLength,
    /// A value longer than [`MAX_VALUE_BYTES`].
    ValueBytes,
    /// Deeper than [`MAX_DEPTH`].
    Depth,
    /// A number that no 64-bit integer or finite double holds exactly (`1e400`, a 30-digit
    /// integer, an underflowing `1e-400`).
    Number,
    /// The event would bring a project's distinct property keys of its day past
    /// [`MAX_EVENT_KEYS_PER_DAY`] or [`MAX_USER_KEYS_PER_DAY`].
    KeysPerDay,
    /// A time not in `[0, MAX_TIME_MS)`, or an imported upload time not in
    /// `[MIN_UPLOAD_TIME_MS, now + MAX_UPLOAD_SKEW_MS]`.
    TimeRange,
    /// More than [`MAX_GROUP_TYPES`] group types or [`MAX_GROUP_VALUES`] group values.
    Groups,
}

impl Limit {
    /// A stable name and a sentence for error bodies.
    pub fn describe(self) -> (&'static str, String) {
        match self {
            Limit::Properties => (
                "max_properties",
                format!("at most {MAX_PROPERTIES} property keys per event"),
            ),
            Limit::KeyLength => (
                "max_key_chars",
                format!("property keys of at most {MAX_KEY_CHARS} characters"),
            ),
            Limit::ValueBytes => (
                "max_value_bytes",
                format!("values of at most {MAX_VALUE_BYTES} bytes of JSON"),
            ),
            Limit::Depth => (
                "max_depth",
                format!("values nested at most {MAX_DEPTH} levels deep"),
            ),
            Limit::Number => (
                "number_range",
                "numbers must be 64-bit integers or finite doubles".to_string(),
            ),
            Limit::KeysPerDay => (
                "max_keys_per_day",
                format!(
                    "at most {MAX_EVENT_KEYS_PER_DAY} distinct event-property keys, \
                     {MAX_USER_KEYS_PER_DAY} distinct user-property keys and \
                     {MAX_GROUP_KEYS_PER_DAY} distinct group-property keys per project per day"
                ),
            ),
            Limit::TimeRange => (
                "time_range",
                format!(
                    "times in UTC milliseconds from 0 to {MAX_TIME_MS} (2100-01-01); imported \
                     upload times from {MIN_UPLOAD_TIME_MS} (2000-01-01) to {} s after the \
                     server's clock",
                    MAX_UPLOAD_SKEW_MS / 1000
                ),
            ),
            Limit::Groups => (
                "max_groups",
                format!(
                    "at most {MAX_GROUP_TYPES} group types and {MAX_GROUP_VALUES} group values                      per event, each a non-empty string"
                ),
            ),
        }
    }
}

/// Checks a JSON value's text against the limits and returns its canonical form: the text
/// the export will render, so what is stored is what comes back.
pub fn canonical_value(text: &str) -> Result<String, Limit> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(Limit::ValueBytes);
    }
    scan(text)?;
    if canonical_already(text) {
        return Ok(text.to_string());
    }
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        // A number (`scan` checked it is finite and exact): the shortest form of its double.
        let value: f64 = text.parse().map_err(|_| Limit::Number)?;
        if text.contains(['.', 'e', 'E']) {
            return serde_json::Number::from_f64(value)
                .map(|n| n.to_string())
                .ok_or(Limit::Number);
        }
    }
    let value: Value = serde_json::from_str(text).map_err(|_| Limit::Number)?;
    Ok(value.to_string())
}

/// Checks a JSON value's text against the limits and parses it (for values that are applied,
/// like user-property operations, rather than stored as text).
pub fn checked_value(text: &str) -> Result<Value, Limit> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(Limit::ValueBytes);
    }
    scan(text)?;
    serde_json::from_str(text).map_err(|_| Limit::Number)
}

/// Text that serde_json would render the same: a string without escapes, an integer without
/// a sign or leading zero to drop, `true`, `false`. Most values are such; the rest are parsed
/// and rendered again.
fn canonical_already(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'"') => !text.contains('\\'),
        Some(b'1'..=b'9') => bytes.iter().all(u8::is_ascii_digit),
        Some(b'-') => {
            bytes.len() > 1 && bytes[1] != b'0' && bytes[1..].iter().all(u8::is_ascii_digit)
        }
        _ => text == "0" || text == "true" || text == "false",
    }
}

/// One pass over JSON text (known to be valid): nesting depth, and every number literal
/// holdable exactly.
fn scan(text: &str) -> Result<(), Limit> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Limit::Depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| i + n);
                exact_number(&text[i..end])?;
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn exact_number(literal: &str) -> Result<(), Limit> {
    let integer = !literal.contains(['.', 'e', 'E']);
    if integer {
        let fits = literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok();
        return if fits { Ok(()) } else { Err(Limit::Number) };
    }
    let value: f64 = literal.parse().map_err(|_| Limit::Number)?;
    let mantissa = literal.split(['e', 'E']).next().unwrap_or("");
    let underflow = value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if !value.is_finite() || underflow {
        return Err(Limit::Number);
    }
    Ok(())
}

/// An integer field: a JSON integer that fits in i64, or a float holding one exactly.
pub fn exact_integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT_INT)
            .map(|f| f as i64)
    })
}

/// Whether an event time is in the documented range.
pub fn time_in_range(ms: i64) -> bool {
    (0..MAX_TIME_MS).contains(&ms)
}

/// Whether an imported upload time is in the documented range, given the server's clock.
pub fn upload_time_in_range(ms: i64, now: i64) -> bool {
    (MIN_UPLOAD_TIME_MS..=now + MAX_UPLOAD_SKEW_MS).contains(&ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_canonical_or_refused() {
        assert_eq!(canonical_value("1.50").unwrap(), "1.5");
        assert_eq!(canonical_value("5").unwrap(), "5");
        assert_eq!(
            canonical_value("18446744073709551615").unwrap(),
            "18446744073709551615"
        );
        assert_eq!(
            canonical_value(r#"{"a": [1, "x"]}"#).unwrap(),
            r#"{"a":[1,"x"]}"#
        );
        assert_eq!(canonical_value(r#""a\u0041""#).unwrap(), r#""aA""#);
        assert_eq!(
            canonical_value(r#""-1e400 in a string""#).unwrap(),
            r#""-1e400 in a string""#
        );
        assert_eq!(canonical_value("1e400"), Err(Limit::Number));
        assert_eq!(canonical_value("-1e-400"), Err(Limit::Number));
        assert_eq!(
            canonical_value("123456789012345678901234567890"),
            Err(Limit::Number)
        );
        assert_eq!(canonical_value("[1e999]"), Err(Limit::Number));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(canonical_value(&deep), Err(Limit::Depth));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(canonical_value(&ok).is_ok());
        let long = format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES));
        assert_eq!(canonical_value(&long), Err(Limit::ValueBytes));
    }

    #[test]
    fn integers_are_exact() {
        let n = |t: &str| serde_json::from_str::<serde_json::Number>(t).unwrap();
        assert_eq!(exact_integer(&n("42")), Some(42));
        assert_eq!(exact_integer(&n("42.0")), Some(42));
        assert_eq!(exact_integer(&n("18446744073709551616")), None);
        assert_eq!(exact_integer(&n("1e300")), None);
        assert_eq!(exact_integer(&n("1.5")), None);
    }
}
