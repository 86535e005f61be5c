//! Idempotent producers remembered over every log of a server, against a cap: each
//! partition bounds its own (`LogConfig::max_producers`, 20,000), but a server with
//! thousands of partitions would then bound nothing. A client inventing producer ids
//! (any id below the next one handed out is taken at epoch 0) grew a server by
//! 256-310 MB with 1.28 million producer-partitions.
//!
//! Past the cap, which producer is forgotten for a new one decides whose retries are
//! written twice. A partition at or above its fair share (the cap over the partitions
//! holding producers) forgets its own idlest, as at its own cap. One below its share
//! takes the new producer and forgets none, up to a tenth past the cap over the server,
//! and the partitions above their share forget their idlest to make up for it at their
//! next append with a producer or their next upkeep. So a client flooding a few
//! partitions with invented ids costs those partitions their producers, not the active
//! producers of every other partition (review finding: with forgetting only ever
//! partition-local, one new producer anywhere pushed out an active one once the flood
//! had filled the cap). A partition with none still takes one. A log rebuilt from its
//! snapshot and batch headers (after a crash, where producers evicted since the snapshot
//! are back) keeps its idlest within what the cap leaves, at least one.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct ProducerTally {
    held: AtomicUsize,
    /// Logs holding at least one producer: the fair share is the cap over these.
    logs: AtomicUsize,
    max: usize,
}

impl ProducerTally {
    pub fn new(max: usize) -> ProducerTally {
        ProducerTally {
            held: AtomicUsize::new(0),
            logs: AtomicUsize::new(0),
            max,
        }
    }

    /// Producers remembered now, over every log that shares this tally.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
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
        if before == 0 && after > 0 {
            self.logs.fetch_add(1, Ordering::Relaxed);
        } else if before > 0 && after == 0 {
            self.logs.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The producers a log may hold before it forgets its own for new ones, past the
    /// cap: the cap shared evenly by the logs holding producers.
    fn fair_share(&self) -> usize {
        self.max / self.logs.load(Ordering::Relaxed).max(1)
    }

    /// The most producers a log holding `held` may keep as it takes a new one: its own
    /// cap `own`; past the server's cap, only what it holds if it has its fair share or
    /// the server is a tenth past the cap already (it then forgets its idlest).
    pub fn max_for(&self, held: usize, own: usize) -> usize {
        let total = self.held();
        let below_share =
            held < self.fair_share() && total < self.max.saturating_add(self.max / 10);
        if total < self.max || below_share {
            own
        } else {
            held.min(own)
        }
    }

    /// How many producers a log holding `held` forgets to bring the server back to its
    /// cap, if it holds more than its fair share: what others took past the cap.
    pub fn to_forget(&self, held: usize) -> usize {
        let over = self.held().saturating_sub(self.max);
        if over == 0 {
            return 0;
        }
        over.min(held.saturating_sub(self.fair_share()))
    }
}
