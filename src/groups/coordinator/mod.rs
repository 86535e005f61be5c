//! One group's membership as a state machine without I/O: it reads no clock and touches
//! no file. The driver (`groups/mod.rs`) feeds it heartbeats, leaves and the time, and
//! sends its answers; `groups/tests.rs` drives it through random histories.
//!
//! Epochs, as in KIP-848. The group epoch moves whenever members, subscriptions or the
//! subscribed topics change, and a new target assignment is computed (`assign`). A
//! member's epoch catches up with the group epoch once it has given back every partition
//! the new target takes from it; only then does it receive partitions, and only those no
//! other member still holds. So a partition never has two owners, and members whose
//! partitions stay put never stop.

mod commit;
mod members;
mod saved;
mod target;
pub use saved::ScopeOf;
use target::compact;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::holders::Holders;
pub use super::member::Member;
pub use super::member::{Answer, GroupState, Heartbeat};
pub use super::subscriptions::Subscription;
use super::subscriptions::{SubscriptionTally, Subscriptions};
use super::{TopicsView, Tp};
use crate::error::{Error, Result};

/// Session timeouts a member may ask for, and the default.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 1_000;
pub const MAX_SESSION_TIMEOUT_MS: u64 = 1_800_000;
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 45_000;
/// A member still moving towards its target assignment is told to heartbeat this many
/// times as often, so partitions freed by others reach it quickly.
pub const RECONCILING_SPEEDUP: u64 = 5;
/// Most members one group may have: each join recomputes the assignment over all of them.
pub const MAX_MEMBERS: usize = 1_000;

#[derive(Debug)]
pub struct Membership {
    group: String,
    epoch: i64,
    members: BTreeMap<String, Member>,
    /// Each distinct subscription once.
    subscriptions: Subscriptions,
    /// Who holds each held partition (assigned or revoking): at most one member.
    holder: Holders,
    target: BTreeMap<String, BTreeSet<Tp>>,
    view: Arc<TopicsView>,
    heartbeat_interval_ms: u64,
    /// The era of the scoped patterns' scopes when the target was last computed
    /// (`Scope::era`): a new one computes it again, as a change of topics does.
    scope_era: u64,
    /// No partition is handed out before this time (the driver's clock): after a
    /// restart, members of before it still consume what they owned until their next
    /// heartbeat tells them they are unknown (`held_until`).
    hold_until_ms: u64,
    /// Moves whenever what `saved` writes changes, so that the driver encodes the group
    /// only after a change: encoding 1,000 members takes about 150 us, a heartbeat that
    /// changes nothing under 1 us (`benches/rebalance.rs`).
    changes: u64,
}

fn fenced(group: &str, why: String) -> Error {
    Error::FailedPrecondition(format!(
        "group {}: {why}; stop consuming, drop your partitions without committing and join again with an empty member_id",
        crate::error::quote(group)
    ))
}

fn epoch_mismatch(sent: i64, current: i64) -> String {
    if sent < current {
        format!("member_epoch {sent} is stale: the member is at epoch {current}")
    } else {
        format!("member_epoch {sent} was never given to this member: it is at epoch {current}")
    }
}

impl Membership {
    pub fn new(group: &str, heartbeat_interval_ms: u64, view: Arc<TopicsView>) -> Membership {
        Membership {
            group: group.to_string(),
            epoch: 0,
            members: BTreeMap::new(),
            subscriptions: Subscriptions::default(),
            holder: Holders::default(),
            target: BTreeMap::new(),
            view,
            heartbeat_interval_ms,
            scope_era: 0,
            hold_until_ms: 0,
            changes: 0,
        }
    }

    /// Moves whenever what `saved` writes changes (not with deadlines alone).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Hands out no partition before `ms` (the driver's clock). A group restarted
    /// without saved members (`saved.rs`) does not know its members of before, and each
    /// keeps consuming its partitions until its next heartbeat is refused (it then
    /// drops them and joins again). The driver holds restored groups too
    /// (`slots::RESTART_HOLD_INTERVALS`). Without the hold, the first of them to heartbeat
    /// was given every partition at once, and consumed them beside the others for up
    /// to a heartbeat interval (hostile-sweep finding). Members still join and are told
    /// their targets meanwhile; the partitions come at their first heartbeat after it.
    pub fn held_until(mut self, ms: u64) -> Membership {
        self.hold_until_ms = ms;
        self
    }

