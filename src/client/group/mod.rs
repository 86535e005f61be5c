//! A consumer-group member: joins, heartbeats in the background, consumes the partitions
//! the server assigns, commits (on an interval or when asked), and hands back revoked
//! partitions promptly, after committing what it returned of them.
//!
//! Delivery is at least once: a record counts as processed once the next `poll` is
//! called (or `commit` after it), so a crash replays what was returned since the last
//! commit, never skips it. With auto-commit on, revoked partitions are committed before
//! they are given back; with it off, only `commit` commits, and the next owner of a
//! revoked partition starts from the last commit (a record may come twice; none is skipped).

mod offsets;
mod reconcile;
mod tasks;
#[cfg(test)]
mod tasks_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::Channel;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::{Client, ConsumedRecord, OffsetReset, Start};
use crate::grpc::pb::{self, groups_client::GroupsClient};
use tasks::heartbeat_loop;

/// How a group consumer behaves.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// Topics to consume; or else `topic_pattern`.
    pub topics: Vec<String>,
    /// A regular expression matching whole topic names.
    pub topic_pattern: Option<String>,
    /// Static membership: the same name across restarts takes the partitions back.
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    /// Commit what `poll` returned this often; `None` to commit only with `commit`.
    pub auto_commit: Option<Duration>,
    /// Where to start in partitions the group never committed: `Earliest`, `Latest`,
    /// the first record at or after a `Timestamp`, or the same `Offset` in each (one
    /// not in a partition is out of range, and `on_out_of_range` says where to go).
    pub start: Start,
    /// Where to go on when a position is outside its partition: deleted by retention
    /// or DeleteRecords, or past the end (a start offset or seek beyond it); logged
    /// when it resets. Under `Error`, `poll` returns OUT_OF_RANGE for that partition
    /// until the member seeks or the position is back in range (the log grew to it);
    /// meanwhile a commit stores a position below the log start as it is, and leaves
    /// one past the end out, with a warning.
    pub on_out_of_range: OffsetReset,
    /// Largest fetch, per partition.
    pub max_bytes: u32,
}

impl GroupConfig {
    pub fn new(group: &str, topics: &[&str]) -> GroupConfig {
        GroupConfig {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            topic_pattern: None,
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            auto_commit: Some(Duration::from_secs(5)),
            start: Start::Earliest,
            on_out_of_range: OffsetReset::Earliest,
            max_bytes: 1 << 20,
        }
    }
}

/// Records of one partition, as one `poll` returns them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: String,
    pub records: Vec<ConsumedRecord>,
}

type Key = (String, u32);

/// What the heartbeat task and the consumer share.
#[derive(Default)]
struct Shared {
    member_id: String,
    epoch: i64,
    /// The last answer's assignment, each partition with its topic's id; `None` before
    /// the first.
    assignment: Option<BTreeMap<Key, String>>,
    /// What the consumer owns, listed in heartbeats.
    owned: BTreeSet<Key>,
    /// The server refused the member: drop everything without committing.
    fenced: bool,
    /// A heartbeat failed for good (bad subscription, say).
    failed: Option<Status>,
    /// The server's clock at its first answer: under `Start::Latest`, a partition made
    /// after it starts at its first offset (`start_offset`). Kept when the member is
    /// fenced and joins again, as the consumer has been running since.
    joined_ms: Option<i64>,
}

struct Owned {
    /// The topic's id: a topic deleted and created again under its name between two
    /// polls is another topic, whose partitions start afresh.
    topic_id: String,
    /// The next offset `poll` returns (and a commit stores).
    position: u64,
    committed: Option<u64>,
    fetcher: JoinHandle<()>,
    /// Tells this ownership's fetched batches from an earlier one's.
    generation: u64,
}

struct Fetched {
    key: Key,
    generation: u64,
    result: Result<Fetch, Status>,
}

/// What a fetcher passes on besides an error.
enum Fetch {
    /// Records, and the position after them.
    Records(Vec<ConsumedRecord>, u64),
    /// Retention removed what it was about to read: it goes on from here.
    Reset(u64),
}

pub struct GroupConsumer {
    client: Client,
    groups: GroupsClient<Channel>,
    config: GroupConfig,
    shared: Arc<Mutex<Shared>>,
    /// Heartbeat now (after giving partitions back).
    wake_heartbeat: Arc<Notify>,
    /// The assignment (or fencing) changed.
    changed: Arc<Notify>,
    heartbeats: JoinHandle<()>,
    owned: BTreeMap<Key, Owned>,
    tx: mpsc::Sender<Fetched>,
    rx: mpsc::Receiver<Fetched>,
    generation: u64,
    last_commit: Instant,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupConsumer {
    /// Joins the group; partitions arrive with the first answers, during `poll`.
    pub async fn join(client: &Client, config: GroupConfig) -> Result<GroupConsumer, Status> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let wake_heartbeat = Arc::new(Notify::new());
        let changed = Arc::new(Notify::new());
        let heartbeats = tokio::spawn(heartbeat_loop(
            client.groups(),
            config.clone(),
            Arc::clone(&shared),
            Arc::clone(&wake_heartbeat),
            Arc::clone(&changed),
        ));
        let (tx, rx) = mpsc::channel(8);
        Ok(GroupConsumer {
            client: client.clone(),
            groups: client.groups(),
            config,
            shared,
            wake_heartbeat,
            changed,
            heartbeats,
            owned: BTreeMap::new(),
            tx,
            rx,
            generation: 0,
            last_commit: Instant::now(),
        })
    }

