//! Idempotent producers: what one partition remembers of each producer that writes to it,
//! so that a retried batch is written once and a producer's batches stay in order.
//!
//! `ProducerStates` is a state machine without I/O or clock (`now_ms` is an argument):
//! `check` says whether a batch is new, a retry of one of the producer's last
//! `KEPT_BATCHES` batches (answered with that batch's offsets, nothing written), or
//! refused (an older epoch, a sequence gap); `record` remembers a batch once it is
//! appended. The rules are Kafka's (KIP-98, with KIP-360's acceptance of any sequence
//! from a producer the partition has no state for, so a producer forgotten by expiry
//! or retention can go on). The state is saved in snapshots at each roll and at a clean
//! close (`snapshot.rs`) and rebuilt from the batch headers after the newest snapshot
//! (`rebuild.rs`).

use std::collections::{HashMap, VecDeque};

use super::format::ProducerInfo;
use crate::error::{Error, Result};

pub mod rebuild;
pub mod snapshot;
pub mod tally;
#[cfg(test)]
mod tests;

/// Batches of each producer a partition can answer a retry of: a producer has at most
/// this many requests in flight per partition.
pub const KEPT_BATCHES: usize = 5;

/// Sequences run from 0 to `i32::MAX` and then wrap to 0, as Kafka's: at a million
/// records a second, one partition of one producer wraps after about 36 minutes.
const SEQUENCE_SPAN: i64 = 1 << 31;

/// The sequence `records` records after `first`: the next batch's first sequence.
/// Producers number their batches with it, so client and server wrap alike.
pub fn sequence_after(first: i32, records: u64) -> i32 {
    ((i64::from(first) + (records % SEQUENCE_SPAN as u64) as i64) % SEQUENCE_SPAN) as i32
}

/// The last sequence of a batch of `records` records starting at `first`.
pub fn last_sequence(first: i32, records: u32) -> i32 {
    sequence_after(first, u64::from(records).saturating_sub(1))
}

fn next_sequence(last: i32) -> i32 {
    sequence_after(last, 1)
}

