//! Whether a member may commit: the checks CommitOffsets makes against the membership.

use super::{epoch_mismatch, fenced, Membership};
use crate::error::{Error, Result};
use crate::groups::Tp;

impl Membership {
    /// Whether a commit of `partitions` (each with its topic's name, as the request gave
    /// it) by this member at this epoch is allowed: a member of the group, at its current
    /// or previous epoch, holding every partition. Without a member id, only while the
    /// group has no members.
    pub fn check_commit(
        &self,
        member_id: &str,
        member_epoch: i64,
        partitions: &[(Tp, &str)],
    ) -> Result<()> {
        if member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "group {} has {} members: commit with a member_id and member_epoch, or wait until they have left",
                crate::error::quote(&self.group),
                self.members.len()
            )));
        }
        let Some(member) = self.members.get(member_id).filter(|m| !m.departed) else {
            return Err(fenced(
                &self.group,
                format!(
                    "member {} is not in the group",
                    crate::error::quote(member_id)
                ),
            ));
        };
        if member_epoch != member.epoch && member_epoch != member.previous_epoch {
            return Err(fenced(
                &self.group,
                epoch_mismatch(member_epoch, member.epoch),
            ));
        }
        // The name from the request: a topic created again since this group last looked
        // has an id its view does not know (and was named "(deleted topic)").
        if let Some((tp, name)) = partitions
            .iter()
            .find(|(tp, _)| self.holder.get(tp) != Some(&member.id))
        {
            return Err(Error::FailedPrecondition(format!(
                "group {}: member {} does not own topic {} partition {}; commit only partitions of your assignment (a topic just created again brings its new partitions at your next heartbeat)",
                crate::error::quote(&self.group),
                crate::error::quote(member_id),
                crate::error::quote(name),
                tp.1
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::broker::TopicMeta;
    use crate::groups::coordinator::{Heartbeat, Membership};
    use crate::groups::{subscription, TopicsView};

    /// A commit refused for a partition of a topic created again since the group last
    /// looked names the topic, not "(deleted topic)".
    #[test]
    fn a_refused_commit_names_a_topic_created_again() {
        let view = |version, id: u128| {
            let meta = TopicMeta {
                name: "t".into(),
                id: format!("{id:032x}"),
                partitions: 1,
            };
            Arc::new(TopicsView::new(version, vec![meta]))
        };
        let v1 = view(1, 1);
        let mut group = Membership::new("g", 1_000, Arc::clone(&v1));
        let hb = Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscription: subscription(vec!["t".into()], "").unwrap(),
            instance_id: None,
            session_timeout_ms: 10_000,
            owned: Vec::new(),
        };
        let answer = group.heartbeat(hb, &v1, 0, || "m".into()).unwrap();
        // Topic t created again: id 2, which the group has not seen.
        let err = group
            .check_commit("m", answer.member_epoch, &[((2, 0), "t")])
            .unwrap_err();
        assert!(err.to_string().contains("topic \"t\" partition 0"), "{err}");
    }
}
