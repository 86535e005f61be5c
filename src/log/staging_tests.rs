//! Staged appends (`staging.rs`): the bytes they store, what ends them, and what a crash
//! or a close in the middle of one leaves.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::naming::{segment_path, SegmentFile};
use super::tests::{config, read_all};
use super::*;
use crate::error::Error;

/// `n` records of batch `tag`: keys on every other one, a header on each, values of
/// 100 bytes and more (every third one 300, which the batch references, not copies).
fn records(tag: u64, n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: (i % 2 == 0).then(|| Bytes::from(format!("k{tag}-{i}"))),
            value: Bytes::from(format!(
                "batch {tag} record {i} {}",
                "x".repeat(if i % 3 == 0 { 300 } else { 100 })
            )),
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from(format!("{i}")),
            }],
            timestamp_ms: ts + i as i64,
        })
        .collect()
}

fn part(records: &[Record], producer: ProducerInfo) -> PendingBatch {
    let mut builder = BatchBuilder::for_records(records).producer(producer);
    for record in records {
        builder.push(record).unwrap();
    }
    builder.build().unwrap()
}

fn active_log_file(dir: &Path, log: &Log) -> PathBuf {
    segment_path(dir, *log.segment_bases().last().unwrap(), SegmentFile::Log)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Three parts of a batch: 4, 1 and 6 records, timestamps not in order.
fn three_parts() -> Vec<Vec<Record>> {
    vec![
        records(1, 4, 5_000),
        records(2, 1, 9_000),
        records(3, 6, 7_000),
    ]
}

/// A log with two batches appended, and a staging begun after them.
fn log_with_staging(dir: &Path) -> (Log, Staging) {
    let (mut log, _) = Log::open(dir, config()).unwrap();
    log.append(&mut part(&records(0, 3, 1_000), NO_PRODUCER))
        .unwrap();
    log.append(&mut part(&records(0, 2, 1_000), NO_PRODUCER))
        .unwrap();
    let staging = log.stage(4096, false).unwrap();
    (log, staging)
}

#[test]
fn a_batch_staged_in_parts_is_stored_as_the_same_batch_appended_whole() {
    for writeback in [false, true] {
        let (whole_dir, staged_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut whole, _) = Log::open(whole_dir.path(), config()).unwrap();
        let (mut staged, _) = Log::open(staged_dir.path(), config()).unwrap();
        for log in [&mut whole, &mut staged] {
            log.append(&mut part(&records(0, 3, 1_000), NO_PRODUCER))
                .unwrap();
        }
        let all: Vec<Record> = three_parts().concat();
        let appended = whole.append(&mut part(&all, NO_PRODUCER)).unwrap();

        let mut staging = staged.stage(4096, writeback).unwrap();
        assert_eq!(staging.base_offset(), 3);
        for records in three_parts() {
            assert!(staged
                .stage_records(&mut staging, &mut part(&records, NO_PRODUCER))
                .unwrap());
            // Nothing staged is readable, nor counted in the log's end, before the commit.
            assert_eq!(staged.next_offset(), 3);
            assert_eq!(read_all(&staged, 0).len(), 3);
        }
        assert_eq!(staging.records(), 11);
        let committed = staged.commit_staged(staging, NO_PRODUCER).unwrap().unwrap();
        assert_eq!(committed, appended);
        assert_eq!(committed.max_timestamp, 9_000);
        let (a, b) = (
            fs::read(active_log_file(whole_dir.path(), &whole)).unwrap(),
            fs::read(active_log_file(staged_dir.path(), &staged)).unwrap(),
        );
        assert!(a == b, "the stored bytes differ (writeback {writeback})");
        assert_eq!(read_all(&staged, 0), read_all(&whole, 0));
        // And it survives a reopen, whose scan checks the CRC.
        drop(staged);
        let (staged, report) = Log::open(staged_dir.path(), config()).unwrap();
        assert!(report.truncated.is_empty());
        assert_eq!(read_all(&staged, 0), read_all(&whole, 0));
    }
}

#[test]
fn any_other_write_ends_a_staging_and_cuts_its_bytes_off() {
    let dir = tempfile::tempdir().unwrap();
    type Write = fn(&mut Log);
    let writes: [(&str, Write); 4] = [
        ("append", |log| {
            log.append(&mut part(&records(9, 2, 1), NO_PRODUCER))
                .map(drop)
                .unwrap()
        }),
        ("roll", |log| log.roll().unwrap()),
        ("truncate", |log| log.truncate(3).unwrap()),
        ("another staging", |log| {
            let mut other = log.stage(100, false).unwrap();
            let mut records = part(&records(9, 2, 1), NO_PRODUCER);
            assert!(log.stage_records(&mut other, &mut records).unwrap());
            log.commit_staged(other, NO_PRODUCER).unwrap().unwrap();
        }),
    ];
    for (name, write) in writes {
        let sub = dir.path().join(name.replace(' ', "-"));
        let (mut log, mut staging) = log_with_staging(&sub);
        let committed = file_len(&active_log_file(&sub, &log));
        let [first, rest @ ..] = &three_parts()[..] else {
            unreachable!()
        };
        assert!(log
            .stage_records(&mut staging, &mut part(first, NO_PRODUCER))
            .unwrap());
        assert!(file_len(&active_log_file(&sub, &log)) > committed);
        let before = read_all(&log, 0);
        write(&mut log);
        assert!(!log.is_staging(&staging), "{name}");
        for records in rest {
            let mut records = part(records, NO_PRODUCER);
            assert!(
                !log.stage_records(&mut staging, &mut records).unwrap(),
                "{name}"
            );
        }
        assert_eq!(
            log.commit_staged(staging, NO_PRODUCER).unwrap(),
            None,
            "{name}"
        );
        // The log holds what the other write wrote, right after what was there before.
        let after = read_all(&log, 0);
        let staged_value = |(_, v): &(u64, String)| v.starts_with("batch 1 ");
        assert!(!after.iter().any(staged_value), "{name}");
        match name {
            "truncate" => assert_eq!(after, before[..3]),
            "roll" => assert_eq!(after, before),
            _ => assert_eq!(after.len(), before.len() + 2, "{name}"),
        }
        // Nothing lies past the end: reopened after a crash, the log is the same.
        drop(log);
        let (log, report) = Log::open(&sub, config()).unwrap();
        assert!(
            report.truncated.is_empty(),
            "{name}: {:?}",
            report.truncated
        );
        assert_eq!(read_all(&log, 0), after, "{name}");
    }
}

#[test]
fn a_crash_in_the_middle_of_a_staging_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut staging) = log_with_staging(dir.path());
    let before = read_all(&log, 0);
    let path = active_log_file(dir.path(), &log);
    let committed = file_len(&path);
    for records in &three_parts()[..2] {
        assert!(log
            .stage_records(&mut staging, &mut part(records, NO_PRODUCER))
            .unwrap());
    }
    assert!(file_len(&path) > committed);
    drop(log); // a crash: the staged parts are in the file, the header slot holds zeros
    let (mut log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated.len(), 1, "the staged bytes are cut");
    assert_eq!(file_len(&path), committed);
    assert_eq!(read_all(&log, 0), before);
    // The staging from before the crash is not this log's.
    assert!(!log.is_staging(&staging));
    assert_eq!(log.commit_staged(staging, NO_PRODUCER).unwrap(), None);
    log.append(&mut part(&records(7, 2, 1), NO_PRODUCER))
        .unwrap();
    assert_eq!(read_all(&log, 0).len(), before.len() + 2);
}

