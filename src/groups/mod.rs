//! Consumer groups: members that share the partitions of the topics they subscribe to,
//! and the offsets they commit (KIP-848 in spirit: the server assigns partitions and
//! moves them one at a time, never stopping the whole group).
//!
//! - `coordinator`: one group's membership, epochs and assignments, as a state machine
//!   without I/O or clock; `assign`: the target assignment.
//! - `offsets`: committed offsets and their bytes on disk; `store`: a group's snapshot
//!   and journal files, and the group commit of their fsyncs.
//! - `ops`: commit, fetch, reset and describe, which need the broker (topic ids, high
//!   watermarks, timestamp lookups).
//! - this module: the registry of groups, loading them from disk on first use, and the
//!   task that ends expired sessions and deletes groups past their offset retention.
//!
//! Offsets are kept by topic id, so a topic deleted and created again under its name
//! starts with no committed offsets. Membership lives in memory only: after a restart
//! members find themselves unknown and join again, and committed offsets carry them on.

mod assign;
pub mod coordinator;
pub mod offsets;
mod ops;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

pub use coordinator::{
    Answer, GroupState, Heartbeat, Member, Membership, Subscription, DEFAULT_SESSION_TIMEOUT_MS,
    MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS,
};
pub use ops::{DescribedGroup, PartitionLag, ResetPlan, ResetTo};

use crate::broker::data_dir::{parse_topic_dir, TopicDirName};
use crate::broker::{now_ms, Broker, TopicMeta};
use crate::error::{quote, Error, IoContext, Result};
use offsets::Offsets;
use store::GroupFiles;

/// A topic's id as a number: ids are 32 hex digits (`data_dir::new_topic_id`), and 16
/// bytes that copy freely beat a string per offset when a server holds millions.
pub type TopicId = u128;

/// A partition, by topic id (not name: a re-created topic's partitions are new ones).
pub type Tp = (TopicId, u32);

/// A topic id from its text form.
pub fn topic_id(id: &str) -> Result<TopicId> {
    u128::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() == crate::broker::data_dir::TOPIC_ID_LEN)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("topic id {} is not 32 hex digits", quote(id)))
        })
}

/// The topics as groups see them: names, ids and partition counts, at one version of
/// the broker's topic set.
#[derive(Debug, Default)]
pub struct TopicsView {
    pub version: u64,
    by_name: BTreeMap<String, (TopicId, u32)>,
    names: HashMap<TopicId, String>,
}

impl TopicsView {
    pub fn new(version: u64, metas: Vec<TopicMeta>) -> TopicsView {
        let metas: Vec<(TopicMeta, TopicId)> = metas
            .into_iter()
            .filter_map(|m| match topic_id(&m.id) {
                Ok(id) => Some((m, id)),
                Err(err) => {
                    tracing::warn!(topic = %m.name, %err, "topic left out of consumer groups");
                    None
                }
            })
            .collect();
        let names = metas.iter().map(|(m, id)| (*id, m.name.clone())).collect();
        let by_name = metas
            .into_iter()
            .map(|(m, id)| (m.name, (id, m.partitions)))
            .collect();
        TopicsView {
            version,
            by_name,
            names,
        }
    }

    pub fn id_of(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).map(|(id, _)| *id)
    }

    pub fn name_of(&self, id: TopicId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// (name, id, partitions) of every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = (&str, TopicId, u32)> {
        self.by_name
            .iter()
            .map(|(name, (id, n))| (name.as_str(), *id, *n))
    }
}

/// Partitions of one topic, by name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPartitions {
    pub topic: String,
    pub topic_id: String,
    pub partitions: Vec<u32>,
}

