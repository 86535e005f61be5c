//! `Log`: one partition's log over one directory. Appends, reads, flushes, rolls,
//! retention and truncation; opening and recovery live in `recovery.rs`.
//!
//! Concurrency: reads take `&self` and appends `&mut self`, so a caller shares a `Log`
//! behind a `RwLock` and holds the lock only for the short in-memory part of an append.
//! Reads hand out `Bytes` that own a reference to the segment's map, so they stay valid
//! after the lock is released, even across truncation and deletion (see mmap.rs). The
//! slow part of a durable append, the fsync, runs without the lock: `begin_flush` (under
//! the lock) returns a `FlushJob`, `FlushJob::run` syncs, `finish_flush` records it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::batch::PendingBatch;
use super::config::{FlushPolicy, LogConfig};
use super::files::Checkpoint;
use super::naming::{segment_path, SegmentFile};
use super::segment::{Segment, SegmentLimits};
use crate::error::{Error, IoContext, Result};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
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
    /// Every segment by base offset. The last is the active one and is always open;
    /// sealed ones open on first use (that is what makes opening a large log fast).
    pub(super) segments: BTreeMap<u64, OnceLock<Segment>>,
    /// Last recovery checkpoint installed, the last one handed to a `CheckpointJob`,
    /// and the point the last flush made durable.
    pub(super) checkpoint: Checkpoint,
    pub(super) checkpoint_issued: Checkpoint,
    pub(super) flushed: Checkpoint,
    /// Checkpoint jobs handed out so far; names each job's temporary file.
    pub(super) checkpoint_jobs: u64,
    pub(super) last_flush: Instant,
    pub(super) last_checkpoint: Instant,
    /// Bumped by `truncate`, so a flush job begun before it is not trusted after it.
    pub(super) generation: u64,
    /// Directory entries created or removed, and how many of those a flush has synced.
    pub(super) dir_changes: u64,
    pub(super) dir_synced: u64,
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
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    /// The offset the next appended record will get (the high watermark).
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of all segments' `.log` files.
    pub fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for (&base, slot) in &self.segments {
            total += match slot.get() {
                Some(segment) => segment.size(),
                None => {
                    let path = segment_path(&self.dir, base, SegmentFile::Log);
                    std::fs::metadata(&path).at(&path)?.len()
                }
            };
        }
        Ok(total)
    }

    /// Offset below which every record is on disk (synced by a flush).
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.next_offset
    }

    /// Everything appended is on disk.
    pub fn is_flushed(&self) -> bool {
        self.flushed.next_offset == self.next_offset()
    }

    pub(super) fn active(&self) -> &Segment {
        let (_, slot) = self
            .segments
            .last_key_value()
            .expect("a log always has a segment");
        slot.get().expect("the active segment is always open")
    }

    pub(super) fn active_mut(&mut self) -> &mut Segment {
        let last = self
            .segments
            .last_entry()
            .expect("a log always has a segment");
        last.into_mut()
            .get_mut()
            .expect("the active segment is always open")
    }

    /// The segment holding `offset` (which must be in `[log start, next offset)`),
    /// opening it if this is its first use.
    pub(super) fn segment_for(&self, offset: u64) -> Result<&Segment> {
        let (&base, slot) = self
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset >= log start");
        if let Some(segment) = slot.get() {
            return Ok(segment);
        }
        let end = self
            .segments
            .range(base + 1..)
            .next()
            .map(|(&b, _)| b)
            .expect("sealed has a successor");
        let segment =
            super::recovery::open_sealed(&self.dir, base, end, Self::limits(&self.config, false))?;
        Ok(slot.get_or_init(|| segment))
    }

    fn check_range(&self, offset: u64) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        Ok(())
    }

    /// Appends a batch, assigning it the next offsets. Fails with nothing written when
    /// the batch is over the size limit or the disk refuses the bytes.
    pub fn append(&mut self, batch: &mut PendingBatch) -> Result<AppendInfo> {
        let len = batch.len_bytes() as u64;
        if len > self.config.max_batch_bytes {
            return Err(Error::TooLarge {
                what: "batch",
                size: len,
                limit: self.config.max_batch_bytes,
            });
        }
        let now = now_ms();
        self.maybe_roll(len, batch.header().record_count, now)?;
        let base_offset = self.next_offset();
        let (mut pieces, header) = batch.assign(base_offset);
        self.active_mut().append(&mut pieces, &header, now)?;
        let info = AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        };
        match self.config.flush {
            FlushPolicy::EveryAppend => self.flush()?,
            FlushPolicy::Interval(every) if self.last_flush.elapsed() >= every => self.flush()?,
            FlushPolicy::Interval(_) | FlushPolicy::Os => {}
        }
        Ok(info)
    }

    fn maybe_roll(&mut self, len: u64, records: u32, now_ms: i64) -> Result<()> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size() + len > self.config.segment_bytes;
        let offsets_overflow =
            active.next_offset() - active.base() + u64::from(records) > u64::from(u32::MAX);
        if too_big || offsets_overflow || active.indexes_full() || self.is_aged(now_ms) {
            self.roll()?;
        }
        Ok(())
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
    /// active segment is empty).
    pub fn roll(&mut self) -> Result<()> {
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().seal()?;
        let next = self.next_offset();
        let segment = Segment::create(&self.dir, next, Self::limits(&self.config, true))?;
        self.segments.insert(next, OnceLock::from(segment));
        self.dir_changes += 1;
        Ok(())
    }

    /// Whole batches from the one holding `offset`: at least one batch if there is data
    /// at `offset`, then more while they fit in `max_bytes`, across segments.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadBatches> {
        self.check_range(offset)?;
        let end = self.next_offset();
        let mut out = ReadBatches {
            chunks: Vec::new(),
            next_offset: offset,
        };
        let mut budget = max_bytes;
        while out.next_offset < end {
            let segment = self.segment_for(out.next_offset)?;
            if out.next_offset >= segment.next_offset() {
                // Only a sealed segment cut short by corruption ends before its successor.
                return Err(Error::Corruption {
                    path: segment.log_path().to_path_buf(),
                    position: segment.size(),
                    reason: format!(
                        "offsets from {} to the next segment are unreadable (see the warning logged when it was opened)",
                        segment.next_offset()
                    ),
                });
            }
            let Some((chunk, next)) =
                segment.read(out.next_offset, budget, out.chunks.is_empty())?
            else {
                break;
            };
            budget = budget.saturating_sub(chunk.len());
            out.chunks.push(chunk);
            out.next_offset = next;
            if budget == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset whose record timestamp is `>= ts`, or `None` if every record is
    /// older (a consumer then starts at the end).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        for &base in self.segments.keys() {
            if let Some(offset) = self.segment_for(base)?.offset_for_timestamp(ts)? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }
}
