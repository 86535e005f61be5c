//! `Log`: one partition's log over one directory. Appends, reads, flushes, rolls,
//! retention and truncation; opening and closing live in `lifecycle.rs`, the scan after
//! a crash in `recovery.rs`.
//!
//! Concurrency: reads take `&self` and appends `&mut self`, so a caller shares a `Log`
//! behind a `RwLock` and holds the lock only for the short in-memory part of an append.
//! Reads hand out `Bytes` that own a reference to the segment's map, so they stay valid
//! after the lock is released, even across truncation and deletion (see sys.rs). The
//! slow part of a durable append, the fsync, runs without the lock: `begin_flush` (under
//! the lock) returns a `FlushJob`, `FlushJob::run` syncs, `finish_flush` records it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::batch::PendingBatch;
use super::cache::SegmentCache;
use super::config::{FlushPolicy, LogConfig};
use super::files::Checkpoint;
use super::producers::{ProducerStates, Verdict};
use super::retention::SegmentSummary;
use super::segment::{Segment, SegmentLimits, WRITEBACK_CHUNK};
use crate::error::{Error, Result};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// The append sealed the active segment first (its files await a flush).
    pub rolled: bool,
    /// The batch was a retry of one an idempotent producer had already appended: nothing
    /// was written, and the offsets are the first attempt's.
    pub duplicate: bool,
}

/// Whole batches read from the log, each a slice of a segment's map.
#[derive(Debug, Clone, Default)]
pub struct ReadBatches {
    /// Stored batches, header included; the first may start below the requested offset.
    pub chunks: Vec<Bytes>,
    /// Offset after the last batch returned (the requested offset if none).
    pub next_offset: u64,
}

