//! Adding partitions to a topic (Kafka's CreatePartitions). Partitions are only ever
//! added: a record's offsets, keys' history and committed offsets all name partitions
//! that must go on existing.
//!
//! The order makes a crash safe at any point: the new partitions' directories are made
//! first and the topic's directory synced, then `topic.json` is replaced (write, sync,
//! rename) with the new count, then the partitions are served. Until the rename, the
//! count on disk is the old one and the new directories are leftovers no request ever
//! reached: the next start removes them (`remove_leftovers`), and the next add of
//! those ids removes whatever is in their place before it makes them again.
//!
//! The new partitions are made outside the topic's settings lock; `topic.json` is
//! written and the partitions served under it. An alter of the config and a delete
//! take that lock too: an alter cannot write `topic.json` with the old count after the
//! add wrote the new one, and a delete either sees the new partitions (and marks them
//! deleted) or comes first (and the add removes what it made and answers NOT_FOUND).

use std::sync::Arc;

use super::topic::PartitionsCreated;
use super::{now_ms, Broker, Partition, Topic, TopicInfo};
use crate::error::{Error, IoContext, Result};
use crate::log::files::sync_dir;

impl Broker {
    /// Gives topic `name` `count` partitions in all, adding `count - current` empty ones;
    /// the topic afterwards and how many were added. A count equal to the current one
    /// adds none (so that a retry of an add whose answer was lost succeeds); a smaller
    /// one is refused.
    pub async fn add_partitions(
        self: &Arc<Self>,
        name: &str,
        count: u32,
    ) -> Result<(TopicInfo, u32)> {
        let topic = self.check_add_partitions(name, count)?;
        // One add of a topic at a time, waited for here rather than on a blocking
        // thread: adds queued behind a long one must not take the threads that fsyncs
        // run on. Held by the blocking task, which a caller that hangs up does not stop.
        let adding = Arc::clone(&topic.adding).lock_owned().await;
        // A stop begun while this waited: the add would hold the broker past it.
        self.check_running()?;
        let me = Arc::clone(self);
        let (info, added) = tokio::task::spawn_blocking(move || {
            let _adding = adding;
            let added = me.grow(&topic, count)?;
            if added > 0 {
                // Consumer groups look at the version to see partition counts change.
                me.write_topics().version += 1;
            }
            Ok::<_, Error>((me.describe(&topic)?, added))
        })
        .await
        .expect("add partitions task does not panic")?;
        if added > 0 {
            tracing::info!(topic = name, added, partitions = count, "partitions added");
        }
        Ok((info, added))
    }

    /// Checks what `add_partitions` would check, adding nothing (Kafka's
    /// CreatePartitions with `validate_only`); the topic if the add would go ahead.
    pub fn check_add_partitions(&self, name: &str, count: u32) -> Result<Arc<Topic>> {
        self.check_running()?;
        let topic = self.topic(name)?;
        if count > self.limits.max_partitions {
            return Err(Error::InvalidArgument(format!(
                "{count} partitions asked; this server allows at most {} per topic",
                self.limits.max_partitions
            )));
        }
        fewer(&topic, count, topic.partition_count())?;
        Ok(topic)
    }

    /// Adds partitions up to `count`; how many it added. The caller holds
    /// `Topic::adding`. The new partitions are made outside the topic's settings
    /// lock: making a log is several fsyncs, a thousand partitions seconds of them,
    /// and produces to the topic read its settings meanwhile. The lock is held only to
    /// write `topic.json` and serve them.
    fn grow(&self, topic: &Topic, count: u32) -> Result<u32> {
        let gone = || Error::TopicNotFound {
            topic: topic.name.clone(),
        };
        // Deleted since it was looked up: its directory is gone.
        if topic.is_deleted() {
            return Err(gone());
        }
        let current = topic.partition_count();
        fewer(topic, count, current)?;
        if count == current {
            return Ok(0);
        }
        let opened_with = {
            let settings = topic.settings.read().unwrap_or_else(|e| e.into_inner());
            topic.metadata(&settings, count)
        };
        let remove_made = || {
            for id in current..count {
                let _ = std::fs::remove_dir_all(topic.dir.join(id.to_string()));
            }
        };
        let made = match self.make_partitions(topic, &opened_with, current..count) {
            Ok(made) => made,
            Err(err) => {
                remove_made();
                // Its directory renamed away by a delete meanwhile: NOT_FOUND, not the
                // I/O error that made (and the directory gone, if a partition's making
                // put it back).
                if topic.is_deleted() {
                    let _ = std::fs::remove_dir(&topic.dir);
                    return Err(gone());
                }
                return Err(err);
            }
        };
        let mut settings = topic.settings.write().unwrap_or_else(|e| e.into_inner());
        if topic.is_deleted() {
            // Deleted while they were made: what was made under its directory goes,
            // and the directory too if a partition's making put it back.
            drop(made);
            remove_made();
            let _ = std::fs::remove_dir(&topic.dir);
            return Err(gone());
        }
        let mut next = settings.clone();
        // Topics made before creation times were kept: theirs stay unknown (0).
        let covered: u32 = next.created.iter().map(|run| run.count).sum();
        if covered < current {
            next.created.push(PartitionsCreated {
                count: current - covered,
                at_ms: 0,
            });
        }
        // Later than every partition before them, even within a millisecond or with a
        // clock stepped back: readers tell added partitions by it (share groups, and
        // group members starting at the latest offset).
        let last = next.created.iter().map(|run| run.at_ms).max().unwrap_or(0);
        next.created.push(PartitionsCreated {
            count: count - current,
            at_ms: now_ms().max(last + 1),
        });
        let written = (|| {
            if next.config != opened_with.config {
                // Altered while they were made.
                for partition in &made {
                    partition.reconfigure(next.config.log_config())?;
                }
            }
            // The new directories' entries durable before the file that names them.
            sync_dir(&topic.dir)?;
            topic.metadata(&next, count).write(&topic.dir) // the count in it adds them
        })();
        if let Err(err) = written {
            drop(made);
            remove_made();
            return Err(err);
        }
        *settings = next;
        let mut partitions = topic.partitions.write().unwrap_or_else(|e| e.into_inner());
        let mut grown = Vec::with_capacity(count as usize);
        grown.extend(partitions.iter().cloned());
        grown.extend(made);
        *partitions = Arc::new(grown);
        topic.count.send_replace(count);
        Ok(count - current)
    }

