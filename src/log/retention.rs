//! Retention: which sealed segments have expired, decided from a summary each sealed
//! segment keeps in memory (no file is opened or mapped to decide), and the log start
//! offset that retention and `delete_records` move forward.
//!
//! Deleting takes three steps, so that no fsync or unlink runs under the caller's lock:
//! 1. `plan_retention` (read lock, no I/O) says up to which segment to delete and where
//!    the log will then start;
//! 2. `RetentionPlan::persist` (no lock) writes that start to `log-start-offset`, so a
//!    crash or power loss after this point never brings the records back;
//! 3. `apply_retention` (write lock) renames the doomed segments' files to `.deleted` and
//!    moves the start in memory; the `DeleteJob` it returns unlinks them and syncs the
//!    directory without the lock. Readers that hold slices of a deleted segment keep
//!    valid bytes: the files are unlinked, never shrunk (see sys.rs). A crash between
//!    the rename and the unlink leaves `.deleted` files, which open removes. A `.log`
//!    that cannot be renamed stops the renames there, keeping what they did: the job
//!    unlinks those, then reports the error, and the next pass tries the rest.

use std::path::{Path, PathBuf};

use super::files::{sync_dir, write_log_start};
use super::log::Log;
use super::naming::{deleted_path, segment_path, SegmentFile};
pub use super::summary::SegmentSummary;
use crate::error::{Error, IoContext, Result};

/// A topic's retention settings, as the log applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a sealed segment whose newest record is older than this (None: never).
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at least this big without
    /// them (None: no size limit).
    pub retention_bytes: Option<u64>,
    /// See `SegmentSummary::newest`.
    pub timestamp_after_max_ms: u64,
    /// Offsets from here on are still needed by a reader (a share group's unfinished
    /// records): a segment ending past it is not deleted for its age. Size still
    /// deletes it.
    pub keep_from: Option<u64>,
}

/// Why a segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// All its records lie below the log start offset (moved by `delete_records`).
    BelowLogStart,
    /// Its newest record is older than `retention.ms`.
    Age,
    /// The partition is over `retention.bytes` with it.
    Size,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::BelowLogStart => "below the log start offset",
            Expiry::Age => "older than retention.ms",
            Expiry::Size => "over retention.bytes",
        }
    }
}

/// What `plan_retention` decided: delete every sealed segment below `upto`.
#[derive(Debug, Clone)]
#[must_use = "a retention plan deletes nothing until it is applied"]
pub struct RetentionPlan {
    dir: PathBuf,
    /// Base of the first segment kept; the log's start becomes at least this.
    pub upto: u64,
    /// The log start offset after the deletion.
    pub new_start: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Why the last (newest) segment deleted goes.
    pub reason: Expiry,
    generation: u64,
}

impl RetentionPlan {
    /// Makes the new log start durable before anything is deleted. On a disk too full
    /// to create the file, a deletion of whole segments goes on without it: the first
    /// segment left then says where the log starts (a power loss before the directory
    /// is synced could bring the deleted segments back, never other data).
    pub fn persist(&self) -> Result<()> {
        match write_log_start(&self.dir, self.new_start) {
            Err(err) if err.is_storage_full() && self.new_start == self.upto => {
                tracing::warn!(dir = %self.dir.display(), %err, "the disk is full: deleting segments without writing log-start-offset");
                Ok(())
            }
            other => other,
        }
    }
}

/// Files renamed to `.deleted`, to unlink without the log's lock, and the error that
/// stopped the renames short, if one did.
#[derive(Debug)]
#[must_use = "renamed files stay on disk until the job runs"]
pub struct DeleteJob {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    stopped: Option<Error>,
}

