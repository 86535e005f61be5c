//! Compaction of a whole `Log`: what stays, reads across the gaps it leaves, reopening
//! (cleanly and by a full scan), and a crash at each step of the swap.

use std::collections::BTreeMap;
use std::fs;

use bytes::Bytes;

use super::swap::{CLEANING_DIR, MANIFEST_FILE};
use super::*;

const NOW: i64 = 1_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

fn policy() -> CompactionPolicy {
    CompactionPolicy {
        min_lag_ms: 0,
        delete_retention_ms: 1000,
        timestamp_after_max_ms: 3_600_000,
        max_keys: 1 << 20,
        segment_bytes: 64 << 10,
    }
}

/// One batch of `(key, value)` records, timestamped `ts`.
fn batch(records: &[(&str, &str)], ts: i64) -> PendingBatch {
    let mut builder = BatchBuilder::default();
    for (key, value) in records {
        builder
            .push(&Record {
                key: Some(Bytes::from(key.to_string())),
                value: Bytes::from(value.to_string()),
                timestamp_ms: ts,
                ..Record::default()
            })
            .unwrap();
    }
    builder.build().unwrap()
}

/// Every record from `from` on: (offset, key, value).
fn read_all(log: &Log, from: u64) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.next_offset() {
        let read = log.read(at, 1 << 20).unwrap();
        assert!(read.next_offset > at, "a read moves forward (at {at})");
        for chunk in &read.chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let header = format::BatchHeader::parse(rest);
                let (b, after) = rest.split_at(header.length as usize);
                for r in records(b).unwrap() {
                    if r.offset >= at {
                        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                        out.push((r.offset, key, String::from_utf8(r.value.to_vec()).unwrap()));
                    }
                }
                rest = after;
            }
        }
        at = read.next_offset;
    }
    out
}

/// Ten keys written ten times each, one round of ten per batch, a segment every two
/// batches; values say key and round. Returns the newest (offset, value) of each key.
fn write_rounds(log: &mut Log, rounds: usize) -> BTreeMap<String, (u64, String)> {
    let mut newest = BTreeMap::new();
    for round in 0..rounds {
        let values: Vec<(String, String)> = (0..10)
            .map(|k| {
                (
                    format!("k{k}"),
                    format!("k{k} round {round} {}", "x".repeat(50)),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let info = log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
        for (i, (k, v)) in values.into_iter().enumerate() {
            newest.insert(k, (info.base_offset + i as u64, v));
        }
        if round % 2 == 1 {
            log.roll().unwrap();
        }
    }
    newest
}

fn compact(log: &mut Log, policy: &CompactionPolicy, now: i64) -> Option<CompactionStats> {
    log.flush().unwrap(); // moves the recovery checkpoint past the sealed segments
    let plan = log.plan_compaction(policy, now, None)?;
    let compacted = plan.run(policy, now).unwrap();
    let stats = compacted.stats;
    log.apply_compaction(compacted).unwrap().run().unwrap();
    Some(stats)
}

fn as_map(records: &[(u64, String, String)]) -> BTreeMap<String, (u64, String)> {
    records
        .iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

#[test]
fn the_newest_record_of_each_key_stays_at_its_offset_and_reads_skip_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let newest = write_rounds(&mut log, 9); // the ninth round stays in the active segment
    let end = log.next_offset();
    let stats = compact(&mut log, &policy(), NOW).unwrap();
    assert!(stats.segments_in >= 4, "{stats:?}");
    assert_eq!(stats.keys, 10);
    assert!(stats.map_bytes > 0 && stats.map_bytes < 4096, "{stats:?}");
    let after = read_all(&log, 0);
    // Rounds 0..8 were sealed: only round 7's records stay of them; round 8 is active.
    assert_eq!(after.len(), 20, "{after:?}");
    assert_eq!(as_map(&after), newest);
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(after
        .iter()
        .all(|(o, _, v)| v.contains(&format!("round {}", o / 10))));
    assert_eq!((log.log_start_offset(), log.next_offset()), (0, end));
    // A read from inside a gap starts at the next record kept.
    assert_eq!(read_all(&log, 3).first().map(|r| r.0), Some(70));
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|f| f.0), Some(70));
    // A second pass with nothing new changes nothing.
    let again = log.plan_compaction(&policy(), NOW, Some(None));
    assert!(again.is_none(), "nothing dirty, no tombstone due");
    // The same after a clean reopen, and after a reopen that scans every segment.
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), after);
    drop(log);
    fs::remove_file(dir.path().join(naming::CHECKPOINT_FILE)).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(
        report.truncated.is_empty(),
        "gaps are not damage: {report:?}"
    );
    assert_eq!(read_all(&log, 0), after);
}