#[test]
fn a_crash_never_recovers_a_batch_that_was_not_committed() {
    // Past the committed end lies the whole batch about to be staged, at the offsets it
    // will get, as a first attempt whose write landed but whose commit did not (and
    // whose cut failed) would leave. Its retry is staged, and the process dies after
    // the first part: the bytes past the end are now that whole batch but for its
    // header, so only the header slot, zeroed with the first part, keeps recovery from
    // taking a batch that was never acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, staging) = log_with_staging(dir.path());
    log.abort_staged(staging);
    let before = read_all(&log, 0);
    let path = active_log_file(dir.path(), &log);
    let committed = file_len(&path);
    let parts = three_parts();
    let ghost = {
        let other_dir = tempfile::tempdir().unwrap();
        let (mut other, _) = Log::open(other_dir.path(), config()).unwrap();
        other
            .append(&mut part(&records(0, 5, 1_000), NO_PRODUCER))
            .unwrap();
        let mut whole = part(&parts.concat(), NO_PRODUCER);
        other.append(&mut whole).unwrap();
        whole.to_vec()
    };
    assert_eq!(BatchHeader::parse(&ghost).base_offset, 5);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &ghost, committed).unwrap();

    let mut staging = log.stage(4096, false).unwrap();
    assert!(log
        .stage_records(&mut staging, &mut part(&parts[0], NO_PRODUCER))
        .unwrap());
    drop(log); // a crash
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(file_len(&path), committed);
}

