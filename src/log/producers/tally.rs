//! Idempotent producers remembered over every log of a server, against a cap: each
//! partition bounds its own (`LogConfig::max_producers`, 20,000), but a server with
//! thousands of partitions would then bound nothing. A client inventing producer ids
//! (any id below the next one handed out is taken at epoch 0) grew a server by
//! 256-310 MB with 1.28 million producer-partitions. Past the cap, a partition makes
//! room for a new producer by forgetting its own idlest one, as at its own cap; a
//! partition with none still takes one, so the tally exceeds the cap by at most one a
//! partition. A log rebuilt from its snapshot and batch headers (after a crash, where
//! producers evicted since the snapshot are back) keeps its idlest within what the cap
//! leaves, at least one.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct ProducerTally {
    held: AtomicUsize,
    max: usize,
}

impl ProducerTally {
    pub fn new(max: usize) -> ProducerTally {
        ProducerTally {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Producers remembered now, over every log that shares this tally.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.held() >= self.max
    }

    /// How many more the cap allows.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.held())
    }

    /// A log's producers went from `before` to `after`. Nothing is written when they
    /// did not change, as at nearly every append: every partition's appends would
    /// otherwise contend for this one cache line.
    pub fn changed(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if after < before {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}