    /// The group's subscriptions counted in the server's `tally` (a new group counts
    /// alone).
    pub fn counted_in(mut self, tally: Arc<SubscriptionTally>) -> Membership {
        debug_assert!(self.members.is_empty(), "counted from the start");
        self.subscriptions = Subscriptions::counted_in(tally);
        self
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The members from `from` on, by id.
    pub fn members_from(&self, from: std::ops::Bound<&str>) -> impl Iterator<Item = &Member> {
        self.members
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .map(|(_, m)| m)
    }

    /// Whether any member subscribes to the topic `name`.
    pub fn subscribes(&self, name: &str) -> bool {
        self.subscriptions.distinct().any(|s| s.matches(name))
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member holding `tp`, if any.
    pub fn holder(&self, tp: &Tp) -> Option<&str> {
        self.holder.get(tp).map(|id| &**id)
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.values().all(|m| {
            m.epoch == self.epoch
                && m.revoking.is_empty()
                && self.target.get(&*m.id).is_none_or(|t| *t == m.assigned)
        }) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// When the earliest session ends, for the driver's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.members.values().map(Member::next_deadline).min()
    }

    /// Handles one heartbeat at `now_ms` (the driver's monotonic clock), with `view` the
    /// topics as they are now. `new_member_id` names a joining member.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        view: &Arc<TopicsView>,
        now_ms: u64,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<Answer> {
        self.refresh_view(view);
        let id = if hb.member_id.is_empty() {
            if hb.member_epoch != 0 {
                return Err(Error::InvalidArgument(format!(
                    "a member joins with member_epoch 0, not {}",
                    hb.member_epoch
                )));
            }
            self.join(
                hb.subscription,
                &hb.instance_id,
                hb.session_timeout_ms,
                now_ms,
                new_member_id,
            )?
        } else {
            let Some(member) = self.members.get_mut(&hb.member_id) else {
                return Err(fenced(&self.group, format!("member {} is not in the group (its session expired, it left, or it was fenced)", crate::error::quote(&hb.member_id))));
            };
            if hb.member_epoch != member.epoch && hb.member_epoch != member.previous_epoch {
                // Told to drop its partitions and join again, it is no longer a member:
                // its partitions go to the others now rather than after its session.
                let why = epoch_mismatch(hb.member_epoch, member.epoch);
                self.remove(&hb.member_id);
                self.bump();
                return Err(fenced(&self.group, why));
            }
            if *member.subscription != hb.subscription {
                let old = Arc::clone(&member.subscription);
                match self
                    .subscriptions
                    .intern(&self.group, hb.subscription, Some(&old))
                {
                    Ok(new) => {
                        let member = self.members.get_mut(&hb.member_id).expect("found above");
                        member.subscription = new;
                        self.subscriptions.release(&old);
                    }
                    Err(refused) => {
                        // Kept on with its old subscription, it would hold its
                        // partitions without ever hearing its assignment: it is fenced,
                        // and its join with that subscription is refused in turn.
                        self.remove(&hb.member_id);
                        self.bump();
                        let why = format!(
                            "the member was removed, as its new subscription is refused ({refused})"
                        );
                        return Err(fenced(&self.group, why));
                    }
                }
                self.bump();
            }
            let member = self.members.get_mut(&hb.member_id).expect("found above");
            if member.departed {
                member.departed = false;
                self.changes += 1;
            }
            hb.member_id.clone()
        };
        let member = self.members.get_mut(&id).expect("joined or found above");
        if member.session_timeout_ms != hb.session_timeout_ms {
            member.session_timeout_ms = hb.session_timeout_ms;
            self.changes += 1;
        }
        member.deadline_ms = now_ms.saturating_add(hb.session_timeout_ms);
        self.release_unlisted(&id, &hb.owned);
        self.reconcile(&id, now_ms);
        let member = &self.members[&id];
        let mut interval = self
            .heartbeat_interval_ms
            .min(member.session_timeout_ms / 3);
        let waiting = !member.revoking.is_empty()
            || self.target.get(&id).is_some_and(|t| *t != member.assigned);
        if waiting {
            // Partitions are on their way to or from this member: it should learn of
            // the next step sooner than the steady-state interval.
            interval /= RECONCILING_SPEEDUP;
        }
        Ok(Answer {
            member_id: id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: interval.max(1),
            assignment: member.assigned.clone(),
        })
    }

    /// Partitions a member was giving back and no longer lists are free.
    fn release_unlisted(&mut self, id: &str, owned: &[(String, Vec<u32>)]) {
        let member = self.members.get_mut(id).expect("caller found it");
        if member.revoking.is_empty() {
            return;
        }
        // Only what is being revoked is looked up: the work is bounded by the request.
        let mut still = BTreeSet::new();
        for (name, partitions) in owned {
            let Some(topic) = self.view.id_of(name) else {
                continue;
            };
            still.extend(
                partitions
                    .iter()
                    .map(|p| (topic, *p))
                    .filter(|tp| member.revoking.contains(tp)),
            );
        }
        let released: Vec<Tp> = member.revoking.difference(&still).copied().collect();
        if !released.is_empty() {
            self.changes += 1;
        }
        for tp in released {
            member.revoking.remove(&tp);
            self.holder.remove(&tp);
        }
        if member.revoking.is_empty() {
            member.revoking_since = None;
        }
    }

    /// Moves a member towards its target: first revoke, then (once nothing is being
    /// revoked) take the free partitions of the target and the group's epoch.
    fn reconcile(&mut self, id: &str, now_ms: u64) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let member = self.members.get_mut(id).expect("caller found it");
        let revoke: Vec<Tp> = member.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            self.changes += 1;
        }
        for tp in revoke {
            member.assigned.remove(&tp);
            member.revoking.insert(tp);
        }
        if !member.revoking.is_empty() {
            member.revoking_since.get_or_insert(now_ms);
            return;
        }
        let held = now_ms < self.hold_until_ms;
        let free: Vec<Tp> = target
            .difference(&member.assigned)
            .filter(|tp| !held && !self.holder.contains(tp))
            .copied()
            .collect();
        if !free.is_empty() {
            self.changes += 1;
            for tp in &free {
                self.holder.insert(*tp, &member.id);
            }
            member.assigned.extend(free);
            compact(&mut member.assigned);
        }
        if member.epoch != self.epoch {
            self.changes += 1;
            // A member that just joined has no earlier epoch to accept.
            member.previous_epoch = if member.epoch == 0 {
                self.epoch
            } else {
                member.epoch
            };
            member.epoch = self.epoch;
        }
    }
}
