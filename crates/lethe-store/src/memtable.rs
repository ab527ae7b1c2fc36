//! The memtable: events that are durable in the WAL but not yet in a segment. New events go
//! to the active part; a flush freezes it (with the WAL file that holds it), writes the
//! frozen parts into segments, and releases them in the same step that makes the segments
//! live, so a reader sees every event exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_event::Event;

/// An event with its project.
pub(crate) type Tagged = (i64, Arc<Event>);

/// Unflushed events, active and frozen.
#[derive(Default)]
pub(crate) struct Memtable {
    active: Vec<Tagged>,
    /// Since when something waits for a flush (events, or profile changes alone).
    waiting_since: Option<Instant>,
    frozen: Vec<Arc<Vec<Tagged>>>,
}

impl Memtable {
    /// Makes durable events visible.
    pub fn push(&mut self, project_id: i64, events: impl IntoIterator<Item = Arc<Event>>) {
        self.waiting_since.get_or_insert_with(Instant::now);
        self.active
            .extend(events.into_iter().map(|e| (project_id, e)));
    }

    /// Starts the flush clock without an event: profile changes wait for the next flush.
    pub fn await_flush(&mut self) {
        self.waiting_since.get_or_insert_with(Instant::now);
    }

    /// Events not yet in segments: the active part and the frozen ones.
    pub fn unflushed_len(&self) -> usize {
        self.active.len() + self.frozen.iter().map(|f| f.len()).sum::<usize>()
    }

    /// Events in the active part.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Whether a flush is due: the active part is full, something waited `interval`, or a
    /// frozen part is left from a flush that failed.
    pub fn flush_due(&self, full: usize, interval: Duration) -> bool {
        self.active.len() >= full
            || self.waiting_since.is_some_and(|t| t.elapsed() >= interval)
            || !self.frozen.is_empty()
    }

    /// Freezes the active part (when the WAL file that holds it is sealed).
    pub fn freeze(&mut self) {
        let active = std::mem::take(&mut self.active);
        self.waiting_since = None;
        if !active.is_empty() {
            self.frozen.push(Arc::new(active));
        }
    }

    /// The frozen parts, for a flush to write.
    pub fn frozen(&self) -> Vec<Arc<Vec<Tagged>>> {
        self.frozen.clone()
    }

    /// Drops frozen parts that a flush committed.
    pub fn release(&mut self, flushed: &[Arc<Vec<Tagged>>]) {
        self.frozen
            .retain(|f| !flushed.iter().any(|done| Arc::ptr_eq(f, done)));
    }

    /// The events of one project whose upload time `keep` accepts, frozen parts first.
    pub fn events_of(&self, project_id: i64, keep: impl Fn(i64) -> bool) -> Vec<Arc<Event>> {
        self.frozen
            .iter()
            .flat_map(|f| f.iter())
            .chain(self.active.iter())
            .filter(|(p, e)| *p == project_id && keep(e.server_upload_time))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uuid: u128, time: i64) -> Arc<Event> {
        let mut e = crate::test_event(uuid, vec![], vec![]);
        e.server_upload_time = time;
        Arc::new(e)
    }

    #[test]
    fn frozen_events_stay_visible_until_released_and_new_ones_are_not_released() {
        let mut m = Memtable::default();
        m.push(1, [event(1, 10), event(2, 20)]);
        m.push(2, [event(3, 10)]);
        m.freeze();
        m.push(1, [event(4, 30)]);
        let flushing = m.frozen();
        assert_eq!(m.events_of(1, |_| true).len(), 3, "frozen and active");
        m.release(&flushing);
        let left: Vec<u128> = m.events_of(1, |_| true).iter().map(|e| e.uuid).collect();
        assert_eq!(left, [4], "only what arrived after the freeze");
        assert_eq!(m.events_of(1, |t| t < 30).len(), 0);
        assert!(m.frozen().is_empty());
    }

    #[test]
    fn a_flush_is_due_when_full_when_waited_long_or_when_a_frozen_part_is_left() {
        let mut m = Memtable::default();
        let hour = Duration::from_secs(3600);
        assert!(!m.flush_due(2, hour));
        m.push(1, [event(1, 1), event(2, 2)]);
        assert!(m.flush_due(2, hour), "full");
        assert!(!m.flush_due(3, hour));
        assert!(m.flush_due(3, Duration::ZERO), "waited");
        m.freeze();
        assert!(m.flush_due(3, hour), "a frozen part waits");
        m.release(&m.frozen());
        assert!(!m.flush_due(3, Duration::ZERO), "nothing waits");
        m.await_flush();
        assert!(m.flush_due(3, Duration::ZERO), "profile changes wait");
    }
}
