//! Records into batches: the partition each record goes to, the batch it fills, and
//! the partition's queue that a full batch (or one whose linger ran out) moves to.

use bytes::Bytes;
use tokio::time::Instant;
use tonic::Status;

use super::acks::{self, ManySender, Waiters};
use super::batches::Key;
use super::queue::Queued;
use super::worker::{bounded, Worker};
use super::{record_bytes, AckSender, Batch};
use crate::broker::partitioner::partition_for_key;
use crate::grpc::pb;

impl Worker {
    /// The topic's partition count: learnt from the server, and asked again once
    /// `metadata_max_age` old. If asking again fails, the count known is used for
    /// another `metadata_max_age` (a server away for a moment must not fail records
    /// that it would have taken once back, nor cost a DescribeTopic each).
    pub(super) async fn partitions_of(&mut self, topic: &str) -> Result<u32, Status> {
        let known = self.partition_counts.get(topic).copied();
        if let Some((n, learnt)) = known {
            if learnt.elapsed() < self.config.metadata_max_age {
                return Ok(n);
            }
        }
        self.asked_server = true;
        let mut admin = self.client.admin();
        let n = match bounded("DescribeTopic", admin.describe_topic(topic)).await {
            Ok(described) => (described.partitions.len() as u32).max(1),
            Err(status) => match known {
                Some((n, _)) if status.code() != tonic::Code::NotFound => {
                    tracing::debug!(%status, topic, "partition count not refreshed");
                    n
                }
                _ => return Err(status),
            },
        };
        self.partition_counts
            .insert(topic.to_string(), (n, Instant::now()));
        Ok(n)
    }

    /// The partition a record goes to: the one asked for, its key's, or the one the
    /// topic's keyless records stick to.
    async fn place(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&Bytes>,
    ) -> Result<u32, Status> {
        if let Some(p) = partition {
            return Ok(p);
        }
        let n = self.partitions_of(topic).await?;
        Ok(match key {
            Some(key) => partition_for_key(key, n),
            None => self.sticky_partition(topic, n),
        })
    }

    /// The partition the topic's keyless records stick to, of its `n`.
    fn sticky_partition(&mut self, topic: &str, n: u32) -> u32 {
        // Looked up before it is inserted: `entry` would take a copy of the topic's
        // name for every record.
        match self.sticky.get(topic) {
            Some(p) => p % n,
            None => {
                self.sticky.insert(topic.to_string(), 0);
                0
            }
        }
    }

    pub(super) async fn add(
        &mut self,
        mut topic: String,
        partition: Option<u32>,
        record: pb::Record,
        ack: AckSender,
    ) {
        match self.place(&topic, partition, record.key.as_ref()).await {
            Ok(p) => {
                // A keyless record placed by the sticky partition may move on with it.
                let sticky = (partition.is_none() && record.key.is_none())
                    .then(|| self.partition_counts.get(&topic).map_or(1, |(n, _)| *n));
                self.push(&mut topic, p, sticky, record, |w| w.push_one(ack));
            }
            Err(status) => {
                let _ = ack.send(Err(status));
            }
        }
    }

