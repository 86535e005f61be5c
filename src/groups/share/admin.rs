//! DescribeShareGroup, AlterShareGroupConfig and ResetShareGroup.

use std::collections::{BTreeMap, BTreeSet};

use super::config::ShareConfig;
use super::window::Counts;
use super::{group, Admit, Group, ShareGroups};
use crate::broker::now_ms;
use crate::error::{quote, Error, Result};
use crate::groups::{topic_id, ResetTo, TopicId};

/// One partition of a share group as DescribeShareGroup shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePartitionInfo {
    pub topic: String,
    pub partition: u32,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMemberInfo {
    pub member_id: String,
    pub last_seen_ms: i64,
    pub records_held: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedShareGroup {
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<SharePartitionInfo>,
    pub members: Vec<ShareMemberInfo>,
}

impl ShareGroups {
    pub async fn describe(&self, name: &str) -> Result<DescribedShareGroup> {
        let (_, mut guard) = self.lock(name, false, Admit::Always).await?;
        let g = group(&mut guard);
        let now = now_ms();
        let (_, metas) = self.broker.topic_metas();
        let mut partitions = Vec::new();
        let tps: Vec<_> = g.state.partitions.keys().copied().collect();
        for (tid, partition) in tps {
            let Some(meta) = metas.iter().find(|m| topic_id(&m.id).ok() == Some(tid)) else {
                continue; // a deleted topic
            };
            let bounds = self
                .broker
                .partition(&meta.name, partition)
                .and_then(|p| p.offsets());
            let p = g
                .state
                .partitions
                .get_mut(&(tid, partition))
                .expect("listed");
            let mut changes = Vec::new();
            // What retention deleted before the group finished it counts as lost now,
            // not only at the next fetch.
            if let Ok(bounds) = &bounds {
                p.lose_below(bounds.log_start, &mut changes);
            }
            let hw = bounds.map(|o| o.high_watermark).unwrap_or(p.end());
            partitions.push(SharePartitionInfo {
                topic: meta.name.clone(),
                partition,
                counts: p.counts(now, hw),
            });
            g.record((tid, partition), changes);
        }
        g.journal().await?;
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut held = std::collections::HashMap::new();
        for p in g.state.partitions.values() {
            p.count_held(&mut held);
        }
        let mut members: Vec<ShareMemberInfo> = g
            .members
            .iter()
            .map(|(id, m)| ShareMemberInfo {
                member_id: id.clone(),
                last_seen_ms: m.last_seen_ms,
                records_held: held.get(&m.idx).copied().unwrap_or(0),
            })
            .collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        Ok(DescribedShareGroup {
            config: g.config.to_map(),
            partitions,
            members,
        })
    }

    /// Changes a group's settings (creating the group if it does not exist); all or
    /// nothing. Returns every key's value after the change.
    pub async fn alter_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        self.alter_config_checked(name, changes, &|_| Ok(())).await
    }

    /// As `alter_config`; a change that sets a dead-letter topic first asks `redirect`
    /// of each topic the group consumes, under the group's lock, so that no fetch
    /// takes records of a topic in between (its records would go there too).
    pub async fn alter_config_checked(
        &self,
        name: &str,
        changes: &BTreeMap<String, String>,
        redirect: &(dyn Fn(&str) -> Result<()> + Sync),
    ) -> Result<BTreeMap<String, String>> {
        // Checked before the group is made: a refused change must not leave one.
        ShareConfig::default().apply(changes)?;
        let (slot, mut guard) = self.lock(name, true, Admit::Always).await?;
        let g = group(&mut guard);
        let next: ShareConfig = g.config.apply(changes)?;
        if let Some(dlq) = &next.dead_letter_topic {
            let set_now = changes
                .get("dead.letter.topic")
                .is_some_and(|t| !t.is_empty());
            let (_, metas) = self.broker.topic_metas();
            let sources: BTreeSet<TopicId> =
                g.state.partitions.keys().map(|(tid, _)| *tid).collect();
            for meta in &metas {
                if !topic_id(&meta.id).is_ok_and(|tid| sources.contains(&tid)) {
                    continue;
                }
                if &meta.name == dlq {
                    return Err(Error::InvalidArgument(format!(
                        "dead.letter.topic {} is a topic share group {} reads; choose another topic",
                        quote(dlq),
                        quote(name)
                    )));
                }
                if set_now {
                    redirect(&meta.name)?;
                }
            }
        }
        // The write takes the group's lock with it and sets the config it wrote: a
        // request cancelled meanwhile must not leave the file newer than the group, or
        // a second write of the same file running beside this one.
        let dir = slot.dir.clone();
        let (guard, written) = tokio::task::spawn_blocking(move || {
            let written = Group::write_config(&dir, &next).map(|()| {
                let config = next.to_map();
                group(&mut guard).config = next;
                // A longer lock or a shorter backoff may free records at once.
                slot.available.notify_waiters();
                config
            });
            (guard, written)
        })
        .await
        .expect("config write does not panic");
        drop(guard);
        written
    }

    /// Moves the group's start offset in every partition of `topic` to `to`, forgetting
    /// the state of the records in between; refused while the group has members.
    /// Returns the partitions' offsets before and after.
    pub async fn reset(
        &self,
        name: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(u32, u64, u64)>> {
        let topic = self.broker.topic(topic)?;
        let tid = topic_id(&topic.id)?;
        // Every target first, before the group is touched: a request cancelled (or
        // failing) while it looks up a timestamp must not leave some partitions reset.
        let mut targets = Vec::new();
        for partition in topic.partitions().iter() {
            let bounds = partition.offsets()?;
            let offset = match to {
                ResetTo::Earliest => bounds.log_start,
                ResetTo::Latest => bounds.high_watermark,
                ResetTo::Offset(o) => o.clamp(bounds.log_start, bounds.high_watermark),
                ResetTo::Timestamp(ts) => partition
                    .offset_for_timestamp(ts)
                    .await?
                    .map_or(bounds.high_watermark, |(o, _)| o),
                ResetTo::Duration(_) | ResetTo::ShiftBy(_) => {
                    return Err(Error::InvalidArgument(
                        "a share group resets to earliest, latest, an offset or a timestamp".into(),
                    ))
                }
            };
            targets.push((partition.id, offset));
        }
        let (slot, mut guard) = self.lock(name, false, Admit::Always).await?;
        // Deleted while the targets were looked up (the lock forgot its partitions):
        // they must not be added back. A topic made again under its name is another.
        if self.broker.topic(&topic.name)?.id != topic.id {
            return Err(Error::TopicNotFound {
                topic: topic.name.clone(),
            });
        }
        let g = group(&mut guard);
        if !g.members.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "share group {} has {} members; stop its workers (or wait for their sessions to end) before resetting it",
                quote(name),
                g.members.len()
            )));
        }
        let mut moved = Vec::new();
        for (partition, offset) in targets {
            let tp = (tid, partition);
            let p = g
                .state
                .partitions
                .entry(tp)
                .or_insert_with(|| super::window::SharePartition::new(offset));
            let before = p.start();
            let mut changes = Vec::new();
            p.reset(offset, &mut changes);
            g.restored.insert(tp);
            g.record(tp, changes);
            moved.push((partition, before, offset));
        }
        let seq = g.journal().await?;
        let durability = g.files.durability();
        drop(guard);
        slot.available.notify_waiters();
        durability.wait(seq).await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::broker::page::Page;
    use crate::broker::{Broker, Limits};

    /// A request cancelled while its group's files load must not leave that load
    /// running beside the next request's load of the same files (two opens of one
    /// directory race on its snapshot file, and the second request failed).
    #[tokio::test]
    async fn a_request_straight_after_a_cancelled_load_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let queues =
            super::ShareGroups::open(broker, crate::groups::share::MAX_WINDOW_RECORDS).unwrap();
        let none = BTreeMap::new();
        for g in 0..8 {
            let group = format!("q{g}");
            // Polled once: it stops at the blocking load; then the client goes away.
            let mut first = Box::pin(queues.alter_config(&group, &none));
            let _ = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(first.as_mut(), cx))
            })
            .await;
            // Pending in the blocking work almost always; if that work won the race
            // and the request finished, what follows must hold all the same.
            drop(first);
            queues.alter_config(&group, &none).await.unwrap();
        }
        assert_eq!(queues.list(&Page::all()).entries.len(), 8);
    }

    /// A settings change cancelled while its file is written is the group's settings
    /// once written, not only the file's (which the group read at its next load).
    #[tokio::test]
    async fn a_config_change_cancelled_midway_is_the_groups_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let queues =
            super::ShareGroups::open(broker, crate::groups::share::MAX_WINDOW_RECORDS).unwrap();
        queues.alter_config("q", &BTreeMap::new()).await.unwrap();
        let change = BTreeMap::from([("lock.ms".to_string(), "5000".to_string())]);
        let mut first = Box::pin(queues.alter_config("q", &change));
        let _ = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(first.as_mut(), cx))
        })
        .await;
        // Pending in the blocking work almost always; if that work won the race
        // and the request finished, what follows must hold all the same.
        drop(first);
        let described = queues.describe("q").await.unwrap();
        assert_eq!(described.config["lock.ms"], "5000");
    }
}
