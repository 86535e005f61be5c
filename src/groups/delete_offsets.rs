//! Deleting a group's committed offsets for a topic (gRPC DeleteOffsets, Kafka's
//! OffsetDelete): for a topic the group no longer consumes, so that it stops showing
//! (and lagging) in `strom group describe`, or so that a consumer starting it again
//! starts from its reset policy rather than from an old commit.
//!
//! Refused while a member of the group subscribes to the topic or still owns one of
//! its partitions, strom's or Kafka's (`ForeignMembers`): it would commit again, or
//! read from its reset policy in the middle of the topic, as Kafka refuses with
//! GROUP_SUBSCRIBED_TO_TOPIC.
//!
//! The journal has only records that set offsets, so a delete is written as a new
//! snapshot without the deleted offsets (as compaction writes one), and the journal
//! goes on from it: the files stay in the format they had, and the delete is
//! acknowledged once the snapshot is synced and renamed into place.

use std::sync::Arc;

use super::{loaded, topic_id, Groups};
use crate::error::{quote, Error, Result};

impl Groups {
    /// Deletes `group`'s committed offsets of `topic`'s `partitions` (all of them if
    /// empty); returns the partitions that had one, ascending. A partition without one
    /// is not an error (deleting twice is the same as once); a partition the topic does
    /// not have is.
    pub async fn delete_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
    ) -> Result<Vec<u32>> {
        super::validate_group_name(group)?;
        let t = self.broker.topic(topic)?;
        let count = t.partition_count();
        if let Some(&p) = partitions.iter().find(|&&p| p >= count) {
            return Err(Error::PartitionNotFound {
                topic: topic.to_string(),
                partition: p,
                count,
            });
        }
        let id = topic_id(&t.id)?;
        // First: a Kafka group with members may have no offsets yet, and so no slot.
        if self.foreign_subscribes(group, topic) {
            return Err(subscribed(group, topic, "its Kafka members"));
        }
        let (slot, mut guard) = self.lock(group, false).await?;
        let membership = &loaded(&mut guard).membership;
        let owned = (0..count).find_map(|p| membership.holder(&(id, p)));
        if membership.subscribes(topic) || owned.is_some() {
            return Err(subscribed(group, topic, "its members"));
        }
        let Some(store) = self.store(&slot, loaded(&mut guard), false).await? else {
            return Ok(Vec::new()); // the group never committed
        };
        let wanted: Vec<u32> = match partitions.is_empty() {
            true => (0..count).collect(),
            false => partitions.to_vec(),
        };
        let mut removed = Vec::new();
        for p in wanted {
            if let Some(committed) = store.offsets.remove(&(id, p)) {
                removed.push(((id, p), committed));
            }
        }
        if removed.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(err) = self.snapshot(store).await {
            // Not on disk: what is served must stay what a restart would read.
            store.offsets.apply(removed);
            return Err(err);
        }
        let mut deleted: Vec<u32> = removed.into_iter().map(|((_, p), _)| p).collect();
        deleted.sort_unstable();
        deleted.dedup();
        tracing::info!(group, topic, partitions = ?deleted, "committed offsets deleted");
        Ok(deleted)
    }

    /// Whether another protocol's members of `group` may consume `topic`.
    fn foreign_subscribes(&self, group: &str, topic: &str) -> bool {
        self.foreign
            .get()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|foreign: Arc<dyn super::ForeignMembers>| foreign.subscribes(group, topic))
    }
}

fn subscribed(group: &str, topic: &str, who: &str) -> Error {
    Error::GroupSubscribed(format!(
        "{who} consume topic {} (they subscribe to it, or still own a partition of it); offsets of a topic can be deleted only while group {} does not consume it: unsubscribe or stop them first",
        quote(topic),
        quote(group)
    ))
}
