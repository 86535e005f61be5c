//! Opening a log: fast after a clean shutdown, a bounded scan after a crash.
//!
//! The rules (also in `storage-format.md`):
//! - With the clean-shutdown marker present and the checkpoint pointing at the exact end
//!   of the last segment (the batch ending there ends with the checkpoint's next offset:
//!   `Segment::ends_at`), nothing is scanned: sealed segments open on first use and the
//!   active one takes its end from the checkpoint.
//! - Otherwise the log is scanned from the recovery checkpoint (or from the first segment
//!   if there is none, or from the start of the checkpoint's segment if the batch ending
//!   at its position disagrees with it). Each batch's header, CRC and records are
//!   checked; the first bad one ends the log: its file is cut there, later segments are
//!   deleted, and a warning names the file, byte position and offset. Indexes are
//!   rebuilt past the checkpoint.
//! - Segments below the checkpoint were synced before it was written, so they are trusted,
//!   but their indexes are still checked when first used, and rebuilt in memory if
//!   damaged (`Segment::open_sealed`: reading never writes).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::cache::SegmentCache;
use super::config::LogConfig;
use super::files::{self, Checkpoint};
use super::log::Log;
use super::naming::{parse_file_name, segment_path, ParsedName, SegmentFile};
use super::retention::SegmentSummary;
use super::segment::Segment;
use crate::error::{IoContext, Result};

/// What opening a log had to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The directory held no log: a new, empty one was created.
    pub created: bool,
    /// The previous run closed the log cleanly; nothing was scanned.
    pub clean: bool,
    /// Bytes of `.log` read to recover from a crash.
    pub scanned_bytes: u64,
    /// Files cut short or deleted, with the position and reason.
    pub truncated: Vec<(PathBuf, u64, String)>,
    /// How the idempotent producers' state was loaded.
    pub producers: super::ProducerLoad,
}

/// Opens the log in `dir`, creating it if needed. With `fork`, the files recovery will
/// scan are first copied to new ones (see `Log::reopen`).
pub(super) fn open(
    dir: &Path,
    config: LogConfig,
    cache: &Arc<SegmentCache>,
    fork: bool,
) -> Result<(Log, OpenReport)> {
    config.validate()?;
    fs::create_dir_all(dir).at(dir)?;
    super::swap::finish_interrupted(dir)?;
    let cleaned_upto = super::swap::read_cleaner_offset(dir)?;
    let bases = list_segments(dir)?;
    let clean = files::clean_marker_exists(dir) && !fork;
    let checkpoint = files::read_checkpoint(dir)?;
    if fork {
        // Recovery scans from the checkpoint's segment, or the first one after it if it
        // is gone (see `recover`): only those need copies.
        let from = checkpoint
            .and_then(|cp| bases.iter().copied().find(|&b| b >= cp.segment_base))
            .unwrap_or(0);
        fork_segments(dir, bases.iter().copied().filter(|&b| b >= from))?;
    }
    files::remove_clean_marker(dir)?;
    let active_limits = Log::limits(&config, true);
    let mut report = OpenReport {
        created: bases.is_empty() && checkpoint.is_none(),
        ..OpenReport::default()
    };

    let last = bases.last().copied();
    let clean_end = match (clean, checkpoint, last) {
        (true, Some(cp), Some(last)) if cp.segment_base == last => {
            let (mut segment, ok) = Segment::open(dir, last, active_limits)?;
            (ok && segment.size() == cp.position
                && segment.ends_at(cp.position, cp.next_offset)
                && segment.trust(cp.position, cp.next_offset, cp.max_timestamp))
            .then_some((segment, cp))
        }
        _ => None,
    };
    let (sealed, active, checkpoint) = if let Some((segment, cp)) = clean_end {
        report.clean = true;
        let sealed = bases[..bases.len() - 1].iter().copied().collect();
        (sealed, segment, cp)
    } else {
        if clean {
            warn!(dir = %dir.display(), "clean-shutdown marker does not match the log; recovering");
        }
        recover(dir, &config, checkpoint, bases, cleaned_upto, &mut report)?
    };

    let sealed = summarize(dir, &sealed, active.base(), Log::limits(&config, false))?;
    let (mut start_offset, intact) = files::read_log_start(dir)?;
    if !intact {
        warn!(dir = %dir.display(), "log-start-offset is damaged; the log starts at its first segment, and records deleted by offset within it may be read again");
    }
    if start_offset > active.next_offset() {
        warn!(dir = %dir.display(), start_offset, next_offset = active.next_offset(), "the log start offset is past the end of the log; the log starts at its end");
        start_offset = active.next_offset();
        // Written back before anything is appended: the records appended next get
        // offsets below the old value, which would hide them at the next start.
        files::write_log_start(dir, start_offset)?;
    }
    let now = Instant::now();
    let mut log = Log {
        dir: dir.to_path_buf(),
        config,
        cache: Arc::clone(cache),
        id: cache.register(),
        sealed,
        start_offset,
        cleaned_upto,
        mapped_upto: 0, // set below, once the sealed segments are known
        segments_changed: 0,
        active,
        unsynced: Vec::new(),
        checkpoint,
        checkpoint_issued: checkpoint,
        flushed: checkpoint,
        last_flush: now,
        last_checkpoint: now,
        generation: super::log::next_generation(),
        dir_changes: 0,
        dir_synced: 0,
        syncs: Arc::new(super::flush::SyncState::new(dir)),
        producers: Default::default(),
        pending_snapshot: None,
    };
    log.mapped_upto = log
        .sealed
        .range(..cleaned_upto)
        .next_back()
        .map_or(0, |(&base, _)| base)
        .min(cleaned_upto);
    report.producers = log.load_producers()?;
    if report.producers.sealed_segments > 0 {
        // Reading sealed segments' headers is the slow way; a snapshot now spares the
        // next open (after another crash, say) from doing it again.
        log.write_snapshot_now();
    }
    Ok((log, report))
}

