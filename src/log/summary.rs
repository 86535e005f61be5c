//! What the log keeps in memory about each sealed segment (its size, newest record
//! time and when it was sealed), read at open without reading the segment: retention
//! and compaction decide from it.

use std::path::Path;

use super::naming::{segment_path, SegmentFile};
use super::segment::Segment;
use crate::error::{IoContext, Result};

/// What the log keeps in memory about each sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Bytes of its `.log`.
    pub size: u64,
    /// Its newest record timestamp (the last entry of its time index).
    pub max_timestamp: i64,
    /// Wall-clock ms when it was sealed (after a restart: its `.log`'s modification time,
    /// which is when its last batch was written).
    pub sealed_ms: i64,
}

impl SegmentSummary {
    /// Reads a sealed segment's summary at open: the `.log`'s size and modification time
    /// from its metadata, the newest timestamp from the last 12 bytes of its time index.
    /// Only if that entry is missing or does not fit the segment is the segment itself
    /// read (every batch, CRC checked), and a warning says so.
    pub(super) fn read(
        dir: &Path,
        base: u64,
        end: u64,
        limits: super::segment::SegmentLimits,
    ) -> Result<SegmentSummary> {
        let log_path = segment_path(dir, base, SegmentFile::Log);
        let meta = std::fs::metadata(&log_path).at(&log_path)?;
        // Without a usable modification time, the segment counts as sealed now: the cap
        // on future timestamps then holds it a little longer, never shorter.
        let sealed_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .filter(|&ms| ms > 0)
            .unwrap_or_else(super::log::now_ms);
        let index_path = segment_path(dir, base, SegmentFile::TimeIndex);
        let max_timestamp = match super::index::last_time_entry(&index_path) {
            Some(entry) if base + u64::from(entry.rel_offset) < end => entry.timestamp,
            _ => {
                tracing::warn!(path = %index_path.display(), "time index of a sealed segment is missing or damaged; reading the segment for its newest timestamp");
                match Segment::open_sealed(dir, base, end, limits)
                    .map(|s| s.checked_max_timestamp())
                {
                    Ok((newest, true)) => newest,
                    // A batch that does not check ends the reading and may hide the
                    // newest records (with the first one damaged, none are read at
                    // all), or its own timestamp may be the damage: then never older
                    // than when the segment was last written, or fresh records would
                    // look expired.
                    Ok((newest, false)) => newest.max(sealed_ms),
                    // Unreadable: its age is taken from when it was last written.
                    Err(_) => sealed_ms,
                }
            }
        };
        Ok(SegmentSummary {
            size: meta.len(),
            max_timestamp,
            sealed_ms,
        })
    }

    /// The newest timestamp retention believes: a record timestamped later than
    /// `after_max_ms` past the segment's sealing came from a clock in the future, and
    /// must not keep the segment forever.
    pub(super) fn newest(&self, after_max_ms: u64) -> i64 {
        let limit = self
            .sealed_ms
            .saturating_add(i64::try_from(after_max_ms).unwrap_or(i64::MAX));
        self.max_timestamp.min(limit)
    }
}
