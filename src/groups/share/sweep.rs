//! The share groups' background task (ended locks and sessions, dead letters owed,
//! idle groups unloaded) and their retention floors.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::window::MemberIdx;
use super::{Group, ShareGroups, Slot, SlotState, SWEEP_EVERY, UNLOAD_IDLE_MS};
use crate::broker::now_ms;
use crate::error::Result;

impl ShareGroups {
    /// Ends expired locks and sessions in every loaded group, every `SWEEP_EVERY`, and
    /// retries dead letters that could not be appended; until the broker stops.
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut stopping = self.broker.shutting_down();
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Checked, not only awaited: a shutdown begun before this task first ran
            // sends no change.
            if *stopping.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.changed() => return,
            }
            self.tally.wake_held_back();
            let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
            for slot in slots {
                // A group busy with a request is passed over, not waited for: one
                // slow group (a large REJECT's appends) must not hold up the others'
                // sessions and locks.
                let Ok(mut guard) = Arc::clone(&slot.state).try_lock_owned() else {
                    continue;
                };
                if let SlotState::Loaded(group) = &mut *guard {
                    match self.sweep(&slot, group).await {
                        // Its files are closed; it loads again on its next use, and its
                        // floors stay with the slot.
                        Ok(true) => {
                            *guard = SlotState::Unloaded;
                            self.loaded.fetch_sub(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(group = %slot.name, %err, "share group upkeep failed; retrying")
                        }
                    }
                }
            }
        }
    }

    /// Ends sessions and locks, retries dead letters; true if the group is idle enough
    /// to unload (no members, nothing owed, unused for `UNLOAD_IDLE_MS`).
    async fn sweep(&self, slot: &Slot, group: &mut Group) -> Result<bool> {
        let now = now_ms();
        let gone: HashSet<MemberIdx> = group
            .members
            .expire(now, group.config.session_timeout_ms)
            .into_iter()
            .map(|(_, idx)| idx)
            .collect();
        let mut freed = !gone.is_empty() && group.release_members(&gone, now);
        freed |= group.expire_locks(now);
        slot.members.store(group.members.len(), Ordering::Relaxed);
        freed |= self.flush_dead_letters(group).await;
        group.journal().await?;
        if freed {
            slot.available.notify_waiters();
        }
        Ok(group.is_idle() && now.saturating_sub(group.used_ms) > UNLOAD_IDLE_MS)
    }
}

/// Retention by age keeps every record a share group has not finished: a partition's
/// floor is the lowest start offset of the groups that read it.
impl crate::broker::RetentionFloor for ShareGroups {
    fn floor(&self, topic_id: &str, partition: u32) -> Option<u64> {
        let tp = (crate::groups::topic_id(topic_id).ok()?, partition);
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        slots
            .iter()
            .filter_map(|s| {
                let floors = s.floors.lock().unwrap_or_else(|e| e.into_inner());
                floors.get(&tp).copied()
            })
            .min()
    }
}
