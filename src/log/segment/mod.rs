//! One segment: a `.log` file of record batches and its two sparse indexes.
//!
//! Appends go through positioned writes (`pwritev`), never through the map, so a full disk
//! is an `ENOSPC` error returned to the caller rather than a SIGBUS inside a page fault.
//! The active segment reserves disk blocks ahead of its end (`preallocate`) so that an
//! append does not allocate while writeback of earlier bytes holds the file's lock.
//! Reads go through a read-only map and hand out `Bytes` that keep the map alive
//! (`read.rs`).

mod read;
mod recover;
mod sealed;
pub use read::SegmentView;
mod write;

pub(crate) use write::WRITEBACK_CHUNK;

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::format::BatchHeader;
use super::index::{Index, OffsetEntry, TimeEntry, OFFSET_ENTRY_SIZE, TIME_ENTRY_SIZE};
use super::naming::{segment_path, SegmentFile};
use crate::error::{Error, IoContext, Result};
use crate::sys::map_read_only;

/// Shapes of a segment that come from the log's configuration.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    /// Bytes the active segment's map covers; appends past it remap.
    pub map_bytes: u64,
    pub index_interval_bytes: u64,
    pub index_max_bytes: u64,
}

impl SegmentLimits {
    fn max_offset_entries(&self) -> usize {
        (self.index_max_bytes as usize / OFFSET_ENTRY_SIZE).max(1)
    }
    fn max_time_entries(&self) -> usize {
        (self.index_max_bytes as usize / TIME_ENTRY_SIZE).max(1)
    }
}

/// What a scan of a segment's batches found.
#[derive(Debug)]
pub struct ScanEnd {
    /// Bytes of valid batches, from the start of the file.
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub problem: Option<String>,
}

#[derive(Debug)]
pub struct Segment {
    base: u64,
    log_path: PathBuf,
    /// Open while appends or an unsynced flush may still need it; closed once the segment
    /// is sealed and synced, so that sealed segments hold no file descriptors.
    log: Option<Arc<File>>,
    map: Arc<Mmap>,
    /// Committed bytes: every batch below this position is complete and readable.
    size: u64,
    next_offset: u64,
    /// Largest timestamp of any record; `i64::MIN` while empty.
    max_timestamp: i64,
    /// Wall-clock time of the first append (the file's creation time after a restart):
    /// a segment's age for rolling is measured from it. Not the records' timestamps,
    /// which producers set and which may be old (a replay would roll on every append).
    first_append_ms: Option<i64>,
    index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    bytes_since_index: u64,
    /// Attributes of the last batch recorded (compacted or not).
    last_attributes: u8,
    limits: SegmentLimits,
    /// File position up to which disk blocks are reserved (`u64::MAX` once the file
    /// system has said it cannot reserve them).
    reserved: u64,
}

