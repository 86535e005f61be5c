//! Making appends durable, in steps that let a caller hold its lock only for the parts
//! that touch the `Log`'s memory:
//!
//! 1. `begin_flush` (under the lock) lists the files to sync: a `FlushJob`.
//! 2. `FlushJob::run` (no lock) fsyncs them; appends and reads go on meanwhile.
//! 3. `finish_flush` (under the lock) records the new durable point. When a recovery
//!    checkpoint is due, it writes the new index entries to their files (a small
//!    `pwrite`) and hands back a `CheckpointJob`.
//! 4. `CheckpointJob::run` (no lock) syncs the indexes and writes the checkpoint to a
//!    temporary file of its own, synced.
//! 5. `finish_checkpoint` (under the lock) renames it into place, unless the log was
//!    truncated meanwhile or a newer checkpoint is already there.
//!
//! Steps 4 and 5 used to run under the lock: two index fsyncs and an atomic file write
//! held up every append for milliseconds, once a second under durable load, and that
//! was the tail of the produce latency. The fsyncs of steps 2 and 4 take turns
//! (`SyncState`), so a group commit may wait for a checkpoint's index fsyncs; appends
//! never do.
//!
//! `Log::flush` does all five in a row, for callers without a lock to spare.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use std::time::Instant;

use super::files::{self, sync_dir, Checkpoint};
use super::log::Log;
use crate::error::{Error, IoContext, Result};

/// Intervals after which a checkpoint is due however little was appended.
const LAZY_CHECKPOINTS: u32 = 30;

/// A set of files to fsync, taken under the lock and synced without it.
#[derive(Debug)]
#[must_use = "a flush job does nothing until it is run and finished"]
pub struct FlushJob {
    files: FilesToSync,
    dir: Option<PathBuf>,
    upto: Checkpoint,
    generation: u64,
    dir_changes: u64,
    /// Base offset of the last sealed segment whose files this job syncs.
    sealed_upto: Option<u64>,
    syncs: Arc<SyncState>,
    /// The producer snapshot a roll owes (offset, bytes) and the log start then, and
    /// the log's directory it goes in.
    snapshot: Option<(u64, Vec<u8>, u64)>,
    snapshot_dir: PathBuf,
}

/// Files taken under the lock to be synced without it, each with its path for errors.
type FilesToSync = Vec<(Arc<File>, PathBuf)>;

/// A log's fsync state, shared with the jobs that sync its files outside its lock.
///
/// The first failed fsync is kept: after it Linux may have dropped the dirty pages and
/// report the next fsync as a success ("fsyncgate"), so the log can no longer tell what
/// is on disk, and it refuses appends and flushes until it is reopened (see
/// `lifecycle.rs`). For the same reason its fsyncs take turns, and each first checks
/// that none before it failed: Linux reports a failed writeback once per open file, to
/// the first fsync that asks, and the log opens each file once. A flush's fsync of a
/// segment sealed meanwhile, beside a checkpoint's of the same file (or run after it),
/// returned success for pages the checkpoint had been told were lost, and its produce
/// was acknowledged (durability review).
#[derive(Debug)]
pub struct SyncState {
    dir: PathBuf,
    failed: OnceLock<String>,
    turn: Mutex<()>,
}

impl SyncState {
    pub fn new(dir: &Path) -> SyncState {
        SyncState {
            dir: dir.to_path_buf(),
            failed: OnceLock::new(),
            turn: Mutex::new(()),
        }
    }

    /// What the first failed fsync said, if one failed.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Marks the log as failed for another reason (a half-done swap): like a failed
    /// fsync, nothing written since can be trusted until the log is reopened.
    pub fn fail(&self, reason: String) {
        let _ = self.failed.set(reason);
    }

    /// Syncs `files`, then `dir` if given, in this log's turn; fails without syncing if
    /// an fsync of this log failed before, and records a failure before the turn passes.
    fn sync(&self, files: &FilesToSync, dir: Option<&Path>) -> Result<()> {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = self.failure() {
            return Err(Error::SyncFailed {
                dir: self.dir.clone(),
                reason: reason.to_string(),
            });
        }
        let synced = files
            .iter()
            .try_for_each(|(file, path)| files::sync_data(file, path))
            .and_then(|()| dir.map_or(Ok(()), sync_dir));
        if let Err(err) = &synced {
            self.fail(err.to_string());
        }
        synced
    }
}

