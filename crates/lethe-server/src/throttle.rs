//! Throttling of credential guesses: after a few consecutive failures for one account (a
//! sign-in email, or a project's API key on Basic auth) every attempt is refused with 429 and
//! `Retry-After` until a lock expires, right credentials included; each further failure
//! doubles the lock, up to 15 minutes. A success clears the account's record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures allowed before the first lock.
const FREE_FAILURES: u32 = 5;
/// The longest lock.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Records kept at most; idle ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

/// Failures per account, in memory (a restart forgets them).
#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

impl Throttle {
    /// `Err(retry_after)` while `account` is locked.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(account).and_then(|e| e.locked_until) {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lock it starts, if any.
    pub fn failed(&self, account: &str) -> Option<Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now));
        }
        let entry = entries.entry(account.to_string()).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last: now,
        });
        entry.failures += 1;
        entry.last = now;
        if entry.failures < FREE_FAILURES {
            return None;
        }
        let doublings = (entry.failures - FREE_FAILURES).min(20);
        let lock = Duration::from_secs(1u64 << doublings).min(MAX_LOCK);
        entry.locked_until = Some(now + lock);
        Some(lock)
    }

    /// Clears an account's failures after a success.
    pub fn succeeded(&self, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(account);
    }
}

/// Seconds to announce in `Retry-After` (at least 1).
pub fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_five_failures_and_doubles_then_clears_on_success() {
        let t = Throttle::default();
        for _ in 0..4 {
            assert_eq!(t.failed("a"), None);
            assert!(t.check("a").is_ok());
        }
        assert_eq!(t.failed("a"), Some(Duration::from_secs(1)));
        assert!(t.check("a").is_err());
        assert!(t.check("b").is_ok(), "accounts are separate");
        assert_eq!(t.failed("a"), Some(Duration::from_secs(2)));
        assert_eq!(t.failed("a"), Some(Duration::from_secs(4)));
        t.succeeded("a");
        assert!(t.check("a").is_ok());
        for _ in 0..40 {
            t.failed("c");
        }
        assert!(t.check("c").unwrap_err() <= MAX_LOCK);
    }
}