impl DeleteJob {
    /// Unlinks the files (each it can: one that fails does not keep the others) and
    /// syncs the directory; then returns the first error, the renames' before the
    /// unlinks'.
    pub fn run(self) -> Result<()> {
        let mut first = self.stopped;
        for path in &self.paths {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    first.get_or_insert(Error::Io {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        sync_dir(&self.dir)?;
        first.map_or(Ok(()), Err)
    }
}

/// Renames a segment file to `.deleted`; the new path, or `None` if it was not there.
fn rename_away(path: &Path) -> Result<Option<PathBuf>> {
    let to = deleted_path(path);
    match std::fs::rename(path, &to) {
        Ok(()) => Ok(Some(to)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).at(path),
    }
}

impl Log {
    /// The sealed segments' summaries, oldest first.
    pub fn sealed_summaries(&self) -> impl Iterator<Item = (u64, &SegmentSummary)> {
        self.sealed.iter().map(|(&base, summary)| (base, summary))
    }

    /// The active segment's summary so far (its sealing time is now).
    pub fn active_summary(&self, now_ms: i64) -> SegmentSummary {
        SegmentSummary {
            size: self.active.size(),
            max_timestamp: self.active.max_timestamp(),
            sealed_ms: now_ms,
        }
    }

    /// Which sealed segments have expired under `policy` at `now_ms`, oldest first and
    /// stopping at the first that has not (a log only ever loses a prefix), or that ends
    /// past what a flush has made durable: the start written for a deletion must never
    /// lie past the end a crash could recover to. No I/O.
    pub fn plan_retention(&self, policy: &RetentionPolicy, now_ms: i64) -> Option<RetentionPlan> {
        let start = self.log_start_offset();
        let mut total: u64 = self.sealed.values().map(|s| s.size).sum::<u64>() + self.active.size();
        let oldest_kept = policy
            .retention_ms
            .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
        let mut plan: Option<RetentionPlan> = None;
        for (&base, summary) in &self.sealed {
            let end = self.sealed_end(base);
            if end > self.flushed_offset() {
                break;
            }
            let reason = if end <= start {
                Expiry::BelowLogStart
            } else if oldest_kept.is_some_and(|t| summary.newest(policy.timestamp_after_max_ms) < t)
                && policy.keep_from.is_none_or(|keep| end <= keep)
            {
                Expiry::Age
            } else if policy
                .retention_bytes
                .is_some_and(|limit| total - summary.size >= limit)
            {
                Expiry::Size
            } else {
                break;
            };
            total -= summary.size;
            let plan = plan.get_or_insert_with(|| RetentionPlan {
                dir: self.dir.clone(),
                upto: base,
                new_start: start,
                segments: 0,
                bytes: 0,
                reason,
                generation: self.generation,
            });
            plan.upto = end;
            plan.new_start = start.max(end);
            plan.segments += 1;
            plan.bytes += summary.size;
            plan.reason = reason;
        }
        plan
    }

    /// When the oldest segment becomes due for deletion under `policy` (the cleaner
    /// deletes it at its first pass after): `now_ms` if it is due already, None if
    /// nothing is due as things stand (no limits, nothing stored, or the oldest segment
    /// held by `keep_from` from deletion by age).
    pub fn next_deletion_ms(&self, policy: &RetentionPolicy, now_ms: i64) -> Option<i64> {
        if self.plan_retention(policy, now_ms).is_some() {
            return Some(now_ms);
        }
        let (oldest, oldest_end) = match self.sealed.first_key_value() {
            Some((&base, summary)) => (*summary, self.sealed_end(base)),
            None if !self.active.is_empty() => (self.active_summary(now_ms), self.next_offset()),
            None => return None,
        };
        let ms = i64::try_from(policy.retention_ms?).unwrap_or(i64::MAX);
        if policy.keep_from.is_some_and(|keep| oldest_end > keep) {
            return None; // held by the floor until its records are finished: not a time
        }
        Some(
            oldest
                .newest(policy.timestamp_after_max_ms)
                .saturating_add(ms)
                .saturating_add(1)
                .max(now_ms),
        )
    }

    /// True when the active segment holds records and every one of them has expired by
    /// age: rolling it lets the next retention pass delete it (a partition that stopped
    /// receiving records must still empty out).
    pub fn active_expired(&self, policy: &RetentionPolicy, now_ms: i64) -> bool {
        let Some(ms) = policy.retention_ms else {
            return false;
        };
        let oldest_kept = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
        !self.active.is_empty()
            && self
                .active_summary(now_ms)
                .newest(policy.timestamp_after_max_ms)
                < oldest_kept
    }

    /// Renames the planned segments' files to `.deleted` and moves the log start; the
    /// returned job unlinks them. The plan must have been persisted. A plan made before a
    /// truncation is refused (nothing is deleted).
    pub fn apply_retention(&mut self, plan: &RetentionPlan) -> Result<DeleteJob> {
        if plan.generation != self.generation {
            return Err(Error::InvalidArgument(
                "the log was truncated after this retention plan was made".into(),
            ));
        }
        let doomed: Vec<u64> = self.sealed.range(..plan.upto).map(|(&b, _)| b).collect();
        let mut job = DeleteJob {
            dir: self.dir.clone(),
            paths: Vec::with_capacity(doomed.len() * 3),
            stopped: None,
        };
        for base in doomed {
            // The `.log` first: once it is renamed the segment is gone. One that cannot
            // be renamed stops the pass there; it stays, below the start (persisted
            // already), and the next pass tries it again.
            let log = segment_path(&self.dir, base, SegmentFile::Log);
            match rename_away(&log) {
                Ok(renamed) => job.paths.extend(renamed),
                Err(err) => {
                    job.stopped = Some(err);
                    break;
                }
            }
            // After the rename: a read planned before cannot open (and cache) it again.
            self.forget_sealed(base);
            for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
                let path = segment_path(&self.dir, base, kind);
                match rename_away(&path) {
                    Ok(renamed) => job.paths.extend(renamed),
                    // Of a segment that is gone: unlinked where it is.
                    Err(_) => job.paths.push(path),
                }
            }
        }
        self.start_offset = self
            .start_offset
            .max(plan.new_start.min(self.next_offset()));
        self.segments_changed += 1;
        let held = self.producers.len();
        self.producers.trim_below(self.log_start_offset());
        self.producers_changed(held);
        Ok(job)
    }

    /// Moves the log start offset to `offset` (Kafka's DeleteRecords): records below it
    /// are no longer readable, and segments wholly below it go at the next retention
    /// pass. `offset` must not be past the high watermark; one below the current start
    /// changes nothing. The caller makes the records below `offset` durable first (so a
    /// crash cannot leave the start past the end of the log) and persists the start with
    /// `persist_log_start`. Returns the new start.
    pub fn delete_records(&mut self, offset: u64) -> Result<u64> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        self.start_offset = self.start_offset.max(offset);
        let held = self.producers.len();
        self.producers.trim_below(self.log_start_offset());
        self.producers_changed(held);
        Ok(self.log_start_offset())
    }

    /// Deletes every sealed segment whose records all lie below `offset` right away (for
    /// callers without a lock to keep short: tests and tools), and returns how many.
    /// With `offset` at the end of the log, the active segment is rolled first so that
    /// it can go too; the log then holds one empty segment and keeps its next offset.
    pub fn delete_segments_below(&mut self, offset: u64) -> Result<usize> {
        let offset = offset.min(self.next_offset());
        if offset == self.next_offset() {
            self.roll()?;
        }
        self.flush()?;
        let Some(upto) = self
            .sealed
            .keys()
            .rev()
            .map(|&b| self.sealed_end(b))
            .find(|&end| end <= offset)
        else {
            return Ok(0);
        };
        let count = self.sealed.range(..upto).count();
        let plan = RetentionPlan {
            dir: self.dir.clone(),
            upto,
            new_start: self.log_start_offset().max(upto),
            segments: count,
            bytes: 0,
            reason: Expiry::BelowLogStart,
            generation: self.generation,
        };
        plan.persist()?;
        self.apply_retention(&plan)?.run()?;
        Ok(count)
    }

    /// Writes the log start offset to disk (after `delete_records`).
    pub fn persist_log_start(dir: &Path, offset: u64) -> Result<()> {
        write_log_start(dir, offset)
    }
}
