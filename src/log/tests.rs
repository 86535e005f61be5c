//! Behaviour of a whole `Log`: appends, reads, rolls, reopen, recovery, trimming.
//! Byte layouts are tested next to their modules; crash and model tests are in `tests/`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::format::HEADER_LEN;
use super::naming::{segment_path, SegmentFile};
use super::*;
use crate::error::Error;

pub(super) fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// A batch of `n` records whose values name their batch and index, timestamped `ts`.
pub(super) fn batch(tag: u64, n: usize, ts: i64) -> PendingBatch {
    let mut builder = BatchBuilder::default();
    for i in 0..n {
        let value = format!("batch {tag} record {i} {}", "x".repeat(100));
        let record = Record {
            key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
            value: Bytes::from(value),
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: ts,
        };
        builder.push(&record).unwrap();
    }
    builder.build().unwrap()
}

/// All records from `from` to the end, as (offset, value).
pub(super) fn read_all(log: &Log, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.next_offset() {
        let read = log.read(at, 10_000).unwrap();
        for chunk in &read.chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let header = BatchHeader::parse(rest);
                let (batch, after) = rest.split_at(header.length as usize);
                for r in records(batch).unwrap() {
                    if r.offset >= at {
                        out.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()));
                    }
                }
                rest = after;
            }
        }
        at = read.next_offset;
    }
    out
}

fn append_batches(log: &mut Log, batches: u64, per_batch: usize) {
    for b in 0..batches {
        log.append(&mut batch(b, per_batch, 1000 + b as i64))
            .unwrap();
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn appends_get_contiguous_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(!report.clean);
    assert_eq!((log.log_start_offset(), log.next_offset()), (0, 0));
    let first = log.append(&mut batch(0, 3, 5)).unwrap();
    let second = log.append(&mut batch(1, 2, 7)).unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    let all = read_all(&log, 0);
    assert_eq!(
        all.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(all[4].1.starts_with("batch 1 record 1 "));

    let read = log.read(3, 1 << 20).unwrap();
    let chunk = &read.chunks[0];
    let recs = records(&chunk[..]).unwrap();
    assert_eq!(recs[0].key, Some(&b"k0"[..]));
    assert_eq!(recs[1].key, None);
    assert_eq!(
        recs[0].headers().collect::<Vec<_>>(),
        vec![("h", &b"v"[..])]
    );
    assert_eq!(recs[0].timestamp_ms, 7);
    assert_eq!(read.next_offset, 5);
}

#[test]
fn reads_respect_the_byte_limit_but_return_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 10, 5);
    let one = log.read(0, 1).unwrap();
    assert_eq!(one.chunks.len(), 1);
    assert_eq!(one.next_offset, 5);
    let batch_len = one.size_bytes();
    let three = log.read(7, 3 * batch_len + batch_len / 2).unwrap();
    assert_eq!(three.size_bytes(), 3 * batch_len);
    assert_eq!(
        three.next_offset, 20,
        "starts at the batch holding offset 7"
    );
    assert!(log.read(50, 100).unwrap().chunks.is_empty());
    match log.read(51, 100) {
        Err(Error::OffsetOutOfRange {
            offset: 51,
            start: 0,
            end: 50,
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
}

#[test]
fn segments_roll_at_the_size_limit_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 200, 5); // ~130 KiB into 64 KiB segments
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    for file in log_files(dir.path()) {
        assert!(
            file_len(&file) <= 64 << 10,
            "{} over the limit",
            file.display()
        );
    }
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 1000);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    let read = log.read(0, 1 << 20).unwrap();
    assert!(read.chunks.len() >= 2, "one chunk per segment");
}

#[test]
fn a_full_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_max_bytes: 64,
        index_interval_bytes: 1,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    append_batches(&mut log, 12, 1); // 64-byte index: 8 offset entries, 5 time entries
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log, 0).len(), 12);
}

