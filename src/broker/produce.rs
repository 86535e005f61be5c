//! A produce request: checked, its partition picked and its records encoded into one
//! batch by a `BatchWriter` (`Broker::begin_produce`), then appended
//! (`Prepared::append`) and made durable if asked (`Appended::durable`).
//!
//! The writer takes records one by one from whatever decoded them, so a request's
//! records never exist twice in memory: they go from the request's receive buffer into
//! the batch (large values by reference, keys copied), checked as they go.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::disk::DiskGuard;
use super::{now_ms, partitioner, Broker, Durability, Partition, Topic, TopicConfig};
use crate::error::{Error, Result};
use crate::log::batch::stored_header_len;
use crate::log::{BatchBuilder, PendingBatch, ProducerInfo, NO_PRODUCER};

/// Where a produce goes and how it is acknowledged.
#[derive(Debug, Clone)]
pub struct ProduceTarget {
    pub topic: String,
    /// `None`: by key (Kafka's partitioner), else round robin.
    pub partition: Option<u32>,
    /// `None`: the topic's default.
    pub durability: Option<Durability>,
    pub producer: Option<ProducerInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_append_time_ms: i64,
}

/// Bytes a record's headers take in its stored encoding: names, values and framing.
/// This is what `max.message.bytes` counts for headers, so that two million empty
/// headers weigh what they cost.
fn headers_len<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> (usize, usize) {
    headers.fold((0, 0), |(count, bytes), (name, value)| {
        (count + 1, bytes + stored_header_len(name, value))
    })
}

/// Builds the batch of one produce request, record by record.
pub struct BatchWriter {
    topic: Arc<Topic>,
    /// The topic's partitions when the batch began: its keys are hashed over this many,
    /// whatever partitions are added while it is built.
    partitions: Arc<Vec<Arc<Partition>>>,
    config: TopicConfig,
    target: ProduceTarget,
    /// The first keyed record's index and partition: the rest must agree.
    keyed: Option<(usize, u32)>,
    builder: BatchBuilder,
    pushed: usize,
    now: i64,
    max_headers: usize,
    disk: Arc<DiskGuard>,
}

impl Broker {
    /// Starts the batch of a produce request of `records` records that will copy about
    /// `copied` bytes: checks the topic and partition, and the request's size limits.
    pub fn begin_produce(
        &self,
        target: ProduceTarget,
        records: usize,
        copied: usize,
    ) -> Result<BatchWriter> {
        self.check_running()?;
        let topic = self.topic(&target.topic)?;
        self.begin_produce_to(topic, target, records, copied)
    }

    /// `begin_produce` to `topic` itself, rather than whatever topic has its name now
    /// (a publish checks and appends to the topics its exchange routed to).
    pub fn begin_produce_to(
        &self,
        topic: Arc<Topic>,
        target: ProduceTarget,
        records: usize,
        copied: usize,
    ) -> Result<BatchWriter> {
        self.check_running()?;
        self.disk.admit()?;
        let config = topic.config();
        self.begin_batch(topic, config, target, records, copied)
    }

    /// The batch of a publish to `topic` that a first pass checked under `config`
    /// (`BatchWriter::config`): checked again under the same configuration, and not
    /// held to the free-disk floor a second time, so that nothing that changed in
    /// between refuses it after other topics took the records.
    pub fn begin_produce_checked(
        &self,
        topic: Arc<Topic>,
        config: TopicConfig,
        target: ProduceTarget,
        records: usize,
        copied: usize,
    ) -> Result<BatchWriter> {
        self.check_running()?;
        self.begin_batch(topic, config, target, records, copied)
    }

