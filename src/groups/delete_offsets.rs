//! Deleting a group's committed offsets of topics (gRPC DeleteOffsets, Kafka's
//! OffsetDelete): for a topic the group no longer consumes, so that it stops showing
//! (and lagging) in `strom group describe`, or so that a consumer starting it again
//! starts from its reset policy rather than from an old commit.
//!
//! Refused for a topic while a member of the group subscribes to it or still owns one
//! of its partitions, strom's or Kafka's (`ForeignMembers`): it would commit again, or
//! read from its reset policy in the middle of the topic, as Kafka refuses with
//! GROUP_SUBSCRIBED_TO_TOPIC.
//!
//! The journal has only records that set offsets, so a delete is written as a new
//! snapshot without the deleted offsets (as compaction writes one), and the journal
//! goes on from it: the files stay in the format they had, and the delete is
//! acknowledged once the snapshot is synced and renamed into place.

use std::sync::Arc;

use super::{loaded, topic_id, Groups, TopicId};
use crate::error::{quote, Error, Result};

/// A topic looked up: its id, name, the partitions asked for, and how many it has.
type Named = (TopicId, String, Vec<u32>, u32);

/// A topic's partitions whose offsets were deleted (those that had one), ascending;
/// or why none of the topic's were.
pub type Deleted = Result<Vec<u32>>;

impl Groups {
    /// Deletes `group`'s committed offsets of each topic's partitions (all of them for
    /// an empty list), all in one snapshot. A partition without one is not an error
    /// (deleting twice is the same as once). The outer error is the group's (it does
    /// not exist); each topic has its own (no such topic or partition, consumed by a
    /// member). Run to its end on a task of its own, so that a caller that goes away
    /// cannot leave the offsets changed in memory and not on disk, or its snapshot
    /// landing after a later one.
    pub async fn delete_offsets(
        self: &Arc<Self>,
        group: &str,
        topics: Vec<(String, Vec<u32>)>,
    ) -> Result<Vec<Deleted>> {
        super::validate_group_name(group)?;
        let this = Arc::clone(self);
        let group = group.to_string();
        tokio::spawn(async move { this.forget(&group, topics).await })
            .await
            .expect("deleting offsets does not panic")
    }

    async fn forget(&self, group: &str, topics: Vec<(String, Vec<u32>)>) -> Result<Vec<Deleted>> {
        // Each topic looked up before the group is locked.
        let named: Vec<Result<Named>> = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let t = self.broker.topic(&topic)?;
                let count = t.partition_count();
                if let Some(&partition) = partitions.iter().find(|&&p| p >= count) {
                    return Err(Error::PartitionNotFound {
                        topic,
                        partition,
                        count,
                    });
                }
                let partitions = match partitions.is_empty() {
                    true => (0..count).collect(),
                    false => partitions,
                };
                Ok((topic_id(&t.id)?, topic, partitions, count))
            })
            .collect();
        let locked = self.lock(group, false).await;
        // Kafka's members join without this group's lock: their joins wait until the
        // change is made, so that none joins after its subscription was looked at.
        let _joins = self.hold_foreign_joins(group);
        // Read once: a Kafka request may name thousands of topics.
        let foreign = self.foreign_consumed(group);
        let (slot, mut guard) = match locked {
            // A Kafka group with members and no offsets yet: nothing to delete.
            Err(Error::GroupNotFound { .. }) if self.foreign_members(group) => {
                let answer = |named: Result<Named>| {
                    let (_, topic, ..) = named?;
                    match foreign.includes(&topic) {
                        true => Err(subscribed(group, &topic, "its Kafka members")),
                        false => Ok(Vec::new()),
                    }
                };
                return Ok(named.into_iter().map(answer).collect());
            }
            locked => locked?,
        };
        let membership = &loaded(&mut guard).membership;
        let free: Vec<Result<(TopicId, Vec<u32>)>> = named
            .into_iter()
            .map(|named| {
                let (id, topic, partitions, count) = named?;
                let owned = (0..count).find_map(|p| membership.holder(&(id, p)));
                if membership.subscribes(&topic) || owned.is_some() {
                    return Err(subscribed(group, &topic, "its members"));
                }
                if foreign.includes(&topic) {
                    return Err(subscribed(group, &topic, "its Kafka members"));
                }
                Ok((id, partitions))
            })
            .collect();
        let Some(store) = self.store(&slot, loaded(&mut guard), false).await? else {
            // The group never committed.
            return Ok(free.into_iter().map(|f| f.map(|_| Vec::new())).collect());
        };
        let mut removed = Vec::new();
        let answers: Vec<Deleted> = free
            .into_iter()
            .map(|free| {
                let (id, partitions) = free?;
                let mut deleted = Vec::new();
                for p in partitions {
                    if let Some(committed) = store.offsets.remove(&(id, p)) {
                        removed.push(((id, p), committed));
                        deleted.push(p);
                    }
                }
                deleted.sort_unstable();
                Ok(deleted)
            })
            .collect();
        if removed.is_empty() {
            return Ok(answers);
        }
        // An empty record first: the snapshot is named by the journal position, and
        // one of other offsets must not take the name of a snapshot already written
        // (a commit's, whose writer went away and may still land).
        if let Err(err) = store.files.append(&[]) {
            store.offsets.apply(removed);
            return Err(err);
        }
        let path = store.files.snapshot_path();
        let Err(err) = self.snapshot(store).await else {
            tracing::info!(group, removed = removed.len(), "committed offsets deleted");
            return Ok(answers);
        };
        if let Ok(false) = path.try_exists() {
            // Not renamed into place: nothing was deleted.
            store.offsets.apply(removed);
            return Err(err);
        }
        // In place (or not known), and maybe not durable (its directory's sync
        // failed): the group's files are read again (the directory synced first) at
        // its next use, so that what is served is what a restart reads.
        loaded(&mut guard).close_store();
        Err(Error::Unavailable {
            what: format!("deleting group {}'s offsets", quote(group)),
            reason: format!(
                "{err}; whether they were deleted is not known: fetch them to see, and delete again"
            ),
        })
    }
}