#[test]
fn tombstones_hide_older_values_and_go_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    log.append(&mut batch(&[("a", "1"), ("b", "1")], NOW - 5000))
        .unwrap();
    log.append(&mut batch(&[("a", "")], NOW - 5000)).unwrap(); // a's tombstone
    log.roll().unwrap();
    log.append(&mut batch(&[("c", "1")], NOW)).unwrap();
    let keep_long = CompactionPolicy {
        delete_retention_ms: 60_000,
        ..policy()
    };
    compact(&mut log, &keep_long, NOW).unwrap();
    let kept = read_all(&log, 0);
    assert_eq!(
        kept,
        [
            (1, "b".into(), "1".into()),
            (2, "a".into(), "".into()),
            (3, "c".into(), "1".into())
        ]
    );
    // Due once it is delete.retention.ms old; then only the tombstone goes.
    let due = NOW - 5000 + 60_000 + 1;
    assert!(log
        .plan_compaction(&keep_long, NOW, Some(Some(due)))
        .is_none());
    compact(&mut log, &keep_long, due).unwrap();
    let kept: Vec<_> = read_all(&log, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(kept, [1, 3]);
    // The compacted segment now ends at offset 2, before the next one begins at 3: a
    // reopen that scans every segment takes that for compaction, not for lost data.
    drop(log);
    fs::remove_file(dir.path().join(naming::CHECKPOINT_FILE)).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.truncated.is_empty(), "{report:?}");
    let kept: Vec<_> = read_all(&log, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(kept, [1, 3]);
    // Also with `cleaner-offset` lost: the segment's last batch says it was compacted.
    drop(log);
    fs::remove_file(dir.path().join(naming::CHECKPOINT_FILE)).unwrap();
    fs::write(dir.path().join(super::swap::CLEANER_OFFSET_FILE), b"junk").unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.truncated.is_empty(), "{report:?}");
    let kept: Vec<_> = read_all(&log, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(kept, [1, 3]);
}

#[test]
fn young_segments_and_the_active_segment_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    log.append(&mut batch(&[("a", "old")], NOW - 100_000))
        .unwrap();
    log.roll().unwrap();
    log.append(&mut batch(&[("a", "young")], NOW - 10)).unwrap();
    log.roll().unwrap();
    log.append(&mut batch(&[("a", "active")], NOW)).unwrap();
    assert!(
        log.plan_compaction(&policy(), NOW, None).is_none(),
        "nothing lies before the recovery checkpoint's segment until a flush moves it"
    );
    let lagging = CompactionPolicy {
        min_lag_ms: 1000,
        ..policy()
    };
    // Only the first segment is old enough, and a map of it alone removes nothing.
    let stats = compact(&mut log, &lagging, NOW).unwrap();
    assert_eq!(stats.segments_out, 0, "{stats:?}");
    assert_eq!(read_all(&log, 0).len(), 3);
    // With no lag, both sealed segments are compacted; the active one never is.
    compact(&mut log, &policy(), NOW).unwrap();
    let kept: Vec<_> = read_all(&log, 0).into_iter().map(|r| r.2).collect();
    assert_eq!(kept, ["young", "active"]);
}

#[test]
fn a_full_key_map_compacts_less_but_never_loses_a_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let newest = write_rounds(&mut log, 9);
    let tiny = CompactionPolicy {
        max_keys: 3,
        ..policy()
    };
    compact(&mut log, &tiny, NOW).unwrap();
    let after = read_all(&log, 0);
    assert_eq!(as_map(&after), newest);
    assert!(after.len() < 90, "something was compacted");
}

/// A log compacted up to the point where `stop` says a crash happened, then reopened.
fn crash_during_compaction(stop: &str) -> (tempfile::TempDir, Vec<(u64, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 9);
    let before = read_all(&log, 0);
    log.flush().unwrap();
    let plan = log.plan_compaction(&policy(), NOW, None).unwrap();
    let compacted = plan.run(&policy(), NOW).unwrap();
    match stop {
        "before the manifest" => fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap(),
        "after the manifest" => {}
        "after the renames" => drop(log.apply_compaction(compacted).unwrap()),
        _ => unreachable!(),
    }
    drop(log); // the crash: no close, no job
    (dir, before)
}

