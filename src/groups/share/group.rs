//! A loaded share group: its settings, members and partitions, and the pending changes
//! it journals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::config::ShareConfig;
use super::members;
use super::state::ShareState;
use super::tally::WindowTally;
use super::window::{Change, MemberIdx, SharePartition};
use super::CONFIG_FILE;
use crate::broker::{now_ms, Broker};
use crate::error::{Error, IoContext, Result};
use crate::groups::store::GroupFiles;
use crate::groups::{topic_id, TopicId, Tp};
use crate::log::files::{write_atomically, write_atomically_unlocked};

/// A loaded share group.
pub(super) struct Group {
    pub(super) name: String,
    pub(super) config: ShareConfig,
    pub(super) members: members::Members,
    pub(super) state: ShareState,
    pub(super) files: GroupFiles<ShareState>,
    /// Partitions whose window's keys and delivery times were read back from the log
    /// since the group was loaded.
    pub(super) restored: HashSet<Tp>,
    /// Changes not journaled yet.
    pub(super) pending: Vec<(Tp, Change)>,
    /// The slot's `floors`, refreshed whenever changes are journaled.
    pub(super) floors: Arc<Mutex<HashMap<Tp, u64>>>,
    /// The journal position of the last snapshot begun.
    pub(super) snapshot_tried: u64,
    /// Wall-clock ms of the last request: an idle group is unloaded.
    pub(super) used_ms: i64,
    /// The broker's topics version when the partitions of deleted topics were last
    /// dropped (`forget_deleted_topics`).
    pub(super) topics_version: u64,
    /// The server's count of window slots, and this group's part of it, given back
    /// when the group is dropped (unloaded or deleted).
    pub(super) tally: Arc<WindowTally>,
    counted: usize,
    /// The part, as the slot remembers it while the group is unloaded: a fetch loads
    /// the group again only if its windows fit (`ShareGroups::lock`).
    last_part: Arc<AtomicUsize>,
    /// A fill of this request found no room for new records under the cap.
    pub(super) held_back: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.tally.changed(self.counted, 0);
    }
}

impl Group {
    /// Journals the pending changes (into the page cache) and returns the position an
    /// fsync must reach to make them durable; snapshots the state when the journal is
    /// long. The state is bounded by the windows, so the snapshot is small.
    pub(super) async fn journal(&mut self) -> Result<u64> {
        self.append_pending()?;
        let seq = self.files.durability().written();
        // Once per journal position: a request cancelled while a snapshot was being
        // written leaves that write running, and a second one of the same name would
        // race it; with new changes the next snapshot has a new name.
        if self.files.needs_snapshot() && self.snapshot_tried != seq {
            self.snapshot_tried = seq;
            let (path, bytes) = self.files.snapshot(&self.state);
            let written =
                tokio::task::spawn_blocking(move || write_atomically_unlocked(&path, &bytes))
                    .await
                    .expect("snapshot write does not panic");
            // The changes are journaled: a snapshot that fails costs a longer journal,
            // not the request, which must not be refused once applied (as for
            // consumer groups' commits on a full disk). The next change tries again.
            match written {
                Ok(()) => self.files.snapshot_written(),
                Err(err) => crate::groups::store::snapshot_failed(&err),
            }
        }
        Ok(seq)
    }

    /// Journals the pending changes for what cannot await (a fetch taking its locks
    /// back as it is dropped): appends them, and leaves a task to fsync them, so that
    /// they reach the disk even if no other request comes. No snapshot.
    pub(super) fn journal_unawaited(&mut self) {
        if let Err(err) = self.append_pending() {
            tracing::warn!(group = %self.name, %err, "journaling changes failed; kept for the next change");
            return;
        }
        let durability = self.files.durability();
        let end = durability.written();
        let name = self.name.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = durability.wait(end).await {
                    tracing::warn!(group = %name, %err, "syncing the journal failed");
                }
            });
        }
    }

    /// Appends the pending changes to the journal (into the page cache); no snapshot.
    fn append_pending(&mut self) -> Result<()> {
        // Every change to a window is journaled, so this sees them all.
        self.settle_tally();
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        if let Err(err) = self.files.append(&pending) {
            // Kept for the next try: the changes are made in memory.
            self.pending = pending;
            return Err(err);
        }
        // Only the partitions that changed: this runs on every fetch and ack.
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, _) in &pending {
            if let Some(p) = self.state.partitions.get(tp) {
                floors.insert(*tp, p.start());
            }
        }
        Ok(())
    }

    pub(super) fn record(&mut self, tp: Tp, changes: Vec<Change>) {
        self.pending.extend(changes.into_iter().map(|c| (tp, c)));
    }

    /// Brings the server's tally to what this group's windows hold now.
    pub(super) fn settle_tally(&mut self) {
        let held = self
            .state
            .partitions
            .values()
            .map(SharePartition::allocated)
            .sum();
        self.tally.changed(self.counted, held);
        self.counted = held;
        self.last_part.store(held, Ordering::Relaxed);
    }

    /// Counts a change of one window's slots from `before` at once, ahead of the next
    /// `settle_tally`: a fetch over many partitions must see the room its earlier
    /// partitions took.
    pub(super) fn tally_change(&mut self, before: usize, after: usize) {
        let now = (self.counted + after).saturating_sub(before);
        self.tally.changed(self.counted, now);
        self.counted = now;
        self.last_part.store(now, Ordering::Relaxed);
    }

    /// How many slots a fetch may add to a window of this group with `spare` room of
    /// its own (`WindowTally::room_for`, `may_fill_spare`).
    pub(super) fn room(&self, spare: usize) -> usize {
        let spare = if self.tally.may_fill_spare(self.counted) {
            spare
        } else {
            0
        };
        spare + self.tally.room_for(self.counted)
    }
}