    /// The partitions this member consumes now.
    pub fn assignment(&self) -> Vec<Key> {
        self.owned.keys().cloned().collect()
    }

    /// The member id, once joined.
    pub fn member_id(&self) -> String {
        lock(&self.shared).member_id.clone()
    }

    /// The next records of one partition, waiting up to `max_wait`. Calling it again
    /// means the records it returned are processed. Cancel-safe: a poll dropped before
    /// it returns (in a `select!`, under a timeout) loses no records; the next returns
    /// them.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Option<Batch>, Status> {
        let deadline = Instant::now() + max_wait;
        loop {
            self.reconcile().await?;
            if let Some(every) = self.config.auto_commit {
                if self.last_commit.elapsed() >= every {
                    if let Err(status) = self.commit().await {
                        tracing::warn!(%status, "auto-commit failed");
                    }
                }
            }
            tokio::select! {
                Some(fetched) = self.rx.recv() => {
                    if let Some(batch) = self.accept(fetched)? {
                        return Ok(Some(batch));
                    }
                }
                () = self.changed.notified() => {}
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Records of a fetch, if they are still wanted (the partition is still ours, and
    /// they continue from its position). Never awaits: see `poll`.
    fn accept(&mut self, fetched: Fetched) -> Result<Option<Batch>, Status> {
        let Some(owned) = self
            .owned
            .get_mut(&fetched.key)
            .filter(|o| o.generation == fetched.generation)
        else {
            return Ok(None);
        };
        match fetched.result {
            Ok(Fetch::Records(records, next)) => {
                let position = owned.position;
                owned.position = next.max(position);
                let records: Vec<ConsumedRecord> = records
                    .into_iter()
                    .filter(|r| r.offset >= position)
                    .collect();
                Ok((!records.is_empty()).then(|| Batch {
                    topic: fetched.key.0,
                    records,
                }))
            }
            Ok(Fetch::Reset(to)) => {
                owned.position = to;
                Ok(None)
            }
            Err(status) if status.code() == Code::NotFound => Ok(None), // topic deleted
            // The fetcher stopped at the error. It starts again whatever happens next:
            // a partition still owned must not be left without one (later polls would
            // never return it, and the group would never give it to another member).
            Err(status) => {
                let (topic_id, position) = (owned.topic_id.clone(), owned.position);
                let committed = owned.committed;
                self.start_fetcher(fetched.key, topic_id, position, committed);
                Err(status)
            }
        }
    }

    /// Moves an owned partition's position: the next `poll` of it starts at `offset`,
    /// and a commit stores it. Returns false if the partition is not owned.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> bool {
        let key = (topic.to_string(), partition);
        let Some((topic_id, committed)) = self
            .owned
            .get(&key)
            .map(|o| (o.topic_id.clone(), o.committed))
        else {
            return false;
        };
        self.start_fetcher(key, topic_id, offset, committed);
        true
    }

    /// A member the group fenced (removed, its session over) drops its partitions
    /// without committing: others may have read on and committed since, and its
    /// positions would move their commits back. True if it was fenced.
    fn drop_if_fenced(&mut self) -> bool {
        let fenced = std::mem::take(&mut lock(&self.shared).fenced);
        if fenced {
            for (_, owned) in std::mem::take(&mut self.owned) {
                owned.fetcher.abort();
            }
            lock(&self.shared).owned.clear();
        }
        fenced
    }

    /// Commits (with auto-commit on), gives the partitions back and leaves the group.
    pub async fn close(mut self) -> Result<(), Status> {
        let committed = match self.config.auto_commit {
            Some(_) => self.commit().await,
            None => Ok(()),
        };
        for (_, owned) in std::mem::take(&mut self.owned) {
            owned.fetcher.abort();
        }
        self.heartbeats.abort();
        let member_id = lock(&self.shared).member_id.clone();
        let left = match member_id.is_empty() {
            true => Ok(()),
            false => {
                let request = pb::LeaveGroupRequest {
                    group: self.config.group.clone(),
                    member_id,
                };
                self.groups.leave_group(request).await.map(|_| ())
            }
        };
        // The commit's failure first: it is the one that costs records read again.
        committed.and(left)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.heartbeats.abort();
        for owned in self.owned.values() {
            owned.fetcher.abort();
        }
    }
}
