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
//!   page at a time; `membership`: heartbeats and leaves; `members_file`: the members
//!   saved for a restart.
//! - `topics`: the topics as groups see them; `request`: checks of what requests carry;
//!   `gauges`: members and lag for the metrics endpoint.
//! - this module: the registry of groups; `slots`: loading each on first use and
//!   opening its files when offsets are needed; `admin`: listing and deleting them; `expiry`: the task that ends expired sessions
//!   and deletes groups past their offset retention; `foreign`: groups of the same
//!   names that Kafka's coordinator holds members of.
//!
//! Offsets are kept by topic id, so a topic deleted and created again under its name
//! starts with no committed offsets. A group with offsets saves its membership at each
//! change (`members_file`, bytes by `coordinator/saved.rs`), so its members carry on
//! across a restart. Where that file cannot be used (the machine restarted: it is not
//! synced) members find themselves unknown and join again, committed offsets carrying
//! them on; meanwhile they consume what they had, so such a group hands out no
//! partition for a while after the start (`slots::RESTART_HOLD_INTERVALS`).

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
mod members_file;
mod membership;
pub mod offsets;
mod open_stores;
mod ops;
mod paging;
mod request;
pub mod share;
mod slots;
pub mod store;
#[cfg(test)]
mod store_tests;
mod subscriptions;
#[cfg(test)]
mod tests;
mod throttle;
mod topics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use crate::broker::Broker;
use crate::error::{IoContext, Result};
use slots::{loaded, Guard, Loaded, Slot, SlotState, Store, UNKNOWN};

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

/// A group with no members and no commits for this long is dropped from memory (its
/// files stay), so memory follows the groups in use rather than every group there is.
const UNLOAD_IDLE_MS: i64 = 60_000;

pub struct Groups {
    /// Set once by the server, if it has a Kafka listener.
    foreign: std::sync::OnceLock<std::sync::Weak<dyn ForeignMembers>>,
    broker: Arc<Broker>,
    config: GroupsConfig,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    view: Mutex<Arc<TopicsView>>,
    /// Origin of the coordinators' monotonic clock.
    origin: Instant,
    /// When the server began to answer, on the same clock (`serving`).
    serving_since_ms: AtomicU64,
    /// Groups with their files open now, and the most (`open_stores.rs`).
    open_stores: Arc<AtomicUsize>,
    max_open_stores: usize,
    /// What every group's distinct subscriptions take, capped.
    subscriptions: Arc<subscriptions::SubscriptionTally>,
    /// This boot of the machine, which a group's saved members name
    /// (`members_file.rs`); None: members are not saved.
    boot: Option<u128>,
    /// Set once by the server, if it has an access control list: scoped patterns.
    scope_of: std::sync::OnceLock<members_file::ScopeFn>,
    /// Failed saves of members, logged once a second.
    save_failures: crate::every_second::EverySecond,
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
            let slot = Arc::new(Slot::listed(name.clone(), dir));
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
            serving_since_ms: AtomicU64::new(0),
            open_stores: Arc::new(AtomicUsize::new(0)),
            max_open_stores: open_stores::MAX_OPEN_STORES,
            foreign: std::sync::OnceLock::new(),
            subscriptions: Arc::new(subscriptions::SubscriptionTally::new(
                subscriptions::MAX_SERVER_SUBSCRIPTION_BYTES,
            )),
            boot: members_file::boot_id(),
            scope_of: std::sync::OnceLock::new(),
            save_failures: Default::default(),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The server answers requests from now on: the hold of groups found on disk
    /// counts from here (`slots::RESTART_HOLD_INTERVALS`), not from their opening,
    /// which may come seconds earlier (share groups and the port's handover follow it).
    pub fn serving(&self) {
        self.serving_since_ms.store(self.now(), Ordering::Relaxed);
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

    /// Whether strom has the group (its offsets or members), and its gRPC members.
    pub fn known(&self, group: &str) -> Option<usize> {
        let slots = self.slots();
        slots
            .get(group)
            .map(|slot| slot.members.load(Ordering::Relaxed))
    }

    /// gRPC members of `group` now (0 for a group strom does not have). A group with
    /// files not loaded since the start is loaded first: the members it saved
    /// (`members_file.rs`) may still be consuming, and count. Once loaded, its count
    /// is kept up to date (a group unloads only without members), so a Kafka group's
    /// joins do not take its lock each time.
    ///
    /// Unknown: a group found on disk without saved members it could restore, within
    /// its hold after the start. Members of before may still consume its partitions,
    /// and the group does not know them (hostile-sweep finding: a Kafka consumer let in
    /// then was given partitions a gRPC member still read).
    pub async fn grpc_members(&self, group: &str) -> GrpcMembers {
        let unused = self.slots().get(group).is_some_and(|slot| {
            slot.members.load(Ordering::Relaxed) == 0
                && slot.has_files.load(Ordering::Relaxed)
                && !slot.loaded_once.load(Ordering::Relaxed)
        });
        if unused {
            let _ = self.lock(group, false).await;
        }
        let Some(slot) = self.slots().get(group).cloned() else {
            return GrpcMembers::Count(0);
        };
        match slot.members.load(Ordering::Relaxed) {
            0 => match self.unknown_for_ms(&slot) {
                0 => GrpcMembers::Count(0),
                ms => GrpcMembers::Unknown { for_ms: ms },
            },
            n => GrpcMembers::Count(n),
        }
    }

    /// How much longer members of before the restart may be unknown (`grpc_members`).
    fn unknown_for_ms(&self, slot: &Slot) -> u64 {
        let until = slot.unknown_until_ms.load(Ordering::Relaxed);
        until.saturating_sub(self.now())
    }
}

/// gRPC members of a group, as another protocol's join or outside commit asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMembers {
    Count(usize),
    /// Members from before a restart may still consume for this long, unknown.
    Unknown {
        for_ms: u64,
    },
}

impl Groups {
    /// The refusal of what must wait until members of before a restart are known.
    fn unknown_members(&self, slot: &Slot) -> Result<()> {
        match self.unknown_for_ms(slot) {
            0 => Ok(()),
            ms => Err(crate::error::Error::Unavailable {
                what: format!("group {}", crate::error::quote(&slot.name)),
                reason: format!("its members from before the server's restart may still consume its partitions and are not known yet; try again in {} ms", ms),
            }),
        }
    }
}
