//! Share groups' windows over the whole server, against a cap
//! (`max_share_window_records`). A window holds a slot of 24 bytes for every offset
//! from its partition's first unfinished record to the last handed out, up to the
//! group's `max.in.flight` (at most 100,000), so each group bounds its own; but 1,000
//! active groups on topics of 1,024 partitions bounded nothing a server could hold
//! (hostile-client finding: about 3 MB a group and partition).
//!
//! What is counted is the slots the windows have memory for, not only those in use,
//! so the cap bounds memory. A group unloaded (idle for a minute: no members, nothing
//! owed) gives its part back, so an abandoned group does not hold the cap; a fetch
//! loads it again only if its windows fit under the cap (`fits`), so groups cycled
//! through unloads and loads cannot take the room twice (review findings).
//!
//! Past the cap, a fetch hands out no record its window does not already hold: records
//! whose lock ended, released ones, and those waiting for a delivery time still go, and
//! windows shrink as their first records finish, making room again. A group holding
//! its fair share (the cap over the groups holding windows) may fill only nine tenths
//! of the cap, so one busy group cannot keep the others out for longer than its
//! records take: the last tenth is for the groups below their share, and fetches held
//! back are woken when windows shrink. Acknowledgements and administration load groups
//! whatever they hold, as does the server's start.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::broker::now_ms;
use crate::groups::throttle::Throttle;

/// How long a group refused a load counts for the others' fair share.
const WAITING_MS: i64 = 10_000;

#[derive(Debug)]
pub struct WindowTally {
    held: AtomicUsize,
    /// Groups holding windows (a part above 0): the fair share is the cap over these.
    groups: AtomicUsize,
    max: usize,
    /// Woken when windows shrank after a fetch was held back by the cap: fetches held
    /// back wait for it, not only for their own group's records. By the sweeper, at
    /// most four times a second: every window that shrinks waking every fetch held
    /// back, each to lock its group and look again, would cost more than the wait.
    pub freed: Notify,
    held_back: AtomicBool,
    freed_pending: AtomicBool,
    /// When a group's load was last refused for want of room (`fits`).
    refused_ms: AtomicI64,
    woken: Throttle,
    /// The warning that a fetch was held back by the cap goes out at most once a minute.
    warned: Throttle,
}

impl WindowTally {
    pub fn new(max: usize) -> WindowTally {
        WindowTally {
            held: AtomicUsize::new(0),
            groups: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
            held_back: AtomicBool::new(false),
            freed_pending: AtomicBool::new(false),
            refused_ms: AtomicI64::new(i64::MIN),
            woken: Throttle::new(),
            warned: Throttle::new(),
        }
    }

    /// Slots held now by every loaded group.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// How many more slots a group whose windows have `counted` may take: up to the cap
    /// below its fair share, up to nine tenths of it at or above.
    pub fn room_for(&self, counted: usize) -> usize {
        let limit = match self.below_share(counted) {
            true => self.max,
            false => self.over_limit(),
        };
        limit.saturating_sub(self.held())
    }

    /// Whether a group whose windows have `counted` may fill the room its windows have
    /// already: not at or above its fair share past nine tenths of the cap, so that its
    /// windows shrink as their records finish and give room back to the others.
    pub fn may_fill_spare(&self, counted: usize) -> bool {
        self.below_share(counted) || self.held() < self.over_limit()
    }

    /// Whether a group whose windows hold `part` may be loaded: it fits under the cap,
    /// or nothing else is held (a group larger than the cap alone still loads).
    /// A group refused is counted among those holding windows for a while (`WAITING_MS`),
    /// so that the others' fair share makes room for it: a group holding the whole cap
    /// alone would otherwise keep it out for as long as it stays busy (review finding).
    pub fn fits(&self, part: usize) -> bool {
        let held = self.held();
        let fits = part == 0 || held == 0 || held + part <= self.max;
        if !fits {
            self.refused_ms.store(now_ms(), Ordering::Relaxed);
        }
        fits
    }

    fn below_share(&self, counted: usize) -> bool {
        let waiting = now_ms().saturating_sub(self.refused_ms.load(Ordering::Relaxed)) < WAITING_MS;
        let groups = self.groups.load(Ordering::Relaxed) + usize::from(waiting);
        counted < self.max / groups.max(1)
    }

    fn over_limit(&self) -> usize {
        self.max - self.max / 10
    }

    /// A group's windows went from `before` slots to `after`.
    pub fn changed(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if after < before {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
            if self.held_back.load(Ordering::Relaxed) {
                self.freed_pending.store(true, Ordering::Relaxed);
            }
        }
        if before == 0 && after > 0 {
            self.groups.fetch_add(1, Ordering::Relaxed);
        } else if before > 0 && after == 0 {
            self.groups.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Wakes the fetches held back if windows shrank since, at most every 250 ms.
    pub fn wake_held_back(&self) {
        if self.freed_pending.load(Ordering::Relaxed) && self.woken.due(250) {
            self.freed_pending.store(false, Ordering::Relaxed);
            self.held_back.store(false, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    /// A fetch of `group` found records past its window and no room for them: said
    /// once a minute, so that an operator learns why workers wait.
    pub fn held_back(&self, group: &str) {
        self.held_back.store(true, Ordering::Relaxed);
        // Room freed between the caller's look and the flag would wake nobody: the
        // sweeper's next pass wakes the held back if there is room now.
        if self.held() < self.max {
            self.freed_pending.store(true, Ordering::Relaxed);
        }
        if self.warned.due(60_000) {
            tracing::warn!(
                group = %group,
                held = self.held(),
                max = self.max,
                "share groups' windows hold room for max_share_window_records records (or nine tenths of it, and this group its fair share): fetches hand out no new records until windows shrink as their oldest records are acknowledged (raise max_share_window_records, or lower the groups' max.in.flight)"
            );
        }
    }
}
