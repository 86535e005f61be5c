//! Consumer groups: members that share the partitions of the topics they subscribe to,
//! and the offsets they commit (KIP-848 in spirit: the server assigns partitions and
//! moves them one at a time, never stopping the whole group).
//!
//! - `coordinator`: one group's membership, epochs and assignments, as a state machine
//!   without I/O or clock; `assign`: the target assignment; `subscriptions`: what
//!   members subscribe to, each distinct subscription kept once per group.
//! - `offsets`: committed offsets and their bytes on disk; `store`: a group's snapshot
//!   and journal files, and the group commit of their fsyncs.
//! - `ops`: commit, fetch and reset; `delete_offsets`; `describe`: what needs the
//!   broker (topic ids, high watermarks, timestamp lookups); `paging`: their answers a
//!   page at a time; `membership`: heartbeats and leaves.
//! - `topics`: the topics as groups see them; `request`: checks of what requests carry;
//!   `gauges`: members and lag for the metrics endpoint.
//! - this module: the registry of groups, loading them from disk on first use;
//!   `admin`: listing and deleting them; `expiry`: the task that ends expired sessions
//!   and deletes groups past their offset retention; `foreign`: groups of the same
//!   names that Kafka's coordinator holds members of.
//!
//! Offsets are kept by topic id, so a topic deleted and created again under its name
//! starts with no committed offsets. Membership lives in memory only: after a restart
//! members find themselves unknown and join again, and committed offsets carry them on.

mod admin;
mod assign;
pub mod coordinator;
mod delete_offsets;
mod describe;
mod expiry;
mod foreign;
pub mod gauges;
mod holders;
mod journal;
mod member;
mod membership;
pub mod offsets;
mod open_stores;
mod paging;
use open_stores::OpenStore;
mod ops;
mod request;
pub mod share;
pub mod store;
#[cfg(test)]
mod store_tests;
mod subscriptions;
#[cfg(test)]
mod tests;
mod throttle;
mod topics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

pub use coordinator::{
    Answer, GroupState, Heartbeat, Member, Membership, Subscription, DEFAULT_SESSION_TIMEOUT_MS,
    MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS,
};
pub use describe::{DescribedGroup, DescribedMember, PartitionLag};
pub use foreign::{Consumed, ForeignMembers};
pub use ops::{FetchedOffsets, ResetPlan, ResetTo};
pub use request::{instance_id, session_timeout, subscription, validate_group_name};
pub use subscriptions::Scope;
pub use topics::{named, topic_id, NamedPartitions, TopicId, TopicsView, Tp};

use crate::broker::data_dir::{parse_topic_dir, TopicDirName};

use crate::broker::{now_ms, Broker};
use crate::error::{Error, IoContext, Result};
use offsets::Offsets;
use store::GroupFiles;

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

/// Most groups a server keeps (each costs a little memory, and a directory once it has
/// committed offsets).
pub const MAX_GROUPS: usize = 100_000;

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
    /// The members' next deadline (`Membership::next_deadline`, the driver's clock) as
    /// of the last change, or later: the expiry task looks only at groups whose
    /// deadline has come, without their lock (it locked every group with members ten
    /// times a second: 100,000 one-member groups cost a quarter of a core while idle;
    /// hostile-client finding). Everything that changes a group's members or their
    /// deadlines refreshes it under the lock (`Groups::members_changed`: heartbeats,
    /// which may also bring a deadline forward with a shorter session timeout, leaves,
    /// expiries).
    next_deadline: AtomicU64,
    /// Whether the group has a directory (committed offsets) on disk.
    has_files: AtomicBool,
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
    /// Committed offsets and their files, opened on first need (`Groups::store`): a
    /// group that only heartbeats holds no file, and an idle one lets its go.
    store: Option<Store>,
    /// An open of the files that a cancelled request started and did not see finish.
    /// The next request waits for it rather than open the same files beside it (two
    /// opens of one directory race on its files).
    opening: Option<Opening>,
    /// Wall-clock ms of the store's last use.
    store_used_ms: i64,
    /// The committed offsets of a group with members whose files were closed while
    /// idle (`close_store`), for the metrics endpoint's lag (`gauges.rs`): a consumer
    /// that heartbeats and stops committing is what lag alerts are for, and its lag
    /// went missing a minute after its last commit. The offsets alone (48 bytes each,
    /// no metadata, which may be 4 KiB an offset). Dropped when the files reopen.
    closed_offsets: Option<Box<[(Tp, u64)]>>,
}