fn subscribed(group: &str, topic: &str, who: &str) -> Error {
    Error::GroupSubscribed(format!(
        "{who} consume topic {} (they subscribe to it, or still own a partition of it); offsets of a topic can be deleted only while group {} does not consume it: unsubscribe or stop them first",
        quote(topic),
        quote(group)
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::broker::{Broker, Limits};
    use crate::groups::GroupsConfig;
    use crate::log::files::failpoint;

    async fn setup(partitions: u32) -> (tempfile::TempDir, Arc<Broker>, Arc<Groups>) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker
            .create_topic("t", partitions, &BTreeMap::new())
            .await
            .unwrap();
        let groups = Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap();
        (dir, broker, Arc::new(groups))
    }

    fn offsets(
        partitions: std::ops::Range<u32>,
        metadata: usize,
    ) -> Vec<(String, u32, u64, String)> {
        let entry = |p| ("t".to_string(), p, 0, "m".repeat(metadata));
        partitions.map(entry).collect()
    }

    /// The partitions of `t` with an offset, as `groups` serves them.
    async fn committed(groups: &Groups) -> Vec<u32> {
        let fetched = groups.fetch_offsets("g", &[], None, None).await.unwrap();
        fetched.offsets.iter().map(|(_, p, _)| *p).collect()
    }

    /// The same, as a fresh `Groups` on the same files reads them (a restart).
    async fn restarted(broker: &Arc<Broker>) -> Vec<u32> {
        let groups = Groups::open(Arc::clone(broker), GroupsConfig::default()).unwrap();
        committed(&groups).await
    }

    fn group_dir(groups: &Groups) -> std::path::PathBuf {
        groups.slots().get("g").unwrap().dir.clone()
    }

    /// Review finding: a delete whose snapshot was renamed into place, and whose
    /// directory sync then failed, was refused and its offsets put back in memory,
    /// while a restart read the snapshot without them. What is served must be what a
    /// restart reads.
    #[tokio::test]
    async fn a_delete_whose_directory_sync_fails_serves_what_a_restart_reads() {
        let (_dir, broker, groups) = setup(2).await;
        groups.commit("g", "", 0, offsets(0..2, 0)).await.unwrap();
        // The snapshot's file syncs, its rename happens, the directory's sync fails.
        failpoint::fail_sync_under_after(&group_dir(&groups), 1);
        let topics = vec![("t".to_string(), vec![0])];
        let err = groups.delete_offsets("g", topics).await.unwrap_err();
        assert!(err.to_string().contains("not known"), "{err}");
        let served = committed(&groups).await;
        assert_eq!(served, restarted(&broker).await);
    }

    /// Review finding: snapshots are named by journal position, and a commit whose
    /// caller went away leaves its snapshot write running. A delete at the same
    /// position wrote a snapshot of the same name, which the late write then replaced
    /// with the deleted offsets in it.
    #[tokio::test]
    async fn a_late_compaction_snapshot_does_not_bring_deleted_offsets_back() {
        let (_dir, broker, groups) = setup(400).await;
        // 200 offsets of 4 KiB metadata: 800 KB of journal; the next 200 pass 1 MiB.
        groups
            .commit("g", "", 0, offsets(0..200, 4000))
            .await
            .unwrap();
        failpoint::delay_next_sync_under(&group_dir(&groups), Duration::from_millis(500));
        let compacting = groups.commit("g", "", 0, offsets(200..400, 4000));
        let cancelled = tokio::time::timeout(Duration::from_millis(100), compacting).await;
        assert!(
            cancelled.is_err(),
            "the commit is still writing its snapshot"
        );
        let topics = vec![("t".to_string(), vec![0])];
        let deleted = groups.delete_offsets("g", topics).await.unwrap();
        assert_eq!(deleted.into_iter().next().unwrap().unwrap(), [0]);
        tokio::time::sleep(Duration::from_millis(800)).await; // the late write lands
        let after = restarted(&broker).await;
        assert!(!after.contains(&0), "deleted offset back after a restart");
        assert_eq!(after.len(), 399);
    }

    /// A delete whose caller goes away while its snapshot is written still ends as a
    /// delete does: here its snapshot fails, and what is served is what a restart
    /// reads (cancelled in the middle, it left the offsets deleted in memory only).
    #[tokio::test]
    async fn a_delete_whose_caller_goes_away_still_ends_as_one() {
        let (_dir, broker, groups) = setup(2).await;
        groups.commit("g", "", 0, offsets(0..2, 0)).await.unwrap();
        let dir = group_dir(&groups);
        failpoint::delay_next_sync_under(&dir, Duration::from_millis(300));
        failpoint::fail_next_sync_under(&dir);
        let delete = groups.delete_offsets("g", vec![("t".to_string(), vec![0])]);
        let cancelled = tokio::time::timeout(Duration::from_millis(50), delete).await;
        assert!(cancelled.is_err(), "still writing its snapshot");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let served = committed(&groups).await;
        assert_eq!(served, [0, 1], "the snapshot failed");
        assert_eq!(served, restarted(&broker).await);
    }
}
