//! Where the producer's task keeps its batches: those filling (one a partition) and each
//! partition's queue. What the task does for each record must not grow with the
//! partitions it has written to: it used to count the queued batches by walking every
//! queue once a record, and to copy every queue's key and walk every filling batch once
//! a turn of its loop. With 1,000 partitions that took the `Producer` from 0.8 s of
//! client CPU a GB to 2.1 (keyless records) and 15-19 (keyed ones, a record or so a
//! batch); BENCHMARKS.md has the figures after. What is left is a few walks of the
//! queues a turn, each reading them in place: with a record or so a batch over many
//! partitions, a turn for each reply, that is still most of the task's CPU.
//!
//! No I/O and no clock: callers pass `now` in.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::queue::{PartitionQueue, Queued};
use super::Batch;

/// A partition of a topic.
pub(super) type Key = (String, u32);

/// The batches being filled, at most one a partition, and the order they were started
/// in. Each one's linger ends a fixed time after its start, so they fall due in that
/// order too: the next deadline and the oldest batch are the first of the order.
#[derive(Default)]
pub(super) struct Filling {
    batches: BTreeMap<Key, Batch>,
    /// `Batch::seq` to the batch's key.
    order: BTreeMap<u64, Key>,
}

impl Filling {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Batch> {
        self.batches.get_mut(key)
    }

    /// Adds a new batch; its `seq` must be above every one added before.
    pub fn insert(&mut self, key: Key, batch: Batch) {
        debug_assert!(self
            .order
            .last_key_value()
            .is_none_or(|(&s, _)| s < batch.seq));
        self.order.insert(batch.seq, key.clone());
        self.batches.insert(key, batch);
    }

    pub fn remove(&mut self, key: &Key) -> Option<Batch> {
        let batch = self.batches.remove(key)?;
        self.order.remove(&batch.seq);
        Some(batch)
    }

    /// The batch started first.
    pub fn oldest(&self) -> Option<&Batch> {
        let (_, key) = self.order.first_key_value()?;
        self.batches.get(key)
    }

    /// Takes out the batches whose linger has ended at `now` (every one, with `all`),
    /// oldest first.
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<(Key, Batch)> {
        let mut due = Vec::new();
        while let Some(oldest) = self.oldest() {
            if !all && oldest.deadline > now {
                break;
            }
            let (_, key) = self.order.pop_first().expect("there is an oldest");
            let batch = self.batches.remove(&key).expect("ordered batches are kept");
            due.push((key, batch));
        }
        due
    }
}

/// Every partition's queue, kept while the producer lives (it holds the partition's
/// sequence numbering), and a count of the batches ever put in them.
#[derive(Default)]
pub(super) struct Queues {
    all: BTreeMap<Key, PartitionQueue>,
    pushed: u64,
}

impl Queues {
    /// Puts a batch at the back of its partition's queue.
    pub fn push(&mut self, key: Key, batch: Queued) {
        self.all.entry(key).or_default().batches.push_back(batch);
        self.pushed += 1;
    }

    /// Batches put in the queues so far: while only batches are added, the batches
    /// queued are those counted at the start plus the difference, without a walk.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    pub fn get(&self, key: &Key) -> Option<&PartitionQueue> {
        self.all.get(key)
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut PartitionQueue> {
        self.all.get_mut(key)
    }

    /// The queues that hold batches. A walk of every queue, but one that reads each in
    /// place: what is done for each of them must not look keys up or copy them.
    pub fn busy(&self) -> impl Iterator<Item = (&Key, &PartitionQueue)> {
        self.busy_after(None)
    }

    /// The queues that hold batches, past `after` in key order (all of them for None).
    pub fn busy_after(&self, after: Option<&Key>) -> impl Iterator<Item = (&Key, &PartitionQueue)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.all
            .range::<Key, _>((from, Unbounded))
            .filter(|(_, queue)| !queue.batches.is_empty())
    }

    /// Batches queued: waiting, unanswered, or answered and holding a place.
    pub fn batches(&self) -> usize {
        self.all.values().map(|queue| queue.batches.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::batch;
    use super::*;

    fn key(partition: u32) -> Key {
        ("t".to_string(), partition)
    }

    fn filling_batch(seq: u64, deadline: Instant) -> Batch {
        Batch {
            seq,
            deadline,
            ..batch(0).batch
        }
    }

    #[test]
    fn filling_batches_fall_due_in_the_order_they_were_started() {
        let start = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut filling = Filling::default();
        // Partitions out of key order, so that the key order is not the answer.
        for (seq, p) in [(1, 7), (2, 3), (3, 9), (4, 1)] {
            filling.insert(key(p), filling_batch(seq, start + ms(seq)));
        }
        assert_eq!(filling.oldest().unwrap().seq, 1);
        assert_eq!(filling.remove(&key(7)).unwrap().seq, 1, "the oldest, taken");
        assert_eq!(filling.oldest().unwrap().seq, 2);
        let due = filling.take_due(start + ms(3), false);
        assert_eq!(
            due.iter().map(|(k, b)| (k.1, b.seq)).collect::<Vec<_>>(),
            [(3, 2), (9, 3)]
        );
        assert_eq!(filling.oldest().unwrap().seq, 4);
        assert!(
            filling.take_due(start + ms(3), false).is_empty(),
            "not due yet"
        );
        filling.insert(key(3), filling_batch(5, start + ms(5)));
        let all = filling.take_due(start, true);
        assert_eq!(all.iter().map(|(_, b)| b.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(filling.is_empty() && filling.oldest().is_none());
    }

    #[test]
    fn queued_batches_are_counted_and_an_emptied_queue_keeps_its_numbering() {
        let mut queues = Queues::default();
        for p in 0..100 {
            queues.push(key(p), batch(1));
        }
        queues.push(key(5), batch(1));
        assert_eq!((queues.batches(), queues.pushed()), (101, 101));
        for p in (0..100).filter(|p| *p != 5) {
            let queue = queues.get_mut(&key(p)).unwrap();
            queue.numbering = Some((
                super::super::queue::Identity {
                    id: 1,
                    epoch: 0,
                    generation: 1,
                },
                1,
            ));
            queue.send(0, u64::from(p), None);
            queue.acknowledged(0);
        }
        assert_eq!((queues.batches(), queues.pushed()), (2, 101));
        let busy: Vec<_> = queues.busy().map(|(k, q)| (k.1, q.batches.len())).collect();
        assert_eq!(busy, [(5, 2)]);
        assert!(queues.get(&key(9)).unwrap().numbering.is_some(), "kept");
    }
}
