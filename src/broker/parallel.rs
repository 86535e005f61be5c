//! Opening and closing thousands of partitions at once, on threads of their own.
//!
//! Each partition's open after a crash, and each one's close, is a handful of fsyncs
//! (its segment, two indexes, a checkpoint written and renamed, its directory), and
//! most of that time is spent waiting on the disk and in the file system. One after
//! another, 5,000 partitions took 7-9 s to recover and 10-14 s to close (BENCHMARKS.md,
//! "Thousands of partitions: start and stop"); side by side, the waits overlap.

use std::sync::Mutex;

/// Threads for `map`: enough to keep the disk busy while most of them wait on a sync
/// (64 recovered 5,000 partitions faster than 16 or 4). They live only while the work
/// lasts.
pub const IO_THREADS: usize = 64;

/// The name `map`'s threads go by (in `top -H`, `/proc/PID/task/*/comm`).
pub const THREAD_NAME: &str = "strom-io";

/// `f` of every item, on up to `threads` scoped threads, in the items' order. A panic in
/// `f` is raised again here, once every thread has stopped. If the system refuses a
/// thread (a cap on tasks, say), the work goes on with those it gave, or on this one.
pub fn map<T, R, F>(items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let total = items.len();
    let threads = threads.clamp(1, total.max(1));
    let queue = Mutex::new(items.into_iter().enumerate());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let work = || {
        let mut out = Vec::new();
        while let Some((i, item)) = next() {
            out.push((i, f(item)));
        }
        out
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for _ in 1..threads {
            let builder = std::thread::Builder::new().name(THREAD_NAME.to_string());
            match builder.spawn_scoped(scope, work) {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    tracing::warn!(%err, started = workers.len(), "could not start a thread; going on with fewer");
                    break;
                }
            }
        }
        // This thread works too, and takes whatever the others leave.
        let mut done = work();
        for worker in workers {
            match worker.join() {
                Ok(out) => done.extend(out),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_unstable_by_key(|&(i, _)| i);
    debug_assert_eq!(done.len(), total);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    #[test]
    fn every_item_once_in_order_on_several_threads() {
        // Item 0 waits for item 1: whoever takes item 0 waits, so another thread must
        // take item 1 (run one after another, the wait times out and the test fails).
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let seen = Mutex::new(HashSet::new());
        let out = map((0..1000u32).collect(), 8, |i| {
            if i == 1 {
                seen.lock().unwrap().insert(std::thread::current().id());
                tx.send(()).unwrap();
            } else if i == 0 {
                seen.lock().unwrap().insert(std::thread::current().id());
                let waited = rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
                assert!(waited.is_ok(), "item 1 was not taken while item 0 ran");
            }
            i * 2
        });
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(map(Vec::<u32>::new(), 8, |i| i).is_empty());
        assert_eq!(map(vec![5], 0, |i| i + 1), vec![6]);
    }

    #[test]
    fn a_panic_in_one_item_is_raised_once_the_rest_are_done() {
        let ran = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map((0..100u32).collect(), 4, |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                assert_ne!(i, 50, "item 50");
            })
        }));
        assert!(caught.is_err());
        // The other threads took every other item.
        assert_eq!(ran.load(Ordering::Relaxed), 100);
    }
}
