//! The memory a running task may hold: a count of bytes that the segments it is rewriting
//! reserve while their bytes are in memory, so that a task over days of any size, several
//! side by side, holds a bounded amount however many segments they have. A segment being
//! rewritten is held whole (its bytes checked against its checksum and copied from), with
//! its re-encoded parts and new object beside it until it is staged: about three times its
//! size for each byte reserved.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Bytes that may be reserved at once; a reservation waits until they are free.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Bytes reserved from a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Reserves `bytes`, waiting until they fit. A request larger than the whole budget
    /// waits until nothing else is reserved and then takes all of it: it runs alone rather
    /// than never.
    pub fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.limit);
        let mut used = self.used();
        while *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Reservation {
            budget: self,
            bytes,
        }
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        *self.used()
    }

    fn used(&self) -> MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.budget.used() -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_reservation_waits_until_its_bytes_are_given_back() {
        let budget = MemoryBudget::new(100);
        let first = budget.reserve(70);
        let second_in = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = budget.reserve(40);
                second_in.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!second_in.load(Ordering::SeqCst), "70 + 40 > 100: it waits");
            assert_eq!(budget.in_use(), 70);
            drop(first);
        });
        assert!(second_in.load(Ordering::SeqCst));
        assert_eq!(budget.in_use(), 0, "every reservation given back");
    }

    #[test]
    fn a_request_larger_than_the_budget_runs_alone() {
        let budget = MemoryBudget::new(100);
        let small = budget.reserve(10);
        let big_in = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _big = budget.reserve(1_000);
                assert_eq!(budget.in_use(), 100, "it takes the whole budget");
                big_in.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!big_in.load(Ordering::SeqCst), "it waits for the others");
            drop(small);
        });
        assert!(big_in.load(Ordering::SeqCst));
        assert_eq!(budget.in_use(), 0);
    }
}
