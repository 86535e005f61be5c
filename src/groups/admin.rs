//! Listing and deleting groups (gRPC ListGroups and DeleteGroup, and Kafka's
//! ListGroups and DeleteGroups through them).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{loaded, GroupState, Groups, Guard, Slot, SlotState};
use crate::broker::page::{Listed, Page};
use crate::error::{quote, Error, Result};

impl Groups {
    /// A page of the groups: name, state and member count.
    pub async fn list(&self, page: &Page) -> Listed<(String, GroupState, usize)> {
        let slots = {
            let slots = self.slots();
            page.take(page.range(&slots).map(|(_, s)| Arc::clone(s)), |s| &s.name)
        };
        let mut out = Vec::with_capacity(slots.entries.len());
        for slot in slots.entries {
            let state = if slot.members.load(Ordering::Relaxed) == 0 {
                Some(GroupState::Empty)
            } else {
                match &*slot.state.lock().await {
                    SlotState::Loaded(loaded) => Some(loaded.membership.state()),
                    SlotState::Unloaded => Some(GroupState::Empty),
                    SlotState::Deleted => None,
                }
            };
            if let Some(state) = state {
                out.push((
                    slot.name.clone(),
                    state,
                    slot.members.load(Ordering::Relaxed),
                ));
            }
        }
        // A group deleted meanwhile is left out, and still marks where the next begins.
        Listed {
            entries: out,
            next_after: slots.next_after,
        }
    }

    /// Deletes a group and its offsets; refused while it has members, strom's or
    /// another protocol's (`ForeignMembers`), checked under the group's lock, which a
    /// commit takes too: a member that joins and commits meanwhile commits after the
    /// delete, into the group made anew.
    pub async fn delete(&self, group: &str) -> Result<()> {
        let (slot, mut guard) = self.lock(group, false).await?;
        // Kafka's members join without this group's lock: their joins wait until it
        // is deleted (and then make it anew).
        let _joins = self.hold_foreign_joins(group);
        if self.foreign_members(group) {
            return Err(Error::FailedPrecondition(format!(
                "group {} has Kafka members; stop them (or wait for their sessions to end) before deleting it",
                quote(group)
            )));
        }
        // Deleted, it would be made anew at the next join and not held.
        self.unknown_members(&slot)?;
        let members = loaded(&mut guard).membership.members().count();
        if members > 0 {
            return Err(Error::FailedPrecondition(format!(
                "group {} has {members} members; stop them (or wait for their sessions to end) before deleting it",
                quote(group)
            )));
        }
        self.remove(&slot, guard).await
    }

    pub(super) async fn remove(&self, slot: &Arc<Slot>, mut guard: Guard) -> Result<()> {
        if let SlotState::Loaded(loaded) = &mut *guard {
            // Awaited in place (cancelled here, the next request still finds it); its
            // files go with the directory below.
            if let Some(opening) = loaded.opening.as_mut() {
                let _ = opening.await;
            }
            loaded.opening = None;
            // Likewise a save of its members, which would write into the directory.
            if let Some(saving) = loaded.saving.as_mut() {
                let _ = saving.await;
            }
            loaded.saving = None;
        }
        *guard = SlotState::Deleted;
        {
            let mut slots = self.slots();
            if slots.get(&slot.name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(&slot.name);
            }
        }
        let dir = slot.dir.clone();
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || match dir.exists() {
            true => broker.data_dir().remove_group_dir(&dir),
            false => Ok(()),
        })
        .await
        .expect("group delete does not panic")?;
        tracing::info!(group = %slot.name, "group deleted");
        Ok(())
    }
}
