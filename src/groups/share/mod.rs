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
//! - `fetch`, `ack`, `admin`: the operations, which need the broker (reads of the log,
//!   appends to the dead-letter topic); `dead_letters`: those appends.
//! - this module: the registry of groups, loading each from disk on first use, and
//!   the task that ends expired locks and sessions.
//!
//! Acknowledgements are answered once they are on disk. Acquisitions (delivery counts)
//! are journaled without waiting for an fsync: a SIGKILL keeps them (the page cache
//! survives), a power cut may hand a record out once more than its count says.

mod ack;
mod admin;
pub mod config;
mod dead_letters;
mod fetch;
pub mod members;
pub mod state;
#[cfg(test)]
mod tests;
pub mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};

pub use ack::{AckBatch, Refused, MAX_ACK_OFFSETS};
pub use admin::{DescribedShareGroup, ShareMemberInfo, SharePartitionInfo};
pub use config::ShareConfig;
pub use fetch::{Delivered, Fetched};
pub use window::{Ack, Refusal};

use super::request::validate_group_name;
use super::store::GroupFiles;
use super::Tp;
use crate::broker::data_dir::{new_topic_id, parse_topic_dir, TopicDirName};
use crate::broker::{now_ms, Broker};
use crate::error::{quote, Error};
use crate::error::{IoContext, Result};
use crate::log::files::write_atomically;
use state::ShareState;
use window::Change;

/// Most share groups a server keeps.
pub const MAX_SHARE_GROUPS: usize = 100_000;
const CONFIG_FILE: &str = "config.json";
/// How often locks and sessions are checked by the background task (fetches check
/// them too, so a waiting fetcher sees an ended lock at its deadline).
const SWEEP_EVERY: Duration = Duration::from_millis(50);

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
}

enum SlotState {
    Unloaded,
    Loaded(Box<Group>),
    Deleted,
}

/// A loaded share group.
pub(super) struct Group {
    name: String,
    config: ShareConfig,
    members: members::Members,
    state: ShareState,
    files: GroupFiles<ShareState>,
    /// Partitions whose window's keys and delivery times were read back from the log
    /// since the group was loaded.
    restored: HashSet<Tp>,
    /// Changes not journaled yet.
    pending: Vec<(Tp, Change)>,
    /// The slot's `floors`, refreshed whenever changes are journaled.
    floors: Arc<Mutex<HashMap<Tp, u64>>>,
}

type Guard = OwnedMutexGuard<SlotState>;

fn group(guard: &mut Guard) -> &mut Group {
    match &mut **guard {
        SlotState::Loaded(group) => group,
        _ => unreachable!("ShareGroups::lock returns loaded groups only"),
    }
}

impl Group {
    /// Journals the pending changes (into the page cache) and returns the position an
    /// fsync must reach to make them durable; snapshots the state when the journal is
    /// long. The state is bounded by the windows, so the snapshot is small.
    async fn journal(&mut self) -> Result<u64> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.files.append(&pending)?;
            self.refresh_floors();
        }
        let seq = self.files.durability().written();
        if self.files.needs_snapshot() {
            let (path, bytes) = self.files.snapshot(&self.state);
            tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                .await
                .expect("snapshot write does not panic")?;
            self.files.snapshot_written();
        }
        Ok(seq)
    }

    fn record(&mut self, tp: Tp, changes: Vec<Change>) {
        self.pending.extend(changes.into_iter().map(|c| (tp, c)));
    }
}

pub struct ShareGroups {
    broker: Arc<Broker>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
}

