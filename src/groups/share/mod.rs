//! Share groups: queues on the log (Kafka's KIP-932 in spirit). Members of a share
//! group fetch records of a topic under a time-limited lock and acknowledge each one:
//! ACCEPT (done), RELEASE (back to the queue), REJECT (dead-lettered) or RENEW (a
//! longer lock). A lock that ends, or a member whose session ends, returns its records
//! with their delivery counts kept; a record out of deliveries is dead-lettered.
//!
//! - `window`: one partition's records as a state machine without I/O or clock;
//!   `config`: the group's settings; `members`: who is in the group.
//! - `state`: the partitions' bytes on disk, kept as a snapshot plus a journal by
//!   `groups/store.rs` (the same files and group commit as consumer groups' offsets).
//! - `fetch` (with `fill`, one partition's part), `ack`, `admin`: the operations, which
//!   need the broker (reads of the log, appends to the dead-letter topic);
//!   `dead_letters`: those appends; `tally`: the server's cap on records in windows;
//!   `gauges`: what the metrics endpoint shows.
//! - this module: the registry of groups, loading each from disk on first use, and
//!   the task that ends expired locks and sessions.
//!
//! Acknowledgements are answered once they are on disk. Acquisitions (delivery counts)
//! are journaled without waiting for an fsync: a SIGKILL keeps them (the page cache
//! survives), a power cut may hand a record out once more than its count says.

mod ack;
mod admin;
#[cfg(test)]
mod cancelled_fetch;
pub mod config;
mod dead_letters;
mod fetch;
mod fill;
pub mod gauges;
mod group;
pub mod members;
pub mod state;
mod sweep;
mod tally;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod topic_races;
pub mod window;
#[cfg(test)]
mod window_cap;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};

pub use ack::{count_acks, AckBatch, Refused, MAX_ACK_OFFSETS};
pub use admin::{DescribedShareGroup, ShareMemberInfo, SharePartitionInfo};
pub use config::ShareConfig;
pub use fetch::{Delivered, Fetched, Still};
pub use window::{Ack, MemberIdx, Refusal};

use super::request::validate_group_name;
use super::Tp;
use crate::broker::data_dir::{new_topic_id, parse_topic_dir, TopicDirName};
use crate::broker::page::{Listed, Page};
use crate::broker::{now_ms, Broker};
use crate::error::{quote, Error};
use crate::error::{IoContext, Result};
use group::Group;
use tally::WindowTally;

/// Most share groups a server keeps.
pub const MAX_SHARE_GROUPS: usize = 100_000;
/// Most share groups in memory at once, each with its journal open: past it, loading
/// one unloads idle ones (no members, nothing owed), and with none idle the load is
/// refused, so groups by the thousand cannot take the server's file descriptors. (A
/// member keeps its group loaded: 20,000 one-member groups took every descriptor, and
/// the logs could open no file; hostile-client finding.)
pub const MAX_LOADED: usize = 1_000;
/// Records held in share groups' windows over the server (`tally.rs`), by default:
/// 24 bytes each, 240 MB.
pub const MAX_WINDOW_RECORDS: usize = 10_000_000;
const CONFIG_FILE: &str = "config.json";
/// How often locks and sessions are checked by the background task (fetches check
/// them too, so a waiting fetcher sees an ended lock at its deadline).
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// A group with no members and nothing owed is unloaded (its journal closed) after this
/// long without requests, so idle groups hold no file descriptor.
const UNLOAD_IDLE_MS: i64 = 60_000;

struct Slot {
    name: String,
    dir: PathBuf,
    state: Arc<tokio::sync::Mutex<SlotState>>,
    /// Woken when records become available without the log growing: released, their
    /// lock ended, their member left.
    available: Notify,
    members: AtomicUsize,
    /// Each partition's start offset, for retention (`RetentionFloor`), readable
    /// without the group's lock.
    floors: Arc<Mutex<HashMap<Tp, u64>>>,
    /// The group's part of the server's `WindowTally` when it was last loaded (see
    /// `lock`).
    last_part: Arc<AtomicUsize>,
}

enum SlotState {
    Unloaded,
    Loaded(Box<Group>),
    Deleted,
}

type Guard = OwnedMutexGuard<SlotState>;

/// Whether a request that loads a group counts against `MAX_LOADED`: fetches and
/// streams, which make it active, do; administration (describe, configure, reset,
/// delete) and acknowledgements, brief and needed most when the server is full, do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Capped,
    Always,
}

fn group(guard: &mut Guard) -> &mut Group {
    match &mut **guard {
        SlotState::Loaded(group) => group,
        _ => unreachable!("ShareGroups::lock returns loaded groups only"),
    }
}

pub struct ShareGroups {
    broker: Arc<Broker>,
    /// Groups in memory now, each holding its journal open (`MAX_LOADED`). Shared with
    /// the loads, which count themselves in (see `lock`).
    loaded: Arc<AtomicUsize>,
    /// `MAX_LOADED`, lowered by tests.
    max_loaded: usize,
    /// Window slots held by the loaded groups, against `max_share_window_records`.
    tally: Arc<WindowTally>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
}

