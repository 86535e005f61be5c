//! At most once per interval, over threads: for warnings that would otherwise repeat at
//! every request, and for wakeups that would otherwise storm.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::broker::now_ms;

#[derive(Debug)]
pub struct Throttle {
    /// Wall-clock ms of the last time it was due.
    last_ms: AtomicI64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// True at most once every `every_ms`, for one caller among those asking at once.
    pub fn due(&self, every_ms: i64) -> bool {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
