//! Committed offsets in memory, and their byte layouts on disk (tables in
//! `storage-format.md`). Pure: `store.rs` does the file work.
//!
//! A group's offsets are a snapshot plus a journal. A journal record is one commit (or
//! reset), all of its offsets or none:
//!
//! ```text
//! length u32 | crc32 u32 | seq u64 | kind u8 | count u32 | entry * count
//! entry: topic id [16] | partition u32 | offset u64 | commit time i64 | metadata length u16 | metadata
//! ```
//! (framed as every group journal record is: `journal.rs`). The snapshot is `magic | version u32 | seq u64 | count u32 | entries | crc32`,
//! where `seq` is where the journal continues.

use std::collections::HashMap;
use std::path::Path;

use super::journal::{self, Cursor};
use super::{TopicId, Tp};
use crate::error::Result;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"STROMGRP";
pub const SNAPSHOT_VERSION: u32 = 1;
pub use super::journal::RECORD_HEADER_LEN;
/// Kind of a journal record that sets offsets.
pub const KIND_OFFSETS: u8 = 1;
/// Largest metadata string stored with an offset (Kafka's default too).
pub const MAX_METADATA_BYTES: usize = 4096;
/// Bytes of an offset entry before its metadata.
pub const ENTRY_FIXED_LEN: usize = 16 + 4 + 8 + 8 + 2;

/// An offset as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A group's committed offsets, by topic id and partition: per topic, a vector indexed
/// by partition (partitions are numbered densely from 0). Ten thousand groups of a
/// thousand offsets each take about 32 bytes per offset this way; a hash map of
/// (topic, partition) keys took over 200 (its power-of-two tables and padding).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offsets {
    topics: HashMap<TopicId, Vec<Stored>>,
}

/// One partition's slot; `commit_ms == NONE` when nothing is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    offset: u64,
    commit_ms: i64,
    metadata: Option<Box<str>>,
}

const NONE: i64 = i64::MIN;

impl Stored {
    /// The offset as committed, if one is.
    fn committed(&self) -> Option<Committed> {
        (self.commit_ms != NONE).then(|| Committed {
            offset: self.offset,
            metadata: self.metadata.as_deref().unwrap_or_default().to_string(),
            commit_ms: self.commit_ms,
        })
    }
}

/// Highest partition number kept: commits are checked against their topic's partitions
/// (at most the server's max_partitions), so only damage could name a larger one, and it
/// must not make a vector of billions of slots.
const MAX_PARTITION: u32 = 1 << 20;

impl Offsets {
    pub fn apply(&mut self, entries: impl IntoIterator<Item = (Tp, Committed)>) {
        for ((topic, partition), c) in entries {
            if partition > MAX_PARTITION {
                tracing::warn!(partition, "ignoring an offset of an impossible partition");
                continue;
            }
            let slots = self.topics.entry(topic).or_default();
            let index = partition as usize;
            if slots.len() <= index {
                slots.resize(
                    index + 1,
                    Stored {
                        offset: 0,
                        commit_ms: NONE,
                        metadata: None,
                    },
                );
            }
            slots[index] = Stored {
                offset: c.offset,
                commit_ms: c.commit_ms.max(NONE + 1),
                metadata: (!c.metadata.is_empty()).then(|| c.metadata.into_boxed_str()),
            };
        }
    }

    /// Forgets a partition's committed offset; the offset it was, if one was.
    pub fn remove(&mut self, (topic, partition): &Tp) -> Option<Committed> {
        let slot = self.topics.get_mut(topic)?.get_mut(*partition as usize)?;
        let committed = slot.committed()?;
        *slot = Stored {
            offset: 0,
            commit_ms: NONE,
            metadata: None,
        };
        Some(committed)
    }

    pub fn get(&self, (topic, partition): &Tp) -> Option<Committed> {
        self.topics
            .get(topic)?
            .get(*partition as usize)?
            .committed()
    }

    /// The committed offset alone (`get` copies the metadata too).
    pub fn offset(&self, (topic, partition): &Tp) -> Option<u64> {
        let stored = self.topics.get(topic)?.get(*partition as usize)?;
        (stored.commit_ms != NONE).then_some(stored.offset)
    }

