//! The broker: topics of partitions, each partition a `Log` with one writer, group
//! commit and long-poll wakeups. It knows nothing of gRPC: the `grpc` layer turns
//! requests into calls here and results into responses.
//!
//! On disk: `<data_dir>/topics/<topic>/topic.json` and `<data_dir>/topics/<topic>/<n>/`,
//! one log directory per partition.

pub mod partition;
pub mod partitioner;
pub mod topic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use partition::{Offsets, Partition, PartitionInfo};
pub use topic::{Durability, TopicConfig};

use crate::error::{Error, IoContext, Result};
use crate::log::files::sync_dir;
use crate::log::{BatchBuilder, PendingBatch, ProducerInfo, ReadBatches, Record, NO_PRODUCER};
use topic::{validate_name, TopicMetadata};

/// Limits that protect the server from requests it should not try to serve.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_partitions: u32,
    /// Largest Fetch or Subscribe message the server builds.
    pub max_fetch_bytes: usize,
    /// Longest a Fetch may wait for data.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_partitions: 1024,
            max_fetch_bytes: 16 << 20,
            max_wait: Duration::from_secs(30),
        }
    }
}

pub struct Topic {
    pub name: String,
    dir: PathBuf,
    pub partitions: Vec<Arc<Partition>>,
    config: RwLock<TopicConfig>,
    /// Next partition for records with neither key nor partition.
    round_robin: AtomicU32,
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| Error::PartitionNotFound {
                topic: self.name.clone(),
                partition: id,
                count: self.partitions.len() as u32,
            })
    }

    pub fn describe(&self) -> Result<TopicInfo> {
        let partitions = self
            .partitions
            .iter()
            .map(|p| p.describe())
            .collect::<Result<_>>()?;
        Ok(TopicInfo {
            name: self.name.clone(),
            config: self.config().to_map(),
            partitions,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

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

pub struct Broker {
    topics_dir: PathBuf,
    limits: Limits,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    shutdown: watch::Sender<bool>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens every topic under `data_dir`, recovering partitions that were not closed.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Broker> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).at(&topics_dir)?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).at(&topics_dir)? {
            let dir = entry.at(&topics_dir)?.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if !dir.join(topic::METADATA_FILE).exists() {
                // A create or delete that a crash interrupted: the metadata file is
                // written last on create and removed first on delete.
                tracing::warn!(dir = %dir.display(), "removing topic directory without topic.json");
                std::fs::remove_dir_all(&dir).at(&dir)?;
                continue;
            }
            let meta = TopicMetadata::read(&dir)?;
            topics.insert(name.clone(), Arc::new(Self::open_topic(&name, &dir, meta)?));
        }
        tracing::info!(topics = topics.len(), dir = %data_dir.display(), "broker opened");
        let (shutdown, _) = watch::channel(false);
        Ok(Broker {
            topics_dir,
            limits,
            topics: RwLock::new(topics),
            shutdown,
        })
    }

    fn open_topic(name: &str, dir: &Path, meta: TopicMetadata) -> Result<Topic> {
        let partitions = (0..meta.partitions)
            .map(|id| {
                Partition::open(
                    name,
                    id,
                    &dir.join(id.to_string()),
                    meta.config.log_config(),
                )
                .map(Arc::new)
            })
            .collect::<Result<_>>()?;
        Ok(Topic {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            partitions,
            config: RwLock::new(meta.config),
            round_robin: AtomicU32::new(0),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound {
                topic: name.to_string(),
            })
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        self.check_running()?;
        validate_name(name)?;
        let partitions = partitions.max(1);
        if partitions > self.limits.max_partitions {
            return Err(Error::InvalidArgument(format!(
                "{partitions} partitions asked; this server allows at most {} per topic",
                self.limits.max_partitions
            )));
        }
        let mut topic_config = TopicConfig::default();
        topic_config.apply(config)?;
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_string(),
            });
        }
        let dir = self.topics_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).at(&dir)?; // left by an interrupted create
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        let meta = TopicMetadata {
            partitions,
            config: topic_config,
        };
        let topic = Self::open_topic(name, &dir, meta.clone())?;
        meta.write(&dir)?; // last: its presence is what makes the topic exist
        sync_dir(&self.topics_dir)?;
        let info = topic.describe()?;
        topics.insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "topic created");
        Ok(info)
    }

    /// Removes the topic and its files. Readers still holding data keep it (the files are
    /// unlinked, not shrunk); new requests get NOT_FOUND at once.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_running()?;
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            topics.remove(name).ok_or_else(|| Error::TopicNotFound {
                topic: name.to_string(),
            })?
        };
        let meta = topic.dir.join(topic::METADATA_FILE);
        std::fs::remove_file(&meta).at(&meta)?; // first: a crash from here on completes the delete
        sync_dir(&topic.dir)?;
        std::fs::remove_dir_all(&topic.dir).at(&topic.dir)?;
        sync_dir(&self.topics_dir)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub fn list_topics(&self) -> Vec<String> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn alter_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        let topic = self.topic(name)?;
        let mut config = topic.config.write().unwrap_or_else(|e| e.into_inner());
        let mut updated = config.clone();
        updated.apply(changes)?;
        TopicMetadata {
            partitions: topic.partitions.len() as u32,
            config: updated.clone(),
        }
        .write(&topic.dir)?;
        for partition in &topic.partitions {
            partition.reconfigure(updated.log_config())?;
        }
        *config = updated;
        drop(config);
        topic.describe()
    }

    /// Validates the records, picks the partition, appends them as one batch and returns
    /// once they are as durable as asked.
    pub async fn produce(&self, request: ProduceRequest) -> Result<Produced> {
        self.append(request).await?.durable().await
    }

    /// The first half of `produce`: the batch is in the log (in the page cache) when this
    /// returns; `Appended::durable` waits for the fsync if one was asked for. A stream of
    /// requests appends in order and waits for durability concurrently.
    pub async fn append(&self, request: ProduceRequest) -> Result<Appended> {
        self.prepare(request)?.append().await
    }

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

    /// Reads from `offset`; if fewer than `min_bytes` are there, waits up to `max_wait`
    /// for the high watermark to move (woken by appends, not by polling).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
        min_bytes: usize,
    ) -> Result<(ReadBatches, Offsets)> {
        let partition = self.partition(topic, partition)?;
        let max_bytes = max_bytes.clamp(1, self.limits.max_fetch_bytes);
        let deadline = tokio::time::Instant::now() + max_wait.min(self.limits.max_wait);
        let mut moved = partition.watch(); // subscribed before reading: no lost wakeup
        let mut stopping = self.shutdown.subscribe();
        loop {
            let (read, offsets) = partition.read(offset, max_bytes)?;
            if read.size_bytes() >= min_bytes.max(1) || *stopping.borrow() {
                return Ok((read, offsets));
            }
            tokio::select! {
                changed = moved.changed() => if changed.is_err() { return Ok((read, offsets)) },
                _ = stopping.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok((read, offsets)),
            }
        }
    }

    /// A receiver that turns true when the broker starts shutting down.
    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn check_running(&self) -> Result<()> {
        if *self.shutdown.borrow() {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Periodic upkeep of every partition: sync page-cache appends (bounding crash
    /// recovery) and roll idle old segments. Runs until shutdown.
    pub async fn run_upkeep(self: Arc<Self>, every: Duration) {
        let mut stopping = self.shutting_down();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopping.changed() => return,
            }
            for partition in self.all_partitions() {
                if let Err(err) = partition.maintain(now_ms()).await {
                    tracing::error!(%err, "partition upkeep failed");
                }
            }
        }
    }

    /// Refuses new work and wakes waiting fetches and subscriptions so they finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Syncs and closes every partition (writing clean-shutdown markers). Call after
    /// the server has stopped, when no request holds a partition any more.
    pub fn close(self) -> Result<()> {
        self.begin_shutdown();
        let topics = self.topics.into_inner().unwrap_or_else(|e| e.into_inner());
        for topic in topics.into_values() {
            // Requests still holding a partition (none, once the server has stopped) get
            // their data synced, but that partition is not marked clean.
            let partitions = match Arc::try_unwrap(topic) {
                Ok(topic) => topic.partitions,
                Err(topic) => topic.partitions.clone(),
            };
            for partition in partitions {
                match Arc::try_unwrap(partition) {
                    Ok(partition) => partition.close()?,
                    Err(partition) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.id, "partition still in use at close; synced, not marked clean");
                        partition.sync_now()?;
                    }
                }
            }
        }
        Ok(())
    }
}
