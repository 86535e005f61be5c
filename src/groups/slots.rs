//! The registry's slots: one per consumer group, its membership loaded on first use
//! (`Groups::lock`) and its committed offsets' files opened only when offsets are
//! needed (`Groups::store`), within the cap on groups with open files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use super::offsets::Offsets;
use super::open_stores::{self, OpenStore};
use super::store::GroupFiles;
use super::{validate_group_name, Groups, Membership, Tp, MAX_GROUPS};
use crate::broker::now_ms;
use crate::error::{Error, Result};

/// `Slot::last_active_ms` of a group listed at start-up whose files were not looked at.
pub(super) const UNKNOWN: i64 = i64::MIN;

/// One group in the registry. Its state is loaded from disk on first use.
pub(super) struct Slot {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) state: Arc<tokio::sync::Mutex<SlotState>>,
    /// Wall-clock ms of the last heartbeat, commit or departure: for offset expiry.
    pub(super) last_active_ms: AtomicI64,
    /// Members now, readable without the lock (listings, the expiry task).
    pub(super) members: AtomicUsize,
    /// The members' next deadline (`Membership::next_deadline`, the driver's clock) as
    /// of the last change, or later: the expiry task looks only at groups whose
    /// deadline has come, without their lock (it locked every group with members ten
    /// times a second: 100,000 one-member groups cost a quarter of a core while idle;
    /// hostile-client finding). Everything that changes a group's members or their
    /// deadlines refreshes it under the lock (`Groups::members_changed`: heartbeats,
    /// which may also bring a deadline forward with a shorter session timeout, leaves,
    /// expiries).
    pub(super) next_deadline: AtomicU64,
    /// Whether the group has a directory (committed offsets) on disk.
    pub(super) has_files: AtomicBool,
    /// Found on disk at start-up: it may have had members before the restart, which
    /// still consume their partitions (`RESTART_HOLD_INTERVALS`).
    pub(super) listed: bool,
    /// Loaded since the start: its saved members, if any, are known (`grpc_members`).
    pub(super) loaded_once: AtomicBool,
    /// Until when (the driver's clock) members from before the restart may still consume
    /// its partitions unknown to it: a group found on disk without saved members it
    /// could restore, within its hold. Another protocol's join and a delete wait.
    pub(super) unknown_until_ms: AtomicU64,
}

/// For this many heartbeat intervals after the server starts, a group found on disk
/// hands out no partition (`Membership::held_until`). Without saved members it can use
/// (`members_file.rs`), its members of before the restart heartbeat within one interval
/// (the Rust client retries a failed heartbeat every 200 ms), learn they are unknown,
/// and drop their partitions first. Restored members keep theirs, and only moves wait:
/// the file may come from a server killed within such a hold. A group made since the
/// start had no members before it, and is not held.
pub(super) const RESTART_HOLD_INTERVALS: u64 = 2;

impl Slot {
    /// A group found on disk at start-up.
    pub(super) fn listed(name: String, dir: PathBuf) -> Slot {
        Slot {
            name,
            dir,
            state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
            // Read from the files by the first expiry sweep, not here: a stat per
            // group made a cold start of 10,000 groups take most of a second.
            last_active_ms: AtomicI64::new(UNKNOWN),
            members: AtomicUsize::new(0),
            next_deadline: AtomicU64::new(u64::MAX),
            has_files: AtomicBool::new(true),
            listed: true,
            loaded_once: AtomicBool::new(false),
            unknown_until_ms: AtomicU64::new(0),
        }
    }

    /// A group a request names for the first time: no files yet.
    fn made(name: String, dir: PathBuf) -> Slot {
        Slot {
            name,
            dir,
            state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
            last_active_ms: AtomicI64::new(now_ms()),
            members: AtomicUsize::new(0),
            next_deadline: AtomicU64::new(u64::MAX),
            has_files: AtomicBool::new(false),
            listed: false,
            loaded_once: AtomicBool::new(false),
            unknown_until_ms: AtomicU64::new(0),
        }
    }

    /// How long the group has been inactive; 0 while that is not known yet.
    pub(super) fn idle_ms(&self, now: i64) -> i64 {
        match self.last_active_ms.load(Ordering::Relaxed) {
            UNKNOWN => 0,
            at => now.saturating_sub(at),
        }
    }
}

