//! Partition behaviour that needs a real log under it: failed fsyncs, reopens, rolls.

use bytes::Bytes;

use super::*;
use crate::broker::TopicConfig;
use crate::log::files::failpoint;
use crate::log::{BatchBuilder, PendingBatch, Record};

fn batch(value: &str) -> PendingBatch {
    let mut builder = BatchBuilder::default();
    let record = Record {
        value: Bytes::from(value.to_string()),
        timestamp_ms: 1,
        ..Record::default()
    };
    builder.push(&record).unwrap();
    builder.build().unwrap()
}

fn is_sync_failure(result: &Result<()>) -> bool {
    matches!(result, Err(Error::InPartition { source, .. }) if matches!(**source, Error::SyncFailed { .. }))
        || matches!(result, Err(Error::Io { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_followed_by_an_acknowledgement_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let cache = SegmentCache::new(8);
    let config = TopicConfig::default().log_config();
    let p = Arc::new(Partition::open("t", 0, dir.path(), config, &cache));
    let (first, epoch) = p.append(batch("synced")).await.unwrap();
    p.sync_below(first.last_offset + 1, epoch).await.unwrap();

    failpoint::fail_next_sync_under(dir.path());
    let (a, _) = p.append(batch("a")).await.unwrap();
    let (b, _) = p.append(batch("b")).await.unwrap();
    // Both wait for an fsync; the first one fails. The second waiter must not start
    // a new fsync, which Linux may report as a success for pages it dropped.
    let (ra, rb) = tokio::join!(
        p.sync_below(a.last_offset + 1, epoch),
        p.sync_below(b.last_offset + 1, epoch)
    );
    assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
    assert!(is_sync_failure(&rb), "{rb:?}");
    let refused = p.append(batch("c")).await.unwrap_err().to_string();
    assert!(
        refused.contains("fsync") && refused.contains("refuses writes"),
        "{refused}"
    );
    assert!(p.sync_below(b.last_offset + 1, epoch).await.is_err());

    // The upkeep reopens it from disk; writes then work again.
    p.maintain(0).await.unwrap();
    let (c, epoch) = p.append(batch("c")).await.unwrap();
    p.sync_below(c.last_offset + 1, epoch).await.unwrap();
    assert_eq!(p.offsets().unwrap().high_watermark, c.last_offset + 1);
    let (read, _) = p.read(0, 1 << 20).await.unwrap();
    assert_eq!(read.next_offset, c.last_offset + 1, "nothing lost here");
}

/// Durability review: a reopen after a failed fsync that itself failed (a full disk
/// while it copied the segments, say) left the partition unavailable until the process
/// restarted. The upkeep now tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_that_fails_is_tried_again_at_the_next_upkeep() {
    let dir = tempfile::tempdir().unwrap();
    let p = with_a_failed_sync(dir.path()).await;
    failpoint::fail_next_sync_under(dir.path()); // the reopen's recovery fails too
    assert!(p.maintain(0).await.is_err());
    let refused = p.append(batch("c")).await.unwrap_err().to_string();
    assert!(refused.contains("reopening"), "{refused}");
    // A config change meanwhile is what the log opens with.
    let changed = LogConfig {
        segment_bytes: 1 << 20,
        ..TopicConfig::default().log_config()
    };
    p.reconfigure(changed).unwrap();
    p.maintain(0).await.unwrap(); // tried again
    let segment_bytes = p.with_log(|log| Ok(log.config().segment_bytes)).unwrap();
    assert_eq!(segment_bytes, 1 << 20);
    let (c, epoch) = p.append(batch("c")).await.unwrap();
    p.sync_below(c.last_offset + 1, epoch).await.unwrap();
    let (read, _) = p.read(0, 1 << 20).await.unwrap();
    assert_eq!(read.next_offset, c.last_offset + 1);
}

/// Review: a config change that came while the log was being reopened after a failed
/// fsync found the partition unavailable and was lost: the reopened log kept the
/// config it had before, until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_during_a_reopen_is_what_the_reopened_log_has() {
    let dir = tempfile::tempdir().unwrap();
    let p = with_a_failed_sync(dir.path()).await;
    // The reopen's first sync takes a while: the change comes meanwhile.
    failpoint::delay_next_sync_under(dir.path(), std::time::Duration::from_millis(500));
    let reopening = tokio::spawn({
        let p = Arc::clone(&p);
        async move { p.maintain(0).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let changed = LogConfig {
        segment_bytes: 1 << 20,
        ..TopicConfig::default().log_config()
    };
    let during = p.reconfigure(changed);
    reopening.await.unwrap().unwrap();
    let segment_bytes = p.with_log(|log| Ok(log.config().segment_bytes)).unwrap();
    assert_eq!(segment_bytes, 1 << 20, "the change ({during:?})");
}

/// A partition in `dir` holding one batch that is on disk, with its epoch, its
/// active `.log` and that file's length: where the next batch will start.
async fn with_a_synced_batch(dir: &std::path::Path) -> (Arc<Partition>, u64, PathBuf, u64) {
    let cache = SegmentCache::new(8);
    let config = TopicConfig::default().log_config();
    let p = Arc::new(Partition::open("t", 0, dir, config, &cache));
    let (a, epoch) = p.append(batch("a")).await.unwrap();
    p.sync_below(a.last_offset + 1, epoch).await.unwrap();
    let file = dir.join("00000000000000000000.log");
    let len = std::fs::metadata(&file).unwrap().len();
    (p, epoch, file, len)
}

/// A partition in `dir` whose last fsync failed, after one batch that is on disk.
async fn with_a_failed_sync(dir: &std::path::Path) -> Arc<Partition> {
    let (p, epoch, _, _) = with_a_synced_batch(dir).await;
    failpoint::fail_next_sync_under(dir);
    let (b, _) = p.append(batch("b")).await.unwrap();
    assert!(p.sync_below(b.last_offset + 1, epoch).await.is_err());
    p
}

/// What the disk holds after the kernel dropped dirty pages: zeros from `at`.
fn lose_pages_from(file: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let raw = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    raw.write_at(&[0u8; 64], at).unwrap();
}

/// Found in review: a producer whose batch was appended before a failed fsync, and
/// who waits for its fsync only after the upkeep reopened the log, was acknowledged
/// although recovery had cut its batch (the kernel dropped the dirty pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_waiter_is_not_acknowledged_for_a_batch_that_recovery_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (p, epoch, file, b_at) = with_a_synced_batch(dir.path()).await;
    let (b, b_epoch) = p.append(batch("b")).await.unwrap(); // not waited for yet
    let (c, _) = p.append(batch("c")).await.unwrap();
    failpoint::fail_next_sync_under(dir.path());
    assert!(p.sync_below(c.last_offset + 1, epoch).await.is_err());
    lose_pages_from(&file, b_at); // b's and c's
    p.maintain(0).await.unwrap(); // the upkeep reopens; recovery cuts at b
    assert_eq!(
        p.offsets().unwrap().high_watermark,
        b.base_offset,
        "b is gone"
    );
    let (d, _) = p.append(batch("d")).await.unwrap();
    assert_eq!(d.base_offset, b.base_offset, "and its offset is reused");
    let acked = p.sync_below(b.last_offset + 1, b_epoch).await;
    assert!(
        acked.is_err(),
        "b acknowledged as durable; that offset holds d"
    );
}

/// Found in review: the reopen cut the torn tail of the .log in place while a
/// response still held bytes of its map: SIGBUS. Recovery now works on copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_held_by_a_reader_survive_a_reopen_that_cuts_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (p, epoch, file, b_at) = with_a_synced_batch(dir.path()).await;
    let (b, _) = p.append(batch(&"x".repeat(60_000))).await.unwrap();
    let (held, _) = p.read(b.base_offset, 1 << 20).await.unwrap();
    failpoint::fail_next_sync_under(dir.path());
    assert!(p.sync_below(b.last_offset + 1, epoch).await.is_err());
    lose_pages_from(&file, b_at);
    p.maintain(0).await.unwrap(); // recovery cuts the log at b_at
    assert_eq!(std::fs::metadata(&file).unwrap().len(), b_at);
    let sum: u64 = held.chunks[0].iter().map(|&x| u64::from(x)).sum();
    assert!(sum > 0, "the held bytes are still readable");
}

/// Found in review: an idle partition whose segment rolled by age in the upkeep kept
/// the sealed segment's descriptors (a roll adds no offset, so it looked flushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_roll_of_an_idle_partition_closes_the_sealed_files() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, _, _) = with_a_synced_batch(dir.path()).await;
    let later = crate::broker::now_ms() + 30 * 24 * 3600 * 1000;
    p.maintain(later).await.unwrap(); // rolls: segment 0 is sealed, and synced
    let sealed = dir
        .path()
        .join("00000000000000000000")
        .display()
        .to_string();
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|t| t.display().to_string().starts_with(&sealed))
        .count();
    assert_eq!(p.with_log(|log| Ok(log.segment_count())).unwrap(), 2);
    assert_eq!(open, 0, "the sealed segment still holds {open} descriptors");
}

/// Found in review: one damaged batch at a partition's log start failed the whole
/// DescribeTopic (which the client and the CLI call before producing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_leaves_out_the_oldest_time_when_the_log_start_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = SegmentCache::new(16);
    let config = TopicConfig::default().log_config();
    let partition = Arc::new(Partition::open("t", 0, dir.path(), config.clone(), &cache));
    for value in ["first", "second"] {
        partition.append(batch(value)).await.unwrap();
    }
    partition.sync_below(2, partition.epoch()).await.unwrap();
    let policy = TopicConfig::default().retention();
    let before = partition.describe(&policy, 0).unwrap();
    assert_eq!(before.oldest_timestamp_ms, Some(1));
    // Flip a byte of the first record's value, in the file.
    let log_file = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&log_file).unwrap();
    let at = bytes.windows(5).position(|w| w == b"first").unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&log_file, &bytes).unwrap();
    let after = partition.describe(&policy, 0).unwrap();
    assert_eq!(after.oldest_timestamp_ms, None);
    assert_eq!((after.log_start_offset, after.high_watermark), (0, 2));
}
