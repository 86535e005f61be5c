//! What a group's machine shows of itself without changing: whether it can be
//! forgotten, its members as DescribeGroups shows them, the bytes it holds, the
//! protocol its members vote for, and a member's JoinGroup answer.

use std::collections::BTreeMap;

#[cfg(test)]
use bytes::Bytes;

use super::{code, Group, GroupView, JoinAnswer, JoinedMember, MemberView};

/// What a member costs beyond its own bytes (its entries, strings' allocations):
/// measured at about 0.9 KB of RSS a member (10,000 static members with short names
/// took 9 MB), so that `MAX_HELD_BYTES` bounds memory, not only payload.
pub const MEMBER_COST: usize = 1024;
/// What an id handed out and waiting to be used costs beyond its bytes.
const PENDING_COST: usize = 128;

impl Group {
    /// No members, and no id handed out still waiting: the group can be forgotten
    /// (its committed offsets are kept elsewhere).
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// What DescribeGroups shows of the group: each member's metadata is its entry
    /// for the group's protocol (while none is chosen, its first).
    pub fn view(&self) -> GroupView {
        let members = self.members.iter().map(|(id, m)| MemberView {
            id: id.clone(),
            instance_id: m.instance.clone(),
            client_id: m.client_id.clone(),
            metadata: m
                .protocols
                .iter()
                .find(|(name, _)| *name == self.protocol)
                .or(m.protocols.first())
                .map(|(_, metadata)| metadata.clone())
                .unwrap_or_default(),
            assignment: m.assignment.clone(),
        });
        GroupView {
            state: self.state,
            protocol_type: self.protocol_type().to_string(),
            protocol: self.protocol.clone(),
            members: members.collect(),
        }
    }

    pub fn protocol_type(&self) -> &str {
        self.members
            .values()
            .next()
            .map_or("", |m| m.protocol_type.as_str())
    }

    /// Bytes the group holds for its members: their ids, protocol metadata and
    /// assignments, and what each costs beyond them (the coordinator bounds the sum
    /// over every group).
    pub fn held_bytes(&self) -> usize {
        let pending: usize = self.pending.keys().map(|id| id.len() + PENDING_COST).sum();
        let members: usize = self
            .members
            .iter()
            .map(|(id, m)| {
                let protocols: usize = m.protocols.iter().map(|(p, md)| p.len() + md.len()).sum();
                // A static member's instance id, and its entry in `statics`.
                let instance = m.instance.as_ref().map_or(0, |i| 2 * i.len() + id.len());
                MEMBER_COST
                    + instance
                    + id.len()
                    + m.client_id.len()
                    + m.protocol_type.len()
                    + protocols
                    + m.assignment.len()
            })
            .sum();
        pending + members
    }

    /// Panics unless each instance id names a member that has it, and each static
    /// member is named by its instance id (the model test's check).
    #[cfg(test)]
    pub fn check_statics(&self) {
        for (instance, id) in &self.statics {
            let member = self.members.get(id).expect("an instance names a member");
            assert_eq!(member.instance.as_ref(), Some(instance));
        }
        for (id, member) in &self.members {
            if let Some(instance) = &member.instance {
                assert_eq!(self.statics.get(instance), Some(id));
            }
        }
    }

    /// (member id, client id, assignment) of each member (the model test's view).
    #[cfg(test)]
    pub fn members(&self) -> impl Iterator<Item = (&str, &str, &Bytes)> {
        self.members
            .iter()
            .map(|(id, m)| (id.as_str(), m.client_id.as_str(), &m.assignment))
    }

    /// Kafka's vote for the group's protocol: among the protocols every member has
    /// (join checked that one exists), each member votes for the first in its own
    /// order; most votes win, a tie going to the leader's order.
    pub(super) fn vote(&self) -> String {
        let shared = |p: &str| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        };
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((p, _)) = member.protocols.iter().find(|(p, _)| shared(p)) {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let Some(leader) = self.members.get(&self.leader) else {
            return String::new();
        };
        let mut best: Option<(&str, usize)> = None;
        for (p, _) in &leader.protocols {
            let count = votes.get(p.as_str()).copied().unwrap_or(0);
            if count > 0 && best.is_none_or(|(_, most)| count > most) {
                best = Some((p.as_str(), count));
            }
        }
        best.map(|(p, _)| p.to_string()).unwrap_or_default()
    }

    pub(super) fn join_answer(&self, id: &str) -> JoinAnswer {
        let members = match id == self.leader {
            true => self
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m.protocols.iter().find(|(p, _)| *p == self.protocol);
                    JoinedMember {
                        id: id.clone(),
                        instance_id: m.instance.clone(),
                        metadata: metadata.map(|(_, md)| md.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
            false => Vec::new(),
        };
        JoinAnswer {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type().to_string(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            member_id: id.to_string(),
            members,
        }
    }
}
