//! One partition of a topic: its `Log`, the group commit of durable appends, and the
//! high-watermark notification that long-polling fetchers and subscribers wait on.
//!
//! The log sits behind a `std::sync::RwLock`, not tokio's: every critical section is
//! short and never awaits (an append is one `pwritev`; a read takes a plan of what to
//! read, and reads the files after the lock is released). Blocking work runs in
//! `spawn_blocking`, which also makes appends cancellation-safe: if the client hangs up,
//! the spawned append still finishes, so a dropped RPC never leaves half a batch.
//!
//! A partition is in one of three states (`Slot`): open; unavailable (its files could not
//! be opened, or reopening them after a failed fsync failed), which is reported to every
//! request while the rest of the server serves; or deleted with its topic, which ends
//! every waiting request at once with NOT_FOUND.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{watch, Mutex};

use crate::error::{Error, Result};
use crate::log::{CompactionPolicy, Log, LogConfig, ReadBatches, RetentionPolicy, SegmentCache};

mod append;
mod retention;
mod stats;
mod sync;

pub use retention::Cleaned;
pub use stats::{Extent, PartitionStats};

/// Reads of the active segment up to this size run on the calling task; larger ones, and
/// any that open or read a sealed (likely cold) segment, run on a blocking thread, so
/// that page faults and CRC checks of megabytes never stall an async worker.
const INLINE_READ_BYTES: usize = 1 << 20;

// One per partition, and nearly always `Open`: boxing the log would add a pointer chase
// to every append for no saving.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Open(Log),
    /// Why the log is not open.
    Unavailable(String),
    /// Why reopening the log after a failed fsync failed (a full disk while it copied
    /// segments, say), and what to open it with: the upkeep tries again.
    Failed {
        reason: String,
        config: LogConfig,
        cache: Arc<SegmentCache>,
    },
    /// The topic was deleted: the files are gone or going.
    Deleted,
}

pub struct Partition {
    pub topic: String,
    pub id: u32,
    dir: PathBuf,
    log: RwLock<Slot>,
    /// The log's next offset, published after every append (and truncation).
    high_watermark: watch::Sender<u64>,
    /// Turns true when the topic is deleted: waiting requests end at once.
    deleted: watch::Sender<bool>,
    /// Held by the one task running an fsync; the others wait, then usually find their
    /// batch covered by it. This is the group commit.
    flush_lock: Mutex<()>,
    /// A sync of segments sealed by a roll is scheduled and has not started yet.
    roll_sync_pending: AtomicBool,
    /// Held by the one retention or compaction pass or DeleteRecords running (see
    /// `retention.rs`).
    trim_lock: Mutex<()>,
    /// When the last compaction pass said a tombstone falls due (None inside: none
    /// kept), and the settings it reckoned with; None before the first pass.
    tombstone_due: std::sync::Mutex<Option<(CompactionPolicy, Option<i64>)>>,
    /// A config change that came while the log was being reopened after a failed
    /// fsync: the reopened log takes it.
    pending_config: std::sync::Mutex<Option<LogConfig>>,
    /// Counts the logs this partition has had: bumped when the log is reopened after a
    /// failed fsync. A batch appended to an earlier one may have been cut by recovery,
    /// so its wait for an fsync must fail rather than succeed on the new log.
    epoch: AtomicU64,
    /// What it did, for the metrics endpoint.
    pub stats: PartitionStats,
}

impl Partition {
    /// Opens the partition's log. A log that cannot be opened leaves the partition
    /// unavailable (logged with its path and why), not the server down.
    pub fn open(
        topic: &str,
        id: u32,
        dir: &Path,
        config: LogConfig,
        cache: &Arc<SegmentCache>,
    ) -> Partition {
        match Self::open_or_fail(topic, id, dir, config, cache) {
            Ok(partition) => partition,
            Err(err) => {
                tracing::error!(topic, partition = id, dir = %dir.display(), %err, "partition unavailable: its log cannot be opened");
                Self::with_slot(topic, id, dir, Slot::Unavailable(err.to_string()), 0)
            }
        }
    }

    /// Opens the partition's log, or fails with why (for a topic being created, whose
    /// creation then fails as a whole with that error).
    pub fn open_or_fail(
        topic: &str,
        id: u32,
        dir: &Path,
        config: LogConfig,
        cache: &Arc<SegmentCache>,
    ) -> Result<Partition> {
        let (log, report) = Log::open_in(dir, config, cache)?;
        if !report.clean && !report.created {
            tracing::info!(
                topic,
                partition = id,
                scanned_bytes = report.scanned_bytes,
                truncated = report.truncated.len(),
                "partition recovered"
            );
        }
        let next = log.next_offset();
        Ok(Self::with_slot(topic, id, dir, Slot::Open(log), next))
    }

