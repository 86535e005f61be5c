//! Reading a log: a read is planned under the caller's lock (which segments, and for the
//! active one its map and the position its in-memory index gives) and run without it,
//! opening sealed segments read-only through the shared cache.

use std::path::PathBuf;
use std::sync::Arc;

use super::cache::SegmentCache;
use super::log::{Log, ReadBatches};
use super::segment::{Segment, SegmentLimits, SegmentView};
use crate::error::{Error, Result};

/// Most segments one read spans: a read returns what these hold, and the reader goes
/// on from there.
const MAX_SEGMENTS_PER_READ: usize = 64;

/// What a read needs, taken from the log under its caller's lock without any I/O;
/// `run` reads without the lock, so that opening a cold segment or checking CRCs
/// never holds up appends.
#[must_use = "a read plan reads nothing until it is run"]
pub struct ReadPlan {
    offset: u64,
    max_bytes: usize,
    /// Sealed segments from the one holding `offset`, with their end offsets.
    sealed: Vec<(u64, u64)>,
    /// The active segment's bytes, and where in them the read starts, if it gets there.
    active: Option<(SegmentView, u64)>,
    opener: SealedOpener,
}

/// Opens this log's sealed segments through the shared cache.
#[derive(Clone)]
pub(super) struct SealedOpener {
    dir: PathBuf,
    limits: SegmentLimits,
    cache: Arc<SegmentCache>,
    id: u64,
}

impl SealedOpener {
    pub(super) fn open(&self, base: u64, end: u64) -> Result<Arc<Segment>> {
        self.cache.get_or_open(self.id, base, end, || {
            Segment::open_sealed(&self.dir, base, end, self.limits)
        })
    }
}