    /// The committed offsets of `topic`'s partitions from `from` on, in order.
    pub fn of_topic(
        &self,
        topic: TopicId,
        from: u32,
    ) -> impl Iterator<Item = (u32, Committed)> + '_ {
        let slots = self.topics.get(&topic).map_or(&[][..], Vec::as_slice);
        slots
            .iter()
            .enumerate()
            .skip(from as usize)
            .filter_map(|(p, s)| Some((p as u32, s.committed()?)))
    }

    /// Whether any partition of `topic` has a committed offset.
    pub fn has_topic(&self, topic: TopicId) -> bool {
        self.topics
            .get(&topic)
            .is_some_and(|slots| slots.iter().any(|s| s.commit_ms != NONE))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Tp, Committed)> + '_ {
        self.topics.iter().flat_map(|(topic, slots)| {
            slots
                .iter()
                .enumerate()
                .filter_map(|(p, s)| Some(((*topic, p as u32), s.committed()?)))
        })
    }

    /// The committed offsets alone, without copying their metadata.
    pub fn offsets(&self) -> impl Iterator<Item = (Tp, u64)> + '_ {
        self.topics.iter().flat_map(|(topic, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.commit_ms != NONE)
                .map(|(p, s)| ((*topic, p as u32), s.offset))
        })
    }

    /// Offsets committed (counted, not built: `iter` copies each one's metadata).
    pub fn len(&self) -> usize {
        self.topics
            .values()
            .flatten()
            .filter(|s| s.commit_ms != NONE)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the offsets of topics `keep` says are gone.
    pub fn retain_topics(&mut self, keep: impl Fn(TopicId) -> bool) {
        self.topics.retain(|topic, _| keep(*topic));
    }
}

fn encode_entries(out: &mut Vec<u8>, entries: &[(Tp, Committed)]) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for ((topic, partition), c) in entries {
        out.extend_from_slice(&topic.to_be_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&c.commit_ms.to_le_bytes());
        out.extend_from_slice(&(c.metadata.len() as u16).to_le_bytes());
        out.extend_from_slice(c.metadata.as_bytes());
    }
}

fn decode_entries(cursor: &mut Cursor<'_>) -> Option<Vec<(Tp, Committed)>> {
    let count = cursor.u32()? as usize;
    // Every entry takes at least ENTRY_FIXED_LEN bytes: a count the bytes cannot hold is
    // damage, not a reason to allocate.
    if count > cursor.remaining() / ENTRY_FIXED_LEN {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let id = cursor.u128_be()?;
        let partition = cursor.u32()?;
        let offset = cursor.u64()?;
        let commit_ms = cursor.u64()? as i64;
        let len = cursor.u16()? as usize;
        let metadata = String::from_utf8(cursor.take(len)?.to_vec()).ok()?;
        entries.push((
            (id, partition),
            Committed {
                offset,
                metadata,
                commit_ms,
            },
        ));
    }
    Some(entries)
}

/// One journal record at history position `seq`.
pub fn encode_record(seq: u64, entries: &[(Tp, Committed)]) -> Vec<u8> {
    journal::frame(seq, KIND_OFFSETS, |out| encode_entries(out, entries))
}

/// What a journal holds from history position `seq` on.
#[derive(Debug, Default)]
pub struct Replayed {
    pub records: Vec<Vec<(Tp, Committed)>>,
    /// Bytes of the journal that are valid records.
    pub valid_len: usize,
    /// History position after the last valid record.
    pub next_seq: u64,
}

/// Reads the journal records in `bytes` that follow history position `seq` (the
/// snapshot's), and stops at the first that is torn, damaged or from an older pass over
/// the file: what follows it was never acknowledged. See `journal::replay` for a file
/// that starts before `seq`.
pub fn replay(bytes: &[u8], seq: u64) -> Replayed {
    let (records, valid_len, next_seq) = journal::replay(bytes, seq, |kind, cursor| {
        (kind == KIND_OFFSETS).then(|| decode_entries(cursor))?
    });
    Replayed {
        records,
        valid_len,
        next_seq,
    }
}

pub fn encode_snapshot(seq: u64, offsets: &Offsets) -> Vec<u8> {
    let entries: Vec<(Tp, Committed)> = offsets.iter().collect();
    journal::snapshot(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, seq, |out| {
        encode_entries(out, &entries)
    })
}