    fn begin_batch(
        &self,
        topic: Arc<Topic>,
        config: TopicConfig,
        target: ProduceTarget,
        records: usize,
        copied: usize,
    ) -> Result<BatchWriter> {
        // One look at the list, kept for the batch: the partition asked for is checked
        // against the same list the batch is appended through.
        let partitions = topic.partitions();
        if let Some(p) = target.partition {
            Topic::partition_in(&topic.name, &partitions, p)?;
        }
        if let Some(producer) = &target.producer {
            if target.partition.is_none() {
                return Err(Error::InvalidArgument(
                    "a produce with a producer_id must set partition: sequences are numbered per partition".into(),
                ));
            }
            self.producer_ids.check(producer.id, producer.epoch)?;
        }
        if records == 0 {
            return Err(Error::InvalidArgument(
                "a produce request needs at least one record".into(),
            ));
        }
        let max = self.limits.max_records_per_request;
        if records > max {
            return Err(Error::InvalidArgument(format!(
                "{records} records in one request; this server takes at most {max} (max_records_per_request): send them in several requests"
            )));
        }
        let builder = BatchBuilder::for_count(records, copied)
            .producer(target.producer.unwrap_or(NO_PRODUCER));
        Ok(BatchWriter {
            config,
            topic,
            partitions,
            target,
            keyed: None,
            builder,
            pushed: 0,
            now: now_ms(),
            max_headers: self.limits.max_headers_per_record,
            disk: Arc::clone(&self.disk),
        })
    }
}

impl BatchWriter {
    /// Checks a record and adds it to the batch. `timestamp_ms` 0 means the server's
    /// time. A large value is referenced, not copied: it goes from the request's receive
    /// buffer to the page cache in the kernel's one copy. It is handed over rather than
    /// borrowed, so that keeping it touches no reference count (a clone and a drop of
    /// each record's handle were 7% of the server's samples at one request in flight);
    /// the key and headers, small as a rule, are copied.
    pub fn push<'a>(
        &mut self,
        key: Option<&[u8]>,
        value: Bytes,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        timestamp_ms: i64,
    ) -> Result<()> {
        let i = self.pushed;
        let in_record = |msg: String| Error::InvalidArgument(format!("record {i}: {msg}"));
        let (header_count, header_bytes) = headers_len(headers.clone());
        if header_count > self.max_headers {
            return Err(in_record(format!(
                "{header_count} headers; a record may have at most {} (max_headers_per_record)",
                self.max_headers
            )));
        }
        if key.is_none() && self.config.cleanup_policy.compacts() {
            return Err(in_record(format!(
                "topic {} is compacted (cleanup.policy = compact): every record needs a key",
                crate::error::quote(&self.topic.name)
            )));
        }
        let size = key.map_or(0, <[u8]>::len) + value.len() + header_bytes;
        if size as u64 > self.config.max_message_bytes {
            return Err(Error::TooLarge {
                what: "record (key + value + headers)",
                size: size as u64,
                limit: self.config.max_message_bytes,
            });
        }
        let timestamp = if timestamp_ms == 0 {
            self.now
        } else {
            timestamp_ms
        };
        let after_max = self.config.message_timestamp_after_max_ms;
        if timestamp > self.now.saturating_add(after_max as i64) {
            return Err(in_record(format!(
                "timestamp {timestamp} is {} ms past the server's clock; this topic accepts at most message.timestamp.after.max.ms = {after_max} (send 0 for the server's time, or fix the producer's clock)",
                timestamp - self.now
            )));
        }
        if let (Some(key), None) = (key, self.target.partition) {
            let count = self.partitions.len() as u32;
            let partition = partitioner::partition_for_key(key, count);
            match self.keyed {
                None => self.keyed = Some((i, partition)),
                Some((first, p)) if p != partition => {
                    return Err(Error::InvalidArgument(format!(
                        "record {first}'s key belongs in partition {p} and record {i}'s in \
                         partition {partition}; a request appends to one partition, so send \
                         them in separate requests or set the partition"
                    )))
                }
                Some(_) => {}
            }
        }
        self.builder
            .push_owned(key, value, headers, timestamp)
            .map_err(|e| match e {
                Error::InvalidArgument(msg) => in_record(msg),
                other => other,
            })?;
        self.pushed += 1;
        Ok(())
    }

    /// The topic's configuration the records are checked against.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// The partition the batch goes to: the one asked for, else the keyed records',
    /// else the next in turn. Picked once: the batch keeps it (`finish` uses it).
    pub fn pick_partition(&mut self) -> u32 {
        let topic = &self.topic;
        let partition = match (self.target.partition, self.keyed) {
            (Some(p), _) => p,
            (None, Some((_, p))) => p,
            (None, None) => {
                topic.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.len() as u32
            }
        };
        self.target.partition = Some(partition);
        partition
    }

    /// The finished batch and the partition it goes to (`pick_partition`).
    pub fn finish(mut self) -> Result<Prepared> {
        let partition = self.pick_partition();
        let durability = self.target.durability.unwrap_or(self.config.durability);
        Ok(Prepared {
            partition: Arc::clone(&self.partitions[partition as usize]),
            batch: self.builder.build()?,
            fsync: durability == Durability::Fsync,
            time_ms: self.now,
            disk: self.disk,
        })
    }
}