#[test]
fn an_old_segment_rolls_on_the_next_append_or_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_age: Duration::from_millis(300),
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    log.append(&mut batch(0, 1, 1)).unwrap(); // record timestamps do not count: 1 ms
    log.append(&mut batch(1, 1, 1)).unwrap();
    assert_eq!(log.segment_count(), 1);
    std::thread::sleep(Duration::from_millis(320));
    // Read the clock before the append: the new segment's first append is no earlier,
    // so asking at this instant cannot find it aged however slowly the test runs.
    let before = super::log::now_ms();
    log.append(&mut batch(2, 1, 1)).unwrap();
    assert_eq!(log.segment_count(), 2, "first segment was over 300 ms old");
    assert!(!log.roll_if_aged(before).unwrap());
    assert!(log.roll_if_aged(before + 1000).unwrap());
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn timestamp_lookup_finds_the_first_offset_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(
        dir.path(),
        LogConfig {
            index_interval_bytes: 1,
            ..config()
        },
    )
    .unwrap();
    // Timestamps are not monotonic: 10, 30, 20, 40 (two records each), across segments.
    for (i, ts) in [10, 30, 20, 40].into_iter().enumerate() {
        log.append(&mut batch(i as u64, 2, ts)).unwrap();
        log.roll().unwrap();
    }
    let at = |ts| {
        log.offset_for_timestamp(ts)
            .unwrap()
            .map(|(offset, _)| offset)
    };
    assert_eq!(at(0), Some(0));
    assert_eq!(at(10), Some(0));
    assert_eq!(at(11), Some(2));
    assert_eq!(
        at(25),
        Some(2),
        "first offset in log order with ts >= 25 is 2 (ts 30)"
    );
    assert_eq!(at(31), Some(6));
    assert_eq!(at(41), None);
}

#[test]
fn clean_close_reopens_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 100, 5);
    let before = read_all(&log, 0);
    let segments = log.segment_count();
    log.close().unwrap();
    let (mut log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    assert_eq!(report.scanned_bytes, 0);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.offset_for_timestamp(1050).unwrap(), Some((250, 1050)));
    log.append(&mut batch(100, 5, 2000)).unwrap();
    assert_eq!(log.next_offset(), 505);
    drop(log); // a crash: the marker was removed at open, so this open must recover
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(!report.clean);
    assert_eq!(log.next_offset(), 505);
}

#[test]
fn crash_recovery_scans_only_past_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        checkpoint_interval: Duration::from_secs(3600),
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
    append_batches(&mut log, 300, 5);
    log.flush().unwrap(); // sealed segments since the last checkpoint: writes one
    let tail_start = fs::read(dir.path().join(naming::CHECKPOINT_FILE)).unwrap();
    let checkpoint = files::Checkpoint::decode(&tail_start).unwrap();
    append_batches(&mut log, 10, 5); // not checkpointed
    let expected = read_all(&log, 0);
    let active_len = file_len(&segment_path(
        dir.path(),
        checkpoint.segment_base,
        SegmentFile::Log,
    ));
    drop(log);
    let (log, report) = Log::open(dir.path(), cfg).unwrap();
    assert!(!report.clean);
    assert_eq!(report.scanned_bytes, active_len - checkpoint.position);
    assert!(report.truncated.is_empty());
    assert_eq!(read_all(&log, 0), expected);
}

/// A checkpoint whose next offset disagrees with the batch that ends at its position
/// (a valid CRC; no log writes one, the `recovery` fuzzer did) is not trusted, with or
/// without the clean-shutdown marker: trusted, it left offsets without bytes, where a
/// read returned nothing and no progress, so a consumer spun.
#[test]
fn a_checkpoint_that_disagrees_with_the_log_is_not_trusted() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config()).unwrap();
        append_batches(&mut log, 10, 5);
        let expected = read_all(&log, 0);
        log.close().unwrap(); // a checkpoint at the exact end, and the marker
        let path = dir.path().join(naming::CHECKPOINT_FILE);
        let mut checkpoint = files::Checkpoint::decode(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(checkpoint.next_offset, 50);
        checkpoint.next_offset = 780;
        files::write_checkpoint(dir.path(), &checkpoint).unwrap();
        if !clean {
            fs::remove_file(dir.path().join(naming::CLEAN_SHUTDOWN_FILE)).unwrap();
        }
        let (log, report) = Log::open(dir.path(), config()).unwrap();
        assert!(!report.clean, "clean marker: {clean}");
        assert_eq!(log.next_offset(), 50, "clean marker: {clean}");
        assert_eq!(read_all(&log, 0), expected);
    }
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 3, 5);
    let batch_len = log.read(0, 1).unwrap().size_bytes() as u64;
    let active = log_files(dir.path()).pop().unwrap();
    drop(log);
    let torn = 3 * batch_len - 17;
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(torn)
        .unwrap();
    let (mut log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated.len(), 1);
    assert_eq!(report.truncated[0].1, 2 * batch_len);
    assert_eq!(log.next_offset(), 10);
    assert_eq!(file_len(&active), 2 * batch_len);
    log.append(&mut batch(9, 5, 1)).unwrap();
    assert_eq!(read_all(&log, 0).len(), 15);
}

