//! Idempotent producers over a whole `Log`: retries answered across a clean close, a
//! crash, truncation and retention, and what open does with damaged snapshots.

use std::fs;
use std::path::Path;

use super::format::{self, BatchHeader};
use super::naming::snapshot_path;
use super::producers::snapshot;
use super::tests::config;
use super::*;
use crate::error::Error;

fn from(id: i64, epoch: i16, seq: i32, n: usize) -> PendingBatch {
    let mut builder = BatchBuilder::default().producer(ProducerInfo {
        id,
        epoch,
        base_sequence: seq,
    });
    for i in 0..n {
        let record = Record {
            key: None,
            value: bytes::Bytes::from(format!(
                "producer {id} sequence {} {}",
                seq + i as i32,
                "x".repeat(200)
            )),
            headers: Vec::new(),
            timestamp_ms: 1_000,
        };
        builder.push(&record).unwrap();
    }
    builder.build().unwrap()
}

/// Appends `batches` batches of 3 records from producer `id`, rolling after every
/// second one; returns each batch's first offset.
fn write(log: &mut Log, id: i64, batches: i32) -> Vec<u64> {
    let mut firsts = Vec::new();
    for i in 0..batches {
        let info = log.append(&mut from(id, 0, i * 3, 3)).unwrap();
        assert!(!info.duplicate);
        firsts.push(info.base_offset);
        if i % 2 == 1 {
            log.roll().unwrap();
            log.flush().unwrap(); // as the server does after a roll; writes the snapshot
        }
    }
    firsts
}

/// Every one of the last five batches of `id` is answered as a duplicate with its
/// offsets; the next sequence is taken and one past it refused.
fn check_remembers(log: &mut Log, id: i64, firsts: &[u64]) {
    let end = log.next_offset();
    let n = firsts.len() as i32;
    for i in (n - 5).max(0)..n {
        let info = log.append(&mut from(id, 0, i * 3, 3)).unwrap();
        assert!(info.duplicate, "batch {i} of producer {id}");
        assert_eq!(info.base_offset, firsts[i as usize]);
        assert_eq!(info.last_offset, firsts[i as usize] + 2);
    }
    assert_eq!(log.next_offset(), end, "duplicates wrote nothing");
    let err = log.append(&mut from(id, 0, n * 3 + 1, 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("expected sequence {}", n * 3)),
        "{err}"
    );
}

fn open(dir: &Path) -> (Log, OpenReport) {
    Log::open(dir, config()).unwrap()
}

#[test]
fn a_clean_close_keeps_the_state_in_a_snapshot_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    let firsts = write(&mut log, 7, 9);
    let end = log.next_offset();
    log.close().unwrap();
    let (mut log, report) = open(dir.path());
    assert!(report.clean);
    assert_eq!(report.producers.snapshot, Some(end));
    assert_eq!(
        report.producers.batches, 0,
        "nothing to read after a clean close"
    );
    check_remembers(&mut log, 7, &firsts);
}

#[test]
fn after_a_crash_the_state_is_rebuilt_from_the_last_snapshot_and_the_headers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    let a = write(&mut log, 1, 9);
    let b = write(&mut log, 2, 3);
    // Appended after the last roll, so only in the headers.
    let last = log.append(&mut from(1, 0, 27, 3)).unwrap().base_offset;
    drop(log); // a crash
    let (mut log, report) = open(dir.path());
    assert!(!report.clean);
    let snap = report.producers.snapshot.expect("the last roll's snapshot");
    assert!(
        snap < log.next_offset() && report.producers.batches >= 1,
        "{report:?}"
    );
    check_remembers(&mut log, 1, &[a, vec![last]].concat());
    check_remembers(&mut log, 2, &b);
}

#[test]
fn damaged_or_missing_snapshots_cost_a_walk_not_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    let firsts = write(&mut log, 5, 8);
    drop(log);
    let snaps = snapshot::list(dir.path()).unwrap();
    assert_eq!(
        snaps.len(),
        snapshot::KEPT_SNAPSHOTS,
        "older ones are pruned"
    );
    let newest = *snaps.last().unwrap();
    fs::write(snapshot_path(dir.path(), newest), b"garbage").unwrap();
    let (mut log, report) = open(dir.path());
    assert_eq!(
        report.producers.snapshot,
        Some(snaps[0]),
        "the older one is used"
    );
    check_remembers(&mut log, 5, &firsts);
    drop(log);
    for o in snapshot::list(dir.path()).unwrap() {
        fs::remove_file(snapshot_path(dir.path(), o)).unwrap();
    }
    let (mut log, report) = open(dir.path());
    assert_eq!(report.producers.snapshot, None);
    assert!(report.producers.sealed_segments > 0, "{report:?}");
    check_remembers(&mut log, 5, &firsts);
    // That open wrote a snapshot at the end, so the next one reads nothing sealed.
    drop(log);
    let (_, report) = open(dir.path());
    assert_eq!(report.producers.sealed_segments, 0, "{report:?}");
}

