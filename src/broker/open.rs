//! Opening the broker: the data directory taken, and every topic in it opened from
//! its `topic.json`, recovering partitions that were not closed. Creating a topic and
//! adding partitions open theirs the same way (`topic_from`, `open_partition`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::data_dir::{new_topic_id, parse_topic_dir, TopicDirName};
use super::topic::{self, TopicMetadata, TopicSettings};
use super::{
    add_partitions, disk, exchanges, parallel, producer_ids, Broker, DataDir, Limits, Partition,
    Topic, TopicConfig, Topics, UnavailableTopic,
};
use crate::error::{Error, IoContext, Result};
use crate::log::SegmentCache;

/// How far a start has got: partitions found and opened, for what the server answers
/// while it starts (`server/starting.rs`).
#[derive(Debug, Default)]
pub struct Opening {
    counted: AtomicBool,
    partitions: AtomicUsize,
    opened: AtomicUsize,
}

impl Opening {
    /// The partitions opened so far, and how many there are; None until they are
    /// counted (every topic's `topic.json` read).
    pub fn partitions(&self) -> Option<(usize, usize)> {
        self.counted.load(Ordering::Acquire).then(|| {
            (
                self.opened.load(Ordering::Relaxed),
                self.partitions.load(Ordering::Relaxed),
            )
        })
    }
}

