//! File names inside a partition directory: built and parsed here and nowhere else.
//!
//! A segment is three files named by the segment's base offset as 20 decimal digits
//! (wide enough for any `u64`, and sorting by name sorts by offset):
//! `00000000000000001000.log`, `.index` and `.timeindex`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Digits in a segment file's base-offset stem.
pub const OFFSET_DIGITS: usize = 20;
pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of a file being rewritten (truncation, checkpoint); left over only by a crash.
pub const TEMP_SUFFIX: &str = "tmp";
/// Suffix a segment's files take when retention deletes them: renamed under the log's
/// lock, unlinked after it (see `retention.rs`); left over only by a crash.
pub const DELETED_SUFFIX: &str = "deleted";
/// Present only between a clean `close` and the next `open`.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// The recovery checkpoint: how far the log is known to be on disk.
pub const CHECKPOINT_FILE: &str = "recovery-checkpoint";
/// The log start offset, once retention or DeleteRecords has moved it (see `files.rs`).
pub const LOG_START_FILE: &str = "log-start-offset";
pub const SNAPSHOT_SUFFIX: &str = "snapshot";

/// Which of a segment's three files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFile {
    Log,
    Index,
    TimeIndex,
}

impl SegmentFile {
    fn suffix(self) -> &'static str {
        match self {
            SegmentFile::Log => LOG_SUFFIX,
            SegmentFile::Index => INDEX_SUFFIX,
            SegmentFile::TimeIndex => TIME_INDEX_SUFFIX,
        }
    }
}

/// `dir/<base as 20 digits>.<suffix>`
pub fn segment_path(dir: &Path, base_offset: u64, kind: SegmentFile) -> PathBuf {
    dir.join(format!(
        "{base_offset:0width$}.{}",
        kind.suffix(),
        width = OFFSET_DIGITS
    ))
}

/// The producer-state snapshot of the batches below `offset` (`log/producers/snapshot.rs`).
pub fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!(
        "{offset:0width$}.{SNAPSHOT_SUFFIX}",
        width = OFFSET_DIGITS
    ))
}

/// The same path with `.tmp` appended: written in full, synced, then renamed over.
pub fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, TEMP_SUFFIX)
}

/// The same path with `.<n>.tmp` appended, `n` new on each call: for a file that two
/// writers may replace at once, each through its own temporary file.
pub fn unique_temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    with_suffix(path, &format!("{n}.{TEMP_SUFFIX}"))
}

/// The same path with `.deleted` appended: a segment file on its way out.
pub fn deleted_path(path: &Path) -> PathBuf {
    with_suffix(path, DELETED_SUFFIX)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// What a directory entry's name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedName {
    Segment(u64, SegmentFile),
    /// A producer-state snapshot, by the offset it covers up to.
    Snapshot(u64),
    /// A `.tmp` or `.deleted` file: what an interrupted operation left, removed at open.
    Leftover,
    Other,
}

pub fn parse_file_name(name: &str) -> ParsedName {
    if name.ends_with(&format!(".{TEMP_SUFFIX}")) || name.ends_with(&format!(".{DELETED_SUFFIX}")) {
        return ParsedName::Leftover;
    }
    let Some((stem, suffix)) = name.split_once('.') else {
        return ParsedName::Other;
    };
    let kind = match suffix {
        LOG_SUFFIX => SegmentFile::Log,
        INDEX_SUFFIX => SegmentFile::Index,
        TIME_INDEX_SUFFIX => SegmentFile::TimeIndex,
        SNAPSHOT_SUFFIX => {
            return parse_offset(stem).map_or(ParsedName::Other, ParsedName::Snapshot)
        }
        _ => return ParsedName::Other,
    };
    parse_offset(stem).map_or(ParsedName::Other, |base| ParsedName::Segment(base, kind))
}

fn parse_offset(stem: &str) -> Option<u64> {
    if stem.len() != OFFSET_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for base in [0, 1, 1000, u64::MAX] {
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                let path = segment_path(Path::new("/d"), base, kind);
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(name.len(), OFFSET_DIGITS + 1 + kind.suffix().len());
                assert_eq!(parse_file_name(name), ParsedName::Segment(base, kind));
            }
        }
        assert_eq!(
            segment_path(Path::new("d"), 42, SegmentFile::Log),
            Path::new("d/00000000000000000042.log")
        );
        let snapshot = snapshot_path(Path::new("d"), 42);
        assert_eq!(snapshot, Path::new("d/00000000000000000042.snapshot"));
        let name = snapshot.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_file_name(name), ParsedName::Snapshot(42));
        assert_eq!(parse_file_name("42.snapshot"), ParsedName::Other);
    }

    #[test]
    fn foreign_names_are_not_segments() {
        for name in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.txt",
            "99999999999999999999.log", // over u64::MAX
            CHECKPOINT_FILE,
            CLEAN_SHUTDOWN_FILE,
            LOG_START_FILE,
        ] {
            assert_eq!(parse_file_name(name), ParsedName::Other, "{name}");
        }
        for leftover in [
            "00000000000000000042.log.tmp",
            "00000000000000000042.timeindex.deleted",
        ] {
            assert_eq!(parse_file_name(leftover), ParsedName::Leftover);
        }
    }
}