/// What retention keeps in memory of each sealed segment (see `SegmentSummary::read`).
fn summarize(
    dir: &Path,
    sealed: &BTreeSet<u64>,
    active_base: u64,
    limits: super::segment::SegmentLimits,
) -> Result<BTreeMap<u64, SegmentSummary>> {
    let mut out = BTreeMap::new();
    for (&base, end) in sealed
        .iter()
        .zip(sealed.iter().skip(1).copied().chain([active_base]))
    {
        out.insert(base, SegmentSummary::read(dir, base, end, limits)?);
    }
    Ok(out)
}

/// Segment base offsets in `dir`, after removing leftovers of interrupted operations.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            ParsedName::Segment(base, SegmentFile::Log) => logs.push(base),
            ParsedName::Segment(base, kind) => indexes.push((base, kind)),
            ParsedName::Leftover => {
                let path = entry.path();
                fs::remove_file(&path).at(&path)?;
            }
            ParsedName::Snapshot(_) | ParsedName::Other => {}
        }
    }
    logs.sort_unstable();
    for (base, kind) in indexes {
        if logs.binary_search(&base).is_err() {
            let path = segment_path(dir, base, kind);
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(logs)
}

/// Scans from the checkpoint to the end, cutting the first bad batch and everything
/// after it; returns the sealed segments, the active one, and the new checkpoint (the
/// end of the log, synced).
fn recover(
    dir: &Path,
    config: &LogConfig,
    checkpoint: Option<Checkpoint>,
    bases: Vec<u64>,
    cleaned_upto: u64,
    report: &mut OpenReport,
) -> Result<(BTreeSet<u64>, Segment, Checkpoint)> {
    let limits = Log::limits(config, true);
    let mut sealed: BTreeSet<u64> = bases.into_iter().collect();
    let mut created = None;
    if sealed.is_empty() {
        let base = checkpoint.map_or(0, |cp| cp.next_offset);
        created = Some(Segment::create(dir, base, limits)?);
        sealed.insert(base);
    }
    // Where to start: the checkpoint's position if its segment is still there and long
    // enough, else the start of the first segment at or after it.
    let first = *sealed.first().expect("not empty");
    let (base, mut position, mut offset, mut max_ts) = match checkpoint {
        Some(cp) if sealed.contains(&cp.segment_base) => (
            cp.segment_base,
            cp.position,
            cp.next_offset,
            cp.max_timestamp,
        ),
        Some(cp) => {
            let base = sealed.range(cp.segment_base..).next().map_or(first, |&b| b);
            (base, 0, base, i64::MIN)
        }
        None => (first, 0, first, i64::MIN),
    };
    let started = Instant::now();
    let bases: Vec<u64> = sealed.range(base..).copied().collect();
    let mut cut = false;
    let mut active = None;
    for (i, &b) in bases.iter().enumerate() {
        if cut {
            delete_segment(dir, b, "it follows a truncated segment", report)?;
            sealed.remove(&b);
            continue;
        }
        let mut segment = match created.take() {
            Some(segment) => segment,
            None => Segment::open(dir, b, limits)?.0,
        };
        if b != base {
            (position, offset, max_ts) = (0, b, i64::MIN);
        } else if position > segment.size() {
            warn!(path = %segment.log_path().display(), position, "checkpoint points past the end of the file; scanning it whole");
            (position, offset, max_ts) = (0, b, i64::MIN);
        } else if !segment.ends_at(position, offset) {
            warn!(path = %segment.log_path().display(), position, offset, "the batches below the checkpoint do not end where it says; scanning the file whole");
            (position, offset, max_ts) = (0, b, i64::MIN);
        }
        // From here a scan from position 0 starts at the segment's own base: the
        // checks above reset any checkpoint that says otherwise.
        debug_assert!(position > 0 || offset == b);
        report.scanned_bytes += segment.size() - position;
        let end = segment.scan(position, offset, max_ts)?;
        let next_base = bases.get(i + 1).copied();
        // A compacted segment (wholly below `cleaned_upto`, or ending with a batch that
        // compaction wrote, should `cleaner-offset` be lost) may end before the next one
        // begins: its last records were removed. Any other gap is lost data.
        let compacted =
            next_base.is_some_and(|next| next <= cleaned_upto) || segment.ends_compacted();
        let problem = match (end.problem, next_base) {
            (Some(reason), _) => Some(reason),
            (None, Some(next)) if next > segment.next_offset() && compacted => None,
            (None, Some(next)) if next != segment.next_offset() => Some(format!(
                "the log ends at offset {} but the next segment starts at {next}",
                segment.next_offset()
            )),
            (None, _) => None,
        };
        if let Some(reason) = problem {
            warn!(
                path = %segment.log_path().display(),
                position = end.valid_bytes,
                offset = segment.next_offset(),
                %reason,
                "cutting the log at the first invalid batch"
            );
            report
                .truncated
                .push((segment.log_path().to_path_buf(), end.valid_bytes, reason));
            segment.cut_to_committed()?;
            cut = true;
        }
        let is_last = cut || next_base.is_none();
        segment.sync_log()?;
        if is_last {
            segment.persist_indexes()?;
            segment.sync_indexes()?;
            sealed.remove(&b);
            active = Some(segment);
        } else {
            segment.seal()?;
            segment.sync_indexes()?;
        }
    }
    files::sync_dir(dir)?;
    let active = active.expect("the last scanned segment is the active one");
    let checkpoint = Checkpoint {
        segment_base: active.base(),
        position: active.size(),
        next_offset: active.next_offset(),
        max_timestamp: active.max_timestamp(),
    };
    files::write_checkpoint(dir, &checkpoint)?;
    if !report.created {
        info!(dir = %dir.display(), scanned_bytes = report.scanned_bytes, elapsed_ms = started.elapsed().as_millis() as u64, "recovered log after unclean shutdown");
    }
    Ok((sealed, active, checkpoint))
}

/// Replaces each file of these segments with a copy of itself: a new inode, whose pages
/// are written (dirty) from what the old file reads as. Recovery may then cut the copies
/// in place while readers still map the old inodes, and its syncs write every byte it
/// keeps, including pages the kernel marked clean after a failed writeback without
/// writing them. Each copy is synced before it is renamed over its original: a file
/// system that can make a rename durable before the renamed file's data (XFS has no
/// such ordering) would otherwise let a power loss leave an empty segment in its place
/// (durability review).
fn fork_segments(dir: &Path, bases: impl Iterator<Item = u64>) -> Result<()> {
    for base in bases {
        for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
            let path = segment_path(dir, base, kind);
            let copy = super::naming::temp_path(&path);
            match fs::copy(&path, &copy) {
                Ok(_) => {
                    files::sync_all(&fs::File::open(&copy).at(&copy)?, &copy)?;
                    fs::rename(&copy, &path).at(&path)?
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).at(&path),
            }
        }
    }
    Ok(())
}

/// Deletes a segment's files: the `.log` first, so an interrupted deletion leaves
/// orphaned indexes (removed at the next open) rather than a log without its start.
pub(super) fn delete_segment(
    dir: &Path,
    base: u64,
    why: &str,
    report: &mut OpenReport,
) -> Result<()> {
    let path = segment_path(dir, base, SegmentFile::Log);
    warn!(path = %path.display(), %why, "deleting segment");
    report.truncated.push((path, 0, why.to_string()));
    remove_segment_files(dir, base)
}

pub(super) fn remove_segment_files(dir: &Path, base: u64) -> Result<()> {
    for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
        let path = segment_path(dir, base, kind);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(&path),
        }
    }
    Ok(())
}
