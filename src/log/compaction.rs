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

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use super::format::{seal_crc, BatchHeader, ATTR_COMPACTED, FORMAT_VERSION, HEADER_LEN};
use super::log::Log;
use super::read::SealedOpener;
use super::record::parse_record;
use super::retention::SegmentSummary;
use super::segment::{Segment, SegmentLimits};
use super::swap::{Manifest, CLEANING_DIR};
use crate::error::{Error, IoContext, Result};

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
    /// The earliest time a tombstone kept by this pass is due for removal.
    pub next_tombstone_due: Option<i64>,
    pub stats: CompactionStats,
}

impl Log {
    /// Which segments a compaction pass would rewrite now (no I/O); None when nothing
    /// new is cleanable and no tombstone is due. `tombstone_due` is what the last pass
    /// reported (None when unknown, as after a restart: then a pass runs).
    pub fn plan_compaction(
        &self,
        policy: &CompactionPolicy,
        now_ms: i64,
        tombstone_due: Option<Option<i64>>,
    ) -> Option<CompactionPlan> {
        let start = self.log_start_offset();
        let lag = i64::try_from(policy.min_lag_ms).unwrap_or(i64::MAX);
        let inputs: Vec<(u64, u64, SegmentSummary)> = self
            .sealed
            .iter()
            .map(|(&base, summary)| (base, self.sealed_end(base), *summary))
            .filter(|&(_, end, _)| end > start)
            .take_while(|(_, _, s)| {
                s.newest(policy.timestamp_after_max_ms) <= now_ms.saturating_sub(lag)
            })
            // Only segments wholly before the recovery checkpoint's: a crash recovery
            // scans from the checkpoint's position in its segment, which must still be
            // the file it was taken in (and segments before it are synced).
            .take_while(|&(_, end, _)| end <= self.checkpoint.segment_base)
            .collect();
        let dirty = inputs.iter().any(|&(_, end, _)| end > self.cleaned_upto);
        let due = match tombstone_due {
            None => true,
            Some(Some(at)) => at <= now_ms,
            Some(None) => false,
        };
        if inputs.is_empty() || !(dirty || due) {
            return None;
        }
        Some(CompactionPlan {
            dir: self.dir.clone(),
            opener: self.opener(),
            limits: Self::limits(&self.config, true),
            inputs,
            start,
            generation: self.generation,
        })
    }
}

/// The newest offset of each key, keyed by a 128-bit hash of the key (two SipHash-1-3
/// hashes with keys random per pass): 16 bytes of hash and 8 of offset per key, as
/// Kafka's 24. Two keys share a hash with a chance of about n²/2¹²⁹, so that a record
/// would be removed for another key's newer one: for a billion keys, 10⁻²¹.
struct KeyMap {
    map: HashMap<u128, u64, BuildHasherDefault<LowBits>>,
    hashers: (RandomState, RandomState),
    max_keys: usize,
    peak_bytes: usize,
}

impl KeyMap {
    fn new(max_keys: usize) -> KeyMap {
        KeyMap {
            map: HashMap::default(),
            hashers: (RandomState::new(), RandomState::new()),
            max_keys,
            peak_bytes: 0,
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let (a, b) = (self.hashers.0.hash_one(key), self.hashers.1.hash_one(key));
        (u128::from(a) << 64) | u128::from(b)
    }

    /// Records `offset` as the newest of `key`; false when the key is new and the map
    /// is full.
    fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        let hash = self.hash(key);
        if self.map.len() >= self.max_keys && !self.map.contains_key(&hash) {
            return false;
        }
        self.map.insert(hash, offset);
        // Buckets of 24 bytes and a control byte each.
        self.peak_bytes = self.peak_bytes.max(self.map.capacity() * 8 / 7 * 25);
        true
    }

    fn newest(&self, key: &[u8]) -> Option<u64> {
        self.map.get(&self.hash(key)).copied()
    }
}