    pub(super) async fn add_many(
        &mut self,
        mut topic: String,
        partition: Option<u32>,
        records: Vec<pb::Record>,
        reply: ManySender,
    ) {
        if records.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let call = acks::call(records.len(), reply);
        // The partition count is looked up once a call and the sticky partition once a
        // batch, not each once a record as `place` does: two lookups by the topic's
        // name a record were about a quarter of `send_many`'s client CPU at 1 KB
        // records (0.52 against 0.38 s/GB, BENCHMARKS.md).
        let count = match partition {
            Some(_) => 1,
            None => match self.partitions_of(&topic).await {
                Ok(n) => n,
                Err(status) => return acks::fail_call(&call, status),
            },
        };
        let mut sticky = None;
        for (i, record) in records.into_iter().enumerate() {
            let p = match (partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, count),
                (None, None) => match sticky {
                    Some(p) => p,
                    None => *sticky.insert(self.sticky_partition(&topic, count)),
                },
            };
            let moves = (partition.is_none() && record.key.is_none()).then_some(count);
            if self.push(&mut topic, p, moves, record, |w| w.push_of(&call, i)) {
                sticky = None; // a batch went to its queue: the sticky partition may move
            }
        }
    }

    /// Adds a record to its partition's filling batch (`wait` adds who waits for it),
    /// and queues the batch once it is full (then true). A record that would take a
    /// batch with records in it past `batch_bytes` starts a new one, the other queued
    /// first: a batch may pass `batch_bytes` only by its one record. Adding first and
    /// checking after made a batch of 900 KB of records and then a 16 MB one, both
    /// within `max.message.bytes`, which the server refused whole as over its 16 MiB
    /// batch limit (a review found it).
    /// `sticky`: the record was placed by the sticky partition, of that many; if it
    /// does not fit there, it goes to the partition `sticky_for` finds instead.
    fn push(
        &mut self,
        topic: &mut String,
        partition: u32,
        sticky: Option<u32>,
        record: pb::Record,
        wait: impl FnOnce(&mut Waiters),
    ) -> bool {
        // The name is moved into the key for the lookup and back: a key of its own
        // would copy the topic's name for every record.
        let key = (std::mem::take(topic), partition);
        let bytes = record_bytes(&record);
        let (limit, most) = (self.config.batch_bytes, self.config.batch_records);
        let mut queued = false;
        // One lookup when the batch filling there has room, the common case.
        if let Some(batch) = self.filling.get_mut(&key) {
            if batch.has_room(bytes, limit) {
                batch.bytes += bytes;
                batch.records.push(record);
                wait(&mut batch.acks);
                let full = batch.bytes >= limit || batch.records.len() >= most;
                if full {
                    let batch = self.filling.remove(&key).expect("found above");
                    self.enqueue(key.clone(), batch);
                }
                *topic = key.0;
                return full;
            }
            let batch = self.filling.remove(&key).expect("found above");
            self.enqueue(key.clone(), batch);
            queued = true;
            if let Some(n) = sticky {
                // Queued, the batch moved the sticky partition on: the record follows.
                *topic = key.0;
                let next = self.sticky_for(topic, n, bytes);
                self.push(topic, next, None, record, wait);
                return true;
            }
        }
        self.batches_started += 1;
        let mut batch = Batch {
            seq: self.batches_started,
            topic: key.0.clone(),
            partition,
            records: Vec::new(),
            acks: Waiters::default(),
            bytes,
            deadline: Instant::now() + self.config.linger,
        };
        batch.records.push(record);
        wait(&mut batch.acks);
        let full = bytes >= limit || most <= 1;
        match full {
            true => self.enqueue(key.clone(), batch),
            false => self.filling.insert(key.clone(), batch),
        }
        *topic = key.0;
        full || queued
    }

    /// The partition for a keyless record of `bytes` among `n`: the sticky one, after
    /// each batch the record would overflow there is queued, which moves the sticky
    /// partition on (each partition tried once at most). Started on a partition whose
    /// batch was just queued, the record would wait there alone for its linger, and
    /// that batch would move the sticky partition again when it went (a review found
    /// both, the second through batches of records sent to an explicit partition).
    fn sticky_for(&mut self, topic: &mut String, n: u32, bytes: usize) -> u32 {
        let mut p = self.sticky_partition(topic, n);
        for _ in 0..n {
            if !self.seal_if_overflowing(topic, p, bytes) {
                break;
            }
            p = self.sticky_partition(topic, n);
        }
        p
    }

    /// Queues the batch filling in `topic`'s `partition` if a record of `bytes` would
    /// take it past `batch_bytes` (then true: a keyless batch moves the sticky
    /// partition on). A batch with no record yet takes any record.
    fn seal_if_overflowing(&mut self, topic: &mut String, partition: u32, bytes: usize) -> bool {
        let key = (std::mem::take(topic), partition);
        let limit = self.config.batch_bytes;
        let overflows = self
            .filling
            .get_mut(&key)
            .is_some_and(|batch| !batch.has_room(bytes, limit));
        if overflows {
            let batch = self.filling.remove(&key).expect("found above");
            self.enqueue(key.clone(), batch);
        }
        *topic = key.0;
        overflows
    }

    /// Moves batches whose linger has passed (all of them with `all`) to their queues.
    pub(super) fn seal_due(&mut self, all: bool) {
        for (key, batch) in self.filling.take_due(Instant::now(), all) {
            self.enqueue(key, batch);
        }
    }

    fn enqueue(&mut self, key: Key, batch: Batch) {
        if batch.records.first().is_some_and(|r| r.key.is_none()) {
            // The sticky partition moves on once its batch is sent.
            if let Some(p) = self.sticky.get_mut(&batch.topic) {
                *p = p.wrapping_add(1);
            }
        }
        self.queues.push(key, Queued::new(batch));
    }
}

#[cfg(test)]
mod tests {
    use super::super::ProducerConfig;
    use super::*;
    use crate::client::Client;

