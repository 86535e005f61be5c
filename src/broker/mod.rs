//! The broker: topics of partitions, each partition a `Log` with one writer, group
//! commit and long-poll wakeups. It knows nothing of gRPC: the `grpc` layer turns
//! requests into calls here and results into responses.
//!
//! - `data_dir`: the directory's lock, layout version and paths; `open`: taking it and
//!   opening its topics at start (every partition side by side, `parallel`, as `close`
//!   closes them); `limits`: what a request may ask.
//! - `topic`: names, configuration, `topic.json`; `partition`: one partition's log and
//!   its waits; `produce`: checking and encoding a produce request; `partitioner`:
//!   Kafka's key hashing; `admin`: creating, deleting and altering topics;
//!   `add_partitions`: adding partitions to one.
//!
//! File work (creating a topic's partitions, deleting them) runs on blocking threads and
//! outside the lock of the topics map, so a large create never holds up produces to
//! other topics.

mod add_partitions;
mod admin;
mod cleaner;
pub mod data_dir;
pub mod disk;
pub mod exchanges;
mod limits;
mod open;
pub mod page;
mod parallel;
pub mod partition;
pub mod partitioner;
mod produce;
pub mod producer_ids;
pub mod topic;
mod topic_config;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use cleaner::max_map_keys;
pub use data_dir::DataDir;
pub use disk::DiskFloor;
pub use limits::Limits;
pub use open::Opening;
pub use partition::{Offsets, Partition, PartitionInfo};
pub use produce::{Appended, BatchWriter, Prepared, ProduceTarget, Produced, Unannounced};
use topic::TopicSettings;
pub use topic::{CleanupPolicy, Durability, Topic, TopicConfig, TopicInfo};

use crate::error::{Error, Result};
use crate::log::{ReadBatches, SegmentCache};
use data_dir::{parse_topic_dir, TopicDirName};

/// What consumer groups need to know of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: String,
    pub partitions: u32,
}

/// A topic whose directory is there but could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableTopic {
    pub name: String,
    pub dir: PathBuf,
    pub reason: String,
}

impl UnavailableTopic {
    /// Its id, from its directory's name (none for a topic made before topics had ids).
    pub fn id(&self) -> Option<String> {
        let name = self.dir.file_name()?.to_string_lossy();
        match parse_topic_dir(&name) {
            TopicDirName::Live { id, .. } => id,
            TopicDirName::Deleted => None,
        }
    }

    /// Whether it may be the topic with id `id` (one without an id in its directory's
    /// name may be any).
    pub fn may_be(&self, id: &str) -> bool {
        self.id().is_none_or(|own| own == id)
    }
}

/// A topic in a listing: served, or there but not opened.
#[derive(Debug, Clone)]
pub enum ListedTopic {
    Live(String),
    Unavailable(UnavailableTopic),
}

#[derive(Default)]
struct Topics {
    live: BTreeMap<String, Arc<Topic>>,
    unavailable: BTreeMap<String, UnavailableTopic>,
    /// Names being created: taken, but not yet served.
    creating: BTreeSet<String>,
    /// Bumped whenever a topic is created or deleted, or gains partitions, so consumer
    /// groups know when to re-evaluate their subscriptions and assignments.
    version: u64,
}

impl Topics {
    fn check_free(&self, name: &str) -> Result<()> {
        if let Some(broken) = self.unavailable.get(name) {
            return Err(Error::Unavailable {
                what: format!("topic {}", crate::error::quote(name)),
                reason: format!(
                    "{} ({}); delete it before creating it again",
                    broken.reason,
                    broken.dir.display()
                ),
            });
        }
        if self.live.contains_key(name) || self.creating.contains(name) {
            return Err(Error::TopicExists {
                topic: name.to_string(),
            });
        }
        Ok(())
    }
}