#[test]
fn a_close_in_the_middle_of_a_staging_cuts_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut staging) = log_with_staging(dir.path());
    let before = read_all(&log, 0);
    let path = active_log_file(dir.path(), &log);
    let committed = file_len(&path);
    assert!(log
        .stage_records(&mut staging, &mut part(&three_parts()[0], NO_PRODUCER))
        .unwrap());
    log.close().unwrap();
    assert_eq!(file_len(&path), committed);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    assert_eq!(read_all(&log, 0), before);
}

#[test]
fn an_idempotent_producer_is_checked_at_the_commit_as_an_append_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let producer = |base_sequence| ProducerInfo {
        id: 7,
        epoch: 0,
        base_sequence,
    };
    let first = log
        .append(&mut part(&records(0, 5, 1), producer(0)))
        .unwrap();
    let path = active_log_file(dir.path(), &log);
    let committed = file_len(&path);

    // A retry of the batch just appended, staged in two parts: answered with the first
    // attempt's offsets, nothing written.
    let all = records(0, 5, 1);
    let mut staging = log.stage(4096, false).unwrap();
    assert!(log
        .stage_records(&mut staging, &mut part(&all[..2], NO_PRODUCER))
        .unwrap());
    assert!(log
        .stage_records(&mut staging, &mut part(&all[2..], NO_PRODUCER))
        .unwrap());
    let retry = log.commit_staged(staging, producer(0)).unwrap().unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(file_len(&path), committed);

    // Out of sequence: refused, nothing written.
    let mut staging = log.stage(4096, false).unwrap();
    assert!(log
        .stage_records(&mut staging, &mut part(&records(1, 2, 1), NO_PRODUCER))
        .unwrap());
    let err = log.commit_staged(staging, producer(9)).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    assert_eq!(file_len(&path), committed);

    // The next in sequence, staged, is appended, and a retry of it appended whole is
    // answered with its offsets: the producer's state knows it.
    let mut staging = log.stage(4096, false).unwrap();
    let next = records(1, 3, 1);
    assert!(log
        .stage_records(&mut staging, &mut part(&next, NO_PRODUCER))
        .unwrap());
    let staged = log.commit_staged(staging, producer(5)).unwrap().unwrap();
    assert_eq!((staged.base_offset, staged.duplicate), (5, false));
    let again = log.append(&mut part(&next, producer(5))).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.base_offset, 5);
    // Stored as an idempotent producer's batch, as an append stores it.
    let stored = log.read(5, 1 << 20).unwrap();
    let header = BatchHeader::parse(&stored.chunks[0]);
    assert_eq!(header.producer, producer(5));
    assert_eq!(header.attributes, format::ATTR_IDEMPOTENT);
}

#[test]
fn a_batch_that_outgrows_its_segment_or_the_batch_limit_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 6 << 10,
        max_batch_bytes: 5 << 10,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    log.append(&mut part(&records(0, 10, 1), NO_PRODUCER))
        .unwrap();
    let path = active_log_file(dir.path(), &log);
    let committed = file_len(&path);
    // Expected small, grows past the segment's room: the caller appends it instead.
    let mut staging = log.stage(100, false).unwrap();
    assert!(!staging.rolled());
    let big = records(1, 20, 1);
    assert!(log
        .stage_records(&mut staging, &mut part(&big, NO_PRODUCER))
        .unwrap());
    assert_eq!(log.commit_staged(staging, NO_PRODUCER).unwrap(), None);
    assert_eq!(file_len(&path), committed);
    let appended = log.append(&mut part(&big, NO_PRODUCER)).unwrap();
    assert!(appended.rolled);

    // Past the batch limit: refused when the part comes, and the staging ends.
    let mut staging = log.stage(100, false).unwrap();
    let huge = records(2, 40, 1);
    let err = log
        .stage_records(&mut staging, &mut part(&huge, NO_PRODUCER))
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(!log.is_staging(&staging));

    // Expected large: the staging rolls the segment first, and then fits.
    let mut staging = log.stage(5 << 10, false).unwrap();
    assert!(staging.rolled());
    assert!(log
        .stage_records(&mut staging, &mut part(&big, NO_PRODUCER))
        .unwrap());
    let info = log.commit_staged(staging, NO_PRODUCER).unwrap().unwrap();
    assert!(info.rolled);
    assert_eq!(info.base_offset, 30);
}
