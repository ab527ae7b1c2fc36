//! One helper for the CPU-bound loops (segment encoding, deletion rewrites, import parsing):
//! map items on every core, keeping their order.

use std::sync::Mutex;

/// Applies `f` to every item on up to one thread per core; results keep the input order.
pub fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
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
