//! The `names` journal's records (see `storage-format.md`, "Producer ids"), and reading
//! it back with a torn last record told apart from damage.

use std::fs;
use std::path::Path;

use super::MAX_NAME_BYTES;
use crate::error::{IoContext, Result};

const RECORD_HEADER: usize = 8;

pub(super) fn encode_record(name: &str, id: i64, epoch: i16) -> Vec<u8> {
    let mut body = Vec::with_capacity(10 + name.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&epoch.to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The bytes of a name's record in the journal.
pub(super) fn record_len(name: &str) -> u64 {
    (RECORD_HEADER + 10 + name.len()) as u64
}

/// A journal holding one record per name, its newest: what a rewrite keeps.
pub(super) fn encode_names<'a>(
    names: impl Iterator<Item = (&'a String, &'a (i64, i16))>,
) -> Vec<u8> {
    names
        .flat_map(|(name, &(id, epoch))| encode_record(name, id, epoch))
        .collect()
}

/// The records of a names journal, and where the valid ones end (with why, if early).
fn decode_records(buf: &[u8]) -> (Vec<(String, i64, i16)>, usize, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let bad = |why: String| Some(format!("byte {at}: {why}"));
        let Some(head) = buf.get(at..at + RECORD_HEADER) else {
            return (out, at, bad("a record header cut short".into()));
        };
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let Some(body) = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return (out, at, bad(format!("a record of {len} bytes cut short")));
        };
        if !(11..=10 + MAX_NAME_BYTES).contains(&len) || crc32fast::hash(body) != crc {
            return (out, at, bad("a record fails its checksum".into()));
        }
        let id = i64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
        let epoch = i16::from_le_bytes(body[8..10].try_into().expect("2 bytes"));
        let Ok(name) = std::str::from_utf8(&body[10..]) else {
            return (out, at, bad("a name that is not UTF-8".into()));
        };
        out.push((name.to_string(), id, epoch));
        at += RECORD_HEADER + len;
    }
    (out, at, None)
}

/// What a journal holds: its valid records; its length; whether it ends in anything
/// else; whether that is a torn last record (trusted) rather than damage.
pub(super) struct Read {
    pub records: Vec<(String, i64, i16)>,
    pub len: usize,
    pub damaged: bool,
    pub trusted: bool,
}

pub(super) fn read(names_path: &Path) -> Result<Read> {
    let bytes = match fs::read(names_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).at(names_path),
    };
    let (records, valid, damage) = decode_records(&bytes);
    let mut trusted = true;
    if let Some(why) = &damage {
        // A write a crash cut short (an InitProducer that never answered) is the last
        // record: shorter than the largest one, and either zeros (blocks allocated,
        // never written) or a plausible length that runs past the end of the file.
        // Anything else, a bad length or checksum in the middle included, is damage.
        let rest = &bytes[valid..];
        let longest = RECORD_HEADER + 10 + MAX_NAME_BYTES;
        let runs_past = |rest: &[u8]| {
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            (11..=10 + MAX_NAME_BYTES).contains(&len) && RECORD_HEADER + len > rest.len()
        };
        let torn_tail = rest.len() < longest
            && (rest.len() < RECORD_HEADER || rest.iter().all(|&b| b == 0) || runs_past(rest));
        trusted = torn_tail;
        if torn_tail {
            tracing::warn!(path = %names_path.display(), %why, "cutting a torn last record of the producer names");
        } else {
            tracing::error!(path = %names_path.display(), %why, "producer names are damaged; the records after the damage are lost, so every named producer is fenced and gets a new id at its next InitProducer");
        }
    }
    Ok(Read {
        len: bytes.len(),
        damaged: damage.is_some(),
        records,
        trusted,
    })
}