pub(super) enum SlotState {
    Unloaded,
    Loaded(Box<Loaded>),
    Deleted,
}

pub(super) struct Loaded {
    pub(super) membership: Membership,
    /// Committed offsets and their files, opened on first need (`Groups::store`): a
    /// group that only heartbeats holds no file, and an idle one lets its go.
    pub(super) store: Option<Store>,
    /// An open of the files that a cancelled request started and did not see finish.
    /// The next request waits for it rather than open the same files beside it (two
    /// opens of one directory race on its files).
    pub(super) opening: Option<Opening>,
    /// Wall-clock ms of the store's last use.
    pub(super) store_used_ms: i64,
    /// The committed offsets of a group with members whose files were closed while
    /// idle (`close_store`), for the metrics endpoint's lag (`gauges.rs`): a consumer
    /// that heartbeats and stops committing is what lag alerts are for, and its lag
    /// went missing a minute after its last commit. The offsets alone (48 bytes each,
    /// no metadata, which may be 4 KiB an offset). Dropped when the files reopen.
    pub(super) closed_offsets: Option<Box<[(Tp, u64)]>>,
    /// The membership's `changes` when last saved (`members_file.rs`), to save only
    /// after a change, and the CRC of what was saved, to check in tests that nothing
    /// changed without moving `changes`.
    pub(super) saved: Option<(u64, u32)>,
    /// A save a cancelled request started and did not see finish.
    pub(super) saving: Option<tokio::task::JoinHandle<super::members_file::Saved>>,
}

impl Loaded {
    /// Closes the group's files (idle, or to make room for another group's), keeping
    /// their offsets in memory while the group has members.
    pub(super) fn close_store(&mut self) {
        if let Some(store) = self.store.take() {
            if !self.membership.is_empty() {
                self.closed_offsets = Some(store.offsets.offsets().collect());
            }
        }
    }
}

type Opening = tokio::task::JoinHandle<Result<Option<(GroupFiles<Offsets>, Offsets, OpenStore)>>>;

pub(super) struct Store {
    /// Its place among the groups with open files (`open_stores.rs`).
    pub(super) _open: open_stores::OpenStore,
    pub(super) offsets: Offsets,
    /// Reopened before the next use if an fsync of them failed.
    pub(super) files: GroupFiles<Offsets>,
}

pub(super) type Guard = OwnedMutexGuard<SlotState>;

pub(super) fn loaded(guard: &mut Guard) -> &mut Loaded {
    match &mut **guard {
        SlotState::Loaded(loaded) => loaded,
        _ => unreachable!("Groups::lock returns loaded groups only"),
    }
}

