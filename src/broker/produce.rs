//! A produce request: checked, its partition picked, its records encoded into one batch
//! (`Broker::prepare`), then appended (`Prepared::append`) and made durable if asked
//! (`Appended::durable`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{now_ms, partitioner, Broker, Durability, Partition};
use crate::error::{Error, Result};
use crate::log::{BatchBuilder, PendingBatch, ProducerInfo, Record, NO_PRODUCER};

/// A produce request in domain terms.
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: Option<u32>,
    pub records: Vec<Record>,
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

/// A checked, encoded batch and the partition it goes to.
pub struct Prepared {
    partition: Arc<Partition>,
    batch: PendingBatch,
    fsync: bool,
    time_ms: i64,
}

impl Prepared {
    /// Appends the batch (to the page cache).
    pub async fn append(self) -> Result<Appended> {
        let info = self.partition.append(self.batch).await?;
        let produced = Produced {
            partition: self.partition.id,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: self.time_ms,
        };
        Ok(Appended {
            produced,
            sync: self.fsync.then_some(self.partition),
        })
    }
}

/// A batch in the log, perhaps not yet on disk.
#[must_use = "the produce is not acknowledged until `durable` returns"]
pub struct Appended {
    produced: Produced,
    sync: Option<Arc<Partition>>,
}

impl Appended {
    /// True when the producer is still owed an fsync before the acknowledgement.
    pub fn needs_sync(&self) -> bool {
        self.sync.is_some()
    }

    /// Waits for the fsync that covers this batch, if the producer asked for one.
    pub async fn durable(self) -> Result<Produced> {
        if let Some(partition) = self.sync {
            partition.sync_below(self.produced.last_offset + 1).await?;
        }
        Ok(self.produced)
    }
}

/// The partition Kafka's default partitioner gives the request's keyed records, if it
/// has any. A request is one batch in one partition, so keys of different partitions are
/// refused rather than stored where a Kafka client would not look for them.
fn keyed_partition(records: &[Record], count: u32) -> Result<Option<u32>> {
    let mut keyed = records.iter().enumerate().filter_map(|(i, r)| {
        r.key
            .as_ref()
            .map(|key| (i, partitioner::partition_for_key(key, count)))
    });
    let Some((first, partition)) = keyed.next() else {
        return Ok(None);
    };
    match keyed.find(|&(_, p)| p != partition) {
        None => Ok(Some(partition)),
        Some((i, other)) => Err(Error::InvalidArgument(format!(
            "record {first}'s key belongs in partition {partition} and record {i}'s in \
             partition {other}; a request appends to one partition, so send them in separate \
             requests or set the partition"
        ))),
    }
}

impl Broker {
    /// Checks a request and encodes its batch, without touching the log: CPU work that a
    /// stream does for the next request while the previous one is being appended.
    pub fn prepare(&self, request: ProduceRequest) -> Result<Prepared> {
        self.check_running()?;
        let topic = self.topic(&request.topic)?;
        let config = topic.config();
        let count = topic.partitions.len() as u32;
        if request.records.is_empty() {
            return Err(Error::InvalidArgument(
                "a produce request needs at least one record".into(),
            ));
        }
        let partition = match request.partition {
            Some(p) => topic.partition(p)?.id,
            None => keyed_partition(&request.records, count)?
                .unwrap_or_else(|| topic.round_robin.fetch_add(1, Ordering::Relaxed) % count),
        };
        let now = now_ms();
        let mut builder = BatchBuilder::for_records(&request.records)
            .producer(request.producer.unwrap_or(NO_PRODUCER));
        for (i, record) in request.records.iter().enumerate() {
            let record_bytes = record.key.as_ref().map_or(0, |k| k.len())
                + record.value.len()
                + record
                    .headers
                    .iter()
                    .map(|h| h.name.len() + h.value.len())
                    .sum::<usize>();
            if record_bytes as u64 > config.max_message_bytes {
                return Err(Error::TooLarge {
                    what: "record",
                    size: record_bytes as u64,
                    limit: config.max_message_bytes,
                });
            }
            let timestamp = if record.timestamp_ms == 0 {
                now
            } else {
                record.timestamp_ms
            };
            let latest = now.saturating_add(config.message_timestamp_after_max_ms as i64);
            if timestamp > latest {
                return Err(Error::InvalidArgument(format!(
                    "record {i}: timestamp {timestamp} is {} ms past the server's clock; a topic accepts at most message.timestamp.after.max.ms = {} (set timestamp_ms to 0 for the server's time, or fix the producer's clock)",
                    timestamp - now,
                    config.message_timestamp_after_max_ms
                )));
            }
            // Large keys and values are referenced, not copied: they go from the request's
            // receive buffer to the page cache in the kernel's one copy.
            builder
                .push_with_timestamp(record, timestamp)
                .map_err(|e| match e {
                    Error::InvalidArgument(msg) => {
                        Error::InvalidArgument(format!("record {i}: {msg}"))
                    }
                    other => other,
                })?;
        }
        let fsync = request.durability.unwrap_or(config.durability) == Durability::Fsync;
        let target = Arc::clone(&topic.partitions[partition as usize]);
        Ok(Prepared {
            partition: target,
            batch: builder.build()?,
            fsync,
            time_ms: now,
        })
    }
}