impl ReadPlan {
    /// True when the read opens or reads a sealed segment: file work that may wait for
    /// the disk, which a caller keeps off threads that must not block.
    pub fn touches_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Reads the planned batches (see `Log::read`).
    pub fn run(self) -> Result<ReadBatches> {
        let mut out = ReadBatches {
            chunks: Vec::new(),
            next_offset: self.offset,
        };
        let mut budget = self.max_bytes;
        for &(base, end) in &self.sealed {
            let segment = self.opener.open(base, end)?;
            let at = out.next_offset;
            let read = match segment.read(at, budget, out.chunks.is_empty()) {
                Ok(read) => read,
                // What was read is good: return it, and meet the damage on the next read,
                // which then starts at it.
                Err(_) if !out.chunks.is_empty() => return Ok(out),
                Err(source) => return Err(damaged(&segment, at, source)),
            };
            let Some((chunk, next)) = read else {
                if out.chunks.is_empty() {
                    // Nothing at or after `at` in this segment: compaction removed its
                    // last records. Go on with the next segment.
                    out.next_offset = end;
                    continue;
                }
                return Ok(out);
            };
            budget = budget.saturating_sub(chunk.len());
            out.chunks.push(chunk);
            out.next_offset = next;
            if budget == 0 || next < end {
                return Ok(out);
            }
        }
        if let Some((view, start)) = self.active {
            match view.read(start, out.next_offset, budget, out.chunks.is_empty()) {
                Ok(Some((chunk, next))) => {
                    out.chunks.push(chunk);
                    out.next_offset = next;
                }
                Ok(None) => {}
                // As for sealed segments: the good batches first, the damage next time.
                Err(_) if !out.chunks.is_empty() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }
}

/// The timestamp of the first record at or after `offset` in what a read returned.
pub fn first_timestamp_at(read: &ReadBatches, offset: u64) -> Option<i64> {
    for chunk in &read.chunks {
        let mut rest = &chunk[..];
        while rest.len() >= super::format::HEADER_LEN {
            let header = super::format::BatchHeader::parse(rest);
            let (batch, after) = rest.split_at((header.length as usize).min(rest.len()));
            if header.next_offset() > offset {
                let found = super::record::records(batch)
                    .ok()?
                    .into_iter()
                    .find(|r| r.offset >= offset)
                    .map(|r| r.timestamp_ms);
                if found.is_some() {
                    return found;
                }
            }
            rest = after;
        }
    }
    None
}

/// A failed read of a sealed segment: damage there was synced to disk long ago, so it is
/// lost data to report with the range a reader must skip, never a tail to cut.
fn damaged(segment: &Segment, offset: u64, source: Error) -> Error {
    match source {
        Error::Corruption { .. } | Error::ChecksumMismatch { .. } => Error::DamagedRange {
            from: offset,
            resume_at: segment.next_readable_after(offset),
            source: Box::new(source),
        },
        other => other,
    }
}

impl Log {
    pub(super) fn opener(&self) -> SealedOpener {
        SealedOpener {
            dir: self.dir.clone(),
            limits: Self::limits(&self.config, false),
            cache: Arc::clone(&self.cache),
            id: self.id,
        }
    }

    /// What `read(offset, max_bytes)` needs, without I/O (see `ReadPlan`).
    pub fn read_plan(&self, offset: u64, max_bytes: usize) -> Result<ReadPlan> {
        self.check_range(offset)?;
        let active_base = self.active.base();
        let (sealed, active_start) = if offset >= active_base {
            let start = (offset < self.next_offset())
                .then(|| self.active.position_of(offset))
                .transpose()?;
            (Vec::new(), Some(start.unwrap_or(self.active.size())))
        } else {
            let holder = *self
                .sealed
                .range(..=offset)
                .next_back()
                .expect("offset >= log start")
                .0;
            let sealed: Vec<(u64, u64)> = self
                .sealed
                .range(holder..)
                .take(MAX_SEGMENTS_PER_READ)
                .map(|(&b, _)| (b, self.sealed_end(b)))
                .collect();
            let reaches_active = sealed.last().is_some_and(|&(_, end)| end == active_base);
            (sealed, reaches_active.then_some(0)) // from the active segment's start
        };
        Ok(ReadPlan {
            offset,
            max_bytes,
            sealed,
            active: active_start.map(|start| (self.active.view(), start)),
            opener: self.opener(),
        })
    }

    /// Whole batches from the one holding `offset`: at least one batch if there is data
    /// at `offset`, then more while they fit in `max_bytes`, across segments. Damage in
    /// a sealed segment is a `DamagedRange` error that says where reading can resume.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadBatches> {
        self.read_plan(offset, max_bytes)?.run()
    }

    /// What `offset_for_timestamp(ts)` needs, without I/O: the answer from the active
    /// segment (in memory) and the sealed segments to look in first: those after the log
    /// start whose newest record (known from their summaries) is at or after `ts`.
    pub fn timestamp_plan(&self, ts: i64) -> Result<TimestampPlan> {
        let start = self.log_start_offset();
        Ok(TimestampPlan {
            ts,
            start,
            sealed: self
                .sealed
                .iter()
                .filter(|(&b, summary)| self.sealed_end(b) > start && summary.max_timestamp >= ts)
                .map(|(&b, _)| (b, self.sealed_end(b)))
                .collect(),
            in_active: self.active.offset_for_timestamp(ts, start)?,
            opener: self.opener(),
        })
    }

    /// The first record whose timestamp is `>= ts` (its offset and timestamp), or `None`
    /// if every record is older (a consumer then starts at the end).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        self.timestamp_plan(ts)?.run()
    }
}

/// A timestamp lookup, planned under the lock and run without it (see `ReadPlan`).
#[must_use = "a plan finds nothing until it is run"]
pub struct TimestampPlan {
    ts: i64,
    /// The log start offset: records below it are no longer readable, so the search
    /// begins there.
    start: u64,
    sealed: Vec<(u64, u64)>,
    in_active: Option<(u64, i64)>,
    opener: SealedOpener,
}

impl TimestampPlan {
    pub fn touches_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    pub fn run(self) -> Result<Option<(u64, i64)>> {
        for &(base, end) in &self.sealed {
            let segment = self.opener.open(base, end)?;
            if let Some(hit) = segment.offset_for_timestamp(self.ts, self.start)? {
                return Ok(Some(hit));
            }
        }
        Ok(self.in_active)
    }
}