/// Partitions grouped by topic name (partitions of topics deleted meanwhile are left out).
pub fn named(view: &TopicsView, tps: &std::collections::BTreeSet<Tp>) -> Vec<NamedPartitions> {
    let mut out: BTreeMap<&str, NamedPartitions> = BTreeMap::new();
    for (id, p) in tps {
        let Some(name) = view.name_of(*id) else {
            continue;
        };
        out.entry(name)
            .or_insert_with(|| NamedPartitions {
                topic: name.to_string(),
                topic_id: format!("{id:032x}"),
                partitions: Vec::new(),
            })
            .partitions
            .push(*p);
    }
    out.into_values().collect()
}

/// Settings of the groups service.
#[derive(Debug, Clone)]
pub struct GroupsConfig {
    /// The longest a member is told to wait between heartbeats (shorter for short
    /// session timeouts: a third of the session).
    pub heartbeat_interval: Duration,
    /// A group with no members and no commits for this long is deleted.
    pub offsets_retention: Duration,
    /// How often groups are checked for offset expiry: a tenth of the retention, from
    /// 100 ms to a minute.
    pub sweep_interval: Duration,
}

impl GroupsConfig {
    pub fn new(heartbeat_interval: Duration, offsets_retention: Duration) -> GroupsConfig {
        GroupsConfig {
            heartbeat_interval,
            offsets_retention,
            sweep_interval: (offsets_retention / 10)
                .clamp(Duration::from_millis(100), Duration::from_secs(60)),
        }
    }
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig::new(Duration::from_secs(3), Duration::from_secs(7 * 24 * 3600))
    }
}

/// Checks a group name: the rules of topic names, as it names a directory too.
pub fn validate_group_name(name: &str) -> Result<()> {
    crate::broker::topic::validate_name(name)
        .map_err(|_| Error::InvalidArgument(format!(
            "group name {} is invalid: use 1 to {} characters of a-z, A-Z, 0-9, '.', '_' and '-', not \".\" or \"..\"",
            quote(name),
            crate::broker::topic::MAX_NAME_LEN
        )))
}

/// A subscription from a heartbeat's `topics` and `topic_pattern`.
pub fn subscription(topics: Vec<String>, pattern: &str) -> Result<Subscription> {
    const MAX_PATTERN: usize = 1024;
    match (topics.is_empty(), pattern.is_empty()) {
        (true, true) | (false, false) => Err(Error::InvalidArgument(
            "a heartbeat subscribes with topics or with topic_pattern: give exactly one".into(),
        )),
        (false, true) => {
            for topic in &topics {
                crate::broker::topic::validate_name(topic)?;
            }
            Ok(Subscription::Topics(topics.into_iter().collect()))
        }
        (true, false) => {
            if pattern.len() > MAX_PATTERN {
                return Err(Error::InvalidArgument(format!(
                    "topic_pattern is {} bytes; at most {MAX_PATTERN}",
                    pattern.len()
                )));
            }
            // Anchored: the pattern must match the whole name, as in Kafka.
            regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(256 << 10)
                .build()
                .map(|regex| Subscription::Pattern(pattern.to_string(), regex))
                .map_err(|err| {
                    Error::InvalidArgument(format!(
                        "topic_pattern {} is not a valid regular expression: {err}",
                        quote(pattern)
                    ))
                })
        }
    }
}

/// A session timeout from a heartbeat: 0 for the default, else within bounds.
pub fn session_timeout(ms: u32) -> Result<u64> {
    match u64::from(ms) {
        0 => Ok(DEFAULT_SESSION_TIMEOUT_MS),
        ms if (MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ms) => Ok(ms),
        ms => Err(Error::InvalidArgument(format!(
            "session_timeout_ms {ms} is out of bounds: use {MIN_SESSION_TIMEOUT_MS} to {MAX_SESSION_TIMEOUT_MS}, or 0 for {DEFAULT_SESSION_TIMEOUT_MS}"
        ))),
    }
}

/// `Slot::last_active_ms` of a group listed at start-up whose files were not looked at.
const UNKNOWN: i64 = i64::MIN;

/// A group with no members and no commits for this long is dropped from memory (its
/// files stay), so memory follows the groups in use rather than every group there is.
const UNLOAD_IDLE_MS: i64 = 60_000;

