//! What strom's consumer groups know of groups of the same names that another
//! protocol (Kafka's, `kafka::group`) coordinates: whether they have members, what
//! those may consume, and holding their joins while a change that needed neither is
//! made.

use std::sync::Arc;

use super::Groups;

/// Members that another protocol holds in groups of strom's names (Kafka's consumers,
/// `kafka::group`), which this coordinator does not know of: a gRPC consumer may not
/// join a group they are in, or both would be handed the same partitions.
pub trait ForeignMembers: Send + Sync {
    fn has_members(&self, group: &str) -> bool;
    /// The topics members of `group` may consume (for a subscription it cannot read,
    /// any).
    fn consumed(&self, group: &str) -> Consumed;
    /// No member joins `group` until the guard is dropped: for a change to its offsets
    /// that `consumed` or `has_members` allowed.
    fn hold_joins(&self, group: &str) -> Box<dyn Send>;
}

/// The topics a group's members (of another protocol) may consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    Topics(std::collections::HashSet<String>),
    Any,
}

impl Consumed {
    pub fn includes(&self, topic: &str) -> bool {
        match self {
            Consumed::Topics(topics) => topics.contains(topic),
            Consumed::Any => true,
        }
    }
}

impl Groups {
    /// Tells the coordinator of the members another protocol holds (see
    /// `ForeignMembers`); once.
    pub fn set_foreign_members(&self, foreign: std::sync::Weak<dyn ForeignMembers>) {
        let _ = self.foreign.set(foreign);
    }

    /// The other protocol's (Kafka's) coordinator, if the server has one.
    fn foreign(&self) -> Option<Arc<dyn ForeignMembers>> {
        self.foreign.get()?.upgrade()
    }

    /// Whether another protocol (Kafka's) has members in `group`.
    pub(super) fn foreign_members(&self, group: &str) -> bool {
        self.foreign().is_some_and(|f| f.has_members(group))
    }

    /// Holds another protocol's joins to `group` until dropped (`ForeignMembers`).
    pub(super) fn hold_foreign_joins(&self, group: &str) -> Option<Box<dyn Send>> {
        Some(self.foreign()?.hold_joins(group))
    }

    /// The topics another protocol's members of `group` may consume.
    pub(super) fn foreign_consumed(&self, group: &str) -> Consumed {
        match self.foreign() {
            Some(foreign) => foreign.consumed(group),
            None => Consumed::Topics(Default::default()),
        }
    }
}
