//! A cap on consumer groups' files open at once. A group opens its offsets' files for a
//! commit (or a read of its offsets) and closes them after a minute unused: a client
//! committing to 20,000 groups within a minute would hold 20,000 descriptors, and the
//! logs could open no file (as a hostile client did with share groups). Past
//! `MAX_OPEN_STORES`, opening one more first closes the least recently used of the
//! others not in use (down to nine tenths, so the scan is not made at every open); they
//! open again on their next use, which costs reading their snapshot and journal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Groups, Slot, SlotState};

/// Groups with their files open at once, about (a request holding a group's lock keeps
/// its files open, so the count may pass it by the requests in flight).
pub const MAX_OPEN_STORES: usize = 1_000;

/// One open group's place in the count, given back when its files close.
pub(super) struct OpenStore(Arc<AtomicUsize>);

impl OpenStore {
    pub(super) fn new(count: &Arc<AtomicUsize>) -> OpenStore {
        count.fetch_add(1, Ordering::Relaxed);
        OpenStore(Arc::clone(count))
    }
}

impl Drop for OpenStore {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Groups {
    /// Before `opening` opens its files: closes others' if the cap is reached.
    pub(super) fn make_room_for_store(&self, opening: &Slot) {
        if self.open_stores.load(Ordering::Relaxed) < self.max_open_stores {
            return;
        }
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        // Groups in use are passed over, not waited for.
        let mut open: Vec<(i64, tokio::sync::OwnedMutexGuard<SlotState>)> = slots
            .iter()
            .filter(|slot| !std::ptr::eq(Arc::as_ptr(slot), opening))
            .filter_map(|slot| Arc::clone(&slot.state).try_lock_owned().ok())
            .filter_map(|mut guard| {
                let SlotState::Loaded(loaded) = &mut *guard else {
                    return None;
                };
                // An open a cancelled request left, finished: its files go with it (the
                // next request opens them again), as the expiry task does.
                if loaded.opening.as_ref().is_some_and(|o| o.is_finished()) {
                    loaded.opening = None;
                }
                let used = loaded.store_used_ms;
                loaded.store.is_some().then_some((used, guard))
            })
            .collect();
        open.sort_unstable_by_key(|(used, _)| *used);
        let keep = self.max_open_stores * 9 / 10;
        for (_, mut guard) in open {
            if self.open_stores.load(Ordering::Relaxed) <= keep {
                break;
            }
            if let SlotState::Loaded(loaded) = &mut *guard {
                loaded.close_store();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::broker::{Broker, Limits};
    use crate::groups::GroupsConfig;

    /// Commits to more groups than may have their files open: the least recently used
    /// close, the count stays at the cap, and a closed group's offsets read back.
    #[tokio::test]
    async fn past_the_cap_the_least_recently_used_groups_close_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        let mut groups = Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap();
        groups.max_open_stores = 3;
        for group in ["g0", "g1", "g2", "g3", "g4"] {
            let offsets = vec![("t".to_string(), 0, 0, group.to_string())];
            groups.commit(group, "", 0, offsets).await.unwrap();
            let open = groups.open_stores.load(Ordering::Relaxed);
            assert!(open <= 3, "{open} groups with open files after {group}");
            // Apart in time, so that which is least recently used is clear.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        assert_eq!(groups.open_stores.load(Ordering::Relaxed), 3);
        let (_, mut guard) = groups.lock("g0", false).await.unwrap();
        assert!(
            crate::groups::loaded(&mut guard).store.is_none(),
            "g0's closed"
        );
        drop(guard);
        let committed = groups
            .fetch_offsets("g0", &[], None, None)
            .await
            .unwrap()
            .offsets;
        assert_eq!(
            committed[0].2.metadata, "g0",
            "g0's files closed and opened again"
        );
        let committed = groups
            .fetch_offsets("g4", &[], None, None)
            .await
            .unwrap()
            .offsets;
        assert_eq!(committed[0].2.metadata, "g4");
        assert_eq!(groups.open_stores.load(Ordering::Relaxed), 3);
    }
}
