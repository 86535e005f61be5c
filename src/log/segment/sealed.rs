//! Opening a sealed segment for reading, without ever writing its files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::{Segment, SegmentLimits};
use crate::error::{IoContext, Result};
use crate::log::format::{check_crc, check_header, HEADER_LEN};
use crate::log::index::Index;
use crate::log::naming::{segment_path, SegmentFile};
use crate::sys::map_read_only;

impl Segment {
    /// Opens a sealed segment for reading only: nothing is created, cut or rewritten,
    /// so two readers, or a reader and a writer, never see a file change under them.
    /// `end` is its successor's base offset. An index that is missing, damaged or does
    /// not cover the `.log` is rebuilt in memory from the batch headers (and a warning
    /// names the file); the file itself is left as it is. Damage in the `.log` is not
    /// cut either: a read that meets it fails with a corruption error.
    pub fn open_sealed(dir: &Path, base: u64, end: u64, limits: SegmentLimits) -> Result<Segment> {
        let log_path = segment_path(dir, base, SegmentFile::Log);
        let log = File::open(&log_path).at(&log_path)?;
        let size = log.metadata().at(&log_path)?.len();
        let map = map_read_only(&log, size as usize, &log_path)?;
        let index = Index::open_read_only(
            segment_path(dir, base, SegmentFile::Index),
            limits.max_offset_entries(),
        )?;
        let time_index = Index::open_read_only(
            segment_path(dir, base, SegmentFile::TimeIndex),
            limits.max_time_entries(),
        )?;
        let mut segment = Segment {
            base,
            log_path,
            log: None,
            map: Arc::new(map),
            size,
            next_offset: base,
            max_timestamp: i64::MIN,
            first_append_ms: None,
            index: index.0,
            time_index: time_index.0,
            bytes_since_index: u64::MAX,
            last_attributes: 0,
            limits,
            reserved: u64::MAX,
        };
        if !(index.1 && time_index.1 && segment.trust(size, end, i64::MIN)) {
            tracing::warn!(path = %segment.log_path.display(), "index of sealed segment is missing or damaged; using one rebuilt in memory");
            // An offset index that reads whole and lies within the file is kept: one
            // rebuilt from the headers stops at the first damaged one, and reads could
            // not resume after it within the segment. (Reads check the header at each
            // entry, so a wrong entry is an error, never wrong records.)
            let keep_offsets = index.1 && segment.offsets_fit(size, end);
            segment.rebuild_index_in_memory(end, keep_offsets);
        }
        Ok(segment)
    }

    /// Whether the offset index's last entry lies within a file of `size` bytes and
    /// below offset `end` (and an empty index goes with an empty file).
    fn offsets_fit(&self, size: u64, end: u64) -> bool {
        match self.index.last() {
            None => size == 0,
            Some(last) => {
                u64::from(last.position) + HEADER_LEN as u64 <= size
                    && u64::from(last.rel_offset) < end - self.base
            }
        }
    }

    /// Indexes a read-only segment from its batch headers, in memory, up to the first
    /// header that does not check; reads past it fail with a corruption error (and
    /// resume at the next entry of a kept offset index).
    fn rebuild_index_in_memory(&mut self, end: u64, keep_offsets: bool) {
        let empty = Index::in_memory(self.limits.max_offset_entries());
        let kept = std::mem::replace(&mut self.index, empty);
        self.time_index = Index::in_memory(self.limits.max_time_entries());
        let file_len = self.size;
        (self.size, self.next_offset, self.max_timestamp) = (0, self.base, i64::MIN);
        self.bytes_since_index = u64::MAX;
        while self.size < file_len && !self.indexes_full() {
            let rest = &self.map[self.size as usize..file_len as usize];
            match check_header(rest, Some(self.next_offset), rest.len()) {
                Ok(header) if header.next_offset() <= end => self.record_batch(&header),
                _ => break,
            }
        }
        (self.size, self.next_offset) = (file_len, end);
        if keep_offsets {
            self.index = kept;
        }
    }

    /// The newest record timestamp among this segment's batches, each checked whole
    /// (header and CRC), and whether every batch to the file's end checked. For
    /// retention when the time index is lost: the headers alone do not prove their
    /// `max_timestamp`, and one flipped bit there could make fresh records look old
    /// enough to delete. Reads the whole segment.
    pub fn checked_max_timestamp(&self) -> (i64, bool) {
        let bytes = self.bytes();
        let (mut at, mut expected, mut newest) = (0, self.base, i64::MIN);
        while at < bytes.len() {
            let rest = &bytes[at..];
            let Ok(header) = check_header(rest, Some(expected), rest.len()) else {
                return (newest, false);
            };
            let past_end = header.next_offset() > self.next_offset;
            if past_end || check_crc(rest, &header, &self.log_path, at as u64).is_err() {
                return (newest, false);
            }
            newest = newest.max(header.max_timestamp);
            expected = header.next_offset();
            at += header.length as usize;
        }
        (newest, true)
    }

    /// The first offset after `offset` from which this sealed segment reads again: the
    /// next indexed batch whose header checks, else the segment's end. Where a consumer
    /// can resume after a damaged range.
    pub fn next_readable_after(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base);
        let from = self
            .index
            .partition_point(|e| u64::from(e.rel_offset) <= rel);
        for i in from..self.index.len() {
            let entry = self.index.get(i);
            let expected = self.base + u64::from(entry.rel_offset);
            if self
                .header_at(u64::from(entry.position), Some(expected))
                .is_ok()
            {
                return expected;
            }
        }
        self.next_offset
    }
}
