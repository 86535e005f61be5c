//! The batches of one partition that wait for an acknowledgement, in the order they are
//! to be appended, and the rules that keep an idempotent producer's batches in order:
//!
//! - A batch gets its sequence when it is first sent, so sequences follow the queue.
//! - Batches are sent in queue order, and only the first `limit` of the queue: an
//!   acknowledged batch stays in the queue (its records answered) until every batch
//!   before it is acknowledged too. The server remembers five batches of a producer per
//!   partition, and answers a ProduceStream's durable requests in the order their
//!   fsyncs end, not the order sent: so it is "no more than five batches from the
//!   oldest unanswered one on", not "five unanswered", that keeps every retry within
//!   what the server remembers. (The crash test found that: an unanswered batch whose
//!   later neighbours were answered, sent on and appended fell out of the five.)
//! - A batch that failed in a way worth retrying goes back to waiting, in its place,
//!   and the partition pauses for a backoff; the server refuses any batch that would
//!   leave a gap, so a later batch sent before an earlier one's retry is refused, comes
//!   back here and is sent again after it. Order cannot be lost, only retried.
//!
//! No I/O and no clock: the worker passes `now` in.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::Batch;
use crate::log::producers::sequence_after;

/// A producer identity from InitProducer, and which of the producer's identities it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub id: i64,
    pub epoch: i16,
    pub generation: u64,
}

/// A batch in the queue: waiting (sent = None) or sent under a correlation id.
impl Queued {
    /// A batch waiting to be sent for the first time.
    pub fn new(batch: Batch) -> Queued {
        Queued {
            batch,
            numbered: None,
            sent: None,
            acked: false,
            attempts: 0,
            enqueued: Instant::now(),
            last_error: None,
        }
    }
}

pub struct Queued {
    pub batch: Batch,
    /// Identity and sequence, fixed at the first send (None: not idempotent).
    pub numbered: Option<(Identity, i32)>,
    pub sent: Option<u64>,
    /// Acknowledged: kept only as a place in the window until the batches before it are.
    pub acked: bool,
    pub attempts: u32,
    pub enqueued: Instant,
    /// Why the last attempt failed, for the error if the batch times out.
    pub last_error: Option<tonic::Status>,
}

#[derive(Default)]
pub struct PartitionQueue {
    pub batches: VecDeque<Queued>,
    /// Identity the partition's sequences count under, and the next sequence.
    pub numbering: Option<(Identity, i32)>,
    /// No batch is sent before this (a retry's backoff).
    pub paused_until: Option<Instant>,
    /// The generation of the identity under which a batch of this partition was last
    /// acknowledged: the server knows the producer here.
    pub confirmed: Option<u64>,
}

impl PartitionQueue {
    /// Batch `i` was acknowledged: it stays as a placeholder until those before it are.
    pub fn acknowledged(&mut self, i: usize) {
        if let Some((who, _)) = self.batches[i].numbered {
            self.confirmed = Some(who.generation);
        }
        self.batches[i].acked = true;
        self.batches[i].sent = None;
        self.drop_answered_front();
        // Idle, the partition may forget the producer (expiry, a full table): the next
        // batch goes alone again until it is acknowledged.
        if self.batches.is_empty() {
            self.confirmed = None;
        }
    }

    /// Acknowledged batches at the front leave: no batch before them is waiting any more.
    pub fn drop_answered_front(&mut self) {
        while self.batches.front().is_some_and(|q| q.acked) {
            self.batches.pop_front();
        }
    }

    /// The index of the next batch to send, if one may go now: the first waiting batch,
    /// when fewer than `limit` are unanswered, the partition is not pausing, and (for
    /// an idempotent producer) no batch numbered under an identity older than
    /// `generation` (the one a batch numbered now would get) remains, so a new
    /// identity's sequence 0 never overtakes an old identity's retry.
    pub fn next_to_send(&self, now: Instant, limit: usize, generation: u64) -> Option<usize> {
        if self.paused_until.is_some_and(|t| t > now) {
            return None;
        }
        let i = self
            .batches
            .iter()
            .position(|q| q.sent.is_none() && !q.acked)?;
        if i >= limit {
            return None;
        }
        let older = |q: &Queued| {
            q.numbered
                .is_some_and(|(who, _)| who.generation != generation)
        };
        if self.batches[i].numbered.is_none() && self.batches.iter().any(older) {
            return None;
        }
        Some(i)
    }