impl ShareGroups {
    /// Lists the share groups in the data directory; each loads on first use. Their
    /// windows hold at most about `max_window_records` records together (`tally.rs`).
    pub fn open(broker: Arc<Broker>, max_window_records: usize) -> Result<ShareGroups> {
        let tally = Arc::new(WindowTally::new(max_window_records.max(1)));
        let root = broker.data_dir().share_groups();
        let mut slots = BTreeMap::new();
        for entry in std::fs::read_dir(&root).at(&root)? {
            let dir = entry.at(&root)?.path();
            let file_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let TopicDirName::Live { name, id: Some(_) } = parse_topic_dir(&file_name) else {
                continue;
            };
            // Loaded now, not on first use: retention must know from the start which
            // records each group still needs.
            let slot = Slot::new(name.clone(), dir.clone());
            // Its files are closed again at once (it loads for real on first use): a
            // thousand groups must not take a thousand descriptors at start-up.
            let floors = Arc::clone(&slot.floors);
            let part = (Arc::clone(&tally), Arc::clone(&slot.last_part));
            match Group::load(name.clone(), dir, floors, part) {
                Ok(group) => group.refresh_floors(),
                Err(err) => {
                    tracing::error!(group = %name, %err, "share group could not be loaded; retrying at its first use")
                }
            }
            slots.insert(name, Arc::new(slot));
        }
        tracing::info!(share_groups = slots.len(), "share groups read");
        Ok(ShareGroups {
            broker,
            loaded: Arc::new(AtomicUsize::new(0)),
            max_loaded: MAX_LOADED,
            tally,
            slots: Mutex::new(slots),
        })
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn shutting_down(&self) -> tokio::sync::watch::Receiver<bool> {
        self.broker.shutting_down()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks a group, loading it from disk on first use; with `create`, a group that
    /// does not exist is made (its directory at once: its state is durable from the
    /// first fetch).
    async fn lock(&self, name: &str, create: bool, admit: Admit) -> Result<(Arc<Slot>, Guard)> {
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
    fn forget_made(&self, name: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        if slots.get(name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(name);
        }
    }

    /// Unloads idle groups (no members, nothing pending or owed) until at most
    /// `MAX_LOADED` are in memory; groups busy with a request are passed over.
    fn unload_idle(&self) {
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

    /// A page of the share groups: name and member count.
    pub fn list(&self, page: &Page) -> Listed<(String, usize)> {
        let slots = self.slots();
        let groups = page
            .range(&slots)
            .map(|(_, s)| (s.name.clone(), s.members.load(Ordering::Relaxed)));
        page.take(groups, |(name, _)| name)
    }

    /// Joins member `member_id` (a new id if empty) for a stream, without fetching;
    /// returns its id and number. A member already there under that id is a worker
    /// whose stream broke: its records go back to the queue, and the new stream is a
    /// new member (the old stream's end removes nothing).
    pub async fn join(
        &self,
        name: &str,
        member_id: &str,
        topic: &str,
    ) -> Result<(String, MemberIdx)> {
        // Checked before the group is made: a refused join must not leave one.
        self.broker.topic(topic)?;
        members::check_id(member_id)?;
        let (slot, mut guard) = self.lock(name, true, Admit::Capped).await?;
        let g = group(&mut guard);
        let (id, idx, old) = g.members.rejoin(member_id, now_ms())?;
        slot.members.store(g.members.len(), Ordering::Relaxed);
        if let Some(old) = old {
            if g.release_members(&HashSet::from([old]), now_ms()) {
                if let Err(err) = g.journal().await {
                    // The stream will not run, so it will not leave: its member, which
                    // never expires, must not stay.
                    g.members.leave(&id, idx);
                    slot.members.store(g.members.len(), Ordering::Relaxed);
                    return Err(err);
                }
                slot.available.notify_waiters();
            }
        }
        Ok((id, idx))
    }

    /// A member leaves: its records return to the queue at once. Leaving a group (or
    /// as a member) that is gone is not an error.
    /// `idx` is the member's number from `join`: a member that joined again under the
    /// same id (a reconnected worker) is not the one leaving.
    pub async fn leave(&self, name: &str, member_id: &str, idx: MemberIdx) -> Result<()> {
        let (slot, mut guard) = match self.lock(name, false, Admit::Always).await {
            Err(Error::ShareGroupNotFound { .. }) => return Ok(()),
            locked => locked?,
        };
        let g = group(&mut guard);
        let Some(idx) = g.members.leave(member_id, idx) else {
            return Ok(());
        };
        slot.members.store(g.members.len(), Ordering::Relaxed);
        let freed = g.release_members(&HashSet::from([idx]), now_ms());
        self.flush_dead_letters(g).await;
        g.journal().await?;
        drop(guard);
        if freed {
            slot.available.notify_waiters();
        }
        Ok(())
    }

    /// Deletes a group and its state; refused while it has members.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let (slot, mut guard) = self.lock(name, false, Admit::Always).await?;
        let members = group(&mut guard).members.len();
        if members > 0 {
            return Err(Error::FailedPrecondition(format!(
                "share group {} has {members} members; stop its workers (or wait for their sessions to end) before deleting it",
                quote(name)
            )));
        }
        *guard = SlotState::Deleted;
        self.loaded.fetch_sub(1, Ordering::Relaxed);
        {
            let mut slots = self.slots();
            if slots.get(name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(name);
            }
        }
        let dir = slot.dir.clone();
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || broker.data_dir().remove_group_dir(&dir))
            .await
            .expect("share group delete does not panic")?;
        tracing::info!(group = %name, "share group deleted");
        Ok(())
    }
}

impl Slot {
    fn new(name: String, dir: PathBuf) -> Slot {
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