impl ShareGroups {
    /// Lists the share groups in the data directory; each loads on first use.
    pub fn open(broker: Arc<Broker>) -> Result<ShareGroups> {
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
            match Group::load(name.clone(), dir, Arc::clone(&slot.floors)) {
                Ok(group) => {
                    group.refresh_floors();
                    *slot.state.try_lock().expect("a new slot is not locked") =
                        SlotState::Loaded(Box::new(group));
                }
                Err(err) => {
                    tracing::error!(group = %name, %err, "share group could not be loaded; retrying at its first use")
                }
            }
            slots.insert(name, Arc::new(slot));
        }
        tracing::info!(share_groups = slots.len(), "share groups loaded");
        Ok(ShareGroups {
            broker,
            slots: Mutex::new(slots),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks a group, loading it from disk on first use; with `create`, a group that
    /// does not exist is made (its directory at once: its state is durable from the
    /// first fetch).
    async fn lock(&self, name: &str, create: bool) -> Result<(Arc<Slot>, Guard)> {
        validate_group_name(name)?;
        loop {
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
                        slot
                    }
                }
            };
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            match &*guard {
                SlotState::Deleted => continue,
                SlotState::Loaded(_) => {}
                SlotState::Unloaded => {
                    let dir = slot.dir.clone();
                    let owned = name.to_string();
                    let floors = Arc::clone(&slot.floors);
                    let loaded =
                        tokio::task::spawn_blocking(move || Group::load(owned, dir, floors))
                            .await
                            .expect("share group load does not panic");
                    match loaded {
                        Ok(group) => *guard = SlotState::Loaded(Box::new(group)),
                        Err(err) => {
                            tracing::error!(group = %name, %err, "share group could not be loaded");
                            return Err(err);
                        }
                    }
                }
            }
            return Ok((slot, guard));
        }
    }

    /// Every share group: name and member count.
    pub fn list(&self) -> Vec<(String, usize)> {
        self.slots()
            .values()
            .map(|s| (s.name.clone(), s.members.load(Ordering::Relaxed)))
            .collect()
    }

    /// Joins member `member_id` (a new id if empty) without fetching; returns its id.
    pub async fn join(&self, name: &str, member_id: &str) -> Result<String> {
        let (slot, mut guard) = self.lock(name, true).await?;
        let g = group(&mut guard);
        let (id, _) = g.members.join(member_id, now_ms())?;
        slot.members.store(g.members.len(), Ordering::Relaxed);
        Ok(id)
    }

    /// A member leaves: its records return to the queue at once. Leaving a group (or
    /// as a member) that is gone is not an error.
    pub async fn leave(&self, name: &str, member_id: &str) -> Result<()> {
        let (slot, mut guard) = match self.lock(name, false).await {
            Err(Error::ShareGroupNotFound { .. }) => return Ok(()),
            locked => locked?,
        };
        let g = group(&mut guard);
        let Some(idx) = g.members.leave(member_id) else {
            return Ok(());
        };
        slot.members.store(g.members.len(), Ordering::Relaxed);
        let freed = g.release_member(idx, now_ms());
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
        let (slot, mut guard) = self.lock(name, false).await?;
        let members = group(&mut guard).members.len();
        if members > 0 {
            return Err(Error::FailedPrecondition(format!(
                "share group {} has {members} members; stop its workers (or wait for their sessions to end) before deleting it",
                quote(name)
            )));
        }
        *guard = SlotState::Deleted;
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
            let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
            for slot in slots {
                let mut guard = Arc::clone(&slot.state).lock_owned().await;
                if let SlotState::Loaded(group) = &mut *guard {
                    if let Err(err) = self.sweep(&slot, group).await {
                        tracing::warn!(group = %slot.name, %err, "share group upkeep failed; retrying");
                    }
                }
            }
        }
    }

    async fn sweep(&self, slot: &Slot, group: &mut Group) -> Result<()> {
        let now = now_ms();
        let mut freed = false;
        for (_, idx) in group.members.expire(now, group.config.session_timeout_ms) {
            freed |= group.release_member(idx, now);
        }
        freed |= group.expire_locks(now);
        slot.members.store(group.members.len(), Ordering::Relaxed);
        freed |= self.flush_dead_letters(group).await;
        group.journal().await?;
        if freed {
            slot.available.notify_waiters();
        }
        Ok(())
    }
}

/// Retention by age keeps every record a share group has not finished: a partition's
/// floor is the lowest start offset of the groups that read it.
impl crate::broker::RetentionFloor for ShareGroups {
    fn floor(&self, topic_id: &str, partition: u32) -> Option<u64> {
        let tp = (super::topic_id(topic_id).ok()?, partition);
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

impl Slot {
    fn new(name: String, dir: PathBuf) -> Slot {
        Slot {
            name,
            dir,
            state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
            available: Notify::new(),
            members: AtomicUsize::new(0),
            floors: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Group {
    /// Reads a group's settings and state from `dir`, creating it if it is not there.
    /// Blocking.
    fn load(name: String, dir: PathBuf, floors: Arc<Mutex<HashMap<Tp, u64>>>) -> Result<Group> {
        let (files, state) = GroupFiles::<ShareState>::open(&dir)?;
        let path = dir.join(CONFIG_FILE);
        let config = match std::fs::read(&path) {
            Ok(bytes) => {
                let map: BTreeMap<String, String> =
                    serde_json::from_slice(&bytes).map_err(|err| Error::Corruption {
                        path: path.clone(),
                        position: 0,
                        reason: err.to_string(),
                    })?;
                ShareConfig::from_map(&map)?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => ShareConfig::default(),
            Err(err) => return Err(err).at(&path),
        };
        Ok(Group {
            name,
            config,
            members: members::Members::default(),
            state,
            files,
            restored: HashSet::new(),
            pending: Vec::new(),
            floors,
        })
    }

    fn refresh_floors(&self) {
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        floors.clear();
        floors.extend(self.state.partitions.iter().map(|(tp, p)| (*tp, p.start())));
    }

    fn write_config(dir: &std::path::Path, config: &ShareConfig) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&config.to_map()).expect("a map of strings");
        write_atomically(&dir.join(CONFIG_FILE), &bytes)
    }

    /// Returns what member `idx` holds, in every partition. True if anything came back.
    fn release_member(&mut self, idx: window::MemberIdx, now: i64) -> bool {
        let mut freed = false;
        let tps: Vec<Tp> = self.state.partitions.keys().copied().collect();
        for tp in tps {
            let mut changes = Vec::new();
            let p = self.state.partitions.get_mut(&tp).expect("listed");
            freed |= p.release_member(idx, now, &self.config, &mut changes);
            self.record(tp, changes);
        }
        freed
    }

    /// Returns every record whose lock ended. True if anything came back.
    fn expire_locks(&mut self, now: i64) -> bool {
        let mut freed = false;
        let tps: Vec<Tp> = self.state.partitions.keys().copied().collect();
        for tp in tps {
            let mut changes = Vec::new();
            let p = self.state.partitions.get_mut(&tp).expect("listed");
            freed |= p.expire(now, &self.config, &mut changes);
            self.record(tp, changes);
        }
        freed
    }
}