#[test]
fn a_flipped_byte_in_the_tail_ends_the_log_there_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5); // several segments, none checkpointed (no flush)
    let first = log_files(dir.path())[0].clone();
    drop(log);
    fs::remove_file(dir.path().join(naming::CHECKPOINT_FILE)).unwrap();
    let mut bytes = fs::read(&first).unwrap();
    let batch_len = BatchHeader::parse(&bytes).length as usize;
    bytes[4 * batch_len + HEADER_LEN + 20] ^= 0xFF; // inside batch 4's records
    fs::write(&first, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_offset(), 20);
    assert_eq!(log.segment_count(), 1);
    assert!(
        report.truncated[0].2.contains("checksum"),
        "{:?}",
        report.truncated
    );
    assert_eq!(read_all(&log, 0).len(), 20);
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error_on_the_read_that_meets_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5);
    let first = log_files(dir.path())[0].clone();
    log.close().unwrap();
    let mut bytes = fs::read(&first).unwrap();
    let batch_len = BatchHeader::parse(&bytes).length as usize;
    bytes[2 * batch_len + HEADER_LEN + 30] ^= 0x01;
    fs::write(&first, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    let before = log.read(0, batch_len * 2).unwrap();
    assert_eq!(
        before.next_offset, 10,
        "batches before the damage read fine"
    );
    match log.read(10, 1) {
        Err(Error::DamagedRange {
            from,
            resume_at,
            source,
        }) => {
            assert_eq!(from, 10);
            assert!(resume_at > 10, "a reader is told where to resume");
            assert!(
                log.read(resume_at, 1).is_ok(),
                "and can read from there ({resume_at})"
            );
            let Error::ChecksumMismatch { path, position, .. } = *source else {
                panic!("expected a checksum error, got {source:?}")
            };
            assert_eq!(path, first);
            assert_eq!(position, 2 * batch_len as u64);
        }
        other => panic!("expected a damaged range, got {other:?}"),
    }
    assert_eq!(
        fs::read(&first).unwrap(),
        bytes,
        "the damaged file is left as it is"
    );
    let later = log.segment_count();
    assert!(later > 1);
    let second_segment_start = log.segment_bases()[1];
    assert!(
        !read_all(&log, second_segment_start).is_empty(),
        "later segments stay readable"
    );
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 300, 5);
    let expected = read_all(&log, 0);
    let by_time = log.offset_for_timestamp(1100).unwrap();
    log.close().unwrap();
    let bases: Vec<u64> = log_files(dir.path())
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    fs::remove_file(segment_path(dir.path(), bases[0], SegmentFile::Index)).unwrap();
    fs::write(
        segment_path(dir.path(), bases[1], SegmentFile::TimeIndex),
        [0xAB; 30],
    )
    .unwrap();
    let last = *bases.last().unwrap();
    fs::write(segment_path(dir.path(), last, SegmentFile::Index), b"").unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(log.offset_for_timestamp(1100).unwrap(), by_time);
    assert!(
        !segment_path(dir.path(), bases[0], SegmentFile::Index).exists(),
        "rebuilt in memory: a read writes nothing"
    );
    assert_eq!(
        fs::read(segment_path(dir.path(), bases[1], SegmentFile::TimeIndex)).unwrap(),
        [0xAB; 30]
    );
}

