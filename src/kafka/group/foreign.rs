//! What strom's consumer groups ask of the Kafka coordinator (`groups::ForeignMembers`):
//! whether a group has Kafka members, whether they may consume a topic (read from
//! their protocol metadata and assignments), and holding a group's joins while an
//! administrator changes its offsets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::Coordinator;
use crate::groups::{Consumed, ForeignMembers};

impl ForeignMembers for Coordinator {
    fn has_members(&self, group: &str) -> bool {
        self.groups()
            .get(group)
            .is_some_and(|slot| slot.group.member_count() > 0)
    }

    /// As Kafka's classic groups answer it, and more: a member of a `consumer` group
    /// consumes the topics its metadata lists (Kafka's ConsumerProtocolSubscription,
    /// for the group's protocol, or its first while none is chosen) and those its
    /// assignment names (it may not have given them back yet); for a group of another
    /// protocol type, or bytes that do not read as these, any topic.
    fn consumed(&self, group: &str) -> Consumed {
        let mut topics = HashSet::new();
        let Some(view) = self.groups().get(group).map(|slot| slot.group.view()) else {
            return Consumed::Topics(topics);
        };
        if view.protocol_type != "consumer" && !view.members.is_empty() {
            return Consumed::Any;
        }
        for m in &view.members {
            let assigned = match m.assignment.is_empty() {
                true => Some(Vec::new()),
                false => assignment(m.assignment.clone()),
            };
            for named in [subscription(m.metadata.clone()), assigned] {
                match named {
                    Some(named) => topics.extend(named),
                    None => return Consumed::Any,
                }
            }
        }
        Consumed::Topics(topics)
    }

    /// Until the guard is dropped, the group's JoinGroups are answered
    /// COORDINATOR_LOAD_IN_PROGRESS (the clients retry): taken under the lock each join
    /// takes, so that no member joins between `consumed` and the change it allowed.
    fn hold_joins(&self, group: &str) -> Box<dyn Send> {
        let _groups = self.groups();
        let mut held = self.joins_held.lock().unwrap_or_else(|e| e.into_inner());
        *held.entry(group.to_string()).or_default() += 1;
        Box::new(JoinsHeld {
            held: Arc::clone(&self.joins_held),
            group: group.to_string(),
        })
    }
}

/// Groups whose joins are held, each with how many hold them.
pub(super) type Held = Arc<Mutex<HashMap<String, usize>>>;

struct JoinsHeld {
    held: Held,
    group: String,
}

impl Drop for JoinsHeld {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.group) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.group);
            }
        }
    }
}

/// The topics a consumer's protocol metadata (Kafka's ConsumerProtocolSubscription,
/// any version: later ones only add fields after the topics) subscribes to.
fn subscription(metadata: bytes::Bytes) -> Option<Vec<String>> {
    let mut r = crate::kafka::wire::Reader::new(metadata, false);
    if r.i16().ok()? < 0 {
        return None;
    }
    r.nullable_array("topics", |r| r.string("topic")).ok()?
}

