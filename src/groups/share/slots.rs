//! The registry's slots: one per share group, each loaded from disk on first use
//! (`ShareGroups::lock`) and unloaded when idle, within `MAX_LOADED` groups in memory
//! and the server's cap on window records (`tally.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};

use super::group::Group;
use super::{ShareGroups, MAX_SHARE_GROUPS};
use crate::broker::data_dir::new_topic_id;
use crate::broker::now_ms;
use crate::error::{quote, Error, Result};
use crate::groups::request::validate_group_name;
use crate::groups::Tp;

pub(super) struct Slot {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) state: Arc<tokio::sync::Mutex<SlotState>>,
    /// Woken when records become available without the log growing: released, their
    /// lock ended, their member left.
    pub(super) available: Notify,
    pub(super) members: AtomicUsize,
    /// Each partition's start offset, for retention (`RetentionFloor`), readable
    /// without the group's lock.
    pub(super) floors: Arc<Mutex<HashMap<Tp, u64>>>,
    /// The group's part of the server's `WindowTally` when it was last loaded (see
    /// `lock`).
    pub(super) last_part: Arc<AtomicUsize>,
}

pub(super) enum SlotState {
    Unloaded,
    Loaded(Box<Group>),
    Deleted,
}

pub(super) type Guard = OwnedMutexGuard<SlotState>;

/// Whether a request that loads a group counts against `MAX_LOADED`: fetches and
/// streams, which make it active, do; administration (describe, configure, reset,
/// delete) and acknowledgements, brief and needed most when the server is full, do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    Capped,
    Always,
}

pub(super) fn group(guard: &mut Guard) -> &mut Group {
    match &mut **guard {
        SlotState::Loaded(group) => group,
        _ => unreachable!("ShareGroups::lock returns loaded groups only"),
    }
}

impl ShareGroups {
    /// Locks a group, loading it from disk on first use; with `create`, a group that
    /// does not exist is made (its directory at once: its state is durable from the
    /// first fetch).
    pub(super) async fn lock(
        &self,
        name: &str,
        create: bool,
        admit: Admit,
    ) -> Result<(Arc<Slot>, Guard)> {
        validate_group_name(name)?;
        loop {
            let mut made = false;
            let slot = {
                let mut slots = self.slots();
                match slots.get(name) {
                    Some(slot) => Arc::clone(slot),
                    None if !create => {
                        return Err(Error::ShareGroupNotFound {
                            group: name.to_string(),
                        })
                    }
                    None if slots.len() >= MAX_SHARE_GROUPS => {
                        return Err(Error::LimitReached(format!(
                            "the server has {MAX_SHARE_GROUPS} share groups, the most it keeps; delete unused ones (strom queue delete)"
                        )))
                    }
                    None => {
                        let dir = self
                            .broker
                            .data_dir()
                            .share_groups()
                            .join(format!("{name}.{}", new_topic_id()));
                        let slot = Arc::new(Slot::new(name.to_string(), dir));
                        slots.insert(name.to_string(), Arc::clone(&slot));
                        made = true;
                        slot
                    }
                }
            };
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            let mut reloading = false;
            if let SlotState::Loaded(g) = &*guard {
                if g.files.has_failed() {
                    reloading = true;
                    // An fsync failed: what is on disk is unknown, so the group is read
                    // again from its files (its members join again).
                    tracing::warn!(group = %name, "reloading a share group after a failed fsync");
                    *guard = SlotState::Unloaded;
                    self.loaded.fetch_sub(1, Ordering::Relaxed);
                }
            }
            match &mut *guard {
                SlotState::Deleted => continue,
                SlotState::Loaded(g) => g.used_ms = now_ms(),
                SlotState::Unloaded => {}
            }
            if matches!(*guard, SlotState::Unloaded) {
                // Its windows must fit under the server's cap (`tally.rs`): a group
                // unloaded gives its part back, and loads must not take it again past
                // the cap (review finding: groups cycled through unloads and loads
                // made the cap no bound).
                // A group read again after a failed fsync was loaded a moment ago.
                let part = slot.last_part.load(Ordering::Relaxed);
                if admit == Admit::Capped && !reloading && !self.tally.fits(part) {
                    return Err(Error::LimitReached(format!(
                        "share group {}'s windows would take the server past max_share_window_records; \
                         try again once other groups' records are finished",
                        quote(name)
                    )));
                }
                // A place among the loaded groups first, or none: see `MAX_LOADED`.
                let max = self.max_loaded;
                if self.loaded.fetch_add(1, Ordering::Relaxed) >= max {
                    self.unload_idle();
                    if admit == Admit::Capped && self.loaded.load(Ordering::Relaxed) > max {
                        self.loaded.fetch_sub(1, Ordering::Relaxed);
                        if made {
                            // Requests waiting for this slot look the name up again,
                            // and find it gone.
                            self.forget_made(name, &slot);
                            *guard = SlotState::Deleted;
                        }
                        return Err(Error::LimitReached(format!(
                            "{max} share groups are active on this server (with members, or records \
                             locked or owed), the most it keeps open at once; try again once some are done, \
                             or share fewer groups between more workers"
                        )));
                    }
                }
                // The load takes the slot's lock with it and installs what it read, so a
                // request cancelled meanwhile leaves a loaded group behind, not a load
                // still running beside the next request's load of the same files.
                let dir = slot.dir.clone();
                let owned = name.to_string();
                let floors = Arc::clone(&slot.floors);
                let count = Arc::clone(&self.loaded);
                let part = (Arc::clone(&self.tally), Arc::clone(&slot.last_part));
                let (returned, loaded) = tokio::task::spawn_blocking(move || {
                    let loaded = Group::load(owned, dir, floors, part).map(|group| {
                        *guard = SlotState::Loaded(Box::new(group));
                    });
                    if loaded.is_err() {
                        count.fetch_sub(1, Ordering::Relaxed);
                    }
                    (guard, loaded)
                })
                .await
                .expect("share group load does not panic");
                guard = returned;
                if let Err(err) = loaded {
                    tracing::error!(group = %name, %err, "share group could not be loaded");
                    if made && !slot.dir.exists() {
                        self.forget_made(name, &slot);
                        *guard = SlotState::Deleted;
                    }
                    return Err(err);
                }
            }
            group(&mut guard).forget_deleted_topics(&self.broker);
            return Ok((slot, guard));
        }
    }

    /// Forgets a group this request made and could not load: it has no files, and must
    /// not be listed.
    pub(super) fn forget_made(&self, name: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        if slots.get(name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(name);
        }
    }

    /// Unloads idle groups (no members, nothing pending or owed) until at most
    /// `MAX_LOADED` are in memory; groups busy with a request are passed over.
    pub(super) fn unload_idle(&self) {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        for slot in slots {
            if self.loaded.load(Ordering::Relaxed) <= self.max_loaded {
                return;
            }
            let Ok(mut guard) = Arc::clone(&slot.state).try_lock_owned() else {
                continue;
            };
            if let SlotState::Loaded(g) = &*guard {
                if g.is_idle() {
                    *guard = SlotState::Unloaded;
                    self.loaded.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Slot {
    pub(super) fn new(name: String, dir: PathBuf) -> Slot {
        Slot {
            name,
            dir,
            state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
            available: Notify::new(),
            members: AtomicUsize::new(0),
            floors: Arc::new(Mutex::new(HashMap::new())),
            last_part: Arc::new(AtomicUsize::new(0)),
        }
    }
}
