//! A UTC day: the partition of server upload time, and the unit of the dedup window and the
//! daily key limits. One type, so ms → day and day → name are written once.

use std::fmt;

use crate::DAY_MS;

/// A UTC day, as days since 1970-01-01. Its name is `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The day holding an instant (UTC ms).
    pub fn of_ms(ms: i64) -> Day {
        Day(ms.div_euclid(DAY_MS))
    }

    /// The day `days` later (earlier when negative).
    pub fn plus(self, days: i64) -> Day {
        Day(self.0 + days)
    }

    /// Its first instant (UTC ms).
    pub fn start_ms(self) -> i64 {
        self.0 * DAY_MS
    }

    /// The day a partition name (`YYYY-MM-DD`) names.
    pub fn parse(name: &str) -> Option<Day> {
        let date = chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()?;
        Some(Day::of_ms(
            date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis(),
        ))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = chrono::DateTime::from_timestamp_millis(self.start_ms()).unwrap_or_default();
        write!(f, "{}", start.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_name_and_parse_back() {
        let day = Day::of_ms(1_772_319_599_999); // 2026-02-28 22:59:59.999 UTC
        assert_eq!(day.to_string(), "2026-02-28");
        assert_eq!(Day::parse("2026-02-28"), Some(day));
        assert_eq!(day.plus(1).to_string(), "2026-03-01");
        assert_eq!(Day::of_ms(-1).to_string(), "1969-12-31");
        assert_eq!(Day::of_ms(day.start_ms()), day);
        assert_eq!(Day::parse("2026-02-30"), None);
    }
}
