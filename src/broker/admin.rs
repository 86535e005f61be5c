//! Topic administration: create, delete, list, alter. File work runs on blocking threads
//! while the topics map is locked only to reserve or publish a name, so a create of a
//! thousand partitions never holds up produces to other topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::data_dir::new_topic_id;
use super::page::{Listed, Page};
use super::topic::{update_overrides, validate_name, PartitionsCreated, TopicMetadata};
use super::{now_ms, Broker, ListedTopic, Topic, TopicConfig, TopicInfo, UnavailableTopic};
use crate::error::{Error, IoContext, Result};
use crate::log::files::sync_dir;

impl Broker {
    /// Creates a topic. The files are made on a blocking thread while only the name is
    /// reserved in the topics map, so produces and fetches of other topics go on.
    pub async fn create_topic(
        self: &Arc<Self>,
        name: &str,
        partitions: u32,
        config: &BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        let (partitions, overrides, topic_config) = self.new_topic(name, partitions, config)?;
        {
            let mut topics = self.write_topics();
            topics.check_free(name)?;
            topics.creating.insert(name.to_string());
        }
        let me = Arc::clone(self);
        let meta = TopicMetadata {
            name: name.to_string(),
            id: new_topic_id(),
            partitions,
            config: topic_config,
            overrides: Some(overrides),
            created: vec![PartitionsCreated {
                count: partitions,
                at_ms: now_ms(),
            }],
        };
        // The topic is registered by the blocking task itself: a request cancelled while
        // the files are made must not leave the name reserved and the topic unknown
        // until a restart.
        let owned = name.to_string();
        let info = tokio::task::spawn_blocking(move || {
            let created = me.create_files(meta);
            let mut topics = me.write_topics();
            topics.creating.remove(&owned);
            let topic = created?;
            let info = me.describe(&topic)?;
            topics.live.insert(owned, Arc::new(topic));
            topics.version += 1;
            Ok::<_, Error>(info)
        })
        .await
        .expect("create task does not panic")?;
        tracing::info!(topic = name, id = %info.id, partitions, "topic created");
        Ok(info)
    }