/// The map's keys are already uniform hashes: use their low bits as they are.
#[derive(Default)]
struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// One record of a stored batch: its offset, key, whether it is a tombstone, its
/// timestamp, and its bytes (tag, length and body) within the batch.
struct RecordSpan<'a> {
    offset: u64,
    key: Option<&'a [u8]>,
    tombstone: bool,
    timestamp_ms: i64,
    bytes: &'a [u8],
}

/// The batches of a sealed segment, each with its records' spans.
fn for_each_batch<'a>(
    segment: &'a Segment,
    mut f: impl FnMut(&BatchHeader, &[RecordSpan<'a>]) -> Result<()>,
) -> Result<()> {
    let bytes = segment.bytes();
    let mut pos = 0usize;
    let mut spans = Vec::new();
    while pos < bytes.len() {
        let header = segment.header_at(pos as u64, None)?;
        let batch = &bytes[pos..pos + header.length as usize];
        super::format::check_crc(batch, &header, segment.log_path(), pos as u64)?;
        spans.clear();
        let mut rest = &batch[HEADER_LEN..];
        while !rest.is_empty() {
            let before = rest;
            let record = parse_record(&mut rest).map_err(|reason| Error::Corruption {
                path: segment.log_path().to_path_buf(),
                position: pos as u64,
                reason,
            })?;
            spans.push(RecordSpan {
                offset: record.offset,
                key: record.key,
                tombstone: record.key.is_some() && record.value.is_empty(),
                timestamp_ms: record.timestamp_ms,
                bytes: &before[..before.len() - rest.len()],
            });
        }
        f(&header, &spans)?;
        pos += header.length as usize;
    }
    Ok(())
}

/// A segment being written in `cleaning/`.
struct Output {
    segment: Segment,
    /// Base offsets of the input segments it replaces.
    inputs: Vec<u64>,
}

impl CompactionPlan {
    /// Maps the keys, writes the kept records into new segments, syncs them and commits
    /// the swap with a manifest (none when the pass would change nothing).
    pub fn run(self, policy: &CompactionPolicy, now_ms: i64) -> Result<Compacted> {
        let mut stats = CompactionStats::default();
        let mut map = KeyMap::new(policy.max_keys.max(1));
        let mut opened = Vec::new();
        // 1. The newest offset of every key, up to the segment where the map fills.
        'map: for &(base, end, summary) in &self.inputs {
            let segment = self.opener.open(base, end)?;
            let mut full = false;
            for_each_batch(&segment, |_, records| {
                for r in records {
                    if let Some(key) = r.key {
                        if !map.insert(key, r.offset) {
                            full = true;
                        }
                    }
                }
                Ok(())
            })?;
            opened.push((segment, summary));
            if full {
                break 'map; // this segment is compacted with what was mapped of it
            }
        }
        stats.keys = map.map.len();
        stats.map_bytes = map.peak_bytes;
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
        let mut next_tombstone_due: Option<i64> = None;
        let mut changed = false;
        for (segment, summary) in &opened {
            stats.segments_in += 1;
            stats.bytes_read += segment.size();
            let start_new = match outputs.last() {
                None => true,
                Some(out) => {
                    !out.segment.is_empty()
                        && out.segment.size() + summary.size > policy.segment_bytes
                }
            };
            if start_new {
                let created = Segment::create(&staging, segment.base(), self.limits)?;
                outputs.push(Output {
                    segment: created,
                    inputs: Vec::new(),
                });
            }
            let out = outputs.last_mut().expect("pushed above");
            out.inputs.push(segment.base());
            for_each_batch(segment, |header, records| {
                let mut run: Vec<&RecordSpan<'_>> = Vec::new();
                for r in records {
                    stats.records_read += 1;
                    if r.offset < self.start {
                        changed = true; // below the log start: never readable again
                        continue;
                    }
                    let newest = r.key.and_then(|k| map.newest(k));
                    let superseded = newest.is_some_and(|n| n > r.offset);
                    // A tombstone's age is its timestamp's, believed at most
                    // message.timestamp.after.max.ms past its segment's sealing.
                    let written = r
                        .timestamp_ms
                        .min(summary.sealed_ms.saturating_add(after_max));
                    let expired =
                        r.tombstone && newest == Some(r.offset) && written < tombstone_limit;
                    if superseded || expired {
                        changed = true;
                        stats.tombstones_removed += u64::from(expired);
                        if !run.is_empty() {
                            write_run(&mut out.segment, header, &run, now_ms)?;
                            run.clear();
                        }
                        continue;
                    }
                    if r.tombstone && newest == Some(r.offset) {
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
        // An output holds nothing only if no input after it held anything either (an
        // empty output takes the next input in): it joins the output before it, or if
        // there is none, its inputs go without a replacement (the log then starts at
        // the next segment: there was nothing left to read before it).
        if outputs.last().is_some_and(|o| o.segment.is_empty()) {
            let empty = outputs.pop().expect("checked");
            let base = empty.segment.base();
            drop(empty.segment);
            remove_staged(&staging, base)?;
            match outputs.last_mut() {
                Some(previous) => previous.inputs.extend(empty.inputs),
                None => dropped_inputs.extend(empty.inputs),
            }
        }
        let cleaned_upto = opened.last().map_or(self.start, |(s, _)| {
            self.inputs
                .iter()
                .find(|i| i.0 == s.base())
                .map_or(s.base(), |i| i.1)
        });
        let merged = outputs.iter().any(|o| o.inputs.len() > 1) || !dropped_inputs.is_empty();
        if !changed && !merged {
            drop(outputs);
            std::fs::remove_dir_all(&staging).at(&staging)?;
            return Ok(Compacted {
                manifest: None,
                outputs: Vec::new(),
                generation: self.generation,
                cleaned_upto,
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
            inputs: opened.iter().map(|(s, _)| s.base()).collect(),
            outputs: new.iter().map(|(b, _)| *b).collect(),
            cleaned_upto,
        };
        manifest.write(&self.dir)?;
        Ok(Compacted {
            manifest: Some(manifest),
            outputs: new,
            generation: self.generation,
            cleaned_upto,
            next_tombstone_due,
            stats,
        })
    }
}

/// Appends consecutive records of one input batch as one compacted batch.
fn write_run(
    out: &mut Segment,
    from: &BatchHeader,
    run: &[&RecordSpan<'_>],
    now_ms: i64,
) -> Result<()> {
    let first = run[0];
    let records_len: usize = run.iter().map(|r| r.bytes.len()).sum();
    let header = BatchHeader {
        base_offset: first.offset,
        length: (HEADER_LEN + records_len) as u32,
        crc: 0,
        version: FORMAT_VERSION,
        attributes: from.attributes | ATTR_COMPACTED,
        record_count: run.len() as u32,
        first_timestamp: first.timestamp_ms,
        max_timestamp: run
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(first.timestamp_ms),
        producer: super::format::ProducerInfo {
            base_sequence: if from.producer.base_sequence < 0 {
                from.producer.base_sequence
            } else {
                from.producer
                    .base_sequence
                    .wrapping_add((first.offset - from.base_offset) as i32)
            },
            ..from.producer
        },
    };
    // The CRC covers the records too: build the batch once, in one buffer.
    let mut batch = vec![0u8; HEADER_LEN + records_len];
    header.write(&mut batch);
    let mut at = HEADER_LEN;
    for r in run {
        batch[at..at + r.bytes.len()].copy_from_slice(r.bytes);
        at += r.bytes.len();
    }
    seal_crc(&mut batch);
    let header = BatchHeader::parse(&batch);
    out.append(&mut [IoSlice::new(&batch)], &header, now_ms)
}

/// Removes a staged segment's files (an output that ended up empty).
fn remove_staged(staging: &Path, base: u64) -> Result<()> {
    super::recovery::remove_segment_files(staging, base)
}