    /// Marks batch `i` sent as `correlation` and returns its identity and sequence,
    /// numbering it under `identity` if this is its first send.
    pub fn send(
        &mut self,
        i: usize,
        correlation: u64,
        identity: Option<Identity>,
    ) -> Option<(Identity, i32)> {
        if self.batches[i].numbered.is_none() {
            if let Some(identity) = identity {
                let seq = match self.numbering {
                    Some((current, seq)) if current.generation == identity.generation => seq,
                    _ => 0,
                };
                let records = self.batches[i].batch.records.len();
                self.numbering = Some((identity, sequence_after(seq, records as u64)));
                self.batches[i].numbered = Some((identity, seq));
            }
        }
        self.batches[i].sent = Some(correlation);
        self.batches[i].numbered
    }

    pub fn position(&self, correlation: u64) -> Option<usize> {
        self.batches
            .iter()
            .position(|q| q.sent == Some(correlation))
    }

    /// A batch to send again: back to waiting, in its place.
    pub fn requeue(&mut self, i: usize) {
        self.batches[i].sent = None;
    }

    /// True when a batch before `i` failed and waits to be sent again: a refusal of
    /// batch `i` as out of order is then the expected echo of that failure, not an
    /// error of its own.
    pub fn has_earlier(&self, i: usize) -> bool {
        self.batches
            .iter()
            .take(i)
            .any(|q| !q.acked && (q.sent.is_none() || q.attempts > 0))
    }
}

/// A queued batch of `records` empty records to partition 0 of topic `t`, for tests.
#[cfg(test)]
pub(super) fn batch(records: usize) -> Queued {
    Queued::new(Batch {
        seq: 0,
        topic: "t".into(),
        partition: 0,
        records: vec![crate::grpc::pb::Record::default(); records],
        acks: Default::default(),
        bytes: 0,
        deadline: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(generation: u64) -> Option<Identity> {
        Some(Identity {
            id: 7,
            epoch: 0,
            generation,
        })
    }

    #[test]
    fn the_window_counts_answered_batches_behind_an_unanswered_one() {
        let now = Instant::now();
        let mut q = PartitionQueue::default();
        for _ in 0..8 {
            q.batches.push_back(batch(3));
        }
        for i in 0..5 {
            assert_eq!(q.next_to_send(now, 5, 1), Some(i));
            q.send(i, i as u64, who(1));
        }
        assert_eq!(q.next_to_send(now, 5, 1), None, "five unanswered");
        // Batches 1..5 answered, 0 not: still no room, or batch 5 could push batch 0 out
        // of the five the server remembers.
        for i in 1..5 {
            q.acknowledged(i);
        }
        assert_eq!(q.next_to_send(now, 5, 1), None);
        q.acknowledged(0);
        assert_eq!(
            q.batches.len(),
            3,
            "answered batches leave once those before them have"
        );
        assert_eq!(q.next_to_send(now, 5, 1), Some(0));
        // Sequences follow the queue: 5 batches of 3 records went before.
        assert_eq!(q.send(0, 9, who(1)).unwrap().1, 15);
    }

    #[test]
    fn a_failed_batch_goes_first_again_and_later_refusals_are_its_echo() {
        let now = Instant::now();
        let mut q = PartitionQueue::default();
        for i in 0..3 {
            q.batches.push_back(batch(1));
            q.send(i, i as u64, who(1));
        }
        q.requeue(0);
        assert!(q.has_earlier(2) && !q.has_earlier(0));
        assert_eq!(q.next_to_send(now, 5, 1), Some(0));
        q.paused_until = Some(now + std::time::Duration::from_secs(1));
        assert_eq!(q.next_to_send(now, 5, 1), None, "pausing");
        q.paused_until = None;
        assert_eq!(q.send(0, 10, who(1)).unwrap().1, 0, "its sequence is kept");
    }

    #[test]
    fn a_new_identity_waits_until_the_old_one_has_no_batch_left() {
        let now = Instant::now();
        let mut q = PartitionQueue::default();
        q.batches.push_back(batch(2));
        q.batches.push_back(batch(2));
        q.send(0, 0, who(1));
        // The identity was given up (generation 2 next): the unnumbered batch waits.
        assert_eq!(q.next_to_send(now, 5, 2), None);
        q.acknowledged(0);
        assert_eq!(q.next_to_send(now, 5, 2), Some(0));
        assert_eq!(
            q.send(0, 1, who(2)).unwrap(),
            (who(2).unwrap(), 0),
            "numbered from 0"
        );
    }
}