#[test]
fn truncation_forgets_the_batches_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    let firsts = write(&mut log, 3, 8);
    // Cut batches 5, 6 and 7 (and the snapshots above the cut).
    log.truncate(firsts[5]).unwrap();
    let info = log.append(&mut from(3, 0, 15, 3)).unwrap();
    assert!(
        !info.duplicate,
        "batch 5 is gone, so its retry is written again"
    );
    assert_eq!(info.base_offset, firsts[5]);
    let info = log.append(&mut from(3, 0, 12, 3)).unwrap();
    assert!(info.duplicate && info.base_offset == firsts[4]);
    drop(log);
    let (mut log, _) = open(dir.path());
    check_remembers(&mut log, 3, &[&firsts[..6]].concat());
}

#[test]
fn retention_forgets_producers_whose_batches_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    write(&mut log, 1, 2);
    let later = write(&mut log, 2, 4);
    log.delete_segments_below(later[0]).unwrap();
    assert!(log.producers().get(1).is_none());
    assert!(log.producers().get(2).is_some());
    // Producer 1 is unknown now, so it may go on from any sequence.
    log.append(&mut from(1, 0, 40, 1)).unwrap();
    drop(log);
    let (log, _) = open(dir.path());
    assert_eq!(log.producers().get(1).unwrap().batches.len(), 1);
}

#[test]
fn fenced_and_out_of_order_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    log.append(&mut from(4, 2, 0, 2)).unwrap();
    let end = log.next_offset();
    let err = log.append(&mut from(4, 1, 2, 2)).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    let err = log.append(&mut from(4, 2, 5, 2)).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert_eq!(log.next_offset(), end);
}

#[test]
fn batches_whose_producer_fields_were_never_checked_do_not_make_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    write(&mut log, 9, 3);
    drop(log);
    // As a log written before the server checked producer fields: the same headers
    // without the idempotent flag (and their CRCs recomputed), and no snapshots.
    for o in snapshot::list(dir.path()).unwrap() {
        fs::remove_file(snapshot_path(dir.path(), o)).unwrap();
    }
    let logs = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"));
    for path in logs {
        let mut bytes = fs::read(&path).unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::parse(&bytes[at..]);
            let end = at + header.length as usize;
            bytes[at + format::ATTRIBUTES_AT] &= !format::ATTR_IDEMPOTENT;
            let crc = format::batch_crc(&bytes[at..end]);
            bytes[at + format::CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
        fs::write(&path, bytes).unwrap();
    }
    let (mut log, report) = open(dir.path());
    assert!(report.truncated.is_empty(), "{report:?}");
    assert!(log.producers().is_empty(), "{:?}", log.producers());
    // So producer 9 is unknown, and its next batch is taken at any sequence.
    assert!(!log.append(&mut from(9, 0, 100, 1)).unwrap().duplicate);
}

#[test]
fn producers_idle_past_the_expiry_are_forgotten_and_stay_forgotten_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        producer_expiration: std::time::Duration::from_secs(60),
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
    // The clock around the append: the producer was last seen between the two.
    let before = super::log::now_ms();
    log.append(&mut from(1, 0, 0, 2)).unwrap();
    let after = super::log::now_ms();
    assert_eq!(log.expire_producers(before + 59_000), 0);
    assert_eq!(log.expire_producers(after + 61_000), 1);
    assert!(log.producers().is_empty());
    // Forgotten: its next batch is taken at any sequence, and a clean close keeps that.
    log.append(&mut from(1, 0, 7, 1)).unwrap();
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.producers().get(1).unwrap().batches.len(), 1);
}

