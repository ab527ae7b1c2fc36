//! One helper for the loops worth spreading over threads: the CPU-bound ones (segment
//! encoding, deletion rewrites, import parsing) on every core, and the reads of many segments
//! (a start's recent insert ids) several at a time; both keep their items' order.

use std::sync::Mutex;

/// Applies `f` to every item on up to one thread per core; results keep the input order.
pub fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    parallel_on(workers, items, f)
}

/// How many reads [`parallel_reads`] keeps in flight: a bucket's latency, not the cores,
/// bounds a loop of segment reads.
pub const READS_IN_FLIGHT: usize = 8;

/// Applies `f`, which mostly waits on storage, to every item on [`READS_IN_FLIGHT`]
/// threads; results keep the input order.
pub fn parallel_reads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    parallel_on(READS_IN_FLIGHT, items, f)
}

/// Applies `f` to every item on up to `workers` threads, for a loop whose items each hold
/// memory enough that the count in flight must be the caller's choice; results keep the
/// input order.
pub fn parallel_on<T: Send, R: Send>(
    workers: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if workers < 2 || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).next();
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(count))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    while let Some((i, item)) = next() {
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a parallel_map worker panicked"))
            .collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_visits_every_item() {
        let out = super::parallel_map((0..1000).collect(), |x: u64| x * 2);
        assert_eq!(out, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    }
}