impl Broker {
    /// Takes the data directory (refused if another server holds it) and opens every
    /// topic in it, recovering partitions that were not closed. A topic or partition
    /// that cannot be opened is logged and reported unavailable; the rest serve.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Broker> {
        Self::open_counting(data_dir, limits, &Opening::default())
    }

    /// As `open`, counting the partitions in `opening` as they open.
    pub fn open_counting(data_dir: &Path, limits: Limits, opening: &Opening) -> Result<Broker> {
        Self::open_taken(DataDir::open(data_dir)?, limits, opening)
    }

    /// As `open_counting`, in a data directory already taken (`strom serve` takes it
    /// before it answers on its port).
    pub fn open_taken(data_dir: DataDir, limits: Limits, opening: &Opening) -> Result<Broker> {
        data_dir.remove_deleted_leftovers();
        let cache = SegmentCache::with_producer_cap(
            limits.max_open_segments,
            limits.max_idempotent_producers,
        );
        let topics_dir = data_dir.topics();
        let mut topics = Topics::default();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&topics_dir).at(&topics_dir)? {
            let dir = entry.at(&topics_dir)?.path();
            let file_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let TopicDirName::Live { name, .. } = parse_topic_dir(&file_name) else {
                continue;
            };
            if !dir.join(topic::METADATA_FILE).exists() {
                // A create that a crash interrupted: the metadata file is written last.
                tracing::warn!(dir = %dir.display(), "removing topic directory without topic.json");
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), %err, "could not remove it");
                }
                continue;
            }
            match Self::read_topic(&dir, &limits.topic_defaults) {
                Ok(meta) => found.push((name, dir, meta)),
                Err(err) => unavailable(&mut topics, name, dir, &err),
            }
        }
        warn_if_past_open_files(found.iter().map(|(_, _, meta)| meta.partitions).sum());
        // Every partition of every topic at once (`parallel.rs`): after a crash each is
        // a few fsyncs, and thousands of them one by one took seconds.
        let jobs: Vec<(usize, u32)> = found
            .iter()
            .enumerate()
            .flat_map(|(t, (_, _, meta))| (0..meta.partitions).map(move |id| (t, id)))
            .collect();
        opening.partitions.store(jobs.len(), Ordering::Relaxed);
        opening.counted.store(true, Ordering::Release);
        let mut opened = parallel::map(jobs, parallel::IO_THREADS, |(t, id)| {
            let (_, dir, meta) = &found[t];
            let partition = Self::open_partition(dir, meta, id, &cache, false);
            opening.opened.fetch_add(1, Ordering::Relaxed);
            partition
        })
        .into_iter();
        let mut unavailable_partitions = 0;
        for (name, dir, meta) in found {
            let partitions: Vec<_> = opened.by_ref().take(meta.partitions as usize).collect();
            let partitions = partitions.into_iter().collect::<Result<Vec<_>>>();
            if let Ok(partitions) = &partitions {
                unavailable_partitions += partitions
                    .iter()
                    .filter(|p| p.with_log(|_| Ok(())).is_err())
                    .count();
            }
            match partitions.map(|partitions| Self::topic_with(&dir, meta, partitions)) {
                Ok(topic) => {
                    topics.live.insert(topic.name.clone(), Arc::new(topic));
                }
                // A start leaves a partition that cannot be opened unavailable rather
                // than failing (`open_partition`), so not reached today.
                Err(err) => unavailable(&mut topics, name, dir, &err),
            }
        }
        tracing::info!(topics = topics.live.len(), unavailable = topics.unavailable.len(), unavailable_partitions, dir = %data_dir.root().display(), "broker opened");
        let (shutdown, _) = watch::channel(false);
        let producer_ids = Arc::new(producer_ids::ProducerIds::open(
            &data_dir.producers(),
            limits.producer_names,
        )?);
        let exchanges = Arc::new(exchanges::Exchanges::open(data_dir.root(), |name, id| {
            topics.live.get(name).is_some_and(|t| t.id == id)
                || topics.unavailable.get(name).is_some_and(|t| t.may_be(id))
        })?);
        Ok(Broker {
            exchanges,
            disk: Arc::new(disk::DiskGuard::new(data_dir.root(), limits.min_free_disk)),
            producer_ids,
            data_dir,
            limits,
            cache,
            topics: RwLock::new(topics),
            shutdown,
            floor: RwLock::new(None),
        })
    }

    /// The metadata of the topic in `dir`, from its `topic.json`, giving it an id if it
    /// was made before topics had ids. Keys the topic does not set take the server's
    /// defaults. Leftovers of an interrupted partition add are removed.
    fn read_topic(dir: &Path, defaults: &TopicConfig) -> Result<TopicMetadata> {
        let mut meta = TopicMetadata::read(dir)?;
        if meta.id.is_empty() {
            meta.id = new_topic_id();
            meta.write(dir)?;
        }
        let overrides = meta.overrides.clone().unwrap_or_default();
        meta.config = TopicConfig::merged(defaults, &meta.config, &overrides);
        add_partitions::remove_leftovers(dir, meta.partitions);
        Ok(meta)
    }

    /// The topic of `meta` in `dir`, its partitions opened side by side. With `strict`
    /// (a create), a partition that cannot be opened fails the whole; without (a
    /// start), it is left unavailable.
    pub(super) fn topic_from(
        dir: &Path,
        meta: TopicMetadata,
        cache: &Arc<SegmentCache>,
        strict: bool,
    ) -> Result<Topic> {
        let ids = (0..meta.partitions).collect();
        let partitions = parallel::map(ids, parallel::IO_THREADS, |id| {
            Self::open_partition(dir, &meta, id, cache, strict)
        });
        let partitions = partitions.into_iter().collect::<Result<_>>()?;
        Ok(Self::topic_with(dir, meta, partitions))
    }

    /// The topic of `meta` in `dir`, with its partitions opened.
    fn topic_with(dir: &Path, meta: TopicMetadata, partitions: Vec<Arc<Partition>>) -> Topic {
        Topic {
            name: meta.name,
            id: meta.id,
            dir: dir.to_path_buf(),
            count: watch::channel(meta.partitions).0,
            adding: Arc::new(tokio::sync::Mutex::new(())),
            partitions: RwLock::new(Arc::new(partitions)),
            settings: RwLock::new(TopicSettings {
                config: meta.config,
                overrides: meta.overrides.unwrap_or_default(),
                created: meta.created,
            }),
            round_robin: AtomicU32::new(0),
        }
    }

    /// Partition `id` of the topic of `meta` in `dir`, as `topic_from` opens them.
    pub(super) fn open_partition(
        dir: &Path,
        meta: &TopicMetadata,
        id: u32,
        cache: &Arc<SegmentCache>,
        strict: bool,
    ) -> Result<Arc<Partition>> {
        let log_dir = dir.join(id.to_string());
        let config = meta.config.log_config();
        let partition = if strict {
            Partition::open_or_fail(&meta.name, id, &log_dir, config, cache)?
        } else {
            Partition::open(&meta.name, id, &log_dir, config, cache)
        };
        Ok(Arc::new(partition))
    }
}