#[test]
fn reads_of_a_damaged_sealed_segment_change_no_file_even_when_concurrent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5);
    let expected = read_all(&log, 0);
    log.close().unwrap();
    // Garbage after the index entries, and a torn batch at the end of the first .log:
    // both used to be cut in place by the first read, under other readers' maps.
    let index = segment_path(dir.path(), 0, SegmentFile::Index);
    let mut garbage = fs::read(&index).unwrap();
    garbage.extend_from_slice(&[0xFF; 13]);
    fs::write(&index, &garbage).unwrap();
    let first = log_files(dir.path())[0].clone();
    let log_bytes = fs::read(&first).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = log_files(dir.path())
        .into_iter()
        .chain([index.clone()])
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(read_all(&log, 0), expected));
        }
    });
    for (path, bytes) in before {
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    assert_eq!(fs::read(&first).unwrap(), log_bytes);
}

/// Lines of this process's memory maps that map a file under `dir`.
fn maps_under(dir: &Path) -> usize {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .count()
}

/// Descriptors this process holds open on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn open_sealed_segments_are_bounded_by_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = SegmentCache::new(4);
    let small = LogConfig {
        segment_bytes: 8 << 10,
        ..config()
    };
    let (mut log, _) = Log::open_in(dir.path(), small, &cache).unwrap();
    append_batches(&mut log, 600, 5); // about 50 segments
    log.flush().unwrap();
    assert!(log.segment_count() > 40, "{}", log.segment_count());
    assert_eq!(read_all(&log, 0).len(), 3000);
    assert!(cache.len() <= 4, "{} sealed segments open", cache.len());
    // The active segment's .log, .index and .timeindex, and four sealed segments of
    // three maps each at most; no descriptors for sealed segments.
    assert!(
        maps_under(dir.path()) <= 3 + 4 * 3,
        "{} maps",
        maps_under(dir.path())
    );
    assert!(
        fds_under(dir.path()) <= 3,
        "{} descriptors",
        fds_under(dir.path())
    );
    drop(log);
    assert!(cache.is_empty(), "a dropped log closes its segments");
}

#[test]
fn deleting_segments_below_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5);
    let bases: Vec<u64> = log.segment_bases();
    let held = log.read(0, 1 << 20).unwrap(); // a reader still holding the first segment
    assert_eq!(log.delete_segments_below(bases[1] + 1).unwrap(), 1);
    assert_eq!(log.log_start_offset(), bases[1]);
    assert!(!segment_path(dir.path(), bases[0], SegmentFile::Log).exists());
    assert!(matches!(
        log.read(0, 10),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(
        records(&held.chunks[0]).is_ok(),
        "a slice outlives its deleted file"
    );
    assert_eq!(log.delete_segments_below(750).unwrap(), bases.len() - 1);
    assert_eq!(
        (
            log.log_start_offset(),
            log.next_offset(),
            log.segment_count()
        ),
        (750, 750, 1)
    );
    log.append(&mut batch(1, 1, 1)).unwrap();
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.next_offset()), (750, 751));
}

#[test]
fn truncation_keeps_whole_batches_and_outstanding_slices() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5);
    let expected = read_all(&log, 0);
    let held = log.read(740, 1 << 20).unwrap();
    match log.truncate(742) {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains("740") && msg.contains("745"), "{msg}")
        }
        other => panic!("expected invalid argument, got {other:?}"),
    }
    log.truncate(500).unwrap();
    assert_eq!(log.next_offset(), 500);
    assert_eq!(read_all(&log, 0), expected[..500]);
    assert_eq!(
        records(&held.chunks[0]).unwrap()[0].offset,
        740,
        "slice of a rewritten file is intact"
    );
    let second_base = log.segment_bases()[1];
    log.truncate(second_base).unwrap();
    assert_eq!(log.next_offset(), second_base);
    log.append(&mut batch(7, 5, 1)).unwrap();
    drop(log); // crash right after: truncation must have been made durable
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_offset(), second_base + 5);
    assert_eq!(
        read_all(&log, 0)[..second_base as usize],
        expected[..second_base as usize]
    );
}

#[test]
fn bad_batches_are_refused_before_a_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 4096,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    log.append(&mut batch(0, 1, 1)).unwrap();
    let active = log_files(dir.path()).pop().unwrap();
    let size = file_len(&active);
    assert!(matches!(
        BatchBuilder::default().build(),
        Err(Error::InvalidArgument(_))
    ));
    let negative = Record {
        timestamp_ms: -1,
        ..Record::default()
    };
    assert!(matches!(
        BatchBuilder::default().push(&negative),
        Err(Error::InvalidArgument(_))
    ));
    match log.append(&mut batch(1, 100, 1)) {
        Err(Error::TooLarge { limit: 4096, .. }) => {}
        other => panic!("expected too large, got {other:?}"),
    }
    assert_eq!((log.next_offset(), file_len(&active)), (1, size));
}

