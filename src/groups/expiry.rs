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
        let mut closed = Vec::new();
        for slot in active {
            if let SlotState::Loaded(loaded) = &*slot.state.lock().await {
                match &loaded.store {
                    Some(store) => store.files.touch(),
                    // Files closed after an idle minute are touched by path.
                    None if slot.has_files.load(Ordering::Relaxed) => closed.push(slot.dir.clone()),
                    None => {}
                }
            }
            slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
        }
        if !closed.is_empty() {
            let _ =
                tokio::task::spawn_blocking(move || closed.iter().for_each(|d| store::touch(d)))
                    .await;
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
            // A cancelled request's open, left for the next request: while it runs the
            // group stays; once done, its files are closed with it.
            match &loaded.opening {
                Some(opening) if !opening.is_finished() => continue,
                Some(_) => loaded.opening = None,
                None => {}
            }
            // Likewise a save of its members: unloaded meanwhile, the group could be
            // loaded again from the file before that write lands.
            match &loaded.saving {
                Some(saving) if !saving.is_finished() => continue,
                Some(_) => loaded.saving = None,
                None => {}
            }
            // Files unused for a minute are closed, members or not: a descriptor per
            // group that only heartbeats would run the server out of them.
            if loaded.store.is_some() && now.saturating_sub(loaded.store_used_ms) >= UNLOAD_IDLE_MS
            {
                loaded.close_store();
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
        let now = self.now();
        // Only the groups whose next deadline has come (`Slot::next_deadline`).
        let due: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| {
                s.members.load(Ordering::Relaxed) > 0
                    && s.next_deadline.load(Ordering::Relaxed) <= now
            })
            .cloned()
            .collect();
        for slot in due {
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            if let SlotState::Loaded(loaded) = &mut *guard {
                if loaded.membership.next_deadline().is_some_and(|d| d <= now) {
                    let view = self.view();
                    let expired = loaded.membership.expire(now, &view);
                    tracing::info!(group = %slot.name, members = ?expired, "sessions expired");
                    self.save_members(&slot, loaded).await;
                }
                // The deadline as it is now (a heartbeat may have moved it on).
                Self::members_changed(&slot, loaded);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::super::{store, Groups, GroupsConfig, Heartbeat, SlotState};
    use crate::broker::{now_ms, Broker, Limits};

    async fn setup(dir: &std::path::Path, retention: Duration) -> (Arc<Broker>, Groups) {
        let broker = Arc::new(Broker::open(dir, Limits::default()).unwrap());
        if broker.topic("t").is_err() {
            broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        }
        let groups = Groups::open(
            Arc::clone(&broker),
            GroupsConfig::new(Duration::from_secs(3), retention),
        )
        .unwrap();
        (broker, groups)
    }

    fn group_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("groups"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Files closed after an idle minute are still touched while the group has members
    /// and when it empties, so a restart does not take it for idle and expire it.
    #[tokio::test]
    async fn a_group_with_members_but_no_open_files_still_looks_active() {
        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        let (broker, groups) = setup(dir.path(), week).await;
        groups
            .commit("g", "", 0, vec![("t".into(), 0, 0, String::new())])
            .await
            .unwrap();
        let (answer, _) = groups
            .heartbeat(
                "g",
                Heartbeat {
                    member_id: String::new(),
                    member_epoch: 0,
                    subscription: super::super::subscription(vec!["t".into()], "").unwrap(),
                    instance_id: None,
                    session_timeout_ms: 45_000,
                    owned: vec![],
                },
            )
            .await
            .unwrap();
        let gdir = group_dirs(dir.path()).pop().unwrap();
        // The last commit was ten days ago; the member has consumed since.
        let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(gdir.join(store::JOURNAL_FILE))
            .unwrap()
            .set_modified(ten_days_ago)
            .unwrap();
        // A sweep a minute after the last offset use closes the files...
        groups.unload_idle(now_ms() + 61_000);
        let slot = groups.find("g").unwrap();
        assert!(matches!(&*slot.state.lock().await, SlotState::Loaded(l) if l.store.is_none()));
        // ...and the next sweeps mark active groups' files.
        groups.touch_active().await;
        groups.leave("g", &answer.member_id).await.unwrap();
        let age_ms = now_ms() - store::last_modified_ms(&gdir).unwrap();
        drop(groups);
        let _ = Arc::try_unwrap(broker).ok().expect("only owner").close();
        let (_broker2, groups) = setup(dir.path(), week).await;
        groups.expire_offsets().await;
        let fetched = groups
            .fetch_offsets("g", &[], None, None)
            .await
            .unwrap()
            .offsets;
        assert!(age_ms < 60_000, "journal still looks {age_ms} ms idle");
        assert_eq!(
            fetched.len(),
            1,
            "committed offsets deleted after a restart"
        );
    }

    /// An open left by a cancelled commit keeps its group loaded while it runs, and
    /// not after: finished, it is dropped (its files closed) like any idle store.
    #[tokio::test]
    async fn a_finished_open_left_by_a_cancelled_commit_does_not_keep_its_group_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, groups) = setup(dir.path(), Duration::from_secs(3600)).await;
        let mut first =
            Box::pin(groups.commit("g", "", 0, vec![("t".into(), 0, 0, String::new())]));
        let _ = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(first.as_mut(), cx))
        })
        .await;
        drop(first);
        let slot = groups.slots().get("g").cloned().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let opening = match &*slot.state.lock().await {
                SlotState::Loaded(l) => l.opening.as_ref().map(|h| h.is_finished()),
                _ => None,
            };
            match opening {
                Some(true) | None => break, // finished (or the commit finished first)
                Some(false) => assert!(std::time::Instant::now() < deadline),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        groups.unload_idle(now_ms() + 61_000);
        assert!(matches!(&*slot.state.lock().await, SlotState::Unloaded));
    }

    /// A first commit cancelled while its files are being created must not leave a
    /// directory its group does not know of (or the next commit makes a second one),
    /// and a commit straight after it must wait for that open, not race it on the same
    /// files (it failed about half the time, with a snapshot file gone under it).
    #[tokio::test]
    async fn a_cancelled_first_commit_does_not_leave_a_second_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, groups) = setup(dir.path(), Duration::from_secs(3600)).await;
        let groups_made = 8;
        for g in 0..groups_made {
            let group = format!("g{g}");
            let offsets = || vec![("t".into(), 0, 0, String::new())];
            // Polled once: it stops at the blocking open in `store`; then the client
            // goes away.
            let mut first = Box::pin(groups.commit(&group, "", 0, offsets()));
            let _ = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(first.as_mut(), cx))
            })
            .await;
            // Pending in the blocking work almost always; if that work won the race
            // and the request finished, what follows must hold all the same.
            drop(first);
            groups.unload_idle(now_ms() + 61_000);
            groups.commit(&group, "", 0, offsets()).await.unwrap();
        }
        let dirs = group_dirs(dir.path());
        assert_eq!(dirs.len(), groups_made, "a group with two directories");
    }
}
