//! Log compaction (`cleanup.policy=compact`): the newest record of each key stays, older
//! ones go, and tombstones (a keyed record with an empty value) go once they are older
//! than `delete.retention.ms`. Offsets never change: a compacted segment has gaps, which
//! every reader skips.
//!
//! A pass, in the manner of `retention.rs`, keeps file work out of the caller's lock:
//! 1. `plan_compaction` (read lock, no I/O) picks the cleanable segments: the sealed
//!    ones from the log start whose newest record is at least `min.compaction.lag.ms`
//!    old and that lie before the recovery checkpoint's segment, and only if one of
//!    them has not been compacted yet (or a tombstone is due).
//! 2. `CompactionPlan::run` (no lock) maps every key of those segments to its newest
//!    offset (`KeyMap`, 24 bytes of data per key), then writes the records to keep into
//!    new segments in the `cleaning/` directory: consecutive kept records of an input
//!    batch become one batch marked `ATTR_COMPACTED` (a gap may precede it). Input
//!    segments are merged while the output stays within `segment.bytes`. The new files
//!    are synced, then a manifest naming old and new segments is written: the commit
//!    point (`swap.rs`).
//! 3. `Log::apply_compaction` (write lock) renames the old files away and the new ones
//!    into place; the returned job unlinks the old ones and finishes the manifest.
//!
//! A crash before the manifest leaves the old segments (open removes `cleaning/`); one
//! after it leaves the new ones (open completes the renames). Never a mix.
//!
//! A damaged input (a batch failing its checksum or header check) is left as it is,
//! and no output spans it: the segments around it are still compacted, so that one bad
//! batch cannot stop a partition's compaction for good. Its readable batches' keys
//! still count; a key whose newest record is past the damage keeps what is readable.
//! Tombstones behind it stay: older values of their keys in it are never removed.

mod batches;
mod keymap;
mod plan;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::read::SealedOpener;
use super::retention::SegmentSummary;
use super::segment::{Segment, SegmentLimits};
use super::swap::{Manifest, CLEANING_DIR};
use crate::error::{Error, IoContext, Result};
use batches::{for_each_batch, write_run, RecordSpan};
use keymap::KeyMap;

/// A topic's compaction settings, as the log applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// A segment is compacted only once its newest record is at least this old.
    pub min_lag_ms: u64,
    /// A tombstone is removed once it is at least this old.
    pub delete_retention_ms: u64,
    /// See `SegmentSummary::newest`: record times past this much after a segment was
    /// sealed are not believed.
    pub timestamp_after_max_ms: u64,
    /// Most distinct keys a pass maps; the segments past the one where the map fills
    /// wait for a later pass.
    pub max_keys: usize,
    /// Output segments merge inputs while they stay within this size.
    pub segment_bytes: u64,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_in: usize,
    pub segments_out: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub tombstones_removed: u64,
    pub keys: usize,
    /// Bytes the key map held at its largest (its table, as allocated).
    pub map_bytes: usize,
}

/// `plan_compaction`'s choice: compact these sealed segments.
#[must_use = "a compaction plan compacts nothing until it is run"]
pub struct CompactionPlan {
    dir: PathBuf,
    opener: SealedOpener,
    limits: SegmentLimits,
    /// Cleanable sealed segments from the log start, with their ends and summaries.
    inputs: Vec<(u64, u64, SegmentSummary)>,
    /// The first input the key map covers, and the offset in it from which it maps
    /// (where the last pass's map filled, or the first not compacted yet).
    map_from: usize,
    map_from_offset: u64,
    start: u64,
    generation: u64,
}

/// A pass's new segments, synced and committed by a manifest, to swap in.
#[must_use = "the new segments are not used until the compaction is applied"]
pub struct Compacted {
    /// None when the pass changed nothing (only `cleaned_upto` moves).
    pub(super) manifest: Option<Manifest>,
    pub(super) outputs: Vec<(u64, SegmentSummary)>,
    pub(super) generation: u64,
    pub(super) cleaned_upto: u64,
    /// Where the key map filled (the first record whose key did not fit), else
    /// `cleaned_upto`: the next incremental pass maps from here.
    pub(super) mapped_upto: u64,
    /// The earliest time a tombstone kept by this pass is due for removal.
    pub next_tombstone_due: Option<i64>,
    pub stats: CompactionStats,
}

/// A segment being written in `cleaning/`.
struct Output {
    segment: Segment,
    /// Base offsets of the input segments it replaces.
    inputs: Vec<u64>,
    /// A damaged input (or inputs left as they were) lies just before it: it must not
    /// be joined to the output before them.
    after_gap: bool,
    /// Some record of its inputs is not in it. Kept per output: records dropped from
    /// inputs that end up left as they are change nothing.
    changed: bool,
}