#[test]
fn a_crash_at_any_step_leaves_the_old_segments_or_the_new_ones() {
    let (dir, before) = crash_during_compaction("before the manifest");
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), before, "old set");
    assert!(!dir.path().join(CLEANING_DIR).exists());
    drop(log);
    for stop in ["after the manifest", "after the renames"] {
        let (dir, before) = crash_during_compaction(stop);
        let (log, _) = Log::open(dir.path(), config()).unwrap();
        let after = read_all(&log, 0);
        assert_eq!(after.len(), 20, "{stop}: new set");
        assert_eq!(as_map(&after), as_map(&before), "{stop}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".deleted") && n != MANIFEST_FILE && n != CLEANING_DIR),
            "{stop}: {names:?}"
        );
        // Reopened again: still the same (the swap is not done twice).
        drop(log);
        let (log, _) = Log::open(dir.path(), config()).unwrap();
        assert_eq!(read_all(&log, 0), after);
    }
}

#[test]
fn compacted_batches_are_marked_and_a_gap_elsewhere_is_still_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 9);
    compact(&mut log, &policy(), NOW).unwrap();
    let read = log.read(0, 1 << 20).unwrap();
    let header = format::BatchHeader::parse(&read.chunks[0]);
    assert_eq!(
        header.attributes & format::ATTR_COMPACTED,
        format::ATTR_COMPACTED
    );
    assert_eq!(header.base_offset, 70);
    // An uncompacted batch where an offset is missing is refused as before.
    let mut bytes = read.chunks[0][..header.length as usize].to_vec();
    bytes[format::ATTRIBUTES_AT] = 0;
    bytes[..8].copy_from_slice(&5u64.to_le_bytes());
    format::seal_crc(&mut bytes);
    assert!(format::check_header(&bytes, Some(4), bytes.len()).is_err());
    bytes[format::ATTRIBUTES_AT] = format::ATTR_COMPACTED;
    format::seal_crc(&mut bytes);
    assert!(format::check_header(&bytes, Some(4), bytes.len()).is_ok());
    assert!(
        format::check_header(&bytes, Some(6), bytes.len()).is_err(),
        "never backwards"
    );
    // Nor so far forwards that the batch's offsets run past the largest one (found by
    // the `records` fuzzer: the offsets after it overflowed).
    let past = u64::MAX - u64::from(header.record_count) + 1;
    bytes[..8].copy_from_slice(&past.to_le_bytes());
    format::seal_crc(&mut bytes);
    assert!(format::check_header(&bytes, Some(4), bytes.len()).is_err());
    bytes[..8].copy_from_slice(&(past - 1).to_le_bytes());
    format::seal_crc(&mut bytes);
    assert!(format::check_header(&bytes, Some(4), bytes.len()).is_ok());
}

/// Offsets of every record from `from`.
fn offsets_from(log: &Log, from: u64) -> Vec<u64> {
    read_all(log, from).into_iter().map(|r| r.0).collect()
}

/// Found in review: inputs were merged by size alone, so an output could span more than
/// 2^32 offsets; its index's 32-bit relative offsets wrapped and reads skipped records.
#[test]
fn an_output_never_spans_more_offsets_than_its_index_can_say() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let keys: Vec<(String, String)> = (0..41).map(|i| (format!("a{i}"), "v".into())).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
    log.roll().unwrap();
    log.close().unwrap();
    // Move the empty active segment (base 41) far ahead: the next records get offsets
    // past 2^32, in a segment after a gap (as compaction leaves, below cleaner-offset).
    let far = (1u64 << 32) + 10;
    for kind in [
        naming::SegmentFile::Log,
        naming::SegmentFile::Index,
        naming::SegmentFile::TimeIndex,
    ] {
        fs::rename(
            naming::segment_path(dir.path(), 41, kind),
            naming::segment_path(dir.path(), far, kind),
        )
        .unwrap();
    }
    super::swap::write_cleaner_offset(dir.path(), far).unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_offset(), far);
    let keys: Vec<(String, String)> = (0..60).map(|i| (format!("b{i}"), "v".into())).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
    log.roll().unwrap();
    let before = offsets_from(&log, 11);
    assert_eq!(before.len(), 30 + 60);
    compact(&mut log, &policy(), NOW);
    assert_eq!(offsets_from(&log, 11), before);
}

