//! Per-device and per-user event rates, as Amplitude limits them: a device_id or user_id
//! sending more than its events-per-second threshold (averaged over 30 s) or more than its
//! daily quota (rolling 24 h) has its events refused with Amplitude's 429 body, so the SDKs
//! pause just that device or user. Nothing of a refused request is stored; bulk import is
//! never limited.
//!
//! Counters are kept per 30 s window, keyed by a keyed hash of (project, kind, id), so an
//! entry costs a few dozen bytes and holds no id. An entry lives for two windows; only keys
//! busy enough to approach the daily quota (100 events in a window) also keep hourly counts
//! for a day, so a flood of one-off device ids cannot grow memory past two windows of them.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use lethe_event::ParsedEvent;
use serde_json::{json, Value};

const WINDOW_SECS: i64 = 30;
/// Events in one window from which a key's daily total is tracked (the quota needs ~6/s).
const DAILY_TRACK_FROM: u32 = 100;

/// The limits of one deployment; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Events per second per device or user on `/2/httpapi` (Amplitude: 30).
    pub httpapi_eps: u32,
    /// Events per second per device or user on `/batch` (Amplitude: 1000).
    pub batch_eps: u32,
    /// Events per rolling 24 h per device or user (Amplitude: 500 000).
    pub daily_quota: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            httpapi_eps: 30,
            batch_eps: 1000,
            daily_quota: 500_000,
        }
    }
}

/// Which ingestion endpoint a request came to: each has its own threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    HttpApi,
    Batch,
}

/// The counters of one device or user.
#[derive(Default)]
struct Counter {
    window: i64,
    current: u32,
    previous: u32,
    /// Events per hour (hour number → count) over the last 24 h, once tracked.
    hours: Option<BTreeMap<i64, u32>>,
}

impl Counter {
    /// Moves the counter to window `w`.
    fn advance(&mut self, w: i64) {
        if w != self.window {
            self.previous = if w == self.window + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window = w;
        }
    }

    /// A key with no events yet.
    const IDLE: Counter = Counter {
        window: i64::MIN / 2,
        current: 0,
        previous: 0,
        hours: None,
    };

    /// Events per second over the last 30 s if `extra` more arrive at `now_ms` (the previous
    /// window weighted by how much of it the last 30 s still cover).
    fn eps_with(&self, extra: u32, now_ms: i64) -> u64 {
        let window_ms = WINDOW_SECS * 1000;
        let (current, previous) = match now_ms.div_euclid(window_ms) - self.window {
            0 => (self.current, self.previous),
            1 => (0, self.current),
            _ => (0, 0),
        };
        let into = now_ms.rem_euclid(window_ms) as f64 / window_ms as f64;
        let events = previous as f64 * (1.0 - into) + (current + extra) as f64;
        (events / WINDOW_SECS as f64).round() as u64
    }

    fn day_total(&self, hour: i64) -> u64 {
        self.hours.as_ref().map_or(0, |h| {
            h.range(hour - 23..=hour).map(|(_, n)| *n as u64).sum()
        })
    }
}

/// A request refused for its rates: Amplitude's 429 body.
#[derive(Debug, Default, PartialEq)]
pub struct Throttled {
    pub eps_threshold: u32,
    pub throttled_devices: BTreeMap<String, u64>,
    pub throttled_users: BTreeMap<String, u64>,
    pub exceeded_daily_quota_devices: BTreeMap<String, u64>,
    pub exceeded_daily_quota_users: BTreeMap<String, u64>,
    pub throttled_events: Vec<usize>,
}

impl Throttled {
    /// The body of the 429 answer.
    pub fn body(&self) -> Value {
        json!({
            "error": "Too many requests for some devices and users",
            "eps_threshold": self.eps_threshold,
            "throttled_devices": self.throttled_devices,
            "throttled_users": self.throttled_users,
            "exceeded_daily_quota_devices": self.exceeded_daily_quota_devices,
            "exceeded_daily_quota_users": self.exceeded_daily_quota_users,
            "throttled_events": self.throttled_events,
        })
    }
}

/// The event rates of every project, in memory (a restart forgets them).
pub struct EventRates {
    limits: RateLimits,
    hasher: RandomState,
    counters: Mutex<Counters>,
}

/// The counters, and the window they were last swept in (once per window: a sweep visits
/// every counter).
#[derive(Default)]
struct Counters {
    by_key: HashMap<u64, Counter>,
    swept: i64,
}

/// Whether an id is a device or a user.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
enum Who {
    Device,
    User,
}