impl FlushJob {
    /// The fsyncs. Safe to run concurrently with appends and reads. A failure marks the
    /// log as failed (see `Log::sync_failure`) before it is returned.
    pub fn run(&self) -> Result<()> {
        self.syncs.sync(&self.files, self.dir.as_deref())?;
        if let Some((offset, bytes, log_start)) = &self.snapshot {
            // After the syncs, so the snapshot never vouches for batches not on disk. A
            // snapshot that cannot be written costs a longer walk at the next open.
            if let Err(err) =
                super::producers::snapshot::write(&self.snapshot_dir, *offset, bytes, *log_start)
            {
                // A directory gone is a deleted topic's: nothing is lost.
                if self.snapshot_dir.exists() {
                    tracing::warn!(%err, "producer snapshot not written");
                }
            }
        }
        Ok(())
    }

    /// Offset below which this job makes every record durable.
    pub fn covers_below(&self) -> u64 {
        self.upto.next_offset
    }

    /// The files this job syncs.
    #[cfg(test)]
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(_, path)| path.clone()).collect()
    }
}

/// A recovery checkpoint to write: the index files to sync first, and the checkpoint.
/// Dropping one (or a failed `run`) costs nothing but a longer scan after a crash; a
/// flush hands out another when one is next due (`Log::checkpoint_due`).
#[derive(Debug)]
#[must_use = "a checkpoint job does nothing until it is run and finished"]
pub struct CheckpointJob {
    indexes: FilesToSync,
    syncs: Arc<SyncState>,
    /// This job's own temporary file, so two jobs never write the same file.
    temp: PathBuf,
    upto: Checkpoint,
    generation: u64,
    /// The checkpoint file this job's replaced, held open so that the rename under the
    /// log's lock does not free its blocks: the last close frees them, when the job is
    /// dropped after the lock is released. Freeing blocks can wait for the disk (a
    /// discard, a journal commit) behind other writes for hundreds of milliseconds,
    /// and under the lock every append waited with it (BENCHMARKS.md, "The
    /// end-to-end tail").
    replaced: Option<File>,
    /// Renamed into place; otherwise dropping the job removes its temporary file.
    installed: bool,
}

impl Drop for CheckpointJob {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.temp); // open deletes it anyway
        }
    }
}

impl CheckpointJob {
    /// Syncs the indexes, then writes and syncs the checkpoint's temporary file. Safe to
    /// run concurrently with appends, reads and other jobs.
    pub fn run(&self) -> Result<()> {
        self.syncs.sync(&self.indexes, None)?;
        files::write_synced(&self.temp, &self.upto.encode())
    }
}

impl Log {
    /// Takes the files a flush must sync (no I/O): the active segment's `.log`, and the
    /// files of segments sealed since the last flush (their `.log` and the indexes
    /// written at the seal), which `finish_flush` then closes.
    pub fn begin_flush(&mut self) -> FlushJob {
        let mut files: FilesToSync = self
            .unsynced
            .iter()
            .map(|(_, file, path)| (Arc::clone(file), path.clone()))
            .collect();
        let sealed_upto = self.unsynced.last().map(|(base, _, _)| *base);
        if let Some(log) = self.active.log_file() {
            files.push((Arc::clone(log), self.active.log_path().to_path_buf()));
        }
        let active = self.active();
        FlushJob {
            files,
            dir: (self.dir_changes > self.dir_synced).then(|| self.dir.clone()),
            upto: Checkpoint {
                segment_base: active.base(),
                position: active.size(),
                next_offset: active.next_offset(),
                max_timestamp: active.max_timestamp(),
            },
            generation: self.generation,
            dir_changes: self.dir_changes,
            sealed_upto,
            syncs: Arc::clone(&self.syncs),
            snapshot: self
                .pending_snapshot
                .take()
                .map(|(offset, bytes)| (offset, bytes, self.log_start_offset())),
            snapshot_dir: self.dir.clone(),
        }
    }