    fn with_slot(topic: &str, id: u32, dir: &Path, slot: Slot, next: u64) -> Partition {
        Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            log: RwLock::new(slot),
            high_watermark: watch::channel(next).0,
            deleted: watch::channel(false).0,
            flush_lock: Mutex::new(()),
            roll_sync_pending: AtomicBool::new(false),
            trim_lock: Mutex::new(()),
            tombstone_due: std::sync::Mutex::new(None),
            pending_config: std::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            stats: PartitionStats::default(),
        }
    }

    /// `source` in this partition's name; or, if the topic was deleted meanwhile (files
    /// gone under the request), that: the client is told NOT_FOUND, not an I/O error.
    /// Reads `deleted`, never the slot: callers may hold the slot's lock.
    fn context(&self, source: Error) -> Error {
        if self.is_deleted() {
            return Error::TopicNotFound {
                topic: self.topic.clone(),
            };
        }
        Error::InPartition {
            topic: self.topic.clone(),
            partition: self.id,
            source: Box::new(source),
        }
    }

    /// The error for a request that finds no open log.
    fn not_open(&self, slot: &Slot) -> Error {
        match slot {
            Slot::Deleted => Error::TopicNotFound {
                topic: self.topic.clone(),
            },
            Slot::Unavailable(reason) | Slot::Failed { reason, .. } => Error::Unavailable {
                what: format!(
                    "topic {} partition {} ({})",
                    crate::error::quote(&self.topic),
                    self.id,
                    self.dir.display()
                ),
                reason: reason.clone(),
            },
            Slot::Open(_) => unreachable!("only called for a log that is not open"),
        }
    }

    // A panic while holding the lock cannot leave the log half-updated in a way later
    // calls would trust (every mutation validates before it changes state), so a
    // poisoned lock is used as is rather than failing every later request.
    fn read_slot(&self) -> RwLockReadGuard<'_, Slot> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_slot(&self) -> RwLockWriteGuard<'_, Slot> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the open log, under the read lock.
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> Result<T>) -> Result<T> {
        match &*self.read_slot() {
            Slot::Open(log) => f(log).map_err(|e| self.context(e)),
            other => Err(self.not_open(other)),
        }
    }

    fn with_log_mut<T>(&self, f: impl FnOnce(&mut Log) -> Result<T>) -> Result<T> {
        Self::on_slot(self, &mut self.write_slot(), f)
    }

    fn on_slot<T>(&self, slot: &mut Slot, f: impl FnOnce(&mut Log) -> Result<T>) -> Result<T> {
        match slot {
            Slot::Open(log) => f(log).map_err(|e| self.context(e)),
            other => Err(self.not_open(other)),
        }
    }

    /// Whole batches from `offset`, up to about `max_bytes`, and the partition's bounds.
    /// The files are read after the lock is released, on a blocking thread when the read
    /// may wait for the disk.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<(ReadBatches, Offsets)> {
        self.planned(
            |log| Ok((log.read_plan(offset, max_bytes)?, Self::bounds(log))),
            |(plan, _)| plan.touches_sealed() || max_bytes > INLINE_READ_BYTES,
            |(plan, offsets)| Ok((plan.run()?, offsets)),
        )
        .await
        .inspect(|(read, _)| {
            let bytes = read.size_bytes() as u64;
            self.stats.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        })
    }

    /// Plans under the read lock, and runs the plan without it (on a blocking thread
    /// when `blocking` says it may wait for the disk). A plan whose run fails after the
    /// sealed segments changed (retention or compaction removed a file it names) is
    /// made again, once: it may now be out of range, or read the new files.
    async fn planned<P: Send + 'static, T: Send + 'static>(
        &self,
        plan: impl Fn(&Log) -> Result<P>,
        blocking: impl Fn(&P) -> bool,
        run: fn(P) -> Result<T>,
    ) -> Result<T> {
        let mut replanned = false;
        loop {
            let (planned, version) =
                self.with_log(|log| Ok((plan(log)?, log.segments_changed())))?;
            let result = if blocking(&planned) {
                tokio::task::spawn_blocking(move || run(planned))
                    .await
                    .expect("read task does not panic")
            } else {
                run(planned)
            };
            match result {
                Ok(done) => return Ok(done),
                // Files deleted under a read planned before the topic was deleted.
                Err(_) if matches!(*self.read_slot(), Slot::Deleted) => {
                    return Err(Error::TopicNotFound {
                        topic: self.topic.clone(),
                    })
                }
                Err(_)
                    if !replanned
                        && self.with_log(|log| Ok(log.segments_changed() != version))? =>
                {
                    replanned = true;
                }
                Err(err) => return Err(self.context(err)),
            }
        }
    }

    fn bounds(log: &Log) -> Offsets {
        Offsets {
            log_start: log.log_start_offset(),
            high_watermark: log.next_offset(),
        }
    }

    /// A receiver that wakes when the high watermark moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Resolves when the topic is deleted (at once if it already is).
    pub fn deleted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut deleted = self.deleted.subscribe();
        async move {
            let _ = deleted.wait_for(|d| *d).await;
        }
    }

    pub fn offsets(&self) -> Result<Offsets> {
        self.with_log(|log| Ok(Self::bounds(log)))
    }

    /// The first record with a timestamp at or after `ts`: its offset and timestamp.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        self.planned(
            |log| log.timestamp_plan(ts),
            |plan| plan.touches_sealed(),
            |plan| plan.run(),
        )
        .await
    }

    pub fn reconfigure(&self, config: LogConfig) -> Result<()> {
        let mut slot = self.write_slot();
        match &mut *slot {
            Slot::Failed { config: kept, .. } => {
                *kept = config; // for the next try
                return Ok(());
            }
            // Perhaps being reopened: the reopened log takes it (still unavailable now).
            Slot::Unavailable(_) => {
                *self
                    .pending_config
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
            }
            Slot::Open(_) | Slot::Deleted => {}
        }
        self.on_slot(&mut slot, |log| log.reconfigure(config))
    }

    /// Fences the partition of a deleted topic: every later request and every waiting
    /// one gets NOT_FOUND, and the log's files and maps are released at once (readers
    /// that hold bytes of them keep those).
    pub fn mark_deleted(&self) {
        // The flag first: a background sync that fails on the deleted slot finds the
        // partition deleted, and says nothing (see `sync.rs`).
        self.deleted.send_replace(true);
        *self.write_slot() = Slot::Deleted;
    }

    /// True once the topic is deleted.
    pub fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    /// Syncs everything appended, holding the lock (for shutdown only).
    pub fn sync_now(&self) -> Result<()> {
        self.with_log_mut(|log| log.flush())
    }

    /// Syncs and closes the log so the next open scans nothing.
    pub fn close(self) -> Result<()> {
        match self.log.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Slot::Open(log) => log.close().map_err(|e| Error::InPartition {
                topic: self.topic.clone(),
                partition: self.id,
                source: Box::new(e),
            }),
            Slot::Unavailable(_) | Slot::Failed { .. } | Slot::Deleted => Ok(()),
        }
    }

    /// The partition's state, with when retention will next delete under `policy`.
    /// Reads the first record's timestamp, perhaps from disk: call off async workers.
    pub fn describe(&self, policy: &RetentionPolicy, now_ms: i64) -> Result<PartitionInfo> {
        let (mut info, first) = self.with_log(|log| {
            let info = PartitionInfo {
                partition: self.id,
                log_start_offset: log.log_start_offset(),
                high_watermark: log.next_offset(),
                size_bytes: log.size_bytes(),
                segment_count: log.segment_count() as u32,
                oldest_timestamp_ms: None,
                next_deletion_ms: log.next_deletion_ms(policy, now_ms),
                created_ms: 0, // the topic knows (`Topic::describe`)
            };
            let first = (info.log_start_offset < info.high_watermark)
                .then(|| log.read_plan(info.log_start_offset, 1).ok())
                .flatten();
            Ok((info, first))
        })?;
        // Best effort: damage at the log start, or a segment deleted meanwhile, leaves
        // the time out rather than failing the whole description.
        if let Some(Ok(read)) = first.map(|plan| plan.run()) {
            info.oldest_timestamp_ms = crate::log::first_timestamp_at(&read, info.log_start_offset);
        }
        Ok(info)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The bounds of a partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: u64,
    pub high_watermark: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segment_count: u32,
    /// Timestamp of the record at the log start (None when the partition is empty).
    pub oldest_timestamp_ms: Option<i64>,
    /// When the oldest segment is due for deletion (None: never, as things stand).
    pub next_deletion_ms: Option<i64>,
    /// When the partition was made, in ms since the epoch (0: before this was recorded).
    pub created_ms: i64,
}

#[cfg(test)]
mod tests;