    /// Checks what `create_topic` would check, creating nothing: Ok if it would create
    /// the topic now (Kafka's CreateTopics with `validate_only`).
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.new_topic(name, partitions, config)?;
        self.read_topics().check_free(name)
    }

    /// A new topic's partitions, the keys its config sets, and its config; or why it
    /// cannot be made.
    fn new_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &BTreeMap<String, String>,
    ) -> Result<(u32, BTreeSet<String>, TopicConfig)> {
        self.check_running()?;
        validate_name(name)?;
        let partitions = partitions.max(1);
        if partitions > self.limits.max_partitions {
            return Err(Error::InvalidArgument(format!(
                "{partitions} partitions asked; this server allows at most {} per topic",
                self.limits.max_partitions
            )));
        }
        let mut overrides = BTreeSet::new();
        let set = update_overrides(&mut overrides, config);
        let mut topic_config = self.limits.topic_defaults.clone();
        topic_config.apply(&set)?;
        Ok((partitions, overrides, topic_config))
    }

    fn create_files(&self, meta: TopicMetadata) -> Result<Topic> {
        let dir = self.data_dir.topic_dir(&meta.name, &meta.id);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let written = Self::topic_from(&dir, meta.clone(), &self.cache, true).and_then(|topic| {
            meta.write(&dir)?; // last: its presence is what makes the topic exist
            sync_dir(&self.data_dir.topics())?;
            Ok(topic)
        });
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&dir); // and the next start removes what is left
        }
        written
    }

    /// Deletes a topic. New requests get NOT_FOUND at once; so do requests waiting on it
    /// (long polls, subscriptions) and produces not yet appended; its files are closed
    /// and removed. Readers still holding bytes of it keep them (files are unlinked, not
    /// shrunk).
    pub async fn delete_topic(self: &Arc<Self>, name: &str) -> Result<()> {
        self.delete_topic_of(name, None).await
    }

    /// `delete_topic`, if the topic named still has id `id` (None: whichever it
    /// has): a topic deleted and made again under the same name since the caller
    /// looked its id up is not the one it meant, and is left alone (TopicNotFound).
    pub async fn delete_topic_of(self: &Arc<Self>, name: &str, id: Option<&str>) -> Result<()> {
        self.check_running()?;
        let (topic, broken) = {
            let mut topics = self.write_topics();
            if let (Some(id), Some(live)) = (id, topics.live.get(name)) {
                if live.id != id {
                    return Err(Error::TopicNotFound {
                        topic: name.to_string(),
                    });
                }
            }
            if id.is_some() && !topics.live.contains_key(name) {
                return Err(Error::TopicNotFound {
                    topic: name.to_string(),
                });
            }
            match topics.live.remove(name) {
                Some(topic) => {
                    topics.version += 1;
                    (Some(topic), None)
                }
                None => match topics.unavailable.remove(name) {
                    Some(broken) => {
                        topics.version += 1;
                        (None, Some(broken))
                    }
                    None => {
                        return Err(Error::TopicNotFound {
                            topic: name.to_string(),
                        })
                    }
                },
            }
        };
        let dir = match (&topic, &broken) {
            (Some(topic), _) => topic.dir.clone(),
            (None, Some(broken)) => broken.dir.clone(),
            (None, None) => unreachable!("one of them was removed"),
        };
        let id = match (&topic, &broken) {
            (Some(topic), _) => Some(topic.id.clone()),
            (None, broken) => broken.as_ref().and_then(UnavailableTopic::id),
        };
        // Its bindings go at once, whatever the removal of its files does, and in a
        // task of their own: a caller that hangs up meanwhile must not leave them.
        let (me, topic_name) = (Arc::clone(self), name.to_string());
        let forgotten =
            tokio::spawn(async move { me.forget_bindings(&topic_name, id.as_deref()).await });
        let me = Arc::clone(self);
        let removed = tokio::task::spawn_blocking(move || {
            // Held while the directory goes: an alter that has the settings finishes
            // writing topic.json first, and one after sees the topic deleted.
            let _settings = topic
                .as_ref()
                .map(|t| t.settings.write().unwrap_or_else(|e| e.into_inner()));
            for partition in topic.iter().flat_map(|t| t.partitions().to_vec()) {
                partition.mark_deleted();
            }
            me.data_dir.remove_topic_dir(&dir)
        })
        .await
        .expect("delete task does not panic");
        forgotten.await.expect("forgetting bindings does not panic");
        removed?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// A page of the topics being served and those that could not be opened, both
    /// taken together in the order of their names.
    /// Moves the log start of `topic`'s `partition` to `before` (the high watermark
    /// when `None`): `Partition::delete_records`, on a task of its own, so that a caller
    /// that goes away (a client hanging up) does not stop it between its steps. Returns
    /// the new start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64> {
        let partition = self.partition(topic, partition)?;
        tokio::spawn(async move { partition.delete_records(before).await })
            .await
            .expect("delete_records does not panic")
    }

    pub fn list_topics(&self, page: &Page) -> Listed<ListedTopic> {
        let topics = self.read_topics();
        let mut live = page.range(&topics.live).peekable();
        let mut unavailable = page.range(&topics.unavailable).peekable();
        let merged = std::iter::from_fn(|| {
            let unavailable_first = match (live.peek(), unavailable.peek()) {
                // One name in both (two directories for it): the live one is what
                // requests reach, and a page must not end between the two.
                (Some((a, _)), Some((b, _))) if a == b => {
                    unavailable.next();
                    false
                }
                (Some((a, _)), Some((b, _))) => b < a,
                (None, Some(_)) => true,
                _ => false,
            };
            match unavailable_first {
                true => unavailable
                    .next()
                    .map(|(_, t)| ListedTopic::Unavailable(t.clone())),
                false => live.next().map(|(name, _)| ListedTopic::Live(name.clone())),
            }
        });
        page.take(merged, |listed| match listed {
            ListedTopic::Live(name) => name,
            ListedTopic::Unavailable(t) => &t.name,
        })
    }

    /// Whether some topic's files could not be opened (it might be any topic).
    pub fn any_topic_unavailable(&self) -> bool {
        !self.read_topics().unavailable.is_empty()
    }

    /// Checks what `alter_topic_config` would check, changing nothing (Kafka's
    /// AlterConfigs with `validate_only`).
    pub fn check_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<()> {
        let topic = self.topic(name)?;
        let settings = topic.settings.read().unwrap_or_else(|e| e.into_inner());
        let changes = replacing(&settings.overrides, changes.clone(), replace);
        let mut overrides = settings.overrides.clone();
        let set = update_overrides(&mut overrides, &changes);
        settings.config.clone().apply(&set)
    }

    pub async fn alter_topic_config(
        self: &Arc<Self>,
        name: &str,
        changes: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        self.change_topic_config(name, changes, false).await
    }

    /// Sets the topic's config to `changes`: keys set for it and not given go back
    /// to the defaults (Kafka's AlterConfigs), decided under the topic's settings
    /// lock, so that two replacements at once leave one of them whole.
    pub async fn replace_topic_config(
        self: &Arc<Self>,
        name: &str,
        changes: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        self.change_topic_config(name, changes, true).await
    }

    async fn change_topic_config(
        self: &Arc<Self>,
        name: &str,
        changes: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<TopicInfo> {
        let topic = self.topic(name)?;
        let defaults = self.limits.topic_defaults.clone();
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut settings = topic.settings.write().unwrap_or_else(|e| e.into_inner());
            // Deleted since it was looked up: its directory is gone.
            if topic.is_deleted() {
                return Err(Error::TopicNotFound {
                    topic: topic.name.clone(),
                });
            }
            let changes = replacing(&settings.overrides, changes, replace);
            let mut overrides = settings.overrides.clone();
            let set = update_overrides(&mut overrides, &changes);
            let mut updated = settings.config.clone();
            updated.apply(&set)?;
            // A key given back to the default takes the default's value.
            let updated = TopicConfig::merged(&defaults, &updated, &overrides);
            let next = super::TopicSettings {
                config: updated.clone(),
                overrides,
                created: settings.created.clone(),
            };
            topic
                .metadata(&next, topic.partition_count())
                .write(&topic.dir)?;
            for partition in topic.partitions().iter() {
                match partition.reconfigure(updated.log_config()) {
                    Err(Error::InPartition { source, .. })
                        if matches!(*source, Error::Unavailable { .. }) => {}
                    other => other?,
                }
            }
            *settings = next;
            drop(settings);
            me.describe(&topic)
        })
        .await
        .expect("alter task does not panic")
    }
}

/// `changes`, and with `replace` every key set for the topic and not in them given
/// back to the default (an empty value).
fn replacing(
    overrides: &BTreeSet<String>,
    mut changes: BTreeMap<String, String>,
    replace: bool,
) -> BTreeMap<String, String> {
    if replace {
        for key in overrides {
            changes.entry(key.clone()).or_default();
        }
    }
    changes
}