impl Group {
    /// Reads a group's settings and state from `dir`, creating it if it is not there.
    /// Blocking.
    pub(super) fn load(
        name: String,
        dir: PathBuf,
        floors: Arc<Mutex<HashMap<Tp, u64>>>,
        (tally, last_part): (Arc<WindowTally>, Arc<AtomicUsize>),
    ) -> Result<Group> {
        let (files, mut state) = GroupFiles::<ShareState>::open(&dir)?;
        state
            .partitions
            .values_mut()
            .for_each(SharePartition::shrink_to_fit);
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
        let mut group = Group {
            name,
            config,
            members: members::Members::default(),
            state,
            files,
            restored: HashSet::new(),
            pending: Vec::new(),
            floors,
            snapshot_tried: u64::MAX,
            used_ms: now_ms(),
            topics_version: u64::MAX,
            tally,
            counted: 0,
            last_part,
            held_back: false,
        };
        group.settle_tally();
        Ok(group)
    }

    /// No members, nothing pending, nothing owed to the dead-letter topic: the group
    /// can be unloaded (and loaded again from its files) without losing anything.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && self.pending.is_empty()
            && !self.state.partitions.values().any(|p| p.has_dying())
    }

    pub(super) fn refresh_floors(&self) {
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        floors.clear();
        floors.extend(self.state.partitions.iter().map(|(tp, p)| (*tp, p.start())));
    }

    pub(super) fn write_config(dir: &std::path::Path, config: &ShareConfig) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&config.to_map()).expect("a map of strings");
        write_atomically(&dir.join(CONFIG_FILE), &bytes)
    }

    /// Drops the partitions of topics deleted since the last call: their records can
    /// never be read again, and a group fed by a topic deleted and made again, time
    /// after time, would otherwise keep every incarnation's window in memory, count its
    /// records as held, and write it into every snapshot. Not while some topic cannot
    /// be opened: it may be one of them. The journal still holds them until the next
    /// snapshot; a load reads them back and drops them again.
    pub(super) fn forget_deleted_topics(&mut self, broker: &Broker) {
        // Runs on every request: the version alone, unless topics changed.
        if broker.topics_version() == self.topics_version {
            return;
        }
        // Recorded even when a topic cannot be opened, or each request would look again;
        // its deletion (or a restart) changes the version.
        let (version, metas) = broker.topic_metas();
        self.topics_version = version;
        if broker.any_topic_unavailable() {
            return;
        }
        let live: HashSet<TopicId> = metas.iter().filter_map(|m| topic_id(&m.id).ok()).collect();
        let before = self.state.partitions.len();
        self.state
            .partitions
            .retain(|(tid, _), _| live.contains(tid));
        if self.state.partitions.len() == before {
            return;
        }
        self.restored.retain(|(tid, _)| live.contains(tid));
        self.pending.retain(|((tid, _), _)| live.contains(tid));
        self.refresh_floors();
        self.settle_tally();
    }

    /// Returns what `members` hold, in every partition. True if anything came back.
    pub(super) fn release_members(&mut self, members: &HashSet<MemberIdx>, now: i64) -> bool {
        self.each_partition(|p, config, changes| p.release_members(members, now, config, changes))
    }

    /// Returns every record whose lock ended. True if anything came back.
    pub(super) fn expire_locks(&mut self, now: i64) -> bool {
        self.each_partition(|p, config, changes| p.expire(now, config, changes))
    }

    /// Runs `f` on every partition, recording its changes; true if any call was.
    fn each_partition(
        &mut self,
        mut f: impl FnMut(&mut SharePartition, &ShareConfig, &mut Vec<Change>) -> bool,
    ) -> bool {
        let mut any = false;
        for (tp, p) in self.state.partitions.iter_mut() {
            let mut changes = Vec::new();
            any |= f(p, &self.config, &mut changes);
            self.pending.extend(changes.into_iter().map(|c| (*tp, c)));
        }
        any
    }
}