/// Found in review: once the key map filled, every pass mapped the same first segments
/// again, and the segments after them were never compacted.
#[test]
fn passes_go_on_past_a_full_key_map() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    for prefix in ["a", "b"] {
        let keys: Vec<(String, String)> = (0..10)
            .map(|i| (format!("{prefix}{i}"), "v".into()))
            .collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
        log.roll().unwrap();
    }
    for round in 0..3 {
        let value = format!("hot {round}");
        let pairs: Vec<(&str, &str)> = (0..10).map(|_| ("hot", value.as_str())).collect();
        log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
        log.roll().unwrap();
    }
    log.flush().unwrap();
    let tiny = CompactionPolicy {
        max_keys: 10,
        ..policy()
    };
    let mut due = None; // unknown before the first pass
    for _ in 0..4 {
        let Some(plan) = log.plan_compaction(&tiny, NOW, due) else {
            break;
        };
        let compacted = plan.run(&tiny, NOW).unwrap();
        due = Some(compacted.next_tombstone_due);
        log.apply_compaction(compacted).unwrap().run().unwrap();
    }
    let hot: Vec<_> = read_all(&log, 0)
        .into_iter()
        .filter(|r| r.1 == "hot")
        .collect();
    assert_eq!(hot.len(), 1, "{hot:?}");
    assert_eq!(hot[0].2, "hot 2");
    assert!(
        log.plan_compaction(&tiny, NOW, due).is_none(),
        "nothing left to do"
    );
}

/// Thirty keys written twice, each round one segment, and passes with a 12-key map,
/// with the log closed and opened again after `restart_after` passes (if given), until
/// none is due. Returns what is left.
fn compact_past_a_small_map(restart_after: Option<usize>) -> Vec<(u64, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("key{i:02}")).collect();
    for round in ["old", "new"] {
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), round)).collect();
        log.append(&mut batch(&pairs, NOW - 10_000)).unwrap();
        log.roll().unwrap();
    }
    log.flush().unwrap();
    let tiny = CompactionPolicy {
        max_keys: 12,
        ..policy()
    };
    let mut due = None; // unknown before the first pass
    for pass in 0..20 {
        if restart_after == Some(pass) {
            log.close().unwrap();
            (log, _) = Log::open(dir.path(), config()).unwrap();
            due = None;
        }
        let Some(plan) = log.plan_compaction(&tiny, NOW, due) else {
            break;
        };
        let compacted = plan.run(&tiny, NOW).unwrap();
        due = Some(compacted.next_tombstone_due);
        log.apply_compaction(compacted).unwrap().run().unwrap();
    }
    assert!(log.plan_compaction(&tiny, NOW, due).is_none(), "passes end");
    read_all(&log, 0)
}

/// Hostile-client finding: a pass whose key map filled in the middle of a segment
/// compacted that segment with what it had mapped, and the next pass mapped from the
/// segment's end, so the keys after the fill point were never mapped again and their
/// older values stayed for good (16,992 of 50,000 keys with a 14,336-key map). Here 18
/// of 30 stayed.
#[test]
fn keys_after_the_point_where_the_map_filled_are_mapped_by_a_later_pass() {
    let left = compact_past_a_small_map(None);
    assert_eq!(left.len(), 30, "one record a key: {left:?}");
    assert!(left.iter().all(|r| r.2 == "new"), "{left:?}");
}

/// The same across a restart, which forgets where the last pass's map filled: the
/// log opens mapping from the base of the last segment compacted, where it may have.
#[test]
fn keys_left_unmapped_before_a_restart_are_mapped_after_it() {
    let left = compact_past_a_small_map(Some(3));
    assert_eq!(left.len(), 30, "one record a key: {left:?}");
    assert!(left.iter().all(|r| r.2 == "new"), "{left:?}");
}

/// Review: where mapping resumes past the segments still cleanable (a raised
/// min.compaction.lag.ms takes the younger ones out), there is nothing to map, and no
/// pass is due; one that ran would read the log again at every cleaner interval.
#[test]
fn no_pass_runs_when_what_is_left_to_map_is_too_young() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("key{i:02}")).collect();
    for (round, age) in [("old", 100_000), ("new", 10_000)] {
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), round)).collect();
        log.append(&mut batch(&pairs, NOW - age)).unwrap();
        log.roll().unwrap();
    }
    log.flush().unwrap();
    let tiny = CompactionPolicy {
        max_keys: 12,
        segment_bytes: 1, // no merging: each segment stays its own
        ..policy()
    };
    let mut due = None;
    for _ in 0..3 {
        let plan = log.plan_compaction(&tiny, NOW, due).expect("a pass");
        let compacted = plan.run(&tiny, NOW).unwrap();
        due = Some(compacted.next_tombstone_due);
        log.apply_compaction(compacted).unwrap().run().unwrap();
    }
    // Mapping resumes inside the second segment, which a lag of 50 s leaves out.
    let lagging = CompactionPolicy {
        min_lag_ms: 50_000,
        ..tiny
    };
    assert!(log.plan_compaction(&lagging, NOW, due).is_none());
    assert!(
        log.plan_compaction(&tiny, NOW, due).is_some(),
        "and with it, one"
    );
}

