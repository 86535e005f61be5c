//! Expiry, run by `Groups::run`: sessions that ended, groups idle past their offset
//! retention, and idle groups' state dropped from memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{store, Groups, Slot, SlotState, UNKNOWN, UNLOAD_IDLE_MS};
use crate::broker::now_ms;

impl Groups {
    fn slots_with_members(&self) -> Vec<Arc<Slot>> {
        self.slots()
            .values()
            .filter(|s| s.members.load(Ordering::Relaxed) > 0)
            .cloned()
            .collect()
    }

    /// Fills in, from the files, when the groups listed at start-up were last active.
    async fn read_activity_times(&self) {
        let unknown: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.last_active_ms.load(Ordering::Relaxed) == UNKNOWN)
            .cloned()
            .collect();
        if unknown.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for slot in unknown {
                let at = store::last_modified_ms(&slot.dir).unwrap_or_else(now_ms);
                // Only if nothing happened meanwhile (which set a real time).
                let _ = slot.last_active_ms.compare_exchange(
                    UNKNOWN,
                    at,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        })
        .await;
    }

    /// Marks the files of groups that have members as active now: a group that
    /// consumes for weeks without committing must not look idle to the next start.
    async fn touch_active(&self) {
        let active = self.slots_with_members();
        for slot in active {
            if let SlotState::Loaded(loaded) = &*slot.state.lock().await {
                if let Some(store) = &loaded.store {
                    store.files.touch();
                }
            }
            slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Drops idle groups' state from memory; they load again on their next use.
    fn unload_idle(&self, now: i64) {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        for slot in slots {
            // A group in use is skipped, not waited for.
            let Ok(mut state) = Arc::clone(&slot.state).try_lock_owned() else {
                continue;
            };
            let SlotState::Loaded(loaded) = &mut *state else {
                continue;
            };
            // Files unused for a minute are closed, members or not: a descriptor per
            // group that only heartbeats would run the server out of them.
            if loaded.store.is_some() && now.saturating_sub(loaded.store_used_ms) >= UNLOAD_IDLE_MS
            {
                loaded.store = None;
            }
            if loaded.membership.is_empty() && slot.idle_ms(now) >= UNLOAD_IDLE_MS {
                if slot.has_files.load(Ordering::Relaxed) {
                    *state = SlotState::Unloaded;
                } else {
                    // Nothing on disk and nobody in it: the group is gone.
                    self.forget_if_empty(&slot, &mut state);
                }
            }
        }
    }

    /// Ends sessions that timed out, now and then deletes groups past their offset
    /// retention; runs until the broker shuts down.
    pub async fn run(self: Arc<Self>) {
        let mut stopping = self.broker.shutting_down();
        let tick = Duration::from_millis(100);
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            self.expire_sessions().await;
            if last_sweep.elapsed() >= self.config.sweep_interval {
                last_sweep = Instant::now();
                self.expire_offsets().await;
            }
        }
    }

    async fn expire_sessions(&self) {
        let active = self.slots_with_members();
        let now = self.now();
        for slot in active {
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            if let SlotState::Loaded(loaded) = &mut *guard {
                if loaded.membership.next_deadline().is_some_and(|d| d <= now) {
                    let view = self.view();
                    let expired = loaded.membership.expire(now, &view);
                    tracing::info!(group = %slot.name, members = ?expired, "sessions expired");
                    Self::members_changed(&slot, loaded);
                }
            }
        }
    }

    async fn expire_offsets(&self) {
        self.read_activity_times().await;
        let retention = self.config.offsets_retention.as_millis() as i64;
        let now = now_ms();
        self.unload_idle(now);
        self.touch_active().await;
        let idle: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.members.load(Ordering::Relaxed) == 0 && s.idle_ms(now) > retention)
            .cloned()
            .collect();
        for slot in idle {
            let guard = Arc::clone(&slot.state).lock_owned().await;
            let empty = match &*guard {
                SlotState::Loaded(loaded) => loaded.membership.is_empty(),
                SlotState::Unloaded => true,
                SlotState::Deleted => false,
            };
            if empty && slot.idle_ms(now) > retention {
                tracing::info!(group = %slot.name, "deleting a group idle past its offset retention");
                if let Err(err) = self.remove(&slot, guard).await {
                    tracing::warn!(group = %slot.name, %err, "could not delete an expired group");
                }
            }
        }
    }
}
