//! The group's target assignment, computed again (a new group epoch) whenever members,
//! their subscriptions or the subscribed topics change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Membership;
use crate::groups::assign::assign;
use crate::groups::{Subscription, TopicId, TopicsView, Tp};

/// Rebuilds a set built by inserts with full nodes: a B-tree grown one insert at a time
/// keeps its nodes about half full, about 60 bytes per partition rather than 35, and a
/// group holds two such sets of every partition it hands out (target and assignment).
pub(super) fn compact(set: &mut BTreeSet<Tp>) {
    *set = std::mem::take(set).into_iter().collect();
}

impl Membership {
    /// Takes the topics as they are now; a new epoch if the subscribed ones changed,
    /// or if what scoped patterns may match did (the access control list read again:
    /// a member must lose a topic it may no longer read, and gain one it now may).
    pub(super) fn refresh_view(&mut self, view: &Arc<TopicsView>) {
        let era = self.subscriptions.era();
        let scopes_moved = era.is_some_and(|era| era != self.scope_era);
        if let Some(era) = era {
            self.scope_era = era;
        }
        if view.version == self.view.version && !scopes_moved {
            return;
        }
        let before = self.subscribed_topics();
        self.view = Arc::clone(view);
        if scopes_moved || before != self.subscribed_topics() {
            self.bump();
        }
    }

    /// Every subscribed topic that exists, with its partition count.
    fn subscribed_topics(&self) -> BTreeMap<TopicId, u32> {
        self.view
            .topics()
            .filter(|(name, _, _)| self.subscribes(name))
            .map(|(_, id, partitions)| (id, partitions))
            .collect()
    }

    /// A new group epoch and target. Topics are matched once per distinct subscription,
    /// not once per member: every member's subscription is the group's copy from
    /// `Subscriptions::intern`, so its address names its class.
    pub(super) fn bump(&mut self) {
        self.epoch += 1;
        self.changes += 1;
        let distinct: Vec<&Arc<Subscription>> = self.subscriptions.distinct().collect();
        let class: HashMap<*const Subscription, usize> = distinct
            .iter()
            .enumerate()
            .map(|(i, sub)| (Arc::as_ptr(sub), i))
            .collect();
        let classes: Vec<BTreeSet<TopicId>> = distinct
            .iter()
            .map(|sub| {
                self.view
                    .topics()
                    .filter(|(name, _, _)| sub.matches(name))
                    .map(|(_, id, _)| id)
                    .collect()
            })
            .collect();
        let members: BTreeMap<String, usize> = self
            .members
            .values()
            .map(|m| (m.id.to_string(), class[&Arc::as_ptr(&m.subscription)]))
            .collect();
        let partitions: BTreeMap<TopicId, u32> = self
            .view
            .topics()
            .filter(|(_, id, _)| classes.iter().any(|c| c.contains(id)))
            .map(|(_, id, partitions)| (id, partitions))
            .collect();
        self.target = assign(&members, &classes, &partitions, &self.target);
        self.target.values_mut().for_each(compact);
    }
}