    /// Records a finished flush job. When a recovery checkpoint is due, writes the index
    /// entries it will vouch for and returns the job that completes it. Fails only if
    /// the flush cannot be recorded; a checkpoint that cannot be prepared is logged.
    pub fn finish_flush(&mut self, job: FlushJob) -> Result<Option<CheckpointJob>> {
        // A roll moves the end to a new, empty segment without adding offsets, so the
        // segment counts as progress too.
        let point = |c: &Checkpoint| (c.next_offset, c.segment_base);
        if job.generation != self.generation || point(&job.upto) <= point(&self.flushed) {
            return Ok(None);
        }
        // Sealed segments this flush synced no longer need their file descriptors.
        if let Some(upto) = job.sealed_upto {
            self.unsynced.retain(|(base, _, _)| *base > upto);
        }
        self.flushed = job.upto;
        self.dir_synced = self.dir_synced.max(job.dir_changes);
        self.last_flush = Instant::now();
        if !self.checkpoint_due() {
            return Ok(None);
        }
        // The flush itself succeeded: a checkpoint that cannot be prepared costs a longer
        // scan after a crash, not the caller's durable append. The next flush retries.
        let indexes = match self.persist_indexes_to_flushed() {
            Ok(indexes) => indexes,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), %err, "recovery checkpoint not prepared");
                return Ok(None);
            }
        };
        self.checkpoint_issued = self.flushed;
        self.last_checkpoint = Instant::now();
        Ok(Some(CheckpointJob {
            indexes,
            syncs: Arc::clone(&self.syncs),
            temp: super::naming::unique_temp_path(&self.dir.join(super::naming::CHECKPOINT_FILE)),
            upto: self.flushed,
            generation: self.generation,
            replaced: None,
            installed: false,
        }))
    }

    /// Installs a checkpoint whose job has run: a rename, no fsync. The directory is not
    /// synced: if a crash loses the rename, the previous checkpoint is still valid
    /// (everything below it was synced before it was written) and recovery scans a
    /// little more.
    pub fn finish_checkpoint(&mut self, job: &mut CheckpointJob) -> Result<()> {
        let point = |c: &Checkpoint| (c.next_offset, c.segment_base);
        if job.generation != self.generation || point(&job.upto) <= point(&self.checkpoint) {
            return Ok(()); // superseded: dropping the job removes its file
        }
        let path = self.dir.join(super::naming::CHECKPOINT_FILE);
        // Opening a file just written is a lookup in memory, not a wait for the disk.
        job.replaced = File::open(&path).ok();
        std::fs::rename(&job.temp, &path).at(&path)?;
        job.installed = true;
        self.checkpoint = job.upto;
        Ok(())
    }

    /// Syncs everything appended so far, and writes a checkpoint if one is due.
    pub fn flush(&mut self) -> Result<()> {
        self.check_writable()?;
        let job = self.begin_flush();
        job.run()?;
        if let Some(mut checkpoint) = self.finish_flush(job)? {
            checkpoint.run()?;
            self.finish_checkpoint(&mut checkpoint)?;
        }
        Ok(())
    }

    /// Whether the flushed point is worth a checkpoint (each costs three fsyncs: two
    /// indexes and the checkpoint): when a segment was sealed since the last one; once
    /// `checkpoint_interval` has passed, if `checkpoint_bytes` were appended since;
    /// and after `LAZY_CHECKPOINTS` intervals in any case. So recovery scans at most
    /// about the larger of `checkpoint_bytes` and one interval's appends a partition,
    /// and a partition that takes little costs few fsyncs: with one checkpoint every
    /// upkeep pass, 1,000 partitions at 50 MB/s in all spent half of the server's CPU
    /// on the upkeep (BENCHMARKS.md).
    fn checkpoint_due(&self) -> bool {
        let flushed = &self.flushed;
        if flushed.segment_base != self.checkpoint_issued.segment_base {
            return true;
        }
        let since = self.last_checkpoint.elapsed();
        let interval = self.config.checkpoint_interval;
        if since < interval {
            return false;
        }
        // Counted from the checkpoint installed: one handed out that failed or was
        // dropped does not make the next wait for more bytes.
        let installed = &self.checkpoint;
        let behind = match installed.segment_base == flushed.segment_base {
            true => flushed.position.saturating_sub(installed.position),
            false => u64::MAX,
        };
        behind >= self.config.checkpoint_bytes || since >= interval.saturating_mul(LAZY_CHECKPOINTS)
    }

    /// Writes the index entries below the flushed point to their files and returns the
    /// files to sync: recovery trusts index entries below the checkpoint. The active
    /// segment's are written now; a segment sealed since the flush began had its
    /// indexes written at the seal, and they may not be synced yet.
    fn persist_indexes_to_flushed(&mut self) -> Result<FilesToSync> {
        let upto = self.flushed.segment_base;
        let mut files: FilesToSync = self
            .unsynced
            .iter()
            .filter(|(base, _, _)| *base <= upto)
            .map(|(_, file, path)| (Arc::clone(file), path.clone()))
            .collect();
        if upto == self.active.base() {
            self.active.persist_indexes()?;
            files.extend(self.active.index_files());
        }
        Ok(files)
    }

    /// Writes the flushed point as the recovery checkpoint now, indexes synced first
    /// (truncation and close, which hold the log exclusively anyway).
    pub(super) fn write_checkpoint(&mut self) -> Result<()> {
        let indexes = self.persist_indexes_to_flushed()?;
        self.syncs.sync(&indexes, None)?;
        files::write_checkpoint(&self.dir, &self.flushed)?;
        self.checkpoint = self.flushed;
        self.checkpoint_issued = self.flushed;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}