impl ReadBatches {
    pub fn size_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

pub struct Log {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    /// Where this log's sealed segments are opened, shared with other logs; `id` is this
    /// log's key there.
    pub(super) cache: Arc<SegmentCache>,
    pub(super) id: u64,
    /// The sealed segments by base offset, with what retention needs to know of them.
    /// Each ends where the next one (or the active one) begins; none is held open here:
    /// readers open them through `cache`.
    pub(super) sealed: BTreeMap<u64, SegmentSummary>,
    /// The log start offset as retention or `delete_records` last set it (persisted in
    /// `log-start-offset`); the start is the larger of this and the first segment's base.
    pub(super) start_offset: u64,
    /// Segments below this offset have been compacted (persisted in `cleaner-offset`):
    /// their batches and ends may have gaps.
    pub(super) cleaned_upto: u64,
    /// The next incremental compaction pass maps keys from this offset (at most
    /// `cleaned_upto`): where the last pass's key map filled, keys after it in the
    /// segment it filled in were compacted without being mapped. Kept in memory; a log
    /// opened starts it at the base of the last segment compacted, where the last pass
    /// before the restart may have filled.
    pub(super) mapped_upto: u64,
    /// Bumped whenever sealed segments are deleted or replaced, so a read planned
    /// before can tell that its plan may name files that are gone.
    pub(super) segments_changed: u64,
    /// The segment appends go to, always open.
    pub(super) active: Segment,
    /// Files of segments sealed since the last flush, which the next one must sync,
    /// with the segment's base offset. Closed once synced.
    pub(super) unsynced: Vec<(u64, Arc<File>, PathBuf)>,
    /// Last recovery checkpoint installed, the last one handed to a `CheckpointJob`,
    /// and the point the last flush made durable.
    pub(super) checkpoint: Checkpoint,
    pub(super) checkpoint_issued: Checkpoint,
    pub(super) flushed: Checkpoint,
    pub(super) last_flush: Instant,
    pub(super) last_checkpoint: Instant,
    /// Changed by `truncate` (and different for every log a process opens), so a flush
    /// job, retention plan or compaction begun before is not trusted after it, nor on a
    /// log reopened meanwhile.
    pub(super) generation: u64,
    /// Directory entries created or removed, and how many of those a flush has synced.
    pub(super) dir_changes: u64,
    pub(super) dir_synced: u64,
    /// Its fsyncs, and the first that failed (see `SyncState`).
    pub(super) syncs: Arc<super::flush::SyncState>,
    /// The idempotent producers that wrote here (`producers/`), and the snapshot of
    /// them that the last roll owes, written by the next flush.
    pub(super) producers: ProducerStates,
    pub(super) pending_snapshot: Option<(u64, Vec<u8>)>,
}

impl Drop for Log {
    fn drop(&mut self) {
        self.cache.forget_log(self.id);
        self.cache.producers.changed(self.producers.len(), 0);
    }
}

/// Sealed segments whose files wait for a flush, at most; past it a roll flushes.
const MAX_UNSYNCED_SEGMENTS: usize = 32;

/// Generations are drawn from one counter for the whole process (see `Log::generation`).
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(super) fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Log {
    /// Tells the server's tally that this log's producers went from `before` to what
    /// they are now; every change to `producers` is followed by it.
    pub(super) fn producers_changed(&self, before: usize) {
        self.cache.producers.changed(before, self.producers.len());
    }

    /// Forgets this partition's idlest producers for those other partitions took past
    /// the server's cap, if it holds more than its fair share; reports it.
    pub(super) fn forget_for_the_cap(&mut self) {
        let held = self.producers.len();
        let forget = self.cache.producers.claim_forget(held);
        if forget > 0 {
            self.producers.keep_at_most(held - forget);
            self.producers_changed(held);
            self.cache.producers.paid(forget);
        }
    }
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    pub(super) fn limits(config: &LogConfig, active: bool) -> SegmentLimits {
        SegmentLimits {
            map_bytes: if active { config.segment_bytes } else { 0 },
            index_interval_bytes: config.index_interval_bytes,
            index_max_bytes: config.index_max_bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the configuration of an open log; size and age limits apply from the next
    /// append on.
    pub fn reconfigure(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        let first = self
            .sealed
            .first_key_value()
            .map_or(self.active.base(), |(&b, _)| b);
        first.max(self.start_offset)
    }

    /// The offset the next appended record will get (the high watermark).
    pub fn next_offset(&self) -> u64 {
        self.active.next_offset()
    }

    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Base offsets of every segment, the active one last.
    pub fn segment_bases(&self) -> Vec<u64> {
        let mut bases: Vec<u64> = self.sealed.keys().copied().collect();
        bases.push(self.active.base());
        bases
    }

    /// Bytes of all segments' `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.active.size() + self.sealed.values().map(|s| s.size).sum::<u64>()
    }

    /// Counts the changes to the sealed segments (retention, compaction): a read whose
    /// plan fails after it changed is planned again.
    pub fn segments_changed(&self) -> u64 {
        self.segments_changed
    }

    /// Offset below which every record is on disk (synced by a flush).
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.next_offset
    }

    /// Everything appended is on disk, and so is every sealed segment's file and the
    /// directory (a roll adds no offset, but files to sync).
    pub fn is_flushed(&self) -> bool {
        self.flushed.next_offset == self.next_offset() && self.is_flushed_files()
    }

    /// No sealed segment's file and no directory change waits for a flush.
    pub fn is_flushed_files(&self) -> bool {
        self.unsynced.is_empty() && self.dir_changes == self.dir_synced
    }

    /// Why this log refuses writes, if an fsync of its files has failed.
    pub fn sync_failure(&self) -> Option<&str> {
        self.syncs.failure()
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        match self.sync_failure() {
            Some(reason) => Err(Error::SyncFailed {
                dir: self.dir.clone(),
                reason: reason.to_string(),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn active(&self) -> &Segment {
        &self.active
    }

    pub(super) fn active_mut(&mut self) -> &mut Segment {
        &mut self.active
    }

    /// Where the sealed segment `base` ends: the next segment's base.
    pub(super) fn sealed_end(&self, base: u64) -> u64 {
        self.sealed
            .range(base + 1..)
            .next()
            .map_or(self.active.base(), |(&b, _)| b)
    }

    pub(super) fn check_range(&self, offset: u64) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        Ok(())
    }

    /// Appends a batch, assigning it the next offsets. Fails with nothing written when
    /// the batch is over the size limit, the disk refuses the bytes, an earlier fsync
    /// failed (see `sync_failed`), or its idempotent producer is fenced or out of
    /// sequence; a retry of a batch already appended writes nothing and answers with
    /// the first attempt's offsets (`AppendInfo::duplicate`).
    pub fn append(&mut self, batch: &mut PendingBatch) -> Result<AppendInfo> {
        self.check_writable()?;
        let (producer, records) = (batch.header().producer, batch.header().record_count);
        if let Verdict::Duplicate(first) = self.producers.check(&producer, records)? {
            return Ok(AppendInfo {
                base_offset: first.first_offset,
                last_offset: first.last_offset,
                max_timestamp: batch.header().max_timestamp,
                rolled: false,
                duplicate: true,
            });
        }
        let len = batch.len_bytes() as u64;
        if len > self.config.max_batch_bytes {
            return Err(Error::TooLarge {
                what: "batch",
                size: len,
                limit: self.config.max_batch_bytes,
            });
        }
        let now = now_ms();
        let rolled = self.maybe_roll(len, batch.header().record_count, now)?;
        let base_offset = self.next_offset();
        // A large batch that an fsync will follow starts its writeback as it is written.
        let writeback = len >= WRITEBACK_CHUNK as u64
            && (batch.sync_owed() || self.config.flush == FlushPolicy::EveryAppend);
        let (mut pieces, header) = batch.assign(base_offset);
        self.active_mut()
            .append(&mut pieces, &header, now, writeback)?;
        // Past the server's cap, a new producer takes the place of this partition's
        // idlest one if the partition has its fair share, and a partition over its
        // share forgets what others took past the cap (`producers/tally.rs`). Batches
        // without a producer change nothing: the tally is not read for them.
        if producer.id >= 0 {
            let held = self.producers.len();
            let max = self
                .cache
                .producers
                .max_for(held, self.config.max_producers);
            if max >= self.config.max_producers {
                self.producers.make_room(producer.id, max);
            }
            self.producers
                .record(&producer, records, base_offset, now, max);
            self.producers_changed(held);
            self.forget_for_the_cap();
        }
        let info = AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            rolled,
            duplicate: false,
        };
        match self.config.flush {
            FlushPolicy::EveryAppend => self.flush()?,
            FlushPolicy::Interval(every) if self.last_flush.elapsed() >= every => self.flush()?,
            FlushPolicy::Interval(_) | FlushPolicy::Os => {}
        }
        Ok(info)
    }

    fn maybe_roll(&mut self, len: u64, records: u32, now_ms: i64) -> Result<bool> {
        let active = self.active();
        if active.is_empty() {
            return Ok(false);
        }
        let too_big = active.size() + len > self.config.segment_bytes;
        let offsets_overflow =
            active.next_offset() - active.base() + u64::from(records) > u64::from(u32::MAX);
        if too_big || offsets_overflow || active.indexes_full() || self.is_aged(now_ms) {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn is_aged(&self, now_ms: i64) -> bool {
        let age_ms = self.config.segment_age.as_millis() as i64;
        self.active()
            .first_append_ms()
            .is_some_and(|first| now_ms.saturating_sub(first) >= age_ms)
    }

    /// Rolls the active segment if its first append is older than the age limit, so data
    /// in a partition that no longer receives appends can still expire.
    pub fn roll_if_aged(&mut self, now_ms: i64) -> Result<bool> {
        if !self.active().is_empty() && self.is_aged(now_ms) {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Seals the active segment and starts a new one at the next offset (no-op if the
    /// active segment is empty). The sealed segment's files stay open only until the
    /// next flush has synced them; its maps and in-memory index go at once, and readers
    /// reopen it from disk through the cache.
    pub fn roll(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().seal()?;
        let summary = self.active_summary(now_ms());
        let next = self.next_offset();
        let segment = Segment::create(&self.dir, next, Self::limits(&self.config, true))?;
        let old = std::mem::replace(&mut self.active, segment);
        let base = old.base();
        if let Some(log) = old.log_file() {
            self.unsynced
                .push((base, Arc::clone(log), old.log_path().to_path_buf()));
        }
        for (file, path) in old.index_files() {
            self.unsynced.push((base, file, path));
        }
        self.sealed.insert(base, summary);
        self.dir_changes += 1;
        self.snapshot_at_roll();
        // Sealed segments keep their descriptors until a flush syncs them. A server
        // flushes right after a roll; a caller that never flushes (FlushPolicy::Os, no
        // timer) would otherwise collect three descriptors per segment until EMFILE.
        if self.unsynced.len() >= 3 * MAX_UNSYNCED_SEGMENTS {
            self.flush()?;
        }
        Ok(())
    }
}