/// One group in the registry. Its state is loaded from disk on first use.
struct Slot {
    name: String,
    dir: PathBuf,
    state: Arc<tokio::sync::Mutex<SlotState>>,
    /// Wall-clock ms of the last heartbeat, commit or departure: for offset expiry.
    last_active_ms: AtomicI64,
    /// Members now, readable without the lock (listings, the expiry task).
    members: AtomicUsize,
}

impl Slot {
    /// How long the group has been inactive; 0 while that is not known yet.
    fn idle_ms(&self, now: i64) -> i64 {
        match self.last_active_ms.load(Ordering::Relaxed) {
            UNKNOWN => 0,
            at => now.saturating_sub(at),
        }
    }
}

enum SlotState {
    Unloaded,
    Loaded(Box<Loaded>),
    Deleted,
}

struct Loaded {
    membership: Membership,
    offsets: Offsets,
    /// Reopened before the next use if an fsync of them failed.
    files: GroupFiles,
}

type Guard = OwnedMutexGuard<SlotState>;

fn loaded(guard: &mut Guard) -> &mut Loaded {
    match &mut **guard {
        SlotState::Loaded(loaded) => loaded,
        _ => unreachable!("Groups::lock returns loaded groups only"),
    }
}

pub struct Groups {
    broker: Arc<Broker>,
    config: GroupsConfig,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    view: Mutex<Arc<TopicsView>>,
    /// Origin of the coordinators' monotonic clock.
    origin: Instant,
}