    /// Makes partitions `ids` of `topic` afresh, as `meta` says.
    fn make_partitions(
        &self,
        topic: &Topic,
        meta: &super::topic::TopicMetadata,
        ids: std::ops::Range<u32>,
    ) -> Result<Vec<Arc<Partition>>> {
        ids.map(|id| {
            // A stop begun meanwhile ends a long add between partitions.
            self.check_running()?;
            let dir = topic.dir.join(id.to_string());
            match std::fs::symlink_metadata(&dir) {
                // Left by an add that a crash interrupted before topic.json named it.
                Ok(found) => {
                    tracing::warn!(dir = %dir.display(), "removing what is in the place of a partition the topic does not count");
                    match found.is_dir() {
                        true => std::fs::remove_dir_all(&dir).at(&dir)?,
                        false => std::fs::remove_file(&dir).at(&dir)?,
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).at(&dir),
            }
            // Not create_dir_all: a topic deleted meanwhile (its directory renamed
            // away) must not have its directory made again here.
            std::fs::create_dir(&dir).at(&dir)?;
            Self::open_partition(&topic.dir, meta, id, &self.cache, true)
        })
        .collect()
    }
}

/// Removes what adds that a crash interrupted left in topic directory `dir`, whose
/// `topic.json` counts `count` partitions: directories numbered from `count` on that
/// hold no record (every `.log` file empty), as an interrupted add leaves them. One
/// holding records is not an add's leftover (no request reached those partitions): it
/// is left for the operator, with a warning that an add of its number replaces it.
pub(super) fn remove_leftovers(dir: &std::path::Path, count: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let path = entry.path();
        if id < count || !path.is_dir() {
            continue;
        }
        let empty = std::fs::read_dir(&path).is_ok_and(|files| {
            files.flatten().all(|f| {
                let is_log = f.path().extension().is_some_and(|e| e == "log");
                !is_log || f.metadata().is_ok_and(|m| m.len() == 0)
            })
        });
        match empty {
            true => match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a partition directory an interrupted add left")
                }
                Err(err) => {
                    tracing::warn!(dir = %path.display(), %err, "could not remove a partition directory an interrupted add left")
                }
            },
            false => {
                tracing::warn!(dir = %path.display(), partitions = count, "a directory past the topic's partitions holds records; it is not served (topic.json counts fewer), and an add of its partition replaces it: move it away to keep it")
            }
        }
    }
}

/// Refuses a count below the topic's `current` one.
fn fewer(topic: &Topic, count: u32, current: u32) -> Result<()> {
    if count < current {
        return Err(Error::FailedPrecondition(format!(
            "topic {} has {current} partitions and {count} were asked: partitions can be added, never removed",
            crate::error::quote(&topic.name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::broker::Limits;

    /// An add that looked its topic up before a delete and runs after it: the topic is
    /// gone, and nothing is made where its directory was.
    #[tokio::test]
    async fn an_add_after_a_delete_makes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let topic = broker.topic("t").unwrap();
        broker.delete_topic("t").await.unwrap();
        let err = broker.grow(&topic, 3).unwrap_err();
        assert!(matches!(err, Error::TopicNotFound { .. }), "{err:?}");
        assert!(
            !topic.dir.exists(),
            "{} was made again",
            topic.dir.display()
        );
        assert_eq!(topic.partition_count(), 1);
    }

    /// Partitions added while the clock reads earlier than the last add (stepped back,
    /// or the same millisecond) are still made later than every partition before.
    #[tokio::test]
    async fn added_partitions_are_made_later_than_every_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let topic = broker.topic("t").unwrap();
        let ahead = now_ms() + 3_600_000;
        topic.settings.write().unwrap().created[0].at_ms = ahead;
        broker.grow(&topic, 2).unwrap();
        assert!(topic.partition_created_ms(1) > ahead);
    }

    /// A failed add (here `topic.json` cannot be written) leaves the topic, its file
    /// and its directory as they were; a file in a new partition's place is replaced.
    #[tokio::test]
    async fn a_failed_add_leaves_the_topic_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let topic = broker.topic("t").unwrap();
        std::fs::write(topic.dir.join("2"), b"in the way").unwrap();
        let blocker = topic.dir.join("topic.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(broker.grow(&topic, 3).is_err());
        assert_eq!(topic.partition_count(), 1);
        assert!(!topic.dir.join("1").exists(), "partition 1 was left");
        let on_disk = super::super::topic::TopicMetadata::read(&topic.dir).unwrap();
        assert_eq!(on_disk.partitions, 1);
        assert_eq!(on_disk.created.len(), 1);
        std::fs::remove_dir(&blocker).unwrap();
        broker.grow(&topic, 3).unwrap();
        assert!(topic.dir.join("2").is_dir());
        assert_eq!(topic.partition_count(), 3);
    }
}
