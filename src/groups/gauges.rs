//! What the metrics endpoint (`server::metrics`) shows of consumer groups: each group's
//! members, and how far its committed offsets are behind the high watermarks.
//!
//! Only what is in memory is read: a scrape never opens a group's files. A group with
//! members has its offsets in memory once it has committed or fetched them (kept when
//! its files close while idle: `Loaded::close_store`); a group with no members is
//! dropped from memory after a minute idle (`UNLOAD_IDLE_MS`) and left out until it is
//! used again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::{Groups, SlotState, Tp};

/// One group, as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGauges {
    pub group: String,
    pub members: usize,
    /// Per topic with committed offsets, by name: the partitions with one, and the
    /// records between them and the high watermarks (0 for an offset at or past it).
    pub topics: Vec<TopicLag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLag {
    pub topic: String,
    pub partitions: u32,
    pub lag: u64,
}

impl Groups {
    /// Every group with members or with offsets in memory, by name. Waits for each
    /// group's lock in turn: call on a blocking thread.
    pub fn gauges(&self) -> Vec<GroupGauges> {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        let view = self.view();
        let mut watermarks: HashMap<Tp, Option<u64>> = HashMap::new();
        let mut out = Vec::new();
        for slot in slots {
            let committed: Vec<(Tp, u64)> = match &*slot.state.blocking_lock() {
                SlotState::Loaded(loaded) => match (&loaded.store, &loaded.closed_offsets) {
                    (Some(store), _) => store.offsets.offsets().collect(),
                    (None, Some(closed)) => closed.to_vec(),
                    (None, None) => Vec::new(),
                },
                SlotState::Unloaded => Vec::new(),
                SlotState::Deleted => continue,
            };
            let members = slot.members.load(Ordering::Relaxed);
            if members == 0 && committed.is_empty() {
                continue;
            }
            let mut topics: HashMap<&str, TopicLag> = HashMap::new();
            for ((id, partition), offset) in committed {
                let Some(name) = view.name_of(id) else {
                    continue; // its topic was deleted
                };
                let end = *watermarks.entry((id, partition)).or_insert_with(|| {
                    let partition = self.broker.partition(name, partition).ok()?;
                    Some(partition.offsets().ok()?.high_watermark)
                });
                let Some(end) = end else {
                    continue; // unavailable: no lag to tell
                };
                let lag = topics.entry(name).or_insert_with(|| TopicLag {
                    topic: name.to_string(),
                    partitions: 0,
                    lag: 0,
                });
                lag.partitions += 1;
                lag.lag += end.saturating_sub(offset);
            }
            let mut topics: Vec<TopicLag> = topics.into_values().collect();
            topics.sort_by(|a, b| a.topic.cmp(&b.topic));
            out.push(GroupGauges {
                group: slot.name.clone(),
                members,
                topics,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::broker::{Broker, Limits};
    use crate::groups::member::Heartbeat;
    use crate::groups::{subscription, GroupsConfig};

    /// A group with a member keeps its lag in a scrape after its files close: it is
    /// the consumer that heartbeats and stops committing that lag alerts are for. Its
    /// series went missing once its files closed (a review found it); here another
    /// group's commit closes them, as the cap on open files does.
    #[tokio::test]
    async fn a_member_groups_lag_outlives_its_closed_files() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let mut groups = Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap();
        groups.max_open_stores = 1;
        let groups = Arc::new(groups);
        let gauges = async || {
            let groups = Arc::clone(&groups);
            tokio::task::spawn_blocking(move || groups.gauges())
                .await
                .unwrap()
        };
        let join = Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscription: subscription(vec!["t".into()], "").unwrap(),
            instance_id: None,
            session_timeout_ms: 60_000,
            owned: Vec::new(),
        };
        let (answer, _) = groups.heartbeat("live", join).await.unwrap();
        let offsets = vec![("t".to_string(), 0, 0, String::new())];
        let member = (answer.member_id.as_str(), answer.member_epoch);
        groups
            .commit("live", member.0, member.1, offsets.clone())
            .await
            .unwrap();
        let lag = |gauges: &[GroupGauges]| {
            gauges
                .iter()
                .find(|g| g.group == "live")
                .map(|g| (g.members, g.topics.clone()))
        };
        let before = lag(&gauges().await);
        let row = TopicLag {
            topic: "t".into(),
            partitions: 1,
            lag: 0,
        };
        assert_eq!(before, Some((1, vec![row])));
        groups.commit("other", "", 0, offsets).await.unwrap();
        let (_, mut guard) = groups.lock("live", false).await.unwrap();
        assert!(crate::groups::loaded(&mut guard).store.is_none(), "closed");
        drop(guard);
        assert_eq!(lag(&gauges().await), before);
    }
}