#[test]
fn group_commit_syncs_outside_the_lock_and_ignores_stale_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 3, 5);
    assert!(!log.is_flushed());
    let job = log.begin_flush();
    assert_eq!(job.covers_below(), 15);
    append_batches(&mut log, 1, 5); // appended while the job would be syncing
    job.run().unwrap();
    let _checkpoint = log.finish_flush(job).unwrap();
    assert!(!log.is_flushed(), "the job did not cover the last batch");
    let stale = log.begin_flush();
    log.truncate(5).unwrap();
    stale.run().unwrap();
    assert!(log.finish_flush(stale).unwrap().is_none());
    assert!(log.is_flushed());
    assert_eq!(log.next_offset(), 5);
}

#[test]
fn checkpoints_are_written_outside_the_lock_and_stale_ones_are_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        checkpoint_interval: Duration::ZERO,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
    let installed = || {
        files::read_checkpoint(dir.path())
            .unwrap()
            .map(|c| c.next_offset)
    };
    let temp_files = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("tmp".as_ref()))
            .count()
    };
    let flushed_with_checkpoint = |log: &mut Log| {
        let job = log.begin_flush();
        job.run().unwrap();
        log.finish_flush(job).unwrap().expect("a checkpoint is due")
    };

    append_batches(&mut log, 3, 5);
    let mut checkpoint = flushed_with_checkpoint(&mut log);
    append_batches(&mut log, 1, 5); // appends go on while the checkpoint is written
    checkpoint.run().unwrap();
    assert_ne!(installed(), Some(15), "installed only by finish_checkpoint");
    let replaced_open = || {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .filter(|target| {
                target.starts_with(dir.path()) && target.to_string_lossy().ends_with(" (deleted)")
            })
            .count()
    };
    let before = replaced_open();
    log.finish_checkpoint(&mut checkpoint).unwrap();
    assert_eq!(installed(), Some(15));
    // The replaced checkpoint file is closed (and its blocks freed) only when the job
    // is dropped, which callers do after releasing the log's lock.
    assert_eq!(
        replaced_open(),
        before + 1,
        "the job holds the replaced file"
    );
    drop(checkpoint);
    assert_eq!(replaced_open(), before);

    // A job dropped without running does not stop the next one.
    drop(flushed_with_checkpoint(&mut log));
    append_batches(&mut log, 1, 5);
    log.flush().unwrap();
    assert_eq!(installed(), Some(25));

    // One made stale by a truncation is not installed and leaves no file behind.
    append_batches(&mut log, 2, 5);
    let mut stale = flushed_with_checkpoint(&mut log);
    log.truncate(20).unwrap();
    stale.run().unwrap();
    log.finish_checkpoint(&mut stale).unwrap();
    assert_eq!(installed(), Some(20));
    drop(stale); // its file goes with it, outside the caller's lock
    assert_eq!(temp_files(), 0);

    // After a crash, recovery starts from the installed checkpoint.
    append_batches(&mut log, 1, 5);
    let expected = read_all(&log, 0);
    drop(log);
    let (log, report) = Log::open(dir.path(), cfg).unwrap();
    assert!(!report.clean && report.truncated.is_empty());
    assert_eq!(read_all(&log, 0), expected);
}

