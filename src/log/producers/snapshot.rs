//! Producer-state snapshots: `<offset>.snapshot` in the partition's directory holds
//! what `ProducerStates` knew of the batches below `offset` (little-endian):
//!
//! ```text
//!  0  8  magic "STRMPSNP"
//!  8  4  version (1)
//! 12  4  CRC-32 of bytes [16, end)
//! 16  8  offset: the state of every batch below it
//! 24  4  number of producers
//! 28     each producer, 20 bytes and then 24 per batch:
//!          0  8  producer id
//!          8  2  epoch
//!         10  1  number of batches (1 to 5), oldest first
//!         11  1  reserved (0)
//!         12  8  last append, ms since the Unix epoch (server time)
//!         20     each batch: first sequence i32, last sequence i32,
//!                            first offset u64, last offset u64
//! ```
//!
//! A snapshot is a cache like the indexes: a damaged or missing one costs a longer walk
//! over batch headers at open (`rebuild.rs`), never data. One is written after each
//! roll (by the flush that follows it, outside the log's lock) and one at a clean
//! close; the two newest are kept.

use std::fs;
use std::path::Path;

use super::{BatchSeq, ProducerEntry, ProducerStates, KEPT_BATCHES};
use crate::error::{IoContext, Result};
use crate::log::files;
use crate::log::naming::{parse_file_name, snapshot_path, temp_path, ParsedName};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"STRMPSNP";
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_LEN: usize = 28;
const PRODUCER_LEN: usize = 20;
const BATCH_LEN: usize = 24;
/// Snapshots kept in a partition's directory.
pub const KEPT_SNAPSHOTS: usize = 2;

pub fn encode(offset: u64, states: &ProducerStates) -> Vec<u8> {
    let mut buf =
        Vec::with_capacity(HEADER_LEN + states.len() * (PRODUCER_LEN + KEPT_BATCHES * BATCH_LEN));
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    buf.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for (id, entry) in states.iter() {
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&entry.epoch.to_le_bytes());
        buf.push(entry.batches.len() as u8);
        buf.push(0);
        buf.extend_from_slice(&entry.last_seen_ms.to_le_bytes());
        for b in &entry.batches {
            buf.extend_from_slice(&b.first_seq.to_le_bytes());
            buf.extend_from_slice(&b.last_seq.to_le_bytes());
            buf.extend_from_slice(&b.first_offset.to_le_bytes());
            buf.extend_from_slice(&b.last_offset.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&buf[16..]);
    buf[12..16].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Reads bytes at a position, failing (not panicking) past the end.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self
            .buf
            .get(self.at..self.at + N)
            .ok_or_else(|| format!("ends at byte {} inside a field", self.buf.len()))?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }
}

/// The offset and the state a snapshot holds, or why it cannot be trusted.
pub fn decode(buf: &[u8]) -> Result<(u64, ProducerStates), String> {
    if buf.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than its header", buf.len()));
    }
    if &buf[0..8] != SNAPSHOT_MAGIC {
        return Err("not a producer snapshot (bad magic)".into());
    }
    let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(format!(
            "version {version}, this server reads {SNAPSHOT_VERSION}"
        ));
    }
    let stored = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&buf[16..]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    let mut r = Reader { buf, at: 16 };
    let offset = u64::from_le_bytes(r.take()?);
    let count = u32::from_le_bytes(r.take()?);
    let mut states = ProducerStates::default();
    for _ in 0..count {
        let id = i64::from_le_bytes(r.take()?);
        let epoch = i16::from_le_bytes(r.take()?);
        let [batches, _] = r.take::<2>()?;
        let last_seen_ms = i64::from_le_bytes(r.take()?);
        if id < 0 || epoch < 0 || batches == 0 || usize::from(batches) > KEPT_BATCHES {
            return Err(format!(
                "producer {id}: epoch {epoch} and {batches} batches are impossible"
            ));
        }
        let mut entry = ProducerEntry {
            epoch,
            batches: Default::default(),
            last_seen_ms,
        };
        for _ in 0..batches {
            let b = BatchSeq {
                first_seq: i32::from_le_bytes(r.take()?),
                last_seq: i32::from_le_bytes(r.take()?),
                first_offset: u64::from_le_bytes(r.take()?),
                last_offset: u64::from_le_bytes(r.take()?),
            };
            let follows = entry
                .batches
                .back()
                .is_none_or(|p: &BatchSeq| b.first_offset > p.last_offset);
            if b.first_seq < 0
                || b.last_seq < 0
                || b.last_offset < b.first_offset
                || b.last_offset >= offset
                || !follows
            {
                return Err(format!(
                    "producer {id}: batch {b:?} is impossible below offset {offset}"
                ));
            }
            entry.batches.push_back(b);
        }
        if states.get(id).is_some() {
            return Err(format!("producer {id} appears twice"));
        }
        states.insert(id, entry);
    }
    if r.at != buf.len() {
        return Err(format!(
            "{} bytes after the last producer",
            buf.len() - r.at
        ));
    }
    Ok((offset, states))
}

/// Offsets of the snapshots in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if let Some(ParsedName::Snapshot(offset)) = entry.file_name().to_str().map(parse_file_name)
        {
            out.push(offset);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes a snapshot (synced, then renamed into place), then removes all but the
/// `KEPT_SNAPSHOTS` newest and any below `log_start`, which no open can use: the
/// batches between them and the log start are gone.
pub fn write(dir: &Path, offset: u64, bytes: &[u8], log_start: u64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = temp_path(&path);
    files::write_synced(&tmp, bytes)?;
    fs::rename(&tmp, &path).at(&path)?;
    let offsets = list(dir)?;
    let keep_from = offsets.len().saturating_sub(KEPT_SNAPSHOTS);
    for (i, &o) in offsets.iter().enumerate() {
        if (i < keep_from || o < log_start) && o != offset {
            remove(dir, o)?;
        }
    }
    Ok(())
}

pub fn remove(dir: &Path, offset: u64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).at(&path),
    }
}