/// Each partition keeps three files open (its active segment's `.log` and indexes): a
/// server whose partitions need more than the open-file limit has those opened last
/// unavailable, each with its own EMFILE error (hostile sweep: 3,665 of 4,001 with a
/// hard limit of 1,024). One warning names the cause and the fix first.
fn warn_if_past_open_files(partitions: u32) {
    let needed = 3 * u64::from(partitions);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Some(limit) = limit.filter(|&limit| needed > limit) {
        tracing::warn!(
            partitions,
            needed,
            limit,
            "the partitions keep about {needed} files open, more than the open-file limit of {limit}: those opened last will be unavailable; raise the limit (ulimit -n, LimitNOFILE=)"
        );
    }
}

/// Logs why the topic in `dir` cannot be opened and lists it as unavailable.
fn unavailable(topics: &mut Topics, name: String, dir: PathBuf, err: &Error) {
    tracing::error!(dir = %dir.display(), %err, "topic unavailable: it cannot be opened");
    let reason = err.to_string();
    topics
        .unavailable
        .insert(name.clone(), UnavailableTopic { name, dir, reason });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::log::{BatchBuilder, Record};

    const TOPICS: [(&str, u32); 3] = [("a", 1), ("b", 3), ("c", 5)];

    /// How many records partition `id` of the `t`-th topic holds: no two alike.
    fn records(t: usize, id: u32) -> u64 {
        1 + 10 * t as u64 + u64::from(id)
    }

    /// Each partition, opened side by side with every other, is the one its topic and
    /// number say: its own directory and its own records, after a clean stop and after
    /// a crash (a broker dropped without `close`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_partition_opens_in_its_own_place_after_a_stop_and_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        for (t, (name, count)) in TOPICS.into_iter().enumerate() {
            broker
                .create_topic(name, count, &BTreeMap::new())
                .await
                .unwrap();
            for id in 0..count {
                let mut builder = BatchBuilder::default();
                for _ in 0..records(t, id) {
                    let record = Record {
                        value: Bytes::from(format!("{name}/{id}")),
                        ..Record::default()
                    };
                    builder.push(&record).unwrap();
                }
                let partition = broker.partition(name, id).unwrap();
                partition.append(builder.build().unwrap()).await.unwrap();
            }
        }
        let check = |broker: &Broker| {
            for (t, (name, count)) in TOPICS.into_iter().enumerate() {
                let topic = broker.topic(name).unwrap();
                assert_eq!(topic.partition_count(), count);
                for (id, partition) in topic.partitions().iter().enumerate() {
                    let id = id as u32;
                    assert_eq!((partition.topic.as_str(), partition.id), (name, id));
                    assert_eq!(partition.dir(), topic.dir.join(id.to_string()));
                    let offsets = partition.offsets().unwrap();
                    assert_eq!(offsets.high_watermark, records(t, id), "{name}/{id}");
                }
            }
        };
        check(&broker);
        let dirs: Vec<_> = TOPICS
            .iter()
            .flat_map(|(name, _)| broker.topic(name).unwrap().partitions().to_vec())
            .map(|partition| partition.dir().to_path_buf())
            .collect();
        Arc::into_inner(broker).unwrap().close().unwrap();
        for dir in &dirs {
            // The clean-shutdown marker (storage-format.md): every one was closed.
            assert!(dir.join(".clean-shutdown").exists(), "{}", dir.display());
        }
        let broker = Broker::open(dir.path(), Limits::default()).unwrap();
        check(&broker);
        drop(broker);
        let broker = Broker::open(dir.path(), Limits::default()).unwrap();
        check(&broker);
    }
}