impl Groups {
    pub(super) fn find(&self, name: &str) -> Result<Arc<Slot>> {
        validate_group_name(name)?;
        self.slots()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::GroupNotFound {
                group: name.to_string(),
            })
    }

    pub(super) fn find_or_create(&self, name: &str) -> Result<Arc<Slot>> {
        validate_group_name(name)?;
        let mut slots = self.slots();
        if slots.len() >= MAX_GROUPS && !slots.contains_key(name) {
            return Err(Error::LimitReached(format!(
                "the server has {MAX_GROUPS} consumer groups, the most it keeps; delete unused ones (strom group delete)"
            )));
        }
        let slot = slots.entry(name.to_string()).or_insert_with(|| {
            let id = crate::broker::data_dir::new_topic_id();
            let dir = self.broker.data_dir().group_dir(name, &id);
            Arc::new(Slot::made(name.to_string(), dir))
        });
        Ok(Arc::clone(slot))
    }

    /// Locks a group (registering it first, with `create`); its files are opened by
    /// `store`, only when offsets are needed.
    pub(super) async fn lock(&self, name: &str, create: bool) -> Result<(Arc<Slot>, Guard)> {
        loop {
            let slot = if create {
                self.find_or_create(name)?
            } else {
                self.find(name)?
            };
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            match &*guard {
                SlotState::Deleted => continue, // deleted meanwhile: look again
                SlotState::Loaded(_) => {}
                SlotState::Unloaded => {
                    // Kafka consumers joined it since the start: its gRPC members of before
                    // are not restored, so that they are refused and drop their partitions.
                    let restored = match slot.has_files.load(Ordering::Relaxed) {
                        true if !self.foreign_members(name) => self.restored(&slot).await,
                        _ => None,
                    };
                    let interval = self.config.heartbeat_interval.as_millis() as u64;
                    // Restored groups too: members keep what they own, and only moves
                    // wait. Their file may have been written by a server that was itself
                    // within a hold (killed then), or since this one started (the group
                    // unloaded and loaded again).
                    let hold = match slot.listed {
                        true => self
                            .serving_since_ms
                            .load(Ordering::Relaxed)
                            .saturating_add(interval.saturating_mul(RESTART_HOLD_INTERVALS)),
                        false => 0,
                    };
                    let found = restored.is_some();
                    if !found {
                        slot.unknown_until_ms.store(hold, Ordering::Relaxed);
                    }
                    slot.loaded_once.store(true, Ordering::Relaxed);
                    let membership = restored
                        .unwrap_or_else(|| {
                            Membership::new(name, interval, self.view())
                                .counted_in(Arc::clone(&self.subscriptions))
                        })
                        .held_until(hold);
                    *guard = SlotState::Loaded(Box::new(Loaded {
                        membership,
                        store: None,
                        opening: None,
                        store_used_ms: now_ms(),
                        closed_offsets: None,
                        saved: None,
                        saving: None,
                    }));
                    if found {
                        // Its members' count and deadlines, for listings and expiry (not
                        // its activity time: a read of an idle group is no activity).
                        let membership = &loaded(&mut guard).membership;
                        let deadline = membership.next_deadline().unwrap_or(u64::MAX);
                        slot.next_deadline.store(deadline, Ordering::Relaxed);
                        let members = membership.members().count();
                        slot.members.store(members, Ordering::Relaxed);
                    }
                }
            }
            return Ok((slot, guard));
        }
    }

    /// A locked group's offsets and files, opened (or with `create`, created) on first
    /// need and again after a failed fsync. `None`: the group has never stored offsets.
    pub(super) async fn store<'a>(
        &self,
        slot: &Slot,
        loaded: &'a mut Loaded,
        create: bool,
    ) -> Result<Option<&'a mut Store>> {
        loaded.store_used_ms = now_ms();
        if loaded.store.as_ref().is_some_and(|s| !s.files.has_failed()) {
            return Ok(loaded.store.as_mut());
        }
        // A failed store is replaced: it goes first, so as not to count against the cap.
        loaded.store = None;
        if create || slot.has_files.load(Ordering::Relaxed) {
            self.make_room_for_store(slot);
        }
        if create {
            // Before the directory is made: a request cancelled while it is being made
            // must not leave a directory its group does not know of (the group would be
            // forgotten, and made again under a second directory).
            slot.has_files.store(true, Ordering::Relaxed);
        }
        let opened = loop {
            let opening = loaded.opening.get_or_insert_with(|| {
                let dir = slot.dir.clone();
                // Counted from before the open: concurrent opens all count.
                let place = open_stores::OpenStore::new(&self.open_stores);
                tokio::task::spawn_blocking(move || match create || dir.exists() {
                    true => {
                        GroupFiles::open(&dir).map(|(files, offsets)| Some((files, offsets, place)))
                    }
                    false => Ok(None),
                })
            });
            // Cancelled here, the handle stays in `opening` for the next request.
            let opened = opening.await.expect("group load does not panic");
            loaded.opening = None;
            match opened {
                // A cancelled request's open that did not create: this one may have to.
                Ok(None) if create => continue,
                opened => break opened?,
            }
        };
        loaded.store = opened.map(|(files, offsets, place)| Store {
            _open: place,
            files,
            offsets,
        });
        if loaded.store.is_some() {
            slot.has_files.store(true, Ordering::Relaxed);
            loaded.closed_offsets = None;
            if loaded.saved.is_none() {
                // Nothing saved since the group was loaded (its first commit made its
                // directory; or the first use after a start): saved now, not at the
                // members' next change, which may come after a restart.
                self.save_members(slot, loaded).await;
            }
        }
        Ok(loaded.store.as_mut())
    }
}