/// A checkpoint costs three fsyncs: a partition that takes little gets one only every
/// 30 intervals, one that takes `checkpoint_bytes` once an interval, and a sealed
/// segment at once. Time is moved by setting when the last one was handed out.
#[test]
fn checkpoints_wait_for_enough_bytes_thirty_intervals_or_a_seal() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_secs(1);
    let cfg = LogConfig {
        checkpoint_interval: interval,
        checkpoint_bytes: 4000,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    let checkpointed = |log: &mut Log| {
        let job = log.begin_flush();
        job.run().unwrap();
        match log.finish_flush(job).unwrap() {
            Some(mut checkpoint) => {
                checkpoint.run().unwrap();
                log.finish_checkpoint(&mut checkpoint).unwrap();
                true
            }
            None => false,
        }
    };
    let ago = |log: &mut Log, intervals: f64| {
        log.last_checkpoint = std::time::Instant::now() - interval.mul_f64(intervals);
    };
    let log_bytes = || file_len(&segment_path(dir.path(), 0, SegmentFile::Log));
    append_batches(&mut log, 1, 5);
    assert!(log_bytes() < 4000);
    ago(&mut log, 1.5);
    assert!(!checkpointed(&mut log), "an interval, but few bytes");
    append_batches(&mut log, 10, 5);
    assert!(log_bytes() >= 4000 && log.segment_count() == 1);
    assert!(checkpointed(&mut log), "an interval and enough bytes");
    append_batches(&mut log, 10, 5);
    assert!(
        !checkpointed(&mut log),
        "enough bytes, but not an interval since"
    );
    append_batches(&mut log, 1, 5);
    ago(&mut log, 1.5);
    assert!(checkpointed(&mut log), "now an interval too");
    append_batches(&mut log, 1, 5);
    ago(&mut log, 29.0);
    assert!(!checkpointed(&mut log), "few bytes, 29 intervals");
    append_batches(&mut log, 1, 5);
    ago(&mut log, 31.0);
    assert!(checkpointed(&mut log), "few bytes, thirty intervals");
    append_batches(&mut log, 1, 5);
    assert!(log
        .roll_if_aged(super::log::now_ms() + 30 * 24 * 3600 * 1000)
        .unwrap());
    assert!(checkpointed(&mut log), "a segment sealed");
}

#[test]
fn sealed_segments_hold_no_file_descriptors_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 300, 5);
    assert!(
        fds_under(dir.path()) > 3,
        "not yet synced: still needed by a flush"
    );
    log.flush().unwrap();
    assert_eq!(fds_under(dir.path()), 3, "the active segment's files only");
    assert_eq!(read_all(&log, 0).len(), 1500);
    assert_eq!(
        fds_under(dir.path()),
        3,
        "sealed ones opened to read keep none"
    );
}

#[test]
fn a_flush_syncs_the_indexes_of_segments_sealed_since_the_last_one() {
    // Their index entries were written at the seal, and the flush closes their files:
    // nothing would sync them later.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 3, 5);
    log.roll().unwrap();
    append_batches(&mut log, 1, 5);
    let job = log.begin_flush();
    let paths = job.paths();
    for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
        let sealed = segment_path(dir.path(), 0, kind);
        assert!(
            paths.contains(&sealed),
            "{} is not synced",
            sealed.display()
        );
    }
    let active = segment_path(dir.path(), 15, SegmentFile::Log);
    assert!(paths.contains(&active));
    job.run().unwrap();
    let _checkpoint = log.finish_flush(job).unwrap();
}

/// Durability review: Linux reports a failed writeback once per open file, to the first
/// fsync that asks, and the log opens each file once. A checkpoint's fsync of a segment
/// sealed during a flush was told of a failure; the next flush's fsync of the same file
/// then succeeded (as the failpoint does: it fails once), and its appends would have
/// been acknowledged though their pages may be lost. Every fsync after a failed one
/// fails. (Run at the same moment, the two fsyncs take turns; that part is not tested.)
#[test]
fn a_flush_after_a_checkpoint_whose_fsync_failed_fails_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        checkpoint_interval: Duration::ZERO,
        checkpoint_bytes: 0,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    append_batches(&mut log, 3, 5);
    let first = log.begin_flush();
    first.run().unwrap();
    log.roll().unwrap(); // sealed while the first flush ran
    append_batches(&mut log, 1, 5);
    let checkpoint = log
        .finish_flush(first)
        .unwrap()
        .expect("a checkpoint is due");
    // Begun before the failure, as by a produce waiting for the flush lock.
    let second = log.begin_flush();
    files::failpoint::fail_next_sync_under(dir.path());
    assert!(checkpoint.run().is_err());
    assert!(
        second.run().is_err(),
        "the second flush must not find its appends durable"
    );
    assert!(log.sync_failure().is_some());
}

