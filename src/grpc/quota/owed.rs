//! What a produce message owes its client's quota beyond its size on the wire.

use super::{Flow, Quota};
use crate::broker::{Appended, Prepared};

/// What a produce's client owes for its batch beyond the message's size on the wire,
/// which the message was charged (`grpc/budget/`): a tiny record is stored in some twenty
/// bytes of framing, where it may have come in two, and the produce quota guards the
/// disk's bandwidth too. Charged once the batch is appended, and not for a batch its
/// idempotent producer sent before (the log wrote nothing for it).
#[derive(Default)]
pub struct Owed(Option<(Quota, usize)>);

impl Owed {
    /// What a batch of `prepared` owes its client of `quota` whose message was `wire`
    /// bytes on the wire (nothing without a quota).
    pub fn of(quota: Option<(&Quota, usize)>, prepared: &Prepared) -> Owed {
        Owed(quota.map(|(quota, wire)| {
            let more = prepared.len_bytes().saturating_sub(wire);
            (quota.clone(), more)
        }))
    }

    /// Charges it, for `appended`.
    pub fn pay(self, appended: &Appended) {
        if let (Some((quota, more)), false) = (self.0, appended.duplicate()) {
            quota.charge(Flow::Produce, more);
        }
    }
}