impl Groups {
    /// Lists the groups in the data directory; each loads on first use, so start-up
    /// costs one directory read however many offsets are stored.
    pub fn open(broker: Arc<Broker>, config: GroupsConfig) -> Result<Groups> {
        let root = broker.data_dir().groups();
        let mut slots = BTreeMap::new();
        for entry in std::fs::read_dir(&root).at(&root)? {
            let dir = entry.at(&root)?.path();
            let file_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let TopicDirName::Live { name, id: Some(_) } = parse_topic_dir(&file_name) else {
                continue; // deleted leftovers are removed by the broker at start
            };
            let slot = Arc::new(Slot {
                name: name.clone(),
                dir,
                state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
                // Read from the files by the first expiry sweep, not here: a stat per
                // group made a cold start of 10,000 groups take most of a second.
                last_active_ms: AtomicI64::new(UNKNOWN),
                members: AtomicUsize::new(0),
            });
            if let Some(other) = slots.insert(name, slot) {
                tracing::warn!(dir = %other.dir.display(), "two directories for one group; using one of them");
            }
        }
        tracing::info!(groups = slots.len(), "groups listed");
        let (version, metas) = broker.topic_metas();
        Ok(Groups {
            broker,
            config,
            slots: Mutex::new(slots),
            view: Mutex::new(Arc::new(TopicsView::new(version, metas))),
            origin: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The topics now; rebuilt only when the broker's topic set changed.
    fn view(&self) -> Arc<TopicsView> {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if view.version != self.broker.topics_version() {
            let (version, metas) = self.broker.topic_metas();
            *view = Arc::new(TopicsView::new(version, metas));
        }
        Arc::clone(&view)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, name: &str) -> Result<Arc<Slot>> {
        validate_group_name(name)?;
        self.slots()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::GroupNotFound {
                group: name.to_string(),
            })
    }

    fn find_or_create(&self, name: &str) -> Result<Arc<Slot>> {
        validate_group_name(name)?;
        let mut slots = self.slots();
        let slot = slots.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Slot {
                name: name.to_string(),
                dir: self
                    .broker
                    .data_dir()
                    .group_dir(name, &crate::broker::data_dir::new_topic_id()),
                state: Arc::new(tokio::sync::Mutex::new(SlotState::Unloaded)),
                last_active_ms: AtomicI64::new(now_ms()),
                members: AtomicUsize::new(0),
            })
        });
        Ok(Arc::clone(slot))
    }

    /// Locks a group, loading (or creating, with `create`) its files first.
    async fn lock(&self, name: &str, create: bool) -> Result<(Arc<Slot>, Guard)> {
        loop {
            let slot = if create {
                self.find_or_create(name)?
            } else {
                self.find(name)?
            };
            let mut guard = Arc::clone(&slot.state).lock_owned().await;
            let reopen = match &*guard {
                SlotState::Deleted => continue, // deleted meanwhile: look again
                SlotState::Unloaded => true,
                SlotState::Loaded(loaded) => loaded.files.has_failed(),
            };
            if reopen {
                let dir = slot.dir.clone();
                let (files, offsets) = tokio::task::spawn_blocking(move || GroupFiles::open(&dir))
                    .await
                    .expect("group load does not panic")?;
                let membership = match std::mem::replace(&mut *guard, SlotState::Unloaded) {
                    SlotState::Loaded(old) => old.membership,
                    _ => Membership::new(
                        name,
                        self.config.heartbeat_interval.as_millis() as u64,
                        self.view(),
                    ),
                };
                *guard = SlotState::Loaded(Box::new(Loaded {
                    membership,
                    offsets,
                    files,
                }));
            }
            return Ok((slot, guard));
        }
    }

    /// Records the member count after a change, and when a group empties, the time (in
    /// memory and on its files, for expiry after a restart).
    fn members_changed(slot: &Slot, loaded: &Loaded) {
        let now = loaded.membership.members().count();
        let before = slot.members.swap(now, Ordering::Relaxed);
        slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
        if now == 0 && before > 0 {
            loaded.files.touch();
        }
    }

    /// Handles a heartbeat; the assignment comes back by topic name.
    pub async fn heartbeat(
        &self,
        group: &str,
        heartbeat: Heartbeat,
    ) -> Result<(Answer, Vec<NamedPartitions>)> {
        let (slot, mut guard) = self.lock(group, true).await?;
        let view = self.view();
        let now = self.now();
        let loaded = loaded(&mut guard);
        let answer = loaded.membership.heartbeat(heartbeat, &view, now, || {
            uuid::Uuid::new_v4().simple().to_string()
        })?;
        Self::members_changed(&slot, loaded);
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
        Ok(())
    }

    /// Every group: name, state and member count.
    pub async fn list(&self) -> Vec<(String, GroupState, usize)> {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
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
        out
    }

    /// Deletes a group and its offsets; refused while it has members.
    pub async fn delete(&self, group: &str) -> Result<()> {
        let (slot, mut guard) = self.lock(group, false).await?;
        let members = loaded(&mut guard).membership.members().count();
        if members > 0 {
            return Err(Error::FailedPrecondition(format!(
                "group {} has {members} members; stop them (or wait for their sessions to end) before deleting it",
                quote(group)
            )));
        }
        self.remove(&slot, guard).await
    }

    async fn remove(&self, slot: &Arc<Slot>, mut guard: Guard) -> Result<()> {
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
        let active: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.members.load(Ordering::Relaxed) > 0)
            .cloned()
            .collect();
        for slot in active {
            if let SlotState::Loaded(loaded) = &*slot.state.lock().await {
                loaded.files.touch();
            }
            slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Drops idle groups' state from memory; they load again on their next use.
    fn unload_idle(&self, now: i64) {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        for slot in slots {
            if slot.members.load(Ordering::Relaxed) > 0 || slot.idle_ms(now) < UNLOAD_IDLE_MS {
                continue;
            }
            // A group in use is skipped, not waited for.
            if let Ok(mut state) = slot.state.try_lock() {
                if matches!(&*state, SlotState::Loaded(l) if l.membership.is_empty()) {
                    *state = SlotState::Unloaded;
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
        let active: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.members.load(Ordering::Relaxed) > 0)
            .cloned()
            .collect();
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
