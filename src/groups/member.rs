//! A group member as the coordinator keeps it, what its heartbeats say, and what they
//! are answered; and the group states DescribeGroup names.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::subscriptions::Subscription;
use super::Tp;

/// A heartbeat, validated.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Empty to join.
    pub member_id: String,
    pub member_epoch: i64,
    pub subscription: Subscription,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
    /// Partitions the member owns, by topic name.
    pub owned: Vec<(String, Vec<u32>)>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub member_id: String,
    pub member_epoch: i64,
    pub heartbeat_interval_ms: u64,
    /// Every partition the member owns from now on.
    pub assignment: BTreeSet<Tp>,
}

#[derive(Debug, Clone)]
pub struct Member {
    /// Shared with `Holders`, a slot for each partition it holds.
    pub id: Arc<str>,
    pub instance_id: Option<String>,
    pub epoch: i64,
    /// The epoch before the last: a heartbeat whose answer was lost still counts.
    pub(super) previous_epoch: i64,
    /// Shared by every member that subscribes alike (`Membership` keeps one of each).
    pub subscription: Arc<Subscription>,
    pub session_timeout_ms: u64,
    pub(super) deadline_ms: u64,
    /// A static member that left: its partitions wait for it until its deadline.
    pub(super) departed: bool,
    /// Partitions it owns and keeps.
    pub assigned: BTreeSet<Tp>,
    /// Partitions it was told to give back and has not yet stopped listing.
    pub revoking: BTreeSet<Tp>,
    /// Since when it has been giving partitions back: a member that holds on to them
    /// past its session timeout (stuck outside its poll loop) is removed, or the members
    /// waiting for them would wait forever.
    pub(super) revoking_since: Option<u64>,
}

impl Member {
    pub(super) fn next_deadline(&self) -> u64 {
        let revoke_by = self.revoking_since.map_or(u64::MAX, |since| {
            since.saturating_add(self.session_timeout_ms)
        });
        self.deadline_ms.min(revoke_by)
    }
}

/// The state of a group, as DescribeGroup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    Reconciling,
    Stable,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Reconciling => "reconciling",
            GroupState::Stable => "stable",
        }
    }
}
