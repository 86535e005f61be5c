//! A share group's partitions, and their bytes on disk: a snapshot plus a journal of
//! `Change`s (tables in `storage-format.md`). Pure: `groups/store.rs` does the files.
//!
//! ```text
//! journal record: framed (groups/journal.rs), kind 2 | count u32 | entry * count
//! entry:    topic id [16] | partition u32 | tag u8 | fields
//!   tag 0 (slot):  offset u64 | state u8 | delivery count u16 | until i64
//!   tag 1 (start), 2 (reset): offset u64 | accepted u64 | dead-lettered u64 | lost u64
//! snapshot: "STRMSHRG" | version u32 | seq u64 | count u32 | entry * count | crc32
//! ```

use std::collections::HashMap;
use std::path::Path;

use super::window::{Change, SharePartition, State, Totals};
use crate::error::Result;
use crate::groups::journal::{self, Cursor};
use crate::groups::store::Journaled;
use crate::groups::Tp;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"STRMSHRG";
pub const SNAPSHOT_VERSION: u32 = 1;
/// Kind of a journal record of share-group changes.
pub const KIND_SHARE: u8 = 2;
/// Smallest entry: a slot change.
const MIN_ENTRY_LEN: usize = 16 + 4 + 1 + 8 + 1 + 2 + 8;

/// Every partition of a share group, by topic id and partition.
#[derive(Debug, Default, Clone)]
pub struct ShareState {
    pub partitions: HashMap<Tp, SharePartition>,
}

fn encode_entries(out: &mut Vec<u8>, entries: &[(Tp, Change)]) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for ((topic, partition), change) in entries {
        out.extend_from_slice(&topic.to_be_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        match *change {
            Change::Slot {
                offset,
                state,
                count,
                until,
            } => {
                out.push(0);
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(state as u8);
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&until.to_le_bytes());
            }
            Change::Start { offset, totals } | Change::Reset { offset, totals } => {
                out.push(if matches!(change, Change::Start { .. }) {
                    1
                } else {
                    2
                });
                for n in [offset, totals.accepted, totals.dead_lettered, totals.lost] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
}

fn decode_entries(cursor: &mut Cursor<'_>) -> Option<Vec<(Tp, Change)>> {
    let count = cursor.u32()? as usize;
    if count > cursor.remaining() / MIN_ENTRY_LEN {
        return None; // damage, not a reason to allocate
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let tp = (cursor.u128_be()?, cursor.u32()?);
        let change = match cursor.u8()? {
            0 => Change::Slot {
                offset: cursor.u64()?,
                state: State::from_u8(cursor.u8()?)?,
                count: cursor.u16()?,
                until: cursor.u64()? as i64,
            },
            tag @ (1 | 2) => {
                let offset = cursor.u64()?;
                let totals = Totals {
                    accepted: cursor.u64()?,
                    dead_lettered: cursor.u64()?,
                    lost: cursor.u64()?,
                };
                match tag {
                    1 => Change::Start { offset, totals },
                    _ => Change::Reset { offset, totals },
                }
            }
            _ => return None,
        };
        entries.push((tp, change));
    }
    Some(entries)
}

impl Journaled for ShareState {
    const PREFIX: &'static str = "share";
    type Entry = (Tp, Change);

    fn empty() -> Self {
        ShareState::default()
    }

    fn encode_record(seq: u64, entries: &[Self::Entry]) -> Vec<u8> {
        journal::frame(seq, KIND_SHARE, |out| encode_entries(out, entries))
    }

    fn replay(bytes: &[u8], seq: u64) -> (Vec<Vec<Self::Entry>>, usize, u64) {
        journal::replay(bytes, seq, |kind, cursor| {
            (kind == KIND_SHARE).then(|| decode_entries(cursor))?
        })
    }

    fn apply(&mut self, entries: Vec<Self::Entry>) {
        for (tp, change) in entries {
            let start = match change {
                Change::Slot { offset, .. } => offset,
                Change::Start { offset, .. } | Change::Reset { offset, .. } => offset,
            };
            self.partitions
                .entry(tp)
                .or_insert_with(|| SharePartition::new(start))
                .restore(change);
        }
    }

    fn encode_snapshot(&self, seq: u64) -> Vec<u8> {
        let mut entries = Vec::new();
        // In partition order: the same state always makes the same bytes.
        let mut partitions: Vec<_> = self.partitions.iter().collect();
        partitions.sort_by_key(|(tp, _)| **tp);
        for (tp, partition) in partitions {
            let mut changes = Vec::new();
            partition.snapshot(&mut changes);
            entries.extend(changes.into_iter().map(|c| (*tp, c)));
        }
        journal::snapshot(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, seq, |out| {
            encode_entries(out, &entries)
        })
    }

    fn decode_snapshot(bytes: &[u8], path: &Path) -> Result<(u64, Self)> {
        let kind = (SNAPSHOT_MAGIC, SNAPSHOT_VERSION, "share group");
        let (seq, entries) = journal::read_snapshot(bytes, path, kind, decode_entries)?;
        let mut state = ShareState::default();
        state.apply(entries);
        Ok((seq, state))
    }
}