/// Found in review: a pass whose last step failed left its manifest, and the next pass
/// wrote new files under the same names in `cleaning/`; a crash then, and the next open
/// installed the half-written files.
#[test]
fn a_manifest_left_by_a_failed_step_is_finished_before_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 5);
    log.flush().unwrap();
    let plan = log.plan_compaction(&policy(), NOW, None).unwrap();
    let job = log
        .apply_compaction(plan.run(&policy(), NOW).unwrap())
        .unwrap();
    super::files::failpoint::fail_next_sync_under(dir.path());
    assert!(job.run().is_err(), "writing cleaner-offset failed");
    assert!(dir.path().join(MANIFEST_FILE).exists());
    let expected = read_all(&log, 0);
    // Another round, another pass, which fails before its manifest; then a crash with a
    // half-written file in `cleaning/`.
    write_rounds(&mut log, 3);
    log.flush().unwrap();
    let plan = log.plan_compaction(&policy(), NOW, Some(None)).unwrap();
    super::files::failpoint::fail_next_sync_under(&dir.path().join(CLEANING_DIR));
    assert!(plan.run(&policy(), NOW).is_err());
    let staged = dir
        .path()
        .join(CLEANING_DIR)
        .join("00000000000000000000.log");
    if staged.exists() {
        let len = fs::metadata(&staged).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let all = read_all(&log, 0);
    drop(log);
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), all, "the first pass's segments, whole");
    assert!(all.starts_with(&expected));
}

/// A swap refused before anything was installed (the log was truncated after the pass
/// was planned) leaves no manifest behind for a later open to install.
#[test]
fn a_refused_swap_removes_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 6);
    log.flush().unwrap();
    let plan = log.plan_compaction(&policy(), NOW, None).unwrap();
    let compacted = plan.run(&policy(), NOW).unwrap();
    assert!(dir.path().join(MANIFEST_FILE).exists());
    log.truncate(50).unwrap();
    assert!(log.apply_compaction(compacted).is_err());
    assert!(!dir.path().join(MANIFEST_FILE).exists());
    assert!(!dir.path().join(CLEANING_DIR).exists());
    let before = read_all(&log, 0);
    assert_eq!(before.len(), 50, "nothing compacted, nothing lost");
    drop(log);
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 0), before);
}

/// `cleaner-offset` never goes back when a later pass stops earlier, and truncation
/// below it lowers it.
#[test]
fn the_cleaner_offset_only_moves_forward_but_follows_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 8);
    compact(&mut log, &policy(), NOW).unwrap();
    let cleaned = super::swap::read_cleaner_offset(dir.path()).unwrap();
    assert_eq!(cleaned, 80);
    // A pass that covers less (a long lag leaves only the first segment cleanable).
    super::swap::write_cleaner_offset(dir.path(), cleaned).unwrap();
    let job = super::swap::SwapJob::for_test(dir.path(), 20);
    job.run().unwrap();
    assert_eq!(
        super::swap::read_cleaner_offset(dir.path()).unwrap(),
        cleaned
    );
    log.truncate(70).unwrap(); // the first record kept
    assert_eq!(super::swap::read_cleaner_offset(dir.path()).unwrap(), 70);
}

/// Closes `log`, flips a byte inside a record of the first batch of the segment at
/// `base` (its checksum then fails), and opens it again.
fn with_a_damaged_record(log: Log, dir: &std::path::Path, base: u64) -> Log {
    log.close().unwrap();
    let path = naming::segment_path(dir, base, naming::SegmentFile::Log);
    let mut bytes = fs::read(&path).unwrap();
    bytes[format::HEADER_LEN + 40] ^= 0xFF;
    fs::write(&path, bytes).unwrap();
    Log::open(dir, config()).unwrap().0
}