impl Loaded {
    /// Closes the group's files (idle, or to make room for another group's), keeping
    /// their offsets in memory while the group has members.
    fn close_store(&mut self) {
        if let Some(store) = self.store.take() {
            if !self.membership.is_empty() {
                self.closed_offsets = Some(store.offsets.offsets().collect());
            }
        }
    }
}

type Opening = tokio::task::JoinHandle<Result<Option<(GroupFiles<Offsets>, Offsets, OpenStore)>>>;

struct Store {
    /// Its place among the groups with open files (`open_stores.rs`).
    _open: open_stores::OpenStore,
    offsets: Offsets,
    /// Reopened before the next use if an fsync of them failed.
    files: GroupFiles<Offsets>,
}

type Guard = OwnedMutexGuard<SlotState>;

fn loaded(guard: &mut Guard) -> &mut Loaded {
    match &mut **guard {
        SlotState::Loaded(loaded) => loaded,
        _ => unreachable!("Groups::lock returns loaded groups only"),
    }
}

pub struct Groups {
    /// Set once by the server, if it has a Kafka listener.
    foreign: std::sync::OnceLock<std::sync::Weak<dyn ForeignMembers>>,
    broker: Arc<Broker>,
    config: GroupsConfig,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    view: Mutex<Arc<TopicsView>>,
    /// Origin of the coordinators' monotonic clock.
    origin: Instant,
    /// Groups with their files open now, and the most (`open_stores.rs`).
    open_stores: Arc<AtomicUsize>,
    max_open_stores: usize,
    /// What every group's distinct subscriptions take, capped.
    subscriptions: Arc<subscriptions::SubscriptionTally>,
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
                next_deadline: AtomicU64::new(u64::MAX),
                has_files: AtomicBool::new(true),
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
            open_stores: Arc::new(AtomicUsize::new(0)),
            max_open_stores: open_stores::MAX_OPEN_STORES,
            foreign: std::sync::OnceLock::new(),
            subscriptions: Arc::new(subscriptions::SubscriptionTally::new(
                subscriptions::MAX_SERVER_SUBSCRIPTION_BYTES,
            )),
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
        if slots.len() >= MAX_GROUPS && !slots.contains_key(name) {
            return Err(Error::LimitReached(format!(
                "the server has {MAX_GROUPS} consumer groups, the most it keeps; delete unused ones (strom group delete)"
            )));
        }
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
                next_deadline: AtomicU64::new(u64::MAX),
                has_files: AtomicBool::new(false),
            })
        });
        Ok(Arc::clone(slot))
    }

    /// Locks a group (registering it first, with `create`); its files are opened by
    /// `store`, only when offsets are needed.
    async fn lock(&self, name: &str, create: bool) -> Result<(Arc<Slot>, Guard)> {
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
                    let membership = Membership::new(
                        name,
                        self.config.heartbeat_interval.as_millis() as u64,
                        self.view(),
                    )
                    .counted_in(Arc::clone(&self.subscriptions));
                    *guard = SlotState::Loaded(Box::new(Loaded {
                        membership,
                        store: None,
                        opening: None,
                        store_used_ms: now_ms(),
                        closed_offsets: None,
                    }));
                }
            }
            return Ok((slot, guard));
        }
    }

    /// A locked group's offsets and files, opened (or with `create`, created) on first
    /// need and again after a failed fsync. `None`: the group has never stored offsets.
    async fn store<'a>(
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
        }
        Ok(loaded.store.as_mut())
    }

    /// Whether strom has the group (its offsets or members), and its gRPC members.
    pub fn known(&self, group: &str) -> Option<usize> {
        let slots = self.slots();
        slots
            .get(group)
            .map(|slot| slot.members.load(Ordering::Relaxed))
    }

    /// gRPC members of `group` now (0 for a group strom does not have).
    pub fn member_count(&self, group: &str) -> usize {
        self.slots()
            .get(group)
            .map_or(0, |slot| slot.members.load(Ordering::Relaxed))
    }
}
