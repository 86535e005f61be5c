//! Idempotent producers remembered over every log of a server, against a cap: each
//! partition bounds its own (`LogConfig::max_producers`, 20,000), but a server with
//! thousands of partitions would then bound nothing. A client inventing producer ids
//! (any id below the next one handed out is taken at epoch 0) grew a server by
//! 256-310 MB with 1.28 million producer-partitions.
//!
//! Past the cap, which producer is forgotten for a new one decides whose retries are
//! written twice. A partition at or above its fair share (the cap over the partitions
//! holding producers) forgets its own idlest, exactly one (at its own cap it forgets a
//! hundredth at once: `ProducerStates::make_room`). One below its share
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
    /// Producers being forgotten to make up for the cap (`claim_forget`).
    paying: AtomicUsize,
    max: usize,
}

impl ProducerTally {
    pub fn new(max: usize) -> ProducerTally {
        ProducerTally {
            held: AtomicUsize::new(0),
            logs: AtomicUsize::new(0),
            paying: AtomicUsize::new(0),
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
        self.count_log(before, after);
    }

    /// A log went from `before` producers to `after`: counted among the logs holding
    /// some, or no longer.
    fn count_log(&self, before: usize, after: usize) {
        if before == 0 && after > 0 {
            self.logs.fetch_add(1, Ordering::Relaxed);
        } else if before > 0 && after == 0 {
            self.logs.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A log rebuilt its producers (at open): from `before` it would hold `wanted`.
    /// Returns how many it keeps, which the tally now counts: within what the cap
    /// leaves, at least one. Taken in one step, because a start opens partitions side
    /// by side, and logs that each read the room and then added to the count would each
    /// take the same room (review finding).
    pub fn rebuilt(&self, before: usize, wanted: usize) -> usize {
        let mut held = self.held();
        let keep = loop {
            let room = self.max.saturating_sub(held) + before;
            let keep = wanted.min(room.max(1));
            let next = held.saturating_sub(before) + keep;
            match self
                .held
                .compare_exchange(held, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break keep,
                Err(now) => held = now,
            }
        };
        self.count_log(before, keep);
        keep
    }

    /// The producers a log may hold before it forgets its own for new ones, past the
    /// cap: the cap shared evenly by the logs holding producers.
    fn fair_share(&self) -> usize {
        // At least one: with a cap below the logs holding producers (0, say), a share of
        // none made every partition forget the producer it had just taken.
        (self.max / self.logs.load(Ordering::Relaxed).max(1)).max(1)
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
    /// cap, if it holds more than its fair share: what others took past the cap, less
    /// what other logs are forgetting at this moment (claimed here, so that logs paying
    /// at once do not each pay the whole). Hand them back with `paid` once the log has
    /// forgotten them and reported it.
    pub fn claim_forget(&self, held: usize) -> usize {
        let fair = self.fair_share();
        let mut paying = self.paying.load(Ordering::Relaxed);
        loop {
            let over = self.held().saturating_sub(self.max).saturating_sub(paying);
            let n = over.min(held.saturating_sub(fair));
            if n == 0 {
                return 0;
            }
            match self.paying.compare_exchange(
                paying,
                paying + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return n,
                Err(now) => paying = now,
            }
        }
    }

    pub fn paid(&self, n: usize) {
        self.paying.fetch_sub(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::ProducerTally;

    /// Two logs over their share paying at once pay what is over the cap once between
    /// them, not each the whole (review finding).
    #[test]
    fn logs_paying_at_once_share_what_is_owed() {
        let tally = ProducerTally::new(10);
        tally.changed(0, 8);
        tally.changed(0, 7); // 15 held, share 5 each
        assert_eq!(tally.claim_forget(8), 3);
        assert_eq!(tally.claim_forget(7), 2, "the rest");
        assert_eq!(tally.claim_forget(7), 0);
        // The first log forgot its three, and said so.
        tally.changed(8, 5);
        tally.paid(3);
        assert_eq!(tally.claim_forget(7), 0, "the second still pays its two");
        tally.changed(7, 5);
        tally.paid(2);
        assert_eq!(tally.held(), 10);
    }
}
