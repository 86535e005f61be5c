//! Opening and closing thousands of partitions at once, on threads of their own.
//!
//! Each partition's open after a crash, and each one's close, is a handful of fsyncs
//! (its segment, two indexes, a checkpoint written and renamed, its directory), and
//! nearly all of that time is waiting on the disk. One after another, 5,000 partitions
//! took 10-14 s to recover and as long to close (BENCHMARKS.md, "Thousands of
//! partitions: start and stop"). Side by side, the file system folds the syncs that wait
//! together into one journal commit, and the disk takes several flushes at a time.

use std::sync::Mutex;

/// Threads for `map`: enough to keep the disk's queue full while most of them wait on a
/// sync; each has a small stack and lives only while the work lasts.
pub const IO_THREADS: usize = 64;

/// `f` of every item, on up to `threads` scoped threads, in the items' order. A panic in
/// `f` is raised again here, once every thread has stopped.
pub fn map<T, R, F>(items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let total = items.len();
    let threads = threads.clamp(1, total.max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while let Some((i, item)) = next() {
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_unstable_by_key(|&(i, _)| i);
    debug_assert_eq!(done.len(), total);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Barrier, Mutex};

    #[test]
    fn every_item_once_in_order_on_several_threads() {
        // The first two items meet at a barrier: whoever takes item 0 waits there, so
        // another thread must take item 1.
        let both = Barrier::new(2);
        let seen = Mutex::new(HashSet::new());
        let out = map((0..1000u32).collect(), 8, |i| {
            if i < 2 {
                both.wait();
                seen.lock().unwrap().insert(std::thread::current().id());
            }
            i * 2
        });
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(map(Vec::<u32>::new(), 8, |i| i).is_empty());
        assert_eq!(map(vec![5], 0, |i| i + 1), vec![6]);
    }
}