/// The server's cap over every log sharing a cache: past it, a partition makes room for
/// a new producer by forgetting its own idlest; one with none still takes one. The tally
/// follows every change: appends, DeleteRecords, expiry, a reopen, a log dropped.
#[test]
fn past_the_servers_cap_a_partition_forgets_its_idlest_producer() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = SegmentCache::with_producer_cap(16, 3);
    let (mut a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    let (mut b, _) = Log::open_in(b_dir.path(), config(), &cache).unwrap();
    let append = |log: &mut Log, id: i64, seq: i32| {
        // Apart in time, so that which producer is the idlest is clear.
        std::thread::sleep(std::time::Duration::from_millis(3));
        log.append(&mut from(id, 0, seq, 1)).unwrap()
    };
    for id in 1..=3 {
        append(&mut a, id, 0);
    }
    assert_eq!(cache.producers_held(), 3);
    append(&mut b, 4, 0); // b has none: it takes one past the cap
    assert_eq!(cache.producers_held(), 4);
    // a forgets its idlest, producer 1, for producer 5; and, over its share (3 / 2),
    // producer 2 for the one b took past the cap.
    append(&mut a, 5, 0);
    assert_eq!((a.producers().len(), cache.producers_held()), (2, 3));
    assert!(a.producers().get(1).is_none());
    assert!(
        !append(&mut a, 1, 0).duplicate,
        "producer 1's retry is not recognised any more"
    );
    assert!(append(&mut a, 5, 0).duplicate, "producer 5's is");
    b.delete_records(b.next_offset()).unwrap();
    assert_eq!(
        cache.producers_held(),
        2,
        "b's producer went with its batches"
    );
    assert_eq!(a.expire_producers(super::log::now_ms() + 2 * 86_400_000), 2);
    assert_eq!(cache.producers_held(), 0);
    append(&mut a, 6, 0);
    a.close().unwrap();
    assert_eq!(cache.producers_held(), 0, "a closed log holds none");
    let (a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    assert_eq!((a.producers().len(), cache.producers_held()), (1, 1));
    drop(a);
    assert_eq!(cache.producers_held(), 0);
}

/// Past the server's cap, a partition below its fair share takes a new producer without
/// forgetting its active ones (whose retries must still be recognised), and the
/// partition holding more than its share forgets its idlest to make up for it, at its
/// next append with a producer or its next upkeep. Up to a tenth past the cap.
#[test]
fn past_the_cap_the_partition_over_its_share_forgets_for_the_others() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = SegmentCache::with_producer_cap(16, 20);
    let (mut a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    let (mut b, _) = Log::open_in(b_dir.path(), config(), &cache).unwrap();
    let append = |log: &mut Log, id: i64, seq: i32| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        log.append(&mut from(id, 0, seq, 1)).unwrap()
    };
    // A flood of ids fills the cap on a.
    for id in 1..=20 {
        append(&mut a, id, 0);
    }
    // b's producers: b is below its share (20 / 2), and takes two past the cap.
    append(&mut b, 100, 0);
    append(&mut b, 101, 0);
    assert_eq!(b.producers().len(), 2, "b forgot none");
    assert!(
        append(&mut b, 100, 0).duplicate,
        "100's retry is recognised"
    );
    assert_eq!(cache.producers_held(), 22);
    // A tenth past the cap: b forgets its own idlest now.
    append(&mut b, 102, 0);
    assert_eq!((b.producers().len(), cache.producers_held()), (2, 22));
    // a's next append makes up for what b took: back to the cap.
    append(&mut a, 21, 0);
    assert_eq!((a.producers().len(), cache.producers_held()), (18, 20));
    // And an upkeep does too, for a partition that does not append.
    append(&mut b, 103, 0);
    append(&mut b, 104, 0);
    assert_eq!((b.producers().len(), cache.producers_held()), (4, 22));
    assert_eq!(a.expire_producers(super::log::now_ms()), 0);
    assert_eq!((a.producers().len(), cache.producers_held()), (16, 20));
    assert!(a.producers().get(21).is_some(), "a kept its newest");
}

/// Review: forgetting the idlest hundredth at once is for a partition's own cap. Under
/// the server's cap the limit is the partition's own count, and each new producer there
/// made a partition over its share forget a hundredth of its producers, shrinking it
/// by that much at every one while a flood elsewhere took the room.
#[test]
fn under_the_server_cap_a_new_producer_takes_exactly_one_place() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = SegmentCache::with_producer_cap(16, 400);
    let (mut a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    let (mut b, _) = Log::open_in(b_dir.path(), config(), &cache).unwrap();
    for id in 1..=300 {
        a.append(&mut from(id, 0, 0, 1)).unwrap();
    }
    for id in 1001..=1100 {
        b.append(&mut from(id, 0, 0, 1)).unwrap();
    }
    assert_eq!(cache.producers_held(), 400);
    for id in 301..=310 {
        a.append(&mut from(id, 0, 0, 1)).unwrap();
        assert_eq!(a.producers().len(), 300, "after {id}");
    }
    assert_eq!(cache.producers_held(), 400);
}

