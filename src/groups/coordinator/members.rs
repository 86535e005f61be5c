//! Members coming and going: a join (or a static member's return), a leave, the end
//! of a session, and a member's removal with what it held.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Member, Membership, Subscription, MAX_MEMBERS};
use crate::error::{Error, Result};
use crate::groups::TopicsView;

impl Membership {
    /// Adds a joining member, or lets it take the place of a static member with its
    /// instance_id that left. Returns its id.
    pub(super) fn join(
        &mut self,
        subscription: Subscription,
        instance_id: &Option<String>,
        session_timeout_ms: u64,
        now_ms: u64,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String> {
        let previous = instance_id.as_ref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
        });
        if let Some(old) = previous.filter(|old| !old.departed) {
            // Two live processes with one instance_id would both consume its partitions.
            return Err(Error::FailedPrecondition(format!(
                "group {}: instance_id {} belongs to member {}, which has not left; if that process is gone, join again once its session ({} ms) has ended, or stop it with LeaveGroup first",
                crate::error::quote(&self.group),
                crate::error::quote(old.instance_id.as_deref().unwrap_or_default()),
                crate::error::quote(&old.id),
                old.session_timeout_ms
            )));
        }
        let previous = previous.map(|old| (Arc::clone(&old.id), Arc::clone(&old.subscription)));
        if previous.is_none() && self.members.len() >= MAX_MEMBERS {
            return Err(Error::LimitReached(format!(
                "group {} has {MAX_MEMBERS} members, the most a group may have",
                crate::error::quote(&self.group)
            )));
        }
        let subscription = self.subscriptions.intern(
            &self.group,
            subscription,
            previous.as_ref().map(|(_, sub)| sub),
        )?;
        let id: Arc<str> = new_member_id().into();
        let mut member = Member {
            id: Arc::clone(&id),
            instance_id: instance_id.clone(),
            epoch: 0,
            previous_epoch: 0,
            subscription,
            session_timeout_ms,
            deadline_ms: now_ms.saturating_add(session_timeout_ms),
            departed: false,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            revoking_since: None,
        };
        let changed = match previous.and_then(|(old, _)| self.members.remove(&*old)) {
            Some(old) => {
                self.subscriptions.release(&old.subscription);
                // A restarted static member: it takes over what its predecessor held.
                for tp in old.assigned.iter().chain(&old.revoking) {
                    self.holder.insert(*tp, &id);
                }
                if let Some(target) = self.target.remove(&*old.id) {
                    self.target.insert(id.to_string(), target);
                }
                member.epoch = old.epoch;
                member.previous_epoch = old.epoch;
                member.assigned = old.assigned;
                member.revoking = old.revoking;
                member.revoking_since = old.revoking_since;
                !Arc::ptr_eq(&old.subscription, &member.subscription)
            }
            None => true,
        };
        self.members.insert(id.to_string(), member);
        self.changes += 1;
        if changed {
            self.bump();
        }
        Ok(id.to_string())
    }

    /// A member leaves. A static member keeps its partitions until its session would
    /// end, for a restart to take them back; any other's go to the rest at once.
    pub fn leave(&mut self, member_id: &str, view: &Arc<TopicsView>) {
        self.refresh_view(view);
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if member.instance_id.is_some() {
            member.departed = true;
            self.changes += 1;
        } else {
            self.remove(member_id);
            self.bump();
        }
    }

    /// Removes every member whose session ended by `now_ms`, or that has held on to
    /// revoked partitions for longer than its session; returns their ids.
    pub fn expire(&mut self, now_ms: u64, view: &Arc<TopicsView>) -> Vec<String> {
        self.refresh_view(view);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.next_deadline() <= now_ms)
            .map(|m| m.id.to_string())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        if !expired.is_empty() {
            self.bump();
        }
        expired
    }

    pub(super) fn remove(&mut self, id: &str) {
        self.changes += 1;
        if let Some(member) = self.members.remove(id) {
            for tp in member.assigned.iter().chain(&member.revoking) {
                self.holder.remove(tp);
            }
            self.subscriptions.release(&member.subscription);
        }
        self.target.remove(id);
    }
}