impl Segment {
    /// Opens (or creates) the files of the segment at `base`. The caller must then either
    /// `trust` the state it knows from a checkpoint or `scan` the log to establish it.
    pub fn open(dir: &Path, base: u64, limits: SegmentLimits) -> Result<(Segment, bool)> {
        let log_path = segment_path(dir, base, SegmentFile::Log);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .at(&log_path)?;
        let meta = log.metadata().at(&log_path)?;
        let file_len = meta.len();
        let first_append_ms = (file_len > 0).then(|| {
            let born = meta
                .created()
                .or_else(|_| meta.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            born.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let map = map_read_only(&log, file_len.max(limits.map_bytes) as usize, &log_path)?;
        let (index, index_ok) = Index::open(
            segment_path(dir, base, SegmentFile::Index),
            limits.max_offset_entries(),
        )?;
        let (time_index, time_ok) = Index::open(
            segment_path(dir, base, SegmentFile::TimeIndex),
            limits.max_time_entries(),
        )?;
        let segment = Segment {
            base,
            log_path,
            log: Some(Arc::new(log)),
            map: Arc::new(map),
            size: file_len,
            next_offset: base,
            max_timestamp: i64::MIN,
            first_append_ms,
            index,
            time_index,
            bytes_since_index: u64::MAX,
            last_attributes: 0,
            limits,
            reserved: file_len,
        };
        Ok((segment, index_ok && time_ok))
    }

    /// Creates an empty segment at `base`, replacing any files left at that name.
    pub fn create(dir: &Path, base: u64, limits: SegmentLimits) -> Result<Segment> {
        super::recovery::remove_segment_files(dir, base)?;
        let (segment, _) = Segment::open(dir, base, limits)?;
        Ok(Segment {
            next_offset: base,
            size: 0,
            first_append_ms: None,
            ..segment
        })
    }

    pub fn base(&self) -> u64 {
        self.base
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The `.log` file, while the segment still holds it open.
    pub fn log_file(&self) -> Option<&Arc<File>> {
        self.log.as_ref()
    }

    fn file(&self) -> Result<&Arc<File>> {
        self.log.as_ref().ok_or_else(|| Error::Io {
            path: self.log_path.clone(),
            source: std::io::Error::other("sealed segment is read-only"),
        })
    }

    /// Syncs the `.log` (a closed one was synced before it was closed).
    pub fn sync_log(&self) -> Result<()> {
        match &self.log {
            Some(file) => crate::log::files::sync_data(file, &self.log_path),
            None => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn indexes_full(&self) -> bool {
        self.index.is_full() || self.time_index.is_full()
    }

    /// Bytes of the file as it is on disk, which may exceed the committed size.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map[..self.size as usize]
    }

    /// Reserves disk blocks up to at least `end` (see `write::reserve`), and as many
    /// again past it, within `MIN_PREALLOCATE_BYTES..=PREALLOCATE_BYTES`. Sized from
    /// `end`, not the size before the append: a batch larger than the segment so far
    /// still leaves room ahead for the next (review finding).
    fn preallocate(&mut self, end: u64) -> Result<()> {
        if end > self.reserved {
            let chunk = end
                .clamp(write::MIN_PREALLOCATE_BYTES, write::PREALLOCATE_BYTES)
                .min(self.limits.map_bytes.max(1));
            let upto = end + chunk;
            self.reserved = write::reserve(self.file()?, self.size, upto, &self.log_path);
        }
        Ok(())
    }

    /// Appends a stored batch (offsets and CRC already written), given as pieces in
    /// order, at the committed end. On failure the segment is as it was: the committed
    /// size is unchanged and any bytes a partial write left behind are cut off (or
    /// overwritten by the next append).
    pub fn append(
        &mut self,
        pieces: &mut [IoSlice<'_>],
        header: &BatchHeader,
        now_ms: i64,
        writeback: bool,
    ) -> Result<()> {
        // Equal, but for a compacted batch, which may follow a gap.
        debug_assert!(header.base_offset >= self.next_offset);
        // Index entries hold offsets relative to the base in 32 bits.
        if header.last_offset() - self.base > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(format!(
                "offset {} is too far past segment base {} for its index",
                header.last_offset(),
                self.base
            )));
        }
        self.preallocate(self.size + u64::from(header.length))?;
        if let Err(err) = write::write_all_vectored_at(self.file()?, pieces, self.size, writeback)
            .at(&self.log_path)
        {
            // Best effort: if this fails too, the next append overwrites the same bytes
            // and recovery cuts them, because they lie past the committed size.
            let _ = self.cut_to_committed();
            return Err(err);
        }
        let end = self.size + u64::from(header.length);
        if end > self.map.len() as u64 {
            // A batch larger than the segment limit went into an empty segment.
            self.map = Arc::new(map_read_only(self.file()?, end as usize, &self.log_path)?);
        }
        self.first_append_ms.get_or_insert(now_ms);
        self.record_batch(header);
        Ok(())
    }

    /// Advances the committed end past a batch just written or scanned at `size`.
    fn record_batch(&mut self, header: &BatchHeader) {
        let rel = (header.base_offset - self.base) as u32;
        let max_ts = self.max_timestamp.max(header.max_timestamp);
        if self.bytes_since_index >= self.limits.index_interval_bytes {
            self.index.push(OffsetEntry {
                rel_offset: rel,
                position: self.size as u32,
            });
            if self.time_index.last().is_none_or(|e| max_ts > e.timestamp) {
                self.time_index.push(TimeEntry {
                    timestamp: max_ts,
                    rel_offset: rel,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += u64::from(header.length);
        self.size += u64::from(header.length);
        self.next_offset = header.next_offset();
        self.max_timestamp = max_ts;
        self.last_attributes = header.attributes;
    }

    /// The last batch scanned or appended was written by compaction: the segment may
    /// legitimately end before the next one begins.
    pub fn ends_compacted(&self) -> bool {
        self.last_attributes & super::format::ATTR_COMPACTED != 0
    }

    /// Makes the time index's last entry carry the segment's largest timestamp, so a sealed
    /// segment's maximum is known from its index alone, then writes both indexes out.
    pub fn seal(&mut self) -> Result<()> {
        if !self.is_empty()
            && self
                .time_index
                .last()
                .is_none_or(|e| self.max_timestamp > e.timestamp)
        {
            let rel = (self.next_offset - 1 - self.base) as u32;
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                rel_offset: rel,
            });
        }
        if self.reserved != u64::MAX {
            // Truncating to the same length frees the blocks reserved past it, including
            // any a crash left behind before this process reopened the segment.
            self.cut_to_committed()?;
        }
        self.persist_indexes()
    }

    pub fn persist_indexes(&mut self) -> Result<()> {
        self.index.persist()?;
        self.time_index.persist()
    }

    pub fn sync_indexes(&self) -> Result<()> {
        self.index.sync()?;
        self.time_index.sync()
    }

    /// The index files still open, to sync without holding the segment.
    pub fn index_files(&self) -> impl Iterator<Item = (Arc<File>, PathBuf)> {
        self.index
            .file_to_sync()
            .into_iter()
            .chain(self.time_index.file_to_sync())
    }

    /// Replaces this segment's files with its first `position` bytes (a batch boundary)
    /// and rebuilt indexes. The prefix goes to a `.tmp` file that is synced and renamed
    /// over the `.log`, so readers holding slices of the old inode keep valid memory (see
    /// sys.rs); the indexes are rebuilt by a scan, as truncation is rare.
    pub fn rewrite_prefix(&self, dir: &Path, position: u64) -> Result<Segment> {
        let path = segment_path(dir, self.base, SegmentFile::Log);
        super::files::write_atomically(&path, &self.map[..position as usize])?;
        for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
            super::files::write_atomically(&segment_path(dir, self.base, kind), &[])?;
        }
        let (mut segment, _) = Segment::open(dir, self.base, self.limits)?;
        let end = segment.scan(0, self.base, i64::MIN)?;
        if let Some(reason) = end.problem {
            return Err(Error::Corruption {
                path,
                position: end.valid_bytes,
                reason,
            });
        }
        Ok(segment)
    }
}