impl CompactionPlan {
    /// Maps the keys, writes the kept records into new segments, syncs them and commits
    /// the swap with a manifest (none when the pass would change nothing). Segments are
    /// opened through the shared cache, one at a time, so a pass over thousands of them
    /// holds no more maps than the cache allows.
    pub fn run(self, policy: &CompactionPolicy, now_ms: i64) -> Result<Compacted> {
        // A manifest left by an earlier pass whose last step failed names files in
        // `cleaning/`: finish it before this pass writes there.
        super::swap::finish_interrupted(&self.dir)?;
        let mut stats = CompactionStats::default();
        let mut map = KeyMap::new(policy.max_keys.max(1));
        // 1. The newest offset of every key from `map_from`, up to the segment where the
        //    map fills (that one is compacted with what was mapped of it). The inputs
        //    before `map_from`, compacted already, are only checked, so that a damaged
        //    one is known before any of its records is written.
        let mut mapped_end = self.inputs[self.map_from].0;
        let mut filled_at = None;
        let mut damaged = HashSet::new();
        for (i, &(base, end, _)) in self.inputs.iter().enumerate() {
            let segment = self.opener.open(base, end)?;
            let mapping = i >= self.map_from;
            let from = self.map_from_offset;
            let read = for_each_batch(&segment, |_, records| {
                for r in records.iter().filter(|r| mapping && r.offset >= from) {
                    if let Some(key) = r.key {
                        if !map.insert(key, r.offset) {
                            filled_at.get_or_insert(r.offset);
                        }
                    }
                }
                Ok(())
            });
            match read {
                Ok(()) => {}
                Err(err @ (Error::Corruption { .. } | Error::ChecksumMismatch { .. })) => {
                    tracing::warn!(%err, segment = base, "compaction leaves a damaged segment as it is");
                    damaged.insert(base);
                }
                Err(err) => return Err(err),
            }
            if mapping {
                mapped_end = end;
                if filled_at.is_some() {
                    break;
                }
            }
        }
        stats.keys = map.len();
        stats.map_bytes = map.peak_bytes;
        let inputs: Vec<(u64, u64, SegmentSummary)> = self
            .inputs
            .iter()
            .copied()
            .take_while(|&(_, end, _)| end <= mapped_end)
            .collect();
        // 2. The records to keep, into segments merged up to segment.bytes.
        let staging = self.dir.join(CLEANING_DIR);
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(&staging),
        }
        std::fs::create_dir(&staging).at(&staging)?;
        let keep_ms = i64::try_from(policy.delete_retention_ms).unwrap_or(i64::MAX);
        let tombstone_limit = now_ms.saturating_sub(keep_ms);
        let after_max = i64::try_from(policy.timestamp_after_max_ms).unwrap_or(i64::MAX);
        let mut outputs: Vec<Output> = Vec::new();
        let mut dropped_inputs: Vec<u64> = Vec::new(); // leading inputs with nothing kept
        let mut left: Vec<u64> = Vec::new(); // inputs left as they are
        let first_damaged = damaged.iter().min().copied();
        let mut gap = false;
        let mut next_tombstone_due: Option<i64> = None;
        for &(base, end, summary) in &inputs {
            if damaged.contains(&base) {
                left.push(base);
                gap = true;
                continue;
            }
            let segment = self.opener.open(base, end)?;
            stats.segments_in += 1;
            stats.bytes_read += segment.size();
            // A new output when this input would take the current one past segment.bytes,
            // past offsets relative to its base that fit in 32 bits (index entries), or
            // past its index's room.
            let start_new = gap
                || match outputs.last() {
                    None => true,
                    Some(out) => {
                        let out_base = out.segment.base();
                        out.segment.size() + summary.size > policy.segment_bytes
                            || end - out_base > u64::from(u32::MAX)
                            || out.segment.indexes_full()
                    }
                };
            if start_new {
                // An output still empty takes no new one after it: it joins the one
                // before, or (at the start) its inputs go without a replacement.
                if outputs.last().is_some_and(|o| o.segment.is_empty()) {
                    gap |= close_empty(&mut outputs, &mut dropped_inputs, &mut left, &staging)?;
                }
                let created = Segment::create(&staging, base, self.limits)?;
                outputs.push(Output {
                    segment: created,
                    inputs: Vec::new(),
                    after_gap: std::mem::take(&mut gap),
                    changed: false,
                });
            }
            let out = outputs.last_mut().expect("pushed above");
            out.inputs.push(base);
            for_each_batch(&segment, |header, records| {
                let mut run: Vec<&RecordSpan<'_>> = Vec::new();
                for r in records {
                    stats.records_read += 1;
                    if r.offset < self.start {
                        out.changed = true; // below the log start: never readable again
                        continue;
                    }
                    let newest = r.key.and_then(|k| map.newest(k));
                    let superseded = newest.is_some_and(|n| n > r.offset);
                    // A tombstone's age is its timestamp's, believed at most
                    // message.timestamp.after.max.ms past its segment's sealing.
                    let written = r
                        .timestamp_ms
                        .min(summary.sealed_ms.saturating_add(after_max));
                    // A tombstone behind a damaged segment stays: that segment is left
                    // as it is, older values of the key in it with it.
                    let removable = r.tombstone
                        && newest == Some(r.offset)
                        && first_damaged.is_none_or(|d| r.offset < d);
                    let expired = removable && written < tombstone_limit;
                    if superseded || expired {
                        out.changed = true;
                        stats.tombstones_removed += u64::from(expired);
                        if !run.is_empty() {
                            write_run(&mut out.segment, header, &run, now_ms)?;
                            run.clear();
                        }
                        continue;
                    }
                    if removable {
                        let due = written.saturating_add(keep_ms).saturating_add(1);
                        next_tombstone_due = Some(next_tombstone_due.map_or(due, |d| d.min(due)));
                    }
                    stats.records_kept += 1;
                    run.push(r);
                }
                if !run.is_empty() {
                    write_run(&mut out.segment, header, &run, now_ms)?;
                }
                Ok(())
            })?;
        }
        if outputs.last().is_some_and(|o| o.segment.is_empty()) {
            close_empty(&mut outputs, &mut dropped_inputs, &mut left, &staging)?;
        }
        let cleaned_upto = inputs.last().map_or(self.start, |i| i.1);
        let mapped_upto = filled_at.map_or(cleaned_upto, |at| at.min(cleaned_upto));
        let changed = outputs.iter().any(|o| o.changed);
        let merged = outputs.iter().any(|o| o.inputs.len() > 1) || !dropped_inputs.is_empty();
        let replaced: Vec<u64> = inputs
            .iter()
            .map(|i| i.0)
            .filter(|base| !left.contains(base))
            .collect();
        if (!changed && !merged) || replaced.is_empty() {
            drop(outputs);
            std::fs::remove_dir_all(&staging).at(&staging)?;
            return Ok(Compacted {
                manifest: None,
                outputs: Vec::new(),
                generation: self.generation,
                cleaned_upto,
                mapped_upto,
                next_tombstone_due,
                stats,
            });
        }
        // 3. Synced new segments, then the manifest that commits them.
        let mut new = Vec::with_capacity(outputs.len());
        for out in &mut outputs {
            out.segment.seal()?;
            out.segment.sync_log()?;
            out.segment.sync_indexes()?;
            stats.bytes_written += out.segment.size();
            new.push((
                out.segment.base(),
                SegmentSummary {
                    size: out.segment.size(),
                    max_timestamp: out.segment.max_timestamp(),
                    sealed_ms: now_ms,
                },
            ));
        }
        super::files::sync_dir(&staging)?;
        stats.segments_out = new.len();
        let manifest = Manifest {
            inputs: replaced,
            outputs: new.iter().map(|(b, _)| *b).collect(),
            cleaned_upto,
        };
        manifest.write(&self.dir)?;
        Ok(Compacted {
            manifest: Some(manifest),
            outputs: new,
            generation: self.generation,
            cleaned_upto,
            mapped_upto,
            next_tombstone_due,
            stats,
        })
    }
}

/// Resolves an output that ended up empty: its inputs join the output before it, or go
/// without a replacement if there is none (the log then starts later; there was nothing
/// left to read before). After a damaged input they can do neither (an output would
/// span it), and are left as they are: returns true then.
fn close_empty(
    outputs: &mut Vec<Output>,
    dropped: &mut Vec<u64>,
    left: &mut Vec<u64>,
    staging: &Path,
) -> Result<bool> {
    let empty = outputs.pop().expect("an output to close");
    let base = empty.segment.base();
    drop(empty.segment);
    remove_staged(staging, base)?;
    if empty.after_gap {
        left.extend(empty.inputs);
        return Ok(true);
    }
    match outputs.last_mut() {
        Some(previous) => previous.inputs.extend(empty.inputs),
        None => dropped.extend(empty.inputs),
    }
    Ok(false)
}

/// Removes a staged segment's files (an output that ended up empty).
fn remove_staged(staging: &Path, base: u64) -> Result<()> {
    super::recovery::remove_segment_files(staging, base)
}