/// A cap of 0 holds every partition to one producer, as the README says: with a share
/// of none, partitions forgot the producer they had just taken (review finding).
#[test]
fn a_cap_of_none_holds_every_partition_to_one_producer() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = SegmentCache::with_producer_cap(16, 0);
    let (mut a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    let (mut b, _) = Log::open_in(b_dir.path(), config(), &cache).unwrap();
    a.append(&mut from(1, 0, 0, 1)).unwrap();
    b.append(&mut from(2, 0, 0, 1)).unwrap();
    assert_eq!(a.expire_producers(super::log::now_ms()), 0);
    assert_eq!((a.producers().len(), b.producers().len()), (1, 1));
    assert!(a.append(&mut from(1, 0, 0, 1)).unwrap().duplicate);
    assert!(b.append(&mut from(2, 0, 0, 1)).unwrap().duplicate);
    std::thread::sleep(std::time::Duration::from_millis(2));
    a.append(&mut from(3, 0, 0, 1)).unwrap();
    let kept: Vec<i64> = a.producers().iter().map(|(id, _)| id).collect();
    assert_eq!(kept, [3], "the newest");
}

/// After a crash, the producers a partition evicted for the cap since its last snapshot
/// come back from the snapshot and the batch headers: the log keeps its idlest within
/// what the cap leaves.
#[test]
fn a_log_rebuilt_after_a_crash_keeps_within_the_servers_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cache = SegmentCache::with_producer_cap(16, 3);
    let (mut log, _) = Log::open_in(dir.path(), config(), &cache).unwrap();
    for id in 1..=3 {
        std::thread::sleep(std::time::Duration::from_millis(3));
        log.append(&mut from(id, 0, 0, 1)).unwrap();
    }
    log.roll().unwrap();
    log.flush().unwrap(); // a snapshot of producers 1 to 3
    for id in 4..=6 {
        std::thread::sleep(std::time::Duration::from_millis(3));
        log.append(&mut from(id, 0, 0, 1)).unwrap(); // each forgets one of 1 to 3
    }
    assert_eq!(cache.producers_held(), 3);
    drop(log); // a crash: no snapshot at close
    let (log, _) = Log::open_in(dir.path(), config(), &cache).unwrap();
    assert_eq!(cache.producers_held(), 3, "{:?}", log.producers());
    let mut kept: Vec<i64> = log.producers().iter().map(|(id, _)| id).collect();
    kept.sort_unstable();
    assert_eq!(kept, [4, 5, 6], "the idlest went");
}

/// The same when the snapshot alone holds more than the cap leaves: other logs took the
/// room while this one was down.
#[test]
fn a_snapshot_past_what_the_cap_leaves_keeps_its_newest() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = SegmentCache::with_producer_cap(16, 3);
    let (mut a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    for id in 1..=3 {
        std::thread::sleep(std::time::Duration::from_millis(3));
        a.append(&mut from(id, 0, 0, 1)).unwrap();
    }
    a.close().unwrap(); // a snapshot of producers 1 to 3
    let (mut b, _) = Log::open_in(b_dir.path(), config(), &cache).unwrap();
    for id in 7..=9 {
        b.append(&mut from(id, 0, 0, 1)).unwrap();
    }
    let (a, _) = Log::open_in(a_dir.path(), config(), &cache).unwrap();
    let kept: Vec<i64> = a.producers().iter().map(|(id, _)| id).collect();
    assert_eq!(kept, [3], "one, the newest, as for a partition with none");
    assert_eq!(cache.producers_held(), 4);
}

/// Logs rebuilt side by side (a start opens every partition at once) share what the cap
/// leaves as they would one after another, rather than each taking all of it.
#[test]
fn logs_rebuilt_at_once_keep_within_the_servers_cap_together() {
    const LOGS: usize = 16;
    let dirs: Vec<_> = (0..LOGS).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        let (mut log, _) = open(dir.path());
        // Many batches and a crash (no snapshot): each open reads every header, long
        // enough for the opens to overlap.
        for seq in 0..1000 {
            for id in 1..=3 {
                log.append(&mut from(id, 0, seq, 1)).unwrap();
            }
        }
    }
    let cache = SegmentCache::with_producer_cap(16, 8);
    let together = std::sync::Barrier::new(LOGS);
    let logs: Vec<Log> = std::thread::scope(|scope| {
        let opening: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let (cache, together) = (&cache, &together);
                scope.spawn(move || {
                    together.wait();
                    Log::open_in(dir.path(), config(), cache).unwrap().0
                })
            })
            .collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let kept: usize = logs.iter().map(|log| log.producers().len()).sum();
    // One after another: 3 + 3 + 2 fill the cap of 8, and each of the other 13 keeps one.
    assert_eq!(kept, 21);
    assert_eq!(cache.producers_held(), kept);
}
