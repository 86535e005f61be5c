//! Opening the broker: the data directory taken, and every topic in it opened from
//! its `topic.json`, recovering partitions that were not closed. Creating a topic and
//! adding partitions open theirs the same way (`topic_from`, `open_partition`).

use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::data_dir::{new_topic_id, parse_topic_dir, TopicDirName};
use super::topic::{self, TopicMetadata, TopicSettings};
use super::{
    add_partitions, disk, exchanges, producer_ids, Broker, DataDir, Limits, Partition, Topic,
    TopicConfig, Topics, UnavailableTopic,
};
use crate::error::{IoContext, Result};
use crate::log::SegmentCache;

impl Broker {
    /// Takes the data directory (refused if another server holds it) and opens every
    /// topic in it, recovering partitions that were not closed. A topic or partition
    /// that cannot be opened is logged and reported unavailable; the rest serve.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Broker> {
        let data_dir = DataDir::open(data_dir)?;
        data_dir.remove_deleted_leftovers();
        let cache = SegmentCache::with_producer_cap(
            limits.max_open_segments,
            limits.max_idempotent_producers,
        );
        let topics_dir = data_dir.topics();
        let mut topics = Topics::default();
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
            match Self::open_topic(&dir, &cache, &limits.topic_defaults) {
                Ok(topic) => {
                    topics.live.insert(topic.name.clone(), Arc::new(topic));
                }
                Err(err) => {
                    tracing::error!(dir = %dir.display(), %err, "topic unavailable: it cannot be opened");
                    let reason = err.to_string();
                    topics
                        .unavailable
                        .insert(name.clone(), UnavailableTopic { name, dir, reason });
                }
            }
        }
        tracing::info!(topics = topics.live.len(), unavailable = topics.unavailable.len(), dir = %data_dir.root().display(), "broker opened");
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

    /// Opens the topic in `dir` from its `topic.json`, giving it an id if it was made
    /// before topics had ids. Keys the topic does not set take the server's defaults.
    fn open_topic(dir: &Path, cache: &Arc<SegmentCache>, defaults: &TopicConfig) -> Result<Topic> {
        let mut meta = TopicMetadata::read(dir)?;
        if meta.id.is_empty() {
            meta.id = new_topic_id();
            meta.write(dir)?;
        }
        let overrides = meta.overrides.clone().unwrap_or_default();
        meta.config = TopicConfig::merged(defaults, &meta.config, &overrides);
        add_partitions::remove_leftovers(dir, meta.partitions);
        Self::topic_from(dir, meta, cache, false)
    }

    /// The topic of `meta` in `dir`. With `strict` (a create), a partition that cannot be
    /// opened fails the whole; without (a start), it is left unavailable.
    pub(super) fn topic_from(
        dir: &Path,
        meta: TopicMetadata,
        cache: &Arc<SegmentCache>,
        strict: bool,
    ) -> Result<Topic> {
        let partitions = (0..meta.partitions)
            .map(|id| Self::open_partition(dir, &meta, id, cache, strict))
            .collect::<Result<_>>()?;
        Ok(Topic {
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
        })
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
