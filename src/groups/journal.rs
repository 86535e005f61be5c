//! The framing of a group's journal records, shared by consumer groups' offsets and
//! share groups' state (byte tables in `storage-format.md`):
//!
//! ```text
//! length u32 | crc32 u32 | seq u64 | kind u8 | body
//! ```
//! `length` counts the bytes after `seq`; the CRC covers `seq` and those bytes. `seq` is
//! the record's position in the group's whole history of journal bytes, so a record left
//! over from before the journal was last rewritten from its start is never mistaken for
//! a new one. A snapshot is `magic [8] | version u32 | seq u64 | body | crc32` (the
//! CRC over everything before it). Pure: the files are `store.rs`'s.

use std::path::Path;

use crate::error::{Error, Result};

/// length, crc, seq.
pub const RECORD_HEADER_LEN: usize = 16;

/// A reader over bytes that says `None` when they run out.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn u128_be(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.take(16)?.try_into().ok()?))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn remaining(&self) -> usize {
        self.0.len()
    }
}

/// One journal record at history position `seq`: `body` writes the bytes after `kind`.
pub fn frame(seq: u64, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0u8; RECORD_HEADER_LEN];
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out.push(kind);
    body(&mut out);
    let len = (out.len() - RECORD_HEADER_LEN) as u32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Journal records from the start of `bytes`, the first expected at history position
/// `seq`: each one's kind and body, until the first that is torn, damaged, from an
/// older pass over the file, or refused by `decode` (what follows it was never
/// acknowledged). Returns the decoded records, the valid length and the next position.
///
/// The file may start before `seq`: a snapshot whose writer went away before it
/// rewrote the journal (a request cancelled while the snapshot was written) still
/// lands, and what is appended after it continues the old records. Those up to `seq`
/// are in the snapshot and skipped; the chain of positions must reach `seq` exactly.
pub fn replay<T>(
    bytes: &[u8],
    seq: u64,
    mut decode: impl FnMut(u8, &mut Cursor<'_>) -> Option<T>,
) -> (Vec<T>, usize, u64) {
    let mut records = Vec::new();
    let first = Cursor(bytes.get(8..RECORD_HEADER_LEN).unwrap_or_default()).u64();
    let (mut at, mut next_seq) = (0usize, first.filter(|&f| f < seq).unwrap_or(seq));
    loop {
        let mut header = Cursor(&bytes[at..]);
        let (Some(len), Some(crc), Some(record_seq)) = (header.u32(), header.u32(), header.u64())
        else {
            break;
        };
        let len = len as usize;
        if record_seq != next_seq || len > bytes.len() - at - RECORD_HEADER_LEN {
            break;
        }
        let body = &bytes[at + 8..at + RECORD_HEADER_LEN + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        // A position that would pass u64::MAX is damage (a history of 16 EiB is not).
        let Some(next) = next_seq.checked_add((RECORD_HEADER_LEN + len) as u64) else {
            break;
        };
        if record_seq < seq {
            // In the snapshot: skipped, if it ends at or before the snapshot's position.
            if next > seq {
                break;
            }
        } else {
            let mut cursor = Cursor(&body[8..]);
            let decoded = match cursor.u8() {
                Some(kind) => decode(kind, &mut cursor),
                None => None,
            };
            let Some(decoded) = decoded.filter(|_| cursor.is_empty()) else {
                break;
            };
            records.push(decoded);
        }
        at += RECORD_HEADER_LEN + len;
        next_seq = next;
    }
    if records.is_empty() {
        // Nothing after the snapshot: the file is written again from its start.
        return (records, 0, seq);
    }
    (records, at, next_seq)
}

/// A snapshot's bytes: `magic`, `version`, `seq`, what `body` writes, and the CRC.
pub fn snapshot(
    magic: &[u8; 8],
    version: u32,
    seq: u64,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    body(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a snapshot's magic, CRC and version, and reads its body with `decode`, which
/// must take all of it. Returns the journal position it continues from and the body.
/// `what` names the kind of snapshot in errors.
pub fn read_snapshot<T>(
    bytes: &[u8],
    path: &Path,
    (magic, version, what): (&[u8; 8], u32, &str),
    decode: impl FnOnce(&mut Cursor<'_>) -> Option<T>,
) -> Result<(u64, T)> {
    let corrupt = |reason: &str| Error::Corruption {
        path: path.to_path_buf(),
        position: 0,
        reason: reason.to_string(),
    };
    if bytes.len() < 8 + 4 + 8 + 4 || &bytes[..8] != magic {
        return Err(corrupt(&format!(
            "not a strom {what} snapshot (bad magic or too short)"
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut cursor = Cursor(&body[8..]);
    let found = cursor.u32().expect("length checked");
    if found != version {
        return Err(corrupt(&format!(
            "snapshot version {found}, this strom reads {version}"
        )));
    }
    let seq = cursor.u64().expect("length checked");
    let decoded = decode(&mut cursor)
        .filter(|_| cursor.is_empty())
        .ok_or_else(|| corrupt("entries do not parse"))?;
    Ok((seq, decoded))
}