/// The topics a consumer's assignment (Kafka's ConsumerProtocolAssignment, any
/// version) names.
fn assignment(assignment: bytes::Bytes) -> Option<Vec<String>> {
    let mut r = crate::kafka::wire::Reader::new(assignment, false);
    if r.i16().ok()? < 0 {
        return None;
    }
    let topics = r.nullable_array("assigned partitions", |r| {
        let topic = r.string("topic")?;
        r.nullable_array("partitions", |r| r.i32())?;
        Ok(topic)
    });
    topics.ok()?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};

    use super::*;
    use crate::broker::{Broker, Limits};
    use crate::groups::{Groups, GroupsConfig};
    use crate::kafka::group::machine::Join;
    use crate::log::files::failpoint;

    fn join(group_topic: &str) -> Join {
        // Kafka's ConsumerProtocolSubscription, version 0, of one topic.
        let mut metadata = BytesMut::new();
        metadata.put_i16(0);
        metadata.put_i32(1);
        metadata.put_i16(group_topic.len() as i16);
        metadata.put_slice(group_topic.as_bytes());
        metadata.put_i32(-1);
        Join {
            member_id: String::new(),
            instance_id: None,
            client_id: "test".into(),
            session_ms: 10_000,
            rebalance_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from(metadata))],
            id_required: false,
            new_id: "m1".into(),
        }
    }

    /// Hostile-sweep finding: a Kafka consumer that joined while a delete of its
    /// topic's offsets waited for the group's lock, or wrote its snapshot, was not
    /// seen, and started from its reset policy. Its join now waits for the delete.
    #[tokio::test]
    async fn a_kafka_join_waits_for_a_delete_of_offsets_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let groups = Arc::new(Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap());
        let coordinator = Arc::new(Coordinator::new(broker.shutting_down(), Duration::ZERO));
        let foreign: std::sync::Weak<dyn ForeignMembers> = Arc::downgrade(&coordinator) as _;
        groups.set_foreign_members(foreign);
        let offsets = vec![("t".to_string(), 0, 0, String::new())];
        groups.commit("g", "", 0, offsets).await.unwrap();
        let group_dir = std::fs::read_dir(dir.path().join("groups"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("g."))
            .unwrap();
        failpoint::delay_next_sync_under(&group_dir, Duration::from_millis(500));
        let deleting = tokio::spawn({
            let groups = Arc::clone(&groups);
            async move { groups.delete_offsets("g", vec![("t".into(), vec![])]).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = coordinator.join("g", join("t")).await;
        assert_eq!(refused.error, super::super::COORDINATOR_LOAD_IN_PROGRESS);
        let deleted = deleting.await.unwrap().unwrap();
        assert_eq!(deleted.into_iter().next().unwrap().unwrap(), [0]);
        let joined = coordinator.join("g", join("t")).await;
        assert_eq!((joined.error, joined.generation), (0, 1));
        // And now that it is a member, its topic's offsets stay.
        let answer = groups.delete_offsets("g", vec![("t".into(), vec![])]).await;
        let refused = answer.unwrap().into_iter().next().unwrap().unwrap_err();
        assert!(
            matches!(refused, crate::Error::GroupSubscribed(_)),
            "{refused}"
        );
    }

    fn offset() -> Vec<(String, u32, u64, String)> {
        vec![("t".to_string(), 0, 0, String::new())]
    }

    /// Group `g` with an offset committed, its files closed as after a restart (the
    /// next change opens them, between its check of the members and the change, and
    /// that open's first sync takes half a second), and a Kafka coordinator.
    async fn committed_then_restarted() -> (tempfile::TempDir, Arc<Groups>, Arc<Coordinator>) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let committed = Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap();
        committed.commit("g", "", 0, offset()).await.unwrap();
        drop(committed);
        let groups = Arc::new(Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap());
        let coordinator = Arc::new(Coordinator::new(broker.shutting_down(), Duration::ZERO));
        let foreign: std::sync::Weak<dyn ForeignMembers> = Arc::downgrade(&coordinator) as _;
        groups.set_foreign_members(foreign);
        failpoint::delay_next_sync_under(&dir.path().join("groups"), Duration::from_millis(500));
        (dir, groups, coordinator)
    }

    /// The same for a reset, which opens the group's files between its check of the
    /// members and its change.
    #[tokio::test]
    async fn a_kafka_join_waits_for_a_reset_under_way() {
        let (_dir, groups, coordinator) = committed_then_restarted().await;
        let resetting = tokio::spawn({
            let groups = Arc::clone(&groups);
            async move {
                let to = crate::groups::ResetTo::Latest;
                groups.reset("g", "t", &[], to, false).await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = coordinator.join("g", join("t")).await;
        assert_eq!(refused.error, super::super::COORDINATOR_LOAD_IN_PROGRESS);
        resetting.await.unwrap().unwrap();
        let joined = coordinator.join("g", join("t")).await;
        assert_eq!(joined.error, 0);
    }

    /// And for a gRPC commit without a member id (a group without members), which may
    /// open the group's files before it stores.
    #[tokio::test]
    async fn a_kafka_join_waits_for_a_commit_from_outside_the_group() {
        let (_dir, groups, coordinator) = committed_then_restarted().await;
        let committing = tokio::spawn({
            let groups = Arc::clone(&groups);
            async move { groups.commit("g", "", 0, offset()).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = coordinator.join("g", join("t")).await;
        assert_eq!(refused.error, super::super::COORDINATOR_LOAD_IN_PROGRESS);
        committing.await.unwrap().unwrap();
        assert_eq!(coordinator.join("g", join("t")).await.error, 0);
    }
}