/// Durability review: a reopen after a failed fsync renamed each segment's copy over
/// the original without syncing it, so a file system that makes renames durable before
/// data could leave an empty segment after a power loss. The copy is synced first; if
/// that fails, so does the reopen.
#[test]
fn a_reopen_syncs_each_copy_before_renaming_it_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 3, 5);
    files::failpoint::fail_next_sync_under(dir.path());
    assert!(log.flush().is_err());
    let active = segment_path(dir.path(), 0, SegmentFile::Log);
    files::failpoint::fail_next_sync_of(&super::naming::temp_path(&active));
    assert!(log.reopen().is_err(), "the copy was not synced");
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_offset(), 15);
}

/// Bytes of disk the file occupies (its blocks), as opposed to its length.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn the_active_segment_reserves_blocks_ahead_and_a_sealed_one_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
    append_batches(&mut log, 3, 5);
    let active = segment_path(dir.path(), 0, SegmentFile::Log);
    let len = file_len(&active);
    assert!(len > 0 && len < 4096, "{len} bytes written");
    // Reserved ahead (64 KiB while the segment holds less), without changing the length
    // that marks where the batches end.
    assert!(
        allocated(&active) >= 64 << 10,
        "{} bytes allocated",
        allocated(&active)
    );
    let expected = read_all(&log, 0);

    // A crash leaves the reservation past the end; recovery goes by the length, and
    // sealing frees the blocks even though this process did not reserve them.
    drop(log);
    let (mut log, report) = Log::open(dir.path(), cfg).unwrap();
    assert!(report.truncated.is_empty(), "{report:?}");
    assert_eq!(read_all(&log, 0), expected);
    log.roll().unwrap();
    assert_eq!(file_len(&active), len);
    assert!(
        allocated(&active) < len + 4096,
        "a sealed segment keeps {} bytes for its {len}",
        allocated(&active)
    );
    append_batches(&mut log, 1, 5);
    assert_eq!(log.next_offset(), 20);
    assert_eq!(read_all(&log, 0).len(), 20);
}

/// A segment reserves as much again as it holds, up to 4 MiB: a partition that receives
/// little does not hold 4 MiB of disk (5,000 such partitions held 20 GB).
#[test]
fn the_reservation_ahead_grows_with_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 30,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    let active = segment_path(dir.path(), 0, SegmentFile::Log);
    append_batches(&mut log, 3, 5);
    let (len, held) = (file_len(&active), allocated(&active));
    assert!(held >= len + (32 << 10), "{held} bytes held for {len}");
    assert!(held <= 128 << 10, "{held} bytes held for {len}");
    let value = vec![7u8; 64 << 10];
    let mut most_ahead = 0;
    while file_len(&active) < 10 << 20 {
        let mut builder = BatchBuilder::default();
        let record = Record {
            value: Bytes::from(value.clone()),
            ..Record::default()
        };
        builder.push(&record).unwrap();
        log.append(&mut builder.build().unwrap()).unwrap();
        let (len, held) = (file_len(&active), allocated(&active));
        assert!(
            held > len && held <= 2 * len + (128 << 10),
            "{held} bytes held for {len}"
        );
        most_ahead = most_ahead.max(held - len);
    }
    // Past 4 MiB, a reservation takes 4 MiB, no more: a busy segment meets the
    // allocation lock as seldom as before, and holds as much ahead.
    assert!(
        ((4 << 20) - (64 << 10)..=(4 << 20) + (64 << 10)).contains(&most_ahead),
        "at most {most_ahead} bytes ahead"
    );

    // A first batch larger than the segment was still leaves as much again ahead.
    log.roll().unwrap();
    let base = log.next_offset();
    let mut builder = BatchBuilder::default();
    for _ in 0..16 {
        let record = Record {
            value: Bytes::from(value.clone()),
            ..Record::default()
        };
        builder.push(&record).unwrap();
    }
    log.append(&mut builder.build().unwrap()).unwrap();
    let active = segment_path(dir.path(), base, SegmentFile::Log);
    let (len, held) = (file_len(&active), allocated(&active));
    assert!(held >= 2 * len - (64 << 10), "{held} bytes held for {len}");
}

