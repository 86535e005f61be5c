//! Members coming and going: heartbeats (which join, keep and fence members, and
//! carry their assignments), leaves, and what the registry keeps of them beside each
//! group's lock (member count, next deadline, last activity).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{loaded, named, store, Answer, Groups, Guard, Heartbeat, Loaded, NamedPartitions};
use super::{Slot, SlotState};
use crate::broker::now_ms;
use crate::error::{Error, Result};

impl Groups {
    /// Records the member count after a change, and when a group empties, the time (in
    /// memory and on its files, for expiry after a restart).
    pub(super) fn members_changed(slot: &Slot, loaded: &Loaded) {
        let deadline = loaded.membership.next_deadline().unwrap_or(u64::MAX);
        slot.next_deadline.store(deadline, Ordering::Relaxed);
        let now = loaded.membership.members().count();
        let before = slot.members.swap(now, Ordering::Relaxed);
        slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
        if now == 0 && before > 0 {
            match &loaded.store {
                Some(store) => store.files.touch(),
                None if slot.has_files.load(Ordering::Relaxed) => store::touch(&slot.dir),
                None => {}
            }
        }
    }

    /// Takes a group that has nothing (no members, no files) out of the registry: a
    /// refused request must not leave one behind.
    pub(super) fn forget_if_empty(&self, slot: &Arc<Slot>, guard: &mut Guard) {
        let empty = match &**guard {
            SlotState::Loaded(l) => l.membership.is_empty() && l.store.is_none(),
            _ => false,
        };
        if empty && !slot.has_files.load(Ordering::Relaxed) {
            **guard = SlotState::Deleted;
            let mut slots = self.slots();
            if slots.get(&slot.name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(&slot.name);
            }
        }
    }

    /// Handles a heartbeat; the assignment comes back by topic name.
    pub async fn heartbeat(
        &self,
        group: &str,
        heartbeat: Heartbeat,
    ) -> Result<(Answer, Vec<NamedPartitions>)> {
        if heartbeat.member_id.is_empty() && self.foreign_members(group) {
            return Err(Error::FailedPrecondition(format!(
                "group {} has Kafka consumers (through kafka_listen): a gRPC consumer cannot join it while they are in it, or both would read the same partitions; use another group name",
                crate::error::quote(group)
            )));
        }
        let (slot, mut guard) = self.lock(group, true).await?;
        let view = self.view();
        let now = self.now();
        let loaded = loaded(&mut guard);
        let answer = loaded.membership.heartbeat(heartbeat, &view, now, || {
            uuid::Uuid::new_v4().simple().to_string()
        });
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                Self::members_changed(&slot, loaded);
                self.save_members(&slot, loaded).await;
                self.forget_if_empty(&slot, &mut guard);
                return Err(err);
            }
        };
        Self::members_changed(&slot, loaded);
        self.save_members(&slot, loaded).await;
        let named = named(&view, &answer.assignment);
        Ok((answer, named))
    }

    /// A member leaves; leaving a group (or as a member) that is gone is not an error.
    pub async fn leave(&self, group: &str, member_id: &str) -> Result<()> {
        let (slot, mut guard) = match self.lock(group, false).await {
            Err(Error::GroupNotFound { .. }) => return Ok(()),
            locked => locked?,
        };
        let view = self.view();
        let loaded = loaded(&mut guard);
        loaded.membership.leave(member_id, &view);
        Self::members_changed(&slot, loaded);
        self.save_members(&slot, loaded).await;
        Ok(())
    }
}
