//! The topics as consumer groups see them: ids as numbers, names and partition counts at
//! one version of the broker's topic set, and partitions grouped back by name for answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::broker::TopicMeta;
use crate::error::{quote, Error, Result};

/// A topic's id as a number: ids are 32 hex digits (`data_dir::new_topic_id`), and 16
/// bytes that copy freely beat a string per offset when a server holds millions.
pub type TopicId = u128;

/// A partition, by topic id (not name: a re-created topic's partitions are new ones).
pub type Tp = (TopicId, u32);

/// A topic id from its text form.
pub fn topic_id(id: &str) -> Result<TopicId> {
    u128::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() == crate::broker::data_dir::TOPIC_ID_LEN)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("topic id {} is not 32 hex digits", quote(id)))
        })
}

/// The topics as groups see them: names, ids and partition counts, at one version of
/// the broker's topic set.
#[derive(Debug, Default)]
pub struct TopicsView {
    pub version: u64,
    by_name: BTreeMap<String, (TopicId, u32)>,
    names: HashMap<TopicId, String>,
}

impl TopicsView {
    pub fn new(version: u64, metas: Vec<TopicMeta>) -> TopicsView {
        let metas: Vec<(TopicMeta, TopicId)> = metas
            .into_iter()
            .filter_map(|m| match topic_id(&m.id) {
                Ok(id) => Some((m, id)),
                Err(err) => {
                    tracing::warn!(topic = %m.name, %err, "topic left out of consumer groups");
                    None
                }
            })
            .collect();
        let names = metas.iter().map(|(m, id)| (*id, m.name.clone())).collect();
        let by_name = metas
            .into_iter()
            .map(|(m, id)| (m.name, (id, m.partitions)))
            .collect();
        TopicsView {
            version,
            by_name,
            names,
        }
    }

    pub fn id_of(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).map(|(id, _)| *id)
    }

    pub fn name_of(&self, id: TopicId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The partition count of the topic with this id.
    pub fn partitions_of(&self, id: TopicId) -> Option<u32> {
        self.by_name.get(self.name_of(id)?).map(|(_, n)| *n)
    }

    /// (name, id, partitions) of the topics from `from` on, by name.
    pub fn topics_from(
        &self,
        from: std::ops::Bound<&str>,
    ) -> impl Iterator<Item = (&str, TopicId, u32)> {
        self.by_name
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .map(|(name, (id, n))| (name.as_str(), *id, *n))
    }

    /// (name, id, partitions) of every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = (&str, TopicId, u32)> {
        self.by_name
            .iter()
            .map(|(name, (id, n))| (name.as_str(), *id, *n))
    }
}

/// Partitions of one topic, by name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPartitions {
    pub topic: String,
    pub topic_id: String,
    pub partitions: Vec<u32>,
}

/// Partitions grouped by topic name (partitions of topics deleted meanwhile are left out).
pub fn named(view: &TopicsView, tps: &BTreeSet<Tp>) -> Vec<NamedPartitions> {
    let mut out: BTreeMap<&str, NamedPartitions> = BTreeMap::new();
    for (id, p) in tps {
        let Some(name) = view.name_of(*id) else {
            continue;
        };
        out.entry(name)
            .or_insert_with(|| NamedPartitions {
                topic: name.to_string(),
                topic_id: format!("{id:032x}"),
                partitions: Vec::new(),
            })
            .partitions
            .push(*p);
    }
    out.into_values().collect()
}
