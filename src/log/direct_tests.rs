//! Durable batches written straight to the disk (`segment/direct.rs`), mixed with
//! batches written through the page cache: what is read back, after a crash, after a
//! clean close, and after a roll.

use std::fs;
use std::path::Path;

use super::naming::{segment_path, SegmentFile};
use super::tests::{batch, config, read_all};
use super::*;

/// Appends batches of 1 to 37 records (so they end anywhere in a block), every other
/// pair direct: a direct write after a direct one takes the block's head from memory,
/// one after a page-cache append reads it from the map.
fn append_mixed(log: &mut Log, batches: u64) -> Vec<(u64, String)> {
    for b in 0..batches {
        let mut pending = batch(b, 1 + (b as usize * 7) % 37, 1000 + b as i64);
        pending.set_direct(b % 4 < 2);
        log.append(&mut pending).unwrap();
    }
    read_all(log, 0)
}

fn active_log_len(dir: &Path, log: &Log) -> u64 {
    let base = log.segment_bases().last().copied().unwrap();
    fs::metadata(segment_path(dir, base, SegmentFile::Log))
        .unwrap()
        .len()
}

#[test]
fn direct_and_page_cache_appends_read_back_alike_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let big = LogConfig {
        segment_bytes: 16 << 20, // one segment: every append lands in the active one
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), big.clone()).unwrap();
    append_mixed(&mut log, 60);
    // The last batches were written through the page cache: end with a direct one.
    let mut last = batch(999, 3, 5);
    last.set_direct(true);
    log.append(&mut last).unwrap();
    let written = read_all(&log, 0);
    assert_eq!(written.len() as u64, log.next_offset());
    let len = active_log_len(dir.path(), &log);
    assert!(
        len > log.active_size() && len % 4096 == 0,
        "a direct write pads the file to a block boundary ({len} bytes, {} committed)",
        log.active_size()
    );
    log.flush().unwrap();
    drop(log); // a crash, as far as the next open is concerned

    let (log, report) = Log::open(dir.path(), big.clone()).unwrap();
    assert!(!report.clean);
    assert!(
        report.truncated.is_empty(),
        "the padding is not damage: {:?}",
        report.truncated
    );
    assert_eq!(read_all(&log, 0), written, "every record, from the disk");
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), big).unwrap();
    assert!(
        report.clean,
        "a clean close cuts the padding, so nothing is scanned"
    );
    assert_eq!(active_log_len(dir.path(), &log), log.active_size());
    assert_eq!(read_all(&log, 0), written);
}

#[test]
fn a_sealed_segment_keeps_no_padding() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap(); // 64 KiB segments
    let written = append_mixed(&mut log, 120);
    assert!(log.segment_count() >= 3);
    let bases = log.segment_bases();
    for base in &bases[..bases.len() - 1] {
        let len = fs::metadata(segment_path(dir.path(), *base, SegmentFile::Log))
            .unwrap()
            .len();
        let next = bases[bases.iter().position(|b| b == base).unwrap() + 1];
        // Batch by batch (a read of one byte returns one batch), to the next segment.
        let (mut at, mut bytes) = (*base, 0);
        while at < next {
            let one = log.read(at, 1).unwrap();
            bytes += one.size_bytes();
            at = one.next_offset;
        }
        assert_eq!(len as usize, bytes, "segment {base} ends at its last batch");
    }
    log.flush().unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.truncated.is_empty(), "{:?}", report.truncated);
    assert_eq!(read_all(&log, 0), written);
}

#[test]
fn zeros_past_the_end_that_are_not_padding_are_still_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let written = append_mixed(&mut log, 3);
    log.flush().unwrap();
    let path = segment_path(dir.path(), 0, SegmentFile::Log);
    drop(log);
    // A whole block of zeros past the end is more than a direct write leaves.
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len.div_ceil(4096) * 4096 + 4096).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated.len(), 1, "{:?}", report.truncated);
    assert_eq!(read_all(&log, 0), written);
}

#[test]
fn where_direct_writes_are_refused_durable_batches_go_through_the_page_cache() {
    // tmpfs takes no O_DIRECT.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm to try a file system without direct writes on");
        return;
    };
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let written = append_mixed(&mut log, 20);
    assert_eq!(written.len() as u64, log.next_offset());
    assert_eq!(
        active_log_len(dir.path(), &log),
        log.active_size(),
        "no padding"
    );
    log.flush().unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.truncated.is_empty());
    assert_eq!(read_all(&log, 0), written);
}