/// One damaged batch (found by a review: it failed every pass, so the partition was
/// never compacted again and grew for good): the damaged segment is left as it is, the
/// segments before and after it are compacted, and no output spans it.
#[test]
fn a_damaged_segment_is_left_as_it_is_and_the_others_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let newest = write_rounds(&mut log, 9);
    let bases = log.segment_bases();
    assert_eq!(bases, [0, 20, 40, 60, 80]);
    let mut log = with_a_damaged_record(log, dir.path(), 20);
    for pass in 0..2 {
        let plan = log.plan_compaction(&policy(), NOW, None);
        let Some(plan) = plan else { break };
        let compacted = plan
            .run(&policy(), NOW)
            .unwrap_or_else(|e| panic!("pass {pass}: {e}"));
        log.apply_compaction(compacted).unwrap().run().unwrap();
    }
    // Before it: nothing was kept (every key has a newer record), so the log starts at
    // the damaged segment, which is still there and still damaged; after it, only the
    // newest record of each key is left.
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.segment_bases(), [20, 40, 80]);
    assert!(log.read(20, 1 << 20).is_err());
    let after = read_all(&log, 40);
    assert_eq!(after.len(), 20, "{after:?}");
    assert_eq!(as_map(&after), newest);
    // The same after a reopen.
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 40), after);
}

/// After a damaged segment, an output that ends up empty can neither join the output
/// before the damage nor go without a replacement: its inputs are left as they are.
/// With segment.bytes below every segment's size, each input is its own output.
#[test]
fn after_a_damaged_segment_inputs_with_nothing_kept_are_left_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let newest = write_rounds(&mut log, 13);
    assert_eq!(log.segment_bases(), [0, 20, 40, 60, 80, 100, 120]);
    let mut log = with_a_damaged_record(log, dir.path(), 20);
    let one_each = CompactionPolicy {
        segment_bytes: 1,
        ..policy()
    };
    compact(&mut log, &one_each, NOW).unwrap();
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.segment_bases(), [20, 40, 60, 80, 100, 120]);
    let after = read_all(&log, 40);
    assert_eq!(
        as_map(&after),
        newest,
        "the newest of each key is what a read ends on"
    );
    assert_eq!(
        after.first().map(|r| r.0),
        Some(40),
        "40..100 left as they were"
    );
    assert!(
        !after.iter().any(|r| (100..110).contains(&r.0)),
        "100 compacted: round 10 gone"
    );
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(read_all(&log, 40), after);
}

/// A tombstone behind a damaged segment stays: the damaged segment is left as it is, so
/// an older value of the key in it is never removed, and dropping the tombstone would
/// bring that value back.
#[test]
fn a_tombstone_behind_a_damaged_segment_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    let old = format!("v1 {}", "x".repeat(100));
    log.append(&mut batch(&[("k", &old)], NOW - 10_000))
        .unwrap(); // 0, to be damaged
    log.roll().unwrap();
    log.append(&mut batch(&[("k", "")], NOW - 10_000)).unwrap(); // 1, its tombstone
    log.roll().unwrap();
    log.append(&mut batch(&[("z", "1")], NOW - 10_000)).unwrap(); // 2
    log.roll().unwrap();
    log.append(&mut batch(&[("w", "1")], NOW - 10_000)).unwrap(); // 3, active
    let mut log = with_a_damaged_record(log, dir.path(), 0);
    compact(&mut log, &policy(), NOW);
    let after = read_all(&log, 1);
    assert_eq!(
        after.first(),
        Some(&(1, "k".to_string(), String::new())),
        "{after:?}"
    );
}

/// A pass that would change only inputs left as they are (after a damaged segment)
/// changes nothing: no swap. Their superseded records counted as a change, and every
/// pass rewrote the outputs byte for byte (a review).
#[test]
fn a_pass_that_changes_only_segments_left_as_they_are_swaps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    write_rounds(&mut log, 13);
    let mut log = with_a_damaged_record(log, dir.path(), 20);
    let one_each = CompactionPolicy {
        segment_bytes: 1,
        ..policy()
    };
    compact(&mut log, &one_each, NOW).unwrap();
    assert_eq!(log.segment_bases(), [20, 40, 60, 80, 100, 120]);
    let plan = log.plan_compaction(&one_each, NOW, None).unwrap();
    let again = plan.run(&one_each, NOW).unwrap();
    assert!(again.manifest.is_none(), "{:?}", again.stats);
}
