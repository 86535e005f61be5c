//! One partition of a topic: its `Log`, the group commit of durable appends, and the
//! high-watermark notification that long-polling fetchers and subscribers wait on.
//!
//! The log sits behind a `std::sync::RwLock`, not tokio's: every critical section is
//! short and never awaits (an append is one `pwritev`; a read builds slices of a map).
//! Blocking work runs in `spawn_blocking`, which also makes appends cancellation-safe:
//! if the client hangs up, the spawned append still finishes, so a dropped RPC never
//! leaves half a batch.

use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use tokio::sync::{watch, Mutex};

use crate::error::{Error, Result};
use crate::log::{AppendInfo, Log, LogConfig, PendingBatch, ReadBatches};

/// Batches up to this size are appended on the calling task (see `Partition::append`).
const INLINE_APPEND_BYTES: usize = 64 << 10;

pub struct Partition {
    pub topic: String,
    pub id: u32,
    log: RwLock<Log>,
    /// The log's next offset, published after every append (and truncation).
    high_watermark: watch::Sender<u64>,
    /// Held by the one task running an fsync; the others wait, then usually find their
    /// batch covered by it. This is the group commit.
    flush_lock: Mutex<()>,
}

impl Partition {
    pub fn open(topic: &str, id: u32, dir: &Path, config: LogConfig) -> Result<Partition> {
        let (log, report) = Log::open(dir, config).map_err(|e| Self::wrap(topic, id, e))?;
        if !report.clean && !report.created {
            tracing::info!(
                topic,
                partition = id,
                scanned_bytes = report.scanned_bytes,
                truncated = report.truncated.len(),
                "partition recovered"
            );
        }
        let (high_watermark, _) = watch::channel(log.next_offset());
        Ok(Partition {
            topic: topic.to_string(),
            id,
            log: RwLock::new(log),
            high_watermark,
            flush_lock: Mutex::new(()),
        })
    }

    fn wrap(topic: &str, partition: u32, source: Error) -> Error {
        Error::InPartition {
            topic: topic.to_string(),
            partition,
            source: Box::new(source),
        }
    }

    fn context(&self, source: Error) -> Error {
        Self::wrap(&self.topic, self.id, source)
    }

    // A panic while holding the lock cannot leave the log half-updated in a way later
    // calls would trust (every mutation validates before it changes state), so a
    // poisoned lock is used as is rather than failing every later request.
    pub fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a batch to the page cache; `sync_below` makes it durable.
    ///
    /// A small batch is appended right here: its `pwritev` takes microseconds, less than
    /// handing it to a blocking thread and back (which, at 10,000 one-record requests a
    /// second on two cores, queued requests for tens of milliseconds). A large one goes
    /// to a blocking thread, so a slow copy into the page cache does not stall the
    /// other requests this worker serves. Either way the append is one uninterruptible
    /// call: a caller that goes away cannot leave half a batch. The inline path takes the
    /// lock only if it is free at once: a reader may hold it for long (opening a sealed
    /// segment whose index must be rebuilt), and a worker thread must not wait for that.
    pub async fn append(self: &Arc<Self>, mut batch: PendingBatch) -> Result<AppendInfo> {
        if batch.len_bytes() <= INLINE_APPEND_BYTES {
            let free = match self.log.try_write() {
                Ok(log) => Some(log),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut log) = free {
                return self.append_locked(&mut log, &mut batch);
            }
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.append_locked(&mut me.write_log(), &mut batch))
            .await
            .expect("append task does not panic")
    }

    fn append_locked(&self, log: &mut Log, batch: &mut PendingBatch) -> Result<AppendInfo> {
        let info = log.append(batch).map_err(|e| self.context(e))?;
        self.high_watermark.send_replace(log.next_offset());
        Ok(info)
    }

    /// Returns once every offset below `offset` is on disk, sharing the fsync with every
    /// other append waiting for the same.
    pub async fn sync_below(self: &Arc<Self>, offset: u64) -> Result<()> {
        let checkpoint = {
            let _turn = self.flush_lock.lock().await;
            if self.read_log().flushed_offset() >= offset {
                return Ok(()); // the flush of whoever held the lock before covered us
            }
            let job = self.write_log().begin_flush();
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                job.run().map_err(|e| me.context(e))?;
                me.write_log().finish_flush(job).map_err(|e| me.context(e))
            })
            .await
            .expect("flush task does not panic")?
        };
        // Our batch is durable. A due recovery checkpoint is written after the flush lock
        // is released and without the log's lock, so neither appends nor the next
        // group commit wait for its fsyncs. This caller does (at most once per
        // checkpoint_interval): a detached task would still hold the partition when the
        // server closes it, and it would not be marked cleanly closed.
        // A checkpoint that fails costs a longer scan after a crash, not data: it does not
        // fail the produce whose batch is already on disk, and the next one is tried
        // after `checkpoint_interval`.
        if let Some(job) = checkpoint {
            let me = Arc::clone(self);
            let written = tokio::task::spawn_blocking(move || {
                job.run()?;
                me.write_log().finish_checkpoint(job)
            })
            .await
            .expect("checkpoint task does not panic");
            if let Err(err) = written {
                tracing::warn!(topic = %self.topic, partition = self.id, %err, "recovery checkpoint not written");
            }
        }
        Ok(())
    }

    /// Whole batches from `offset`, up to about `max_bytes`.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<(ReadBatches, Offsets)> {
        let log = self.read_log();
        let read = log.read(offset, max_bytes).map_err(|e| self.context(e))?;
        Ok((
            read,
            Offsets {
                log_start: log.log_start_offset(),
                high_watermark: log.next_offset(),
            },
        ))
    }

    /// A receiver that wakes when the high watermark moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    pub fn offsets(&self) -> Offsets {
        let log = self.read_log();
        Offsets {
            log_start: log.log_start_offset(),
            high_watermark: log.next_offset(),
        }
    }

    /// The first offset with a timestamp at or after `ts`, if any.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        self.read_log()
            .offset_for_timestamp(ts)
            .map_err(|e| self.context(e))
    }

    /// Background upkeep: sync what page-cache appends left unsynced (which also bounds
    /// crash recovery) and roll a segment that has grown old without appends.
    pub async fn maintain(self: &Arc<Self>, now_ms: i64) -> Result<()> {
        let next = {
            let mut log = self.write_log();
            log.roll_if_aged(now_ms).map_err(|e| self.context(e))?;
            (!log.is_flushed()).then(|| log.next_offset())
        };
        if let Some(next) = next {
            self.sync_below(next).await?;
        }
        Ok(())
    }

    pub fn reconfigure(&self, config: LogConfig) -> Result<()> {
        self.write_log()
            .reconfigure(config)
            .map_err(|e| self.context(e))
    }

    /// Syncs everything appended, holding the lock (for shutdown only).
    pub fn sync_now(&self) -> Result<()> {
        self.write_log().flush().map_err(|e| self.context(e))
    }

    /// Syncs and closes the log so the next open scans nothing.
    pub fn close(self) -> Result<()> {
        let log = self.log.into_inner().unwrap_or_else(|e| e.into_inner());
        log.close().map_err(|e| Self::wrap(&self.topic, self.id, e))
    }

    pub fn describe(&self) -> Result<PartitionInfo> {
        let log = self.read_log();
        Ok(PartitionInfo {
            partition: self.id,
            log_start_offset: log.log_start_offset(),
            high_watermark: log.next_offset(),
            size_bytes: log.size_bytes().map_err(|e| self.context(e))?,
            segment_count: log.segment_count() as u32,
        })
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
}