pub struct Broker {
    data_dir: DataDir,
    /// Free space against `min_free_disk` (see `disk.rs`).
    disk: Arc<disk::DiskGuard>,
    limits: Limits,
    cache: Arc<SegmentCache>,
    topics: RwLock<Topics>,
    shutdown: watch::Sender<bool>,
    /// Producer ids handed out and named producers' epochs (see `producer_ids/`).
    producer_ids: Arc<producer_ids::ProducerIds>,
    /// Who may hold retention back (share groups), set by a layer above.
    floor: RwLock<Option<std::sync::Weak<dyn RetentionFloor>>>,
    /// Exchanges and their bindings to topics (see `exchanges/`).
    exchanges: Arc<exchanges::Exchanges>,
}

/// A reader that needs records kept: retention by age does not delete past its floor
/// (retention by size still does). Implemented above the broker (share groups), so
/// the broker asks without importing upward.
pub trait RetentionFloor: Send + Sync {
    /// The lowest offset of the partition still needed, if any; `topic_id` as in
    /// `topic.json`.
    fn floor(&self, topic_id: &str, partition: u32) -> Option<u64>;
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Makes retention ask `floor` before deleting by age. Held weakly: the one who
    /// asks holds the broker.
    pub fn set_retention_floor(&self, floor: std::sync::Weak<dyn RetentionFloor>) {
        *self.floor.write().unwrap_or_else(|e| e.into_inner()) = Some(floor);
    }

    /// `topic` and its partitions' state, retention's next deletion held back by the
    /// floors as the cleaner's are. May read from disk: call off async workers.
    pub fn describe(&self, topic: &Topic) -> Result<TopicInfo> {
        topic.describe(|partition| self.retention_floor(&topic.id, partition))
    }

    /// The retention floor of a partition, if anything holds one.
    fn retention_floor(&self, topic_id: &str, partition: u32) -> Option<u64> {
        let floor = self
            .floor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        floor.upgrade()?.floor(topic_id, partition)
    }