#[test]
fn a_log_that_is_never_flushed_still_holds_few_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let small = LogConfig {
        segment_bytes: 1024,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), small).unwrap();
    append_batches(&mut log, 1000, 1); // about 250 segments, no flush asked for
    assert!(log.segment_count() > 100, "{}", log.segment_count());
    assert!(
        fds_under(dir.path()) <= 3 + 3 * 32,
        "{} descriptors",
        fds_under(dir.path())
    );
}

/// Found in review: a read that met damage after reading good batches failed as a whole,
/// and named the damaged segment's start as `from`: a consumer that followed
/// `resume_at` skipped good records it was never given.
#[test]
fn damage_in_the_next_segment_does_not_hide_the_good_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 250, 5); // three segments: the second is sealed
    let second = log_files(dir.path())[1].clone();
    let second_base = log.segment_bases()[1];
    log.close().unwrap();
    let mut bytes = fs::read(&second).unwrap();
    bytes[HEADER_LEN + 30] ^= 0x01; // inside the second segment's first batch
    fs::write(&second, &bytes).unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    let from = second_base - 5; // the last batch of the first segment: undamaged
    let read = log.read(from, 1 << 20).unwrap();
    assert_eq!(read.next_offset, second_base, "the good records come back");
    match log.read(second_base, 1 << 20) {
        Err(Error::DamagedRange {
            from, resume_at, ..
        }) => {
            assert_eq!(from, second_base);
            assert!(resume_at > second_base);
        }
        other => panic!("expected a damaged range, got {other:?}"),
    }
}

/// A garbage time index beside a good offset index, and a damaged batch header: the
/// offset index is kept, so reads resume after the damage within the segment. Both were
/// rebuilt from the headers, which stop at the damaged one, and every record after it
/// in the segment was out of reach (a review).
#[test]
fn a_bad_time_index_does_not_throw_away_a_good_offset_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    append_batches(&mut log, 150, 5);
    let first = log_files(dir.path())[0].clone();
    let second_base = log.segment_bases()[1];
    log.close().unwrap();
    let mut bytes = fs::read(&first).unwrap();
    let batch_len = BatchHeader::parse(&bytes).length as usize;
    bytes[2 * batch_len + format::VERSION_AT] ^= 0xFF; // the third batch's header
    fs::write(&first, &bytes).unwrap();
    fs::write(
        segment_path(dir.path(), 0, SegmentFile::TimeIndex),
        [0xAB; 30],
    )
    .unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    match log.read(10, 1) {
        Err(Error::DamagedRange { resume_at, .. }) => {
            assert!(
                resume_at < second_base,
                "resumes within the segment, not at its end ({second_base}): {resume_at}"
            );
            assert_eq!(log.read(resume_at, 1).unwrap().next_offset, resume_at + 5);
        }
        other => panic!("expected a damaged range, got {other:?}"),
    }
}

/// A time lookup that meets a damaged batch goes on after it, as a reader told to resume
/// there would (it failed: a consumer starting at a time, or a group reset to one, could
/// not start at all while the damage stayed). Payload damage (a bad CRC) and header
/// damage both.
#[test]
fn a_time_lookup_skips_damage_as_a_read_does() {
    for header in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config()).unwrap();
        append_batches(&mut log, 150, 5); // batch b: offsets 5b.., timestamp 1000 + b
        let first = log_files(dir.path())[0].clone();
        log.close().unwrap();
        let mut bytes = fs::read(&first).unwrap();
        let batch_len = BatchHeader::parse(&bytes).length as usize;
        match header {
            true => bytes[2 * batch_len + format::VERSION_AT] ^= 0xFF,
            false => bytes[2 * batch_len + HEADER_LEN + 30] ^= 0x01,
        }
        fs::write(&first, &bytes).unwrap();
        let (log, _) = Log::open(dir.path(), config()).unwrap();
        let resume_at = match log.read(10, 1) {
            Err(Error::DamagedRange { resume_at, .. }) => resume_at,
            other => panic!("expected a damaged range, got {other:?}"),
        };
        let found = log.offset_for_timestamp(1002).unwrap();
        let resumed = 1000 + (resume_at / 5) as i64;
        assert_eq!(found, Some((resume_at, resumed)), "header damage {header}");
        // Before the damage, and past it, lookups are as ever.
        assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some((5, 1001)));
        assert_eq!(log.offset_for_timestamp(1100).unwrap(), Some((500, 1100)));
    }
}