impl EventRates {
    pub fn new(limits: RateLimits) -> Self {
        EventRates {
            limits,
            hasher: RandomState::new(),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Counts a request's events at `now_ms`, or refuses it (counting nothing) when a device
    /// or user in it would pass a limit.
    pub fn admit(
        &self,
        project_id: i64,
        endpoint: Endpoint,
        events: &[ParsedEvent],
        now_ms: i64,
    ) -> Result<(), Box<Throttled>> {
        let eps_limit = match endpoint {
            Endpoint::HttpApi => self.limits.httpapi_eps,
            Endpoint::Batch => self.limits.batch_eps,
        };
        if eps_limit == 0 && self.limits.daily_quota == 0 {
            return Ok(());
        }
        // Events per device and per user in this request, with the indices they carry and
        // the key of their counter (hashed once, outside the lock).
        let mut sent: HashMap<(Who, &str), (u64, Vec<usize>)> =
            HashMap::with_capacity(events.len() * 2);
        for (i, e) in events.iter().enumerate() {
            for (who, id) in [(Who::Device, &e.device_id), (Who::User, &e.user_id)] {
                if let Some(id) = id {
                    let entry = sent.entry((who, id.as_str())).or_insert_with(|| {
                        (
                            self.hasher.hash_one((project_id, who, id.as_str())),
                            Vec::new(),
                        )
                    });
                    entry.1.push(i);
                }
            }
        }
        let window = now_ms.div_euclid(WINDOW_SECS * 1000);
        let hour = now_ms.div_euclid(3_600_000);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut refused = Throttled {
            eps_threshold: eps_limit,
            ..Default::default()
        };
        let mut throttled_events = Vec::new();
        for ((who, id), (key, indices)) in &sent {
            let counter = counters.by_key.get(key).unwrap_or(&Counter::IDLE);
            let day_before = counter.day_total(hour);
            let n = indices.len() as u32;
            let eps = counter.eps_with(n, now_ms);
            let day = day_before + n as u64;
            let (rate_map, quota_map) = match who {
                Who::Device => (
                    &mut refused.throttled_devices,
                    &mut refused.exceeded_daily_quota_devices,
                ),
                Who::User => (
                    &mut refused.throttled_users,
                    &mut refused.exceeded_daily_quota_users,
                ),
            };
            let mut over = false;
            if eps_limit > 0 && eps > eps_limit as u64 {
                rate_map.insert(id.to_string(), eps);
                over = true;
            }
            if self.limits.daily_quota > 0 && day > self.limits.daily_quota {
                quota_map.insert(id.to_string(), day);
                over = true;
            }
            if over {
                throttled_events.extend(indices);
            }
        }
        if !throttled_events.is_empty() {
            throttled_events.sort_unstable();
            throttled_events.dedup();
            refused.throttled_events = throttled_events;
            return Err(Box::new(refused));
        }
        for (key, indices) in sent.into_values() {
            let counter = counters.by_key.entry(key).or_insert_with(|| Counter {
                window,
                ..Default::default()
            });
            counter.advance(window);
            counter.current += indices.len() as u32;
            if counter.current >= DAILY_TRACK_FROM && counter.hours.is_none() {
                counter.hours = Some(BTreeMap::from([(hour, counter.current)]));
            } else if let Some(hours) = &mut counter.hours {
                *hours.entry(hour).or_default() += indices.len() as u32;
                while hours.first_key_value().is_some_and(|(h, _)| *h < hour - 23) {
                    hours.pop_first();
                }
            }
        }
        // Forget keys idle for two windows, unless they are tracked for the day.
        if counters.swept != window {
            counters.swept = window;
            counters.by_key.retain(|_, c| {
                c.window >= window - 1
                    || c.hours
                        .as_ref()
                        .is_some_and(|h| h.keys().any(|k| *k > hour - 24))
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(device: &str, n: usize) -> Vec<ParsedEvent> {
        (0..n)
            .map(|_| ParsedEvent {
                event_type: "e".into(),
                device_id: Some(device.into()),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_device_over_its_rate_is_refused_and_others_are_not() {
        let rates = EventRates::new(RateLimits::default());
        let t0 = 1_700_000_010_000; // 10 s into a window
                                    // 900 events in 30 s is exactly 30/s: allowed.
        for _ in 0..9 {
            rates
                .admit(1, Endpoint::HttpApi, &events("device-a", 100), t0)
                .unwrap();
        }
        let refused = rates
            .admit(1, Endpoint::HttpApi, &events("device-a", 50), t0)
            .unwrap_err();
        assert_eq!(refused.throttled_devices["device-a"], 32);
        assert_eq!(refused.throttled_events, (0..50).collect::<Vec<_>>());
        // Another device, another project, and /batch's higher threshold are unaffected.
        rates
            .admit(1, Endpoint::HttpApi, &events("device-b", 50), t0)
            .unwrap();
        rates
            .admit(2, Endpoint::HttpApi, &events("device-a", 50), t0)
            .unwrap();
        rates
            .admit(1, Endpoint::Batch, &events("device-a", 50), t0)
            .unwrap();
        // A minute later the window has passed.
        rates
            .admit(1, Endpoint::HttpApi, &events("device-a", 50), t0 + 60_000)
            .unwrap();
    }

    #[test]
    fn the_daily_quota_counts_a_rolling_day() {
        let rates = EventRates::new(RateLimits {
            httpapi_eps: 0,
            batch_eps: 0,
            daily_quota: 1000,
        });
        let t0 = 1_700_000_000_000;
        for i in 0..10 {
            rates
                .admit(
                    1,
                    Endpoint::Batch,
                    &events("device-q", 100),
                    t0 + i * 60_000,
                )
                .unwrap();
        }
        let refused = rates
            .admit(1, Endpoint::Batch, &events("device-q", 1), t0 + 3_600_000)
            .unwrap_err();
        assert_eq!(refused.exceeded_daily_quota_devices["device-q"], 1001);
        rates
            .admit(
                1,
                Endpoint::Batch,
                &events("device-q", 1),
                t0 + 25 * 3_600_000,
            )
            .unwrap();
    }

    #[test]
    fn limits_of_zero_are_off() {
        let rates = EventRates::new(RateLimits {
            httpapi_eps: 0,
            batch_eps: 0,
            daily_quota: 0,
        });
        for _ in 0..100 {
            rates
                .admit(1, Endpoint::HttpApi, &events("device-z", 2000), 0)
                .unwrap();
        }
    }
}