/// Where one batch of a producer went: its sequences and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// What a partition keeps of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last batches, oldest first; at most `KEPT_BATCHES`.
    pub batches: VecDeque<BatchSeq>,
    /// When the producer last appended (server time, ms): expiry counts from it.
    pub last_seen_ms: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it (and `record` it).
    New,
    /// A retry of this batch, already in the log: answer with its offsets.
    Duplicate(BatchSeq),
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&id)
    }

    /// Every producer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(&id, e)| (id, e))
    }

    pub(super) fn insert(&mut self, id: i64, entry: ProducerEntry) {
        self.producers.insert(id, entry);
    }

    /// Whether a batch of `records` records from `p` is to be appended, is a retry of
    /// one already appended, or is refused.
    pub fn check(&self, p: &ProducerInfo, records: u32) -> Result<Verdict> {
        if p.id < 0 {
            return Ok(Verdict::New);
        }
        if records == 0 {
            return Err(Error::InvalidArgument(
                "a batch needs at least one record".into(),
            ));
        }
        if p.epoch < 0 || p.base_sequence < 0 {
            return Err(Error::InvalidArgument(format!(
                "producer {} sent epoch {} and sequence {}: both must be 0 or more",
                p.id, p.epoch, p.base_sequence
            )));
        }
        let Some(entry) = self.producers.get(&p.id) else {
            return Ok(Verdict::New);
        };
        if p.epoch < entry.epoch {
            return Err(Error::FailedPrecondition(format!(
                "producer {} epoch {} is fenced: epoch {} of the same producer has written here since \
                 (another instance called InitProducer with its name); this instance must stop",
                p.id, p.epoch, entry.epoch
            )));
        }
        let last = last_sequence(p.base_sequence, records);
        if p.epoch > entry.epoch {
            if p.base_sequence != 0 {
                return Err(out_of_order(p, 0, "a new epoch starts at sequence 0"));
            }
            return Ok(Verdict::New);
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == p.base_sequence)
        {
            if b.last_seq == last {
                return Ok(Verdict::Duplicate(*b));
            }
            return Err(Error::InvalidArgument(format!(
                "producer {} resent sequence {} with {records} records, but the batch written with that \
                 sequence had {}: a retry must resend exactly the records of the first attempt",
                p.id,
                p.base_sequence,
                i64::from(b.last_seq) - i64::from(b.first_seq) + 1 + if b.last_seq < b.first_seq { SEQUENCE_SPAN } else { 0 }
            )));
        }
        let Some(newest) = entry.batches.back() else {
            return Ok(Verdict::New);
        };
        let expected = next_sequence(newest.last_seq);
        if p.base_sequence == expected {
            return Ok(Verdict::New);
        }
        let behind = (i64::from(expected) - i64::from(p.base_sequence)).rem_euclid(SEQUENCE_SPAN);
        if behind <= SEQUENCE_SPAN / 2 {
            return Err(out_of_order(
                p,
                expected,
                "that sequence is older than the last five batches this partition remembers: \
                 it was most likely written already, so do not send it again",
            ));
        }
        Err(out_of_order(
            p,
            expected,
            "records are missing before it: resend the batches from the expected sequence on, in order",
        ))
    }

    /// Remembers a batch appended at `base_offset` (or read back from the log). A
    /// partition remembers at most `max_producers`: a new one past that makes it forget
    /// the producer that appended least recently, whose next batch is then taken at any
    /// sequence. (Refusing new producers instead would let one client that asks for ids
    /// in a loop lock every other idempotent producer out of the partition for a day.)
    /// At the partition's own cap, `make_room` first forgets more at once.
    pub fn record(
        &mut self,
        p: &ProducerInfo,
        records: u32,
        base_offset: u64,
        now_ms: i64,
        max_producers: usize,
    ) {
        if p.id < 0 || records == 0 {
            return;
        }
        if !self.producers.contains_key(&p.id) && self.producers.len() >= max_producers.max(1) {
            let idlest = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(&id, _)| id);
            if let Some(id) = idlest {
                self.producers.remove(&id);
            }
        }
        let entry = self.producers.entry(p.id).or_insert_with(|| ProducerEntry {
            epoch: p.epoch,
            batches: VecDeque::with_capacity(KEPT_BATCHES),
            last_seen_ms: now_ms,
        });
        if p.epoch != entry.epoch {
            entry.epoch = p.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == KEPT_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSeq {
            first_seq: p.base_sequence,
            last_seq: last_sequence(p.base_sequence, records),
            first_offset: base_offset,
            last_offset: base_offset + u64::from(records) - 1,
        });
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
    }

    /// Before a batch of producer `id` is recorded at the partition's own cap `cap`: if
    /// `id` is new and there is no room, forgets the idlest hundredth at once (at least
    /// one). Finding the idlest scans every producer, under the partition's lock, and
    /// one at a time that scan ran at every new producer's append (52 us at 20,000
    /// producers, which a client inventing ids made every append of the partition wait
    /// for). Not under the server's cap (`tally.rs`), whose limit is the partition's
    /// count itself: there a new producer takes exactly one's place, or the partition
    /// would shrink by a hundredth at each.
    pub fn make_room(&mut self, id: i64, cap: usize) {
        let cap = cap.max(1);
        if self.producers.len() >= cap && !self.producers.contains_key(&id) {
            self.keep_at_most(cap - (cap / 100).max(1));
        }
    }

    /// Forgets the idlest producers until at most `max` are left.
    pub fn keep_at_most(&mut self, max: usize) {
        let Some(excess) = self.producers.len().checked_sub(max).filter(|&n| n > 0) else {
            return;
        };
        let mut by_age: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(&id, e)| (e.last_seen_ms, id))
            .collect();
        // The `excess` idlest first, in linear time: this runs at appends when a
        // partition makes up for producers taken past the server's cap.
        if excess < by_age.len() {
            by_age.select_nth_unstable(excess);
        }
        for (_, id) in &by_age[..excess] {
            self.producers.remove(id);
        }
    }

    /// Forgets producers that have not appended for `after_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, after_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_seen_ms) < after_ms);
        before - self.producers.len()
    }

    /// Forgets the batches below `start` (deleted by retention or DeleteRecords), and the
    /// producers left with none, as Kafka does.
    pub fn trim_below(&mut self, start: u64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset >= start);
            !e.batches.is_empty()
        });
    }
}

fn out_of_order(p: &ProducerInfo, expected: i32, why: &str) -> Error {
    Error::FailedPrecondition(format!(
        "out of order sequence from producer {} epoch {}: expected sequence {expected}, got {}; {why}",
        p.id, p.epoch, p.base_sequence
    ))
}
