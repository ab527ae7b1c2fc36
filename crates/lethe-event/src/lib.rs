//! The Amplitude event model, shared by ingestion, storage and export.
//!
//! Kept free of I/O so that the rules that decide what an event *is* (which fields are
//! valid, how user-property operations combine, how an event is exported) live in one place
//! and can be tested on their own.

mod blocks;
mod day;
mod event;
mod fields;
pub mod groups;
pub mod limits;
mod profile;
mod wire;

pub use blocks::{BlockList, Blocked};
pub use day::Day;
pub use event::{Event, Props};
pub use fields::{NumField, StrField};
pub use profile::{apply_user_property_ops, Profile};
pub use wire::{
    parse_batch, parse_event, parse_export_line, parse_identification, Batch, EventError,
    EventIssue, ParsedEvent, RequestError, Shape, WireOptions, DEFAULT_MIN_ID_LENGTH,
    GROUP_IDENTIFY_EVENT, IDENTIFY_EVENT,
};

/// Formats epoch milliseconds as Amplitude's export timestamp text (`2020-02-15 01:00:00.123000`).
pub fn format_export_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// Parses Amplitude's export timestamp text (and RFC 3339) back into epoch milliseconds.
pub fn parse_export_time(text: &str) -> Option<i64> {
    // The format is parsed once: an import parses one such time per event.
    static EXPORT_FORMAT: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> =
        std::sync::LazyLock::new(|| {
            chrono::format::StrftimeItems::new("%Y-%m-%d %H:%M:%S%.f")
                .parse_to_owned()
                .expect("a valid format")
        });
    let mut parsed = chrono::format::Parsed::new();
    if chrono::format::parse(&mut parsed, text, EXPORT_FORMAT.iter()).is_ok() {
        if let Ok(t) = parsed.to_naive_datetime_with_offset(0) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Milliseconds in one UTC day: partitions and dedup windows count in days.
pub const DAY_MS: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::{format_export_time, parse_export_time};

    #[test]
    fn export_times_round_trip_and_other_texts_are_refused() {
        for ms in [0, 1_581_728_400_123, 1_764_547_199_999, -86_400_000] {
            assert_eq!(parse_export_time(&format_export_time(ms)), Some(ms));
        }
        assert_eq!(
            parse_export_time("2020-02-15 01:00:00"),
            Some(1_581_728_400_000)
        );
        assert_eq!(
            parse_export_time("2020-02-15T01:00:00.5+01:00"),
            Some(1_581_724_800_500)
        );
        for bad in [
            "",
            "2020-02-15",
            "2020-02-30 01:00:00",
            "2020-02-15 01:00:00 junk",
        ] {
            assert_eq!(parse_export_time(bad), None, "{bad}");
        }
    }
}
