//! Sparse indexes of one segment: `.index` (relative offset -> file position) and
//! `.timeindex` (largest timestamp so far -> relative offset).
//!
//! An index is a file of fixed-size little-endian entries, strictly increasing in both
//! columns. Entries already in the file when the segment was opened are read through a
//! map; entries added since live in memory (`tail`) and reach the file in `persist`,
//! which the log calls before it syncs indexes for a recovery checkpoint and when a
//! segment is sealed. Indexes are caches of the `.log`: anything wrong with one is
//! repaired by rebuilding it from the log, never reported to a reader.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{IoContext, Result};
use crate::sys::map_read_only;

/// A fixed-size index entry with a key that increases along the index.
pub trait Entry: Copy + std::fmt::Debug + PartialEq {
    const SIZE: usize;
    fn decode(bytes: &[u8]) -> Self;
    fn encode(&self, out: &mut Vec<u8>);
    /// True when `next` may follow `self` in a well-formed index.
    fn precedes(&self, next: &Self) -> bool;
}

/// `.index` entry: the batch starting at `position` has base offset `base + rel_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// `.timeindex` entry: every record of the batches up to and including the one with base
/// offset `base + rel_offset` has a timestamp of at most `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

/// Bytes of one `.index` entry: relative offset u32, position u32.
pub const OFFSET_ENTRY_SIZE: usize = 8;
/// Bytes of one `.timeindex` entry: timestamp i64, relative offset u32.
pub const TIME_ENTRY_SIZE: usize = 12;

impl Entry for OffsetEntry {
    const SIZE: usize = OFFSET_ENTRY_SIZE;
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn precedes(&self, next: &Self) -> bool {
        self.rel_offset < next.rel_offset && self.position < next.position
    }
}

impl Entry for TimeEntry {
    const SIZE: usize = TIME_ENTRY_SIZE;
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.rel_offset.to_le_bytes());
    }
    fn precedes(&self, next: &Self) -> bool {
        self.timestamp < next.timestamp && self.rel_offset < next.rel_offset
    }
}

/// The last entry of a sealed segment's time index (its newest timestamp), read with
/// one positioned read, not a map. None when the file is missing, empty, not a whole
/// number of entries, or its last two entries are out of order.
pub fn last_time_entry(path: &Path) -> Option<TimeEntry> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let size = TIME_ENTRY_SIZE as u64;
    if len == 0 || len % size != 0 {
        return None;
    }
    let mut buf = [0u8; 2 * TIME_ENTRY_SIZE];
    let from = len.saturating_sub(2 * size);
    let got = &mut buf[..(len - from) as usize];
    file.read_exact_at(got, from).ok()?;
    let last = TimeEntry::decode(&got[got.len() - TIME_ENTRY_SIZE..]);
    if got.len() == 2 * TIME_ENTRY_SIZE && !TimeEntry::decode(got).precedes(&last) {
        return None;
    }
    Some(last)
}

#[derive(Debug)]
pub struct Index<E: Entry> {
    path: PathBuf,
    /// Open while the index can still grow; a sealed segment's index keeps only its map
    /// and memory, so that thousands of sealed segments hold no file descriptors.
    file: Option<Arc<File>>,
    /// Entries that were in the file at open, read through the map.
    map: Option<Mmap>,
    mapped: usize,
    /// Entries added since open, in memory; `tail[..persisted]` are also in the file.
    tail: Vec<E>,
    persisted: usize,
    max_entries: usize,
}

impl<E: Entry> Index<E> {
    /// Opens (creating if missing) the index at `path`. Returns the index and whether the
    /// file was well formed: a file with a partial entry or out-of-order entries is cut
    /// back to its longest well-formed prefix (the caller decides whether to rebuild).
    pub fn open(path: PathBuf, max_entries: usize) -> Result<(Index<E>, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len() as usize;
        let mut index = Index {
            path,
            file: Some(Arc::new(file)),
            map: None,
            mapped: 0,
            tail: Vec::new(),
            persisted: 0,
            max_entries,
        };
        let whole = len - len % E::SIZE;
        if whole > 0 {
            index.map = Some(map_read_only(index.file()?, whole, &index.path)?);
            index.mapped = whole / E::SIZE;
        }
        let valid = index.valid_prefix();
        let well_formed = valid == index.mapped && whole == len;
        if !well_formed {
            index.truncate(valid)?;
        }
        Ok((index, well_formed))
    }

