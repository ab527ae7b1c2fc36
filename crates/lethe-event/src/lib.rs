//! The Amplitude event model, shared by ingestion, storage and export.
//!
//! Kept free of I/O so that the rules that decide what an event *is* (which fields are
//! valid, how user-property operations combine, how an event is exported) live in one place
//! and can be tested on their own.

mod day;
mod event;
mod fields;
pub mod groups;
pub mod limits;
mod profile;
mod wire;

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
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Milliseconds in one UTC day: partitions and dedup windows count in days.
pub const DAY_MS: i64 = 86_400_000;
