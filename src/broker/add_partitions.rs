//! Adding partitions to a topic (Kafka's CreatePartitions). Partitions are only ever
//! added: a record's offsets, keys' history and committed offsets all name partitions
//! that must go on existing.
//!
//! The order makes a crash safe at any point: the new partitions' directories are made
//! first, then `topic.json` is replaced (write, sync, rename) with the new count, then
//! the partitions are served. Until the rename, the count on disk is the old one and the
//! new directories are leftovers no request ever reached; the next add of those ids
//! removes them before it makes them again.
//!
//! Everything runs under the topic's settings lock, which an alter of its config and
//! its deletion also take: an alter cannot write `topic.json` with the old count after
//! the add wrote the new one, and a delete either sees the new partitions (and marks
//! them deleted) or comes first (and the add answers NOT_FOUND).

use std::sync::Arc;

use super::topic::PartitionsCreated;
use super::{now_ms, Broker, Topic, TopicInfo};
use crate::error::{Error, IoContext, Result};

impl Broker {
    /// Gives topic `name` `count` partitions in all, adding `count - current` empty ones.
    /// A count equal to the current one changes nothing (so that a retry of an add whose
    /// answer was lost succeeds); a smaller one is refused.
    pub async fn add_partitions(self: &Arc<Self>, name: &str, count: u32) -> Result<TopicInfo> {
        let topic = self.check_add_partitions(name, count)?;
        let me = Arc::clone(self);
        let (info, added) = tokio::task::spawn_blocking(move || {
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
        Ok(info)
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

    /// Adds partitions up to `count`, under the topic's settings; how many it added.
    fn grow(&self, topic: &Topic, count: u32) -> Result<u32> {
        let mut settings = topic.settings.write().unwrap_or_else(|e| e.into_inner());
        // Deleted since it was looked up: its directory is gone.
        if topic.is_deleted() {
            return Err(Error::TopicNotFound {
                topic: topic.name.clone(),
            });
        }
        let current = topic.partition_count();
        fewer(topic, count, current)?;
        if count == current {
            return Ok(0);
        }
        let mut next = super::TopicSettings {
            config: settings.config.clone(),
            overrides: settings.overrides.clone(),
            created: settings.created.clone(),
        };
        // Topics made before creation times were kept: theirs stay unknown (0).
        let covered: u32 = next.created.iter().map(|run| run.count).sum();
        if covered < current {
            next.created.push(PartitionsCreated {
                count: current - covered,
                at_ms: 0,
            });
        }
        next.created.push(PartitionsCreated {
            count: count - current,
            at_ms: now_ms(),
        });
        let meta = topic.metadata(&next, count);
        let made = (current..count)
            .map(|id| {
                let dir = topic.dir.join(id.to_string());
                if dir.exists() {
                    // Left by an add that a crash interrupted before topic.json named it.
                    tracing::warn!(dir = %dir.display(), "removing a partition directory the topic does not count");
                    std::fs::remove_dir_all(&dir).at(&dir)?;
                }
                Self::open_partition(&topic.dir, &meta, id, &self.cache, true)
            })
            .collect::<Result<Vec<_>>>()
            .and_then(|made| {
                meta.write(&topic.dir)?; // last: the count in it is what adds them
                Ok(made)
            });
        let made = match made {
            Ok(made) => made,
            Err(err) => {
                for id in current..count {
                    let _ = std::fs::remove_dir_all(topic.dir.join(id.to_string()));
                }
                return Err(err);
            }
        };
        *settings = next;
        let mut partitions = topic.partitions.write().unwrap_or_else(|e| e.into_inner());
        let mut grown = Vec::with_capacity(count as usize);
        grown.extend(partitions.iter().cloned());
        grown.extend(made);
        *partitions = Arc::new(grown);
        topic.count.send_replace(count);
        Ok(count - current)
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

    /// A failed add (a partition that cannot be made) leaves the topic, its file and
    /// its directory as they were.
    #[tokio::test]
    async fn a_failed_add_leaves_the_topic_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let topic = broker.topic("t").unwrap();
        // A file where partition 2's directory goes: partition 1 is made, 2 is not.
        std::fs::write(topic.dir.join("2"), b"in the way").unwrap();
        assert!(broker.grow(&topic, 3).is_err());
        assert_eq!(topic.partition_count(), 1);
        assert!(!topic.dir.join("1").exists(), "partition 1 was left");
        let on_disk = super::super::topic::TopicMetadata::read(&topic.dir).unwrap();
        assert_eq!(on_disk.partitions, 1);
        assert_eq!(on_disk.created.len(), 1);
    }
}
