//! The open sealed segments of every log that shares this cache, bounded.
//!
//! A sealed segment is opened (read-only: its `.log` and indexes mapped, no descriptor
//! kept) the first time a reader needs it, and closed again when it falls out of this
//! least-recently-used cache. Without the bound, a reader that walks a long log from its
//! start leaves every segment mapped for good: three maps per segment, until the
//! process meets `vm.max_map_count` (65,530 by default) and every later map, roll and
//! read fails. A server shares one cache between all its partitions, so the bound is on
//! the whole process.
//!
//! Each segment opens once, however many readers ask at the same moment: the cache
//! holds a slot per segment, and the first reader opens it under the slot's own lock
//! while the others wait for that slot alone (not for the cache, and not for other
//! segments). A segment evicted while a reader still holds it stays open for that
//! reader; the `Bytes` it handed out keep their map alive on their own.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::producers::tally::ProducerTally;
use super::segment::Segment;
use crate::error::Result;

/// Sealed segments a cache keeps open by default: about 3,000 maps at most.
pub const DEFAULT_OPEN_SEGMENTS: usize = 1024;

/// One segment's place in the cache: empty until opened.
type Slot = Arc<Mutex<Option<Arc<Segment>>>>;

pub struct SegmentCache {
    /// Keyed by (log id, segment base offset, segment end). The end is in the key
    /// because compaction replaces a segment by one that may end later: a read planned
    /// before the swap opens the new file bounded by the old end, and that must not be
    /// what later reads find.
    slots: Mutex<LruCache<(u64, u64, u64), Slot>>,
    /// Logs that went away: a read planned before that runs after it opens its segment
    /// without caching it, so nothing is kept open for a log that no longer exists
    /// (for a deleted topic, that would pin its unlinked files).
    retired: Mutex<std::collections::HashSet<u64>>,
    next_log: AtomicU64,
    /// The idempotent producers of every log here. Not a segment matter, but the cache
    /// is what every log of a server shares, by construction.
    pub(super) producers: ProducerTally,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("open", &self.len())
            .finish()
    }
}

impl SegmentCache {
    /// A cache that keeps at most `capacity` sealed segments open (at least one), for
    /// logs with no cap on their producers together.
    pub fn new(capacity: usize) -> Arc<SegmentCache> {
        SegmentCache::with_producer_cap(capacity, usize::MAX)
    }

    /// A cache for logs that remember at most about `max_producers` idempotent
    /// producers together (see `producers/tally.rs`).
    pub fn with_producer_cap(capacity: usize, max_producers: usize) -> Arc<SegmentCache> {
        let capacity = NonZeroUsize::new(capacity.max(1)).expect("at least one");
        Arc::new(SegmentCache {
            slots: Mutex::new(LruCache::new(capacity)),
            retired: Mutex::default(),
            next_log: AtomicU64::new(0),
            producers: ProducerTally::new(max_producers),
        })
    }

    /// Idempotent producers remembered by the logs that share this cache.
    pub fn producers_held(&self) -> usize {
        self.producers.held()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, LruCache<(u64, u64, u64), Slot>> {
        // The map is consistent between calls (no code below panics while holding it).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new id for a log that will keep its segments here.
    pub(super) fn register(&self) -> u64 {
        self.next_log.fetch_add(1, Ordering::Relaxed)
    }

    /// Sealed segments open now (or being opened).
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open segment `base` of log `log`, opened with `open` if it is not cached.
    /// A failed open leaves an empty slot: the next reader tries again.
    pub(super) fn get_or_open(
        &self,
        log: u64,
        base: u64,
        end: u64,
        open: impl FnOnce() -> Result<Segment>,
    ) -> Result<Arc<Segment>> {
        let slot = {
            let mut slots = self.slots();
            if self.retired().contains(&log) {
                drop(slots);
                return open().map(Arc::new);
            }
            match slots.get(&(log, base, end)) {
                Some(slot) => Arc::clone(slot),
                None => {
                    let slot = Slot::default();
                    slots.push((log, base, end), Arc::clone(&slot));
                    slot
                }
            }
        };
        let mut segment = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = segment.as_ref() {
            return Ok(Arc::clone(open));
        }
        let opened = Arc::new(open()?);
        *segment = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// Closes a segment that is being deleted or rewritten (under any end).
    pub(super) fn forget(&self, log: u64, base: u64) {
        let mut slots = self.slots();
        let keys: Vec<_> = slots
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == log && k.1 == base)
            .collect();
        for key in keys {
            slots.pop(&key);
        }
    }

    fn retired(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every segment of a log that is going away, for good.
    pub(super) fn forget_log(&self, log: u64) {
        let mut slots = self.slots();
        self.retired().insert(log);
        let keys: Vec<_> = slots
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == log)
            .collect();
        for key in keys {
            slots.pop(&key);
        }
    }
}
