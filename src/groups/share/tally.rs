//! Records held in share groups' windows over the whole server, against a cap
//! (`max_share_window_records`). A window holds a slot of 24 bytes for every offset
//! from its partition's first unfinished record to the last handed out, up to the
//! group's `max.in.flight` (at most 100,000), so each group bounds its own; but 1,000
//! active groups on topics of 1,024 partitions bounded nothing a server could hold
//! (hostile-client finding: about 3 MB a group and partition).
//!
//! Past the cap, a fetch hands out no record its window does not already hold: records
//! whose lock ended, released ones, and those waiting for a delivery time still go, and
//! windows shrink as their first records finish, making room again. Loads of groups
//! are never refused (their records may be owed acknowledgements), so a server started
//! with more than the cap holds what it read.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use crate::broker::now_ms;

#[derive(Debug)]
pub struct WindowTally {
    held: AtomicUsize,
    max: usize,
    /// When a fetch was last held back by the cap and said so, in wall-clock ms: the
    /// warning goes out at most once a minute.
    warned_ms: AtomicI64,
}

impl WindowTally {
    pub fn new(max: usize) -> WindowTally {
        WindowTally {
            held: AtomicUsize::new(0),
            max,
            warned_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Slots held now by every loaded group.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// How many more slots the windows may take.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.held())
    }

    /// A group's windows went from `before` slots to `after`.
    pub fn changed(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if after < before {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// A fetch of `group` found records past its window and no room for them: said
    /// once a minute, so that an operator learns why workers wait.
    pub fn held_back(&self, group: &str) {
        let now = now_ms();
        let last = self.warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                group = %group,
                held = self.held(),
                max = self.max,
                "share groups' windows hold max_share_window_records records: fetches hand out no new records until the groups' oldest records are acknowledged (raise max_share_window_records, or lower the groups' max.in.flight)"
            );
        }
    }
}