    fn read_topics(&self) -> RwLockReadGuard<'_, Topics> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_topics(&self) -> RwLockWriteGuard<'_, Topics> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.read_topics();
        if let Some(topic) = topics.live.get(name) {
            return Ok(Arc::clone(topic));
        }
        match topics.unavailable.get(name) {
            Some(broken) => Err(Error::Unavailable {
                what: format!("topic {}", crate::error::quote(name)),
                reason: format!(
                    "{} ({}); fix or delete it",
                    broken.reason,
                    broken.dir.display()
                ),
            }),
            None => Err(Error::TopicNotFound {
                topic: name.to_string(),
            }),
        }
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition)
    }

    /// Changes whenever a topic is created or deleted, or gains partitions.
    pub fn topics_version(&self) -> u64 {
        self.read_topics().version
    }

    /// The live topics (name, id, partition count) and the version they are of.
    pub fn topic_metas(&self) -> (u64, Vec<TopicMeta>) {
        let topics = self.read_topics();
        let metas = topics
            .live
            .values()
            .map(|t| TopicMeta {
                name: t.name.clone(),
                id: t.id.clone(),
                partitions: t.partition_count(),
            })
            .collect();
        (topics.version, metas)
    }

    /// The data directory, whose layout other layers (consumer groups) build on.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Reads from `offset`; if fewer than `min_bytes` are there, waits up to `max_wait`
    /// for the high watermark to move (woken by appends, not by polling). A topic deleted
    /// meanwhile ends the wait with NOT_FOUND.
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
        let max_bytes = max_bytes.clamp(1, self.limits.max_fetch_bytes.max(1));
        let deadline = tokio::time::Instant::now() + max_wait.min(self.limits.max_wait);
        let mut moved = partition.watch(); // subscribed before reading: no lost wakeup
        let deleted = partition.deleted();
        tokio::pin!(deleted);
        let mut stopping = self.shutdown.subscribe();
        // More than max_bytes can never come back: wait for what can.
        let min_bytes = min_bytes.clamp(1, max_bytes);
        let (mut read, mut offsets) = partition.read(offset, max_bytes).await?;
        loop {
            let size = read.size_bytes();
            if size >= min_bytes || *stopping.borrow() {
                return Ok((read, offsets));
            }
            tokio::select! {
                changed = moved.changed() => if changed.is_err() { return Ok((read, offsets)) },
                () = &mut deleted => return Err(Error::TopicNotFound { topic: topic.to_string() }),
                _ = stopping.changed() => continue,
                _ = tokio::time::sleep_until(deadline) => return Ok((read, offsets)),
            }
            // Only what came after what is in hand: reading it all again at every append
            // cost each waiting fetch a read (and CRC check) of everything it had, and a
            // thousand waiters with a min_bytes not yet reached made each produce cost
            // 37-178 ms of CPU.
            let (more, now) = match partition.read(read.next_offset, max_bytes - size).await {
                Ok(read) => read,
                // What is in hand stays good (damage, retention or a reopen past it is
                // the next fetch's to report).
                Err(_) if size > 0 => return Ok((read, offsets)),
                Err(err) => return Err(err),
            };
            offsets = now;
            if size > 0 && size + more.size_bytes() > max_bytes {
                return Ok((read, offsets)); // the next batch does not fit
            }
            read.chunks.extend(more.chunks);
            read.next_offset = read.next_offset.max(more.next_offset);
        }
    }

    /// A receiver that turns true when the broker starts shutting down.
    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// A producer id and epoch for an idempotent producer (see `producer_ids/`).
    pub async fn init_producer(&self, name: Option<String>) -> Result<(i64, i16)> {
        self.check_running()?;
        let ids = Arc::clone(&self.producer_ids);
        tokio::task::spawn_blocking(move || ids.init(name.as_deref()))
            .await
            .expect("producer id task does not panic")
    }

    fn check_running(&self) -> Result<()> {
        if *self.shutdown.borrow() {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read_topics()
            .live
            .values()
            .flat_map(|t| t.partitions().to_vec())
            .collect()
    }

    /// Periodic upkeep of every partition: sync page-cache appends (bounding crash
    /// recovery), roll idle old segments, reopen logs whose fsync failed. Runs until
    /// shutdown.
    pub async fn run_upkeep(self: Arc<Self>, every: Duration) {
        // Waits for the value, not for a change: a shutdown begun before this task first
        // ran would otherwise never be seen, and the server would wait for it forever.
        let mut stopping = self.shutting_down();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                () = &mut stopped => return,
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
        let mut all = Vec::new();
        for topic in topics.live.into_values() {
            // Requests still holding a partition (none, once the server has stopped) get
            // their data synced, but that partition is not marked clean.
            let partitions = match Arc::try_unwrap(topic) {
                Ok(topic) => topic
                    .partitions
                    .into_inner()
                    .unwrap_or_else(|e| e.into_inner()),
                Err(topic) => topic.partitions(),
            };
            // The list's own Arc goes first, so that a partition no request holds is
            // held once, by the list, and can be taken out of it.
            match Arc::try_unwrap(partitions) {
                Ok(only) => all.extend(only),
                Err(shared) => all.extend(shared.iter().cloned()),
            }
        }
        // Side by side, as they were opened (`parallel.rs`). Every partition is closed
        // even if one fails: the first error is returned.
        let closed = parallel::map(
            all,
            parallel::IO_THREADS,
            |partition| match Arc::try_unwrap(partition) {
                Ok(partition) => partition.close().inspect_err(|err| {
                    tracing::error!(%err, "partition not closed cleanly");
                }),
                Err(partition) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.id, "partition still in use at close; synced, not marked clean");
                    if let Err(err) = partition.sync_now() {
                        tracing::error!(%err, "partition not synced at close");
                    }
                    Ok(())
                }
            },
        );
        let first_error = closed.into_iter().find_map(Result::err);
        first_error.map_or(Ok(()), Err)
    }
}