/// A checked, encoded batch and the partition it goes to.
pub struct Prepared {
    partition: Arc<Partition>,
    batch: PendingBatch,
    fsync: bool,
    time_ms: i64,
    disk: Arc<DiskGuard>,
}

impl Prepared {
    /// The encoded batch's size.
    pub fn len_bytes(&self) -> usize {
        self.batch.len_bytes()
    }

    /// Appends the batch (to the page cache).
    pub async fn append(self) -> Result<Appended> {
        self.append_then(None).await
    }

    /// Appends the batch without waking the partition's waiting readers: `owed` wakes
    /// them when announced or dropped. The records are readable at once; a reader
    /// asleep waiting for them sees them when woken.
    pub async fn append_unannounced(self, owed: &mut Unannounced) -> Result<Appended> {
        self.append_then(Some(owed)).await
    }

    async fn append_then(mut self, owed: Option<&mut Unannounced>) -> Result<Appended> {
        self.disk.wrote(self.batch.len_bytes() as u64);
        if self.fsync {
            self.batch.owe_sync();
        }
        let (info, epoch) = match owed {
            // The only await is an append on a blocking thread, which wakes the readers
            // itself: a caller that goes away during it owes nothing.
            Some(owed) => {
                let appended = self.partition.append_unannounced(self.batch).await?;
                owed.owe(&self.partition);
                appended
            }
            None => self.partition.append(self.batch).await?,
        };
        let produced = Produced {
            partition: self.partition.id,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: self.time_ms,
        };
        Ok(Appended {
            produced,
            sync: self.fsync.then_some((self.partition, epoch)),
            duplicate: info.duplicate,
        })
    }
}

/// Partitions appended to whose waiting readers have not been woken yet
/// (`Prepared::append_unannounced`). A burst of small appends can so wake each
/// subscription once, when the burst ends, rather than once for every append. The
/// wake-ups are made by `announce`, or by the drop: late, never lost.
#[derive(Default)]
pub struct Unannounced(Vec<Arc<Partition>>);

impl Unannounced {
    fn owe(&mut self, partition: &Arc<Partition>) {
        if !self.0.iter().any(|p| Arc::ptr_eq(p, partition)) {
            self.0.push(Arc::clone(partition));
        }
    }

    /// Wakes the readers of every partition appended to since the last call.
    pub fn announce(&mut self) {
        for partition in self.0.drain(..) {
            partition.wake_readers();
        }
    }
}

impl Drop for Unannounced {
    fn drop(&mut self) {
        self.announce();
    }
}

/// A batch in the log, perhaps not yet on disk.
#[must_use = "the produce is not acknowledged until `durable` returns"]
pub struct Appended {
    produced: Produced,
    /// The partition and the epoch of the log the batch went to, if an fsync is owed.
    sync: Option<(Arc<Partition>, u64)>,
    /// An idempotent producer's batch sent again: nothing was written.
    duplicate: bool,
}

impl Appended {
    /// True when the batch was one its idempotent producer had sent before: the log
    /// answered with the first one's offsets and wrote nothing.
    pub fn duplicate(&self) -> bool {
        self.duplicate
    }

    /// True when the producer is still owed an fsync before the acknowledgement.
    pub fn needs_sync(&self) -> bool {
        self.sync.is_some()
    }

    /// Waits for the fsync that covers this batch, if the producer asked for one.
    pub async fn durable(self) -> Result<Produced> {
        if let Some((partition, epoch)) = self.sync {
            partition
                .sync_below(self.produced.last_offset + 1, epoch)
                .await?;
        }
        Ok(self.produced)
    }
}
