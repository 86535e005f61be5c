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
//! - this module: the registry of groups; `slots`: loading each from disk on first
//!   use, and unloading idle ones; `sweep`: the task that ends expired locks and
//!   sessions.
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
mod slots;
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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use ack::{count_acks, AckBatch, Refused, MAX_ACK_OFFSETS};
pub use admin::{DescribedShareGroup, ShareMemberInfo, SharePartitionInfo};
pub use config::ShareConfig;
pub use fetch::{Delivered, Fetched, Still};
pub use window::{Ack, MemberIdx, Refusal};

use crate::broker::data_dir::{parse_topic_dir, TopicDirName};
use crate::broker::page::{Listed, Page};
use crate::broker::{now_ms, Broker};
use crate::error::{quote, Error};
use crate::error::{IoContext, Result};
use group::Group;
use slots::{group, Admit, Guard, Slot, SlotState};
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