    /// A producer's task with batches of 1,000 bytes that wait a minute for more, and a
    /// server that is never asked (nothing listens on port 1).
    fn small_batches() -> Worker {
        let config = ProducerConfig {
            batch_bytes: 1000,
            linger: std::time::Duration::from_secs(60),
            ..ProducerConfig::default()
        };
        let room = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        Worker::new(Client::lazy("127.0.0.1:1"), config, room)
    }

    fn record(n: usize) -> pb::Record {
        pb::Record {
            value: vec![b'x'; n].into(),
            ..Default::default()
        }
    }

    /// A record that would take a batch past `batch_bytes` starts the next batch: the
    /// one filling goes first, so a batch passes the limit only by a record alone.
    #[tokio::test]
    async fn a_record_that_does_not_fit_the_filling_batch_starts_the_next() {
        let mut worker = small_batches();
        let mut acks = Vec::new();
        for n in [600, 600, 5000, 10] {
            let (ack, rx) = tokio::sync::oneshot::channel();
            worker.add("t".into(), Some(0), record(n), ack).await;
            acks.push(rx);
        }
        let queue = worker.queues.get_mut(&("t".to_string(), 0)).unwrap();
        let sizes: Vec<usize> = queue
            .batches
            .iter()
            .map(|q| q.batch.records.len())
            .collect();
        // 600 | 600 | 5000 alone (over the limit by itself); 10 still filling.
        assert_eq!(sizes, [1, 1, 1]);
        assert_eq!(worker.filling.oldest().unwrap().records.len(), 1);
    }

    /// A keyless record that does not fit its sticky partition's batch goes with the
    /// sticky partition to the next one, as the full batch moves it on: started on the
    /// old partition, it waited there alone for its linger, and each such batch moved
    /// the sticky partition again when it went (a review found it).
    #[tokio::test]
    async fn a_keyless_record_that_does_not_fit_moves_on_with_the_sticky_partition() {
        let mut worker = small_batches();
        let now = tokio::time::Instant::now();
        worker.partition_counts.insert("t".into(), (3, now));
        let record = record(600);
        for _ in 0..3 {
            let (ack, _rx) = tokio::sync::oneshot::channel();
            worker.add("t".into(), None, record.clone(), ack).await;
        }
        let (many, _rx) = tokio::sync::oneshot::channel();
        worker
            .add_many("t".into(), None, vec![record.clone(), record], many)
            .await;
        // One record a batch, each on the next partition: 0, 1 and 2 queued, 0 again
        // (from `add_many`) queued, 1 filling; none left alone behind its partition.
        let queued: Vec<(u32, usize)> = worker
            .queues
            .busy()
            .flat_map(|((_, p), q)| q.batches.iter().map(move |b| (*p, b.batch.records.len())))
            .collect();
        assert_eq!(queued, [(0, 1), (0, 1), (1, 1), (2, 1)]);
        let filling = worker.filling.oldest().unwrap();
        assert_eq!((filling.partition, filling.records.len()), (1, 1));
    }

    /// A partition count past its age that cannot be asked again (the server away) is
    /// used as it is, for another age: the record is placed, not failed, and the next
    /// records do not ask again each (a review found both).
    #[tokio::test]
    async fn an_old_partition_count_stands_while_the_server_cannot_be_asked() {
        let mut worker = small_batches();
        let long_ago = Instant::now() - worker.config.metadata_max_age * 2;
        worker.partition_counts.insert("t".into(), (3, long_ago));
        assert_eq!(worker.partitions_of("t").await.unwrap(), 3);
        let (_, learnt) = worker.partition_counts["t"];
        assert!(
            learnt.elapsed() < worker.config.metadata_max_age,
            "not asked again at once"
        );
        // A topic never learnt still fails, as before.
        assert!(worker.partitions_of("u").await.is_err());
    }

    /// A keyless record moves past every sticky partition whose batch it would
    /// overflow, also one filled by records sent to that partition by number: it was
    /// left alone on the second (a review found it).
    #[tokio::test]
    async fn a_keyless_record_passes_every_batch_it_would_overflow() {
        let mut worker = small_batches();
        let now = tokio::time::Instant::now();
        worker.partition_counts.insert("t".into(), (3, now));
        for partition in [Some(1), None, None] {
            let (ack, _rx) = tokio::sync::oneshot::channel();
            worker.add("t".into(), partition, record(600), ack).await;
        }
        let queued: Vec<u32> = worker.queues.busy().map(|((_, p), _)| *p).collect();
        assert_eq!(queued, [0, 1], "both full batches queued");
        let filling = worker.filling.oldest().unwrap();
        assert_eq!((filling.partition, filling.records.len()), (2, 1));
    }
}