    /// Opens the index of a sealed segment without changing it: a missing file is an
    /// empty index, and of a damaged one only the well-formed prefix is used. Returns
    /// whether the file was whole and well formed.
    pub fn open_read_only(path: PathBuf, max_entries: usize) -> Result<(Index<E>, bool)> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Index::in_memory(max_entries), false));
            }
            Err(err) => return Err(err).at(&path),
        };
        let len = file.metadata().at(&path)?.len() as usize;
        let whole = len - len % E::SIZE;
        let mut index = Index {
            path,
            file: None,
            map: None,
            mapped: whole / E::SIZE,
            tail: Vec::new(),
            persisted: 0,
            max_entries,
        };
        if whole > 0 {
            index.map = Some(map_read_only(&file, whole, &index.path)?);
        }
        let valid = index.valid_prefix();
        let well_formed = valid == index.mapped && whole == len;
        index.mapped = valid;
        Ok((index, well_formed))
    }

    /// An empty index kept in memory only (rebuilt for a sealed segment whose file is
    /// damaged; never written).
    pub fn in_memory(max_entries: usize) -> Index<E> {
        Index {
            path: PathBuf::new(),
            file: None,
            map: None,
            mapped: 0,
            tail: Vec::new(),
            persisted: 0,
            max_entries,
        }
    }

    fn valid_prefix(&self) -> usize {
        let mut n = 0;
        while n < self.mapped {
            if n > 0 && !self.get(n - 1).precedes(&self.get(n)) {
                break;
            }
            n += 1;
        }
        n
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> Result<&File> {
        self.file.as_deref().ok_or_else(|| crate::error::Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other("index of a sealed segment is read-only"),
        })
    }

    pub fn len(&self) -> usize {
        self.mapped + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.max_entries
    }

    pub fn get(&self, i: usize) -> E {
        if i < self.mapped {
            let map = self.map.as_ref().expect("mapped entries have a map");
            E::decode(&map[i * E::SIZE..(i + 1) * E::SIZE])
        } else {
            self.tail[i - self.mapped]
        }
    }

    pub fn last(&self) -> Option<E> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Index of the first entry for which `pred` is false (entries must be partitioned).
    pub fn partition_point(&self, pred: impl Fn(&E) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Adds an entry in memory. The caller keeps entries increasing and checks `is_full`.
    pub fn push(&mut self, entry: E) {
        debug_assert!(self.last().is_none_or(|last| last.precedes(&entry)));
        self.tail.push(entry);
    }

    /// Writes entries not yet in the file.
    pub fn persist(&mut self) -> Result<()> {
        if self.persisted == self.tail.len() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((self.tail.len() - self.persisted) * E::SIZE);
        for entry in &self.tail[self.persisted..] {
            entry.encode(&mut bytes);
        }
        let at = ((self.mapped + self.persisted) * E::SIZE) as u64;
        self.file()?.write_all_at(&bytes, at).at(&self.path)?;
        self.persisted = self.tail.len();
        Ok(())
    }

    /// The open file, to sync without holding the index (a closed index was synced
    /// before it was closed: by the flush job that covered its seal, or by recovery).
    pub fn file_to_sync(&self) -> Option<(Arc<File>, PathBuf)> {
        self.file
            .as_ref()
            .map(|file| (Arc::clone(file), self.path.clone()))
    }

    /// Syncs the file; a closed index was synced before it was closed.
    pub fn sync(&self) -> Result<()> {
        match &self.file {
            Some(file) => super::files::sync_data(file, &self.path),
            None => Ok(()),
        }
    }

    /// Keeps the first `keep` entries, in memory and in the file.
    pub fn truncate(&mut self, keep: usize) -> Result<()> {
        if keep >= self.len() {
            return Ok(());
        }
        if keep <= self.mapped {
            // Only `&mut Log` reaches here, so no lookup is reading the map (see sys.rs).
            self.map = None;
            self.tail.clear();
            self.persisted = 0;
            self.file()?
                .set_len((keep * E::SIZE) as u64)
                .at(&self.path)?;
            self.mapped = keep;
            if keep > 0 {
                self.map = Some(map_read_only(self.file()?, keep * E::SIZE, &self.path)?);
            }
        } else {
            let tail_keep = keep - self.mapped;
            self.tail.truncate(tail_keep);
            if self.persisted > tail_keep {
                self.persisted = tail_keep;
                self.file()?
                    .set_len((keep * E::SIZE) as u64)
                    .at(&self.path)?;
            }
        }
        Ok(())
    }

    /// All entries, in order (for rewriting an index into a new file).
    pub fn entries(&self) -> impl Iterator<Item = E> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