/// The journal position and offsets of a snapshot file's bytes.
pub fn decode_snapshot(bytes: &[u8], path: &Path) -> Result<(u64, Offsets)> {
    let kind = (SNAPSHOT_MAGIC, SNAPSHOT_VERSION, "group");
    let (seq, entries) = journal::read_snapshot(bytes, path, kind, decode_entries)?;
    let mut offsets = Offsets::default();
    offsets.apply(entries);
    Ok((seq, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: u128, partition: u32, offset: u64, metadata: &str) -> (Tp, Committed) {
        (
            (topic, partition),
            Committed {
                offset,
                metadata: metadata.into(),
                commit_ms: 1_700_000_000_000,
            },
        )
    }

    #[test]
    fn records_replay_in_order_and_stop_at_a_torn_tail() {
        let a = encode_record(0, &[entry(1, 0, 5, "x")]);
        let b = encode_record(a.len() as u64, &[entry(1, 0, 9, ""), entry(2, 3, 1, "é")]);
        let mut journal = [a.clone(), b.clone()].concat();
        let replayed = replay(&journal, 0);
        assert_eq!(replayed.records.len(), 2);
        assert_eq!(replayed.records[1][1], entry(2, 3, 1, "é"));
        assert_eq!(replayed.next_seq, journal.len() as u64);
        journal.truncate(journal.len() - 1);
        let torn = replay(&journal, 0);
        assert_eq!((torn.records.len(), torn.valid_len), (1, a.len()));
    }

    #[test]
    fn records_of_an_older_pass_over_the_file_are_not_replayed() {
        // The journal was rewritten from its start at history position 1000; an old
        // record (position 0) follows the new one in the file.
        let new = encode_record(1000, &[entry(1, 0, 50, "")]);
        let stale = encode_record(0, &[entry(1, 0, 7, "")]);
        let journal = [new.clone(), stale].concat();
        let replayed = replay(&journal, 1000);
        assert_eq!(replayed.records, vec![vec![entry(1, 0, 50, "")]]);
        assert_eq!(replayed.valid_len, new.len());
    }

    #[test]
    fn records_after_a_snapshot_the_journal_was_not_rewritten_for_are_replayed() {
        // A snapshot at position a.len() landed, and its writer went away before it
        // rewrote the journal: b was appended after a.
        let a = encode_record(0, &[entry(1, 0, 5, "")]);
        let b = encode_record(a.len() as u64, &[entry(1, 0, 9, "")]);
        let journal = [a.clone(), b.clone()].concat();
        let replayed = replay(&journal, a.len() as u64);
        assert_eq!(replayed.records, vec![vec![entry(1, 0, 9, "")]]);
        assert_eq!(replayed.valid_len, journal.len());
        assert_eq!(replayed.next_seq, journal.len() as u64);
        // Only if the chain reaches the snapshot's position exactly.
        let astray = replay(&journal, a.len() as u64 - 1);
        assert!(astray.records.is_empty());
        assert_eq!((astray.valid_len, astray.next_seq), (0, a.len() as u64 - 1));
        // Nothing after the snapshot: written again from the start.
        let covered = replay(&journal, journal.len() as u64);
        assert!(covered.records.is_empty());
        assert_eq!(
            (covered.valid_len, covered.next_seq),
            (0, journal.len() as u64)
        );
    }

    #[test]
    fn a_position_past_the_end_of_u64_ends_the_replay() {
        let seq = u64::MAX - 10;
        let journal = encode_record(seq, &[entry(1, 0, 5, "")]);
        let replayed = replay(&journal, seq);
        assert!(replayed.records.is_empty());
        assert_eq!(replayed.next_seq, seq);
    }

    #[test]
    fn a_flipped_bit_ends_the_replay() {
        let mut journal = encode_record(0, &[entry(1, 0, 5, "")]);
        journal[20] ^= 1;
        assert!(replay(&journal, 0).records.is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut offsets = Offsets::default();
        offsets.apply([entry(1, 0, 5, "a"), entry(7, 2, 9, "")]);
        let path = Path::new("offsets.snap");
        let bytes = encode_snapshot(77, &offsets);
        assert_eq!(decode_snapshot(&bytes, path).unwrap(), (77, offsets));
        let mut damaged = bytes.clone();
        damaged[30] ^= 1;
        assert!(decode_snapshot(&damaged, path).is_err());
        assert!(decode_snapshot(&bytes[..10], path).is_err());
    }
}
