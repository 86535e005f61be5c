//! The journal and snapshot files of a group (`GroupFiles`), on real files: what a
//! restart reads back after writes that were cancelled, torn or damaged.

use super::offsets::{Committed, Offsets};
use super::store::GroupFiles;
use super::Tp;

const TP: Tp = (1, 0);

fn entry(offset: u64, metadata_len: usize) -> Vec<(Tp, Committed)> {
    vec![(
        TP,
        Committed {
            offset,
            metadata: "x".repeat(metadata_len),
            commit_ms: 0,
        },
    )]
}

#[test]
fn a_snapshot_write_that_lands_late_does_not_replace_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join(format!("g.{:032x}", 9));
    let (mut files, mut offsets) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    let mut o = 0;
    while !files.needs_snapshot() {
        o += 1;
        files.append(&entry(o, 1000)).unwrap();
        offsets.apply(entry(o, 1000));
    }
    // A commit's snapshot is handed to a blocking thread, and the commit is cancelled.
    let (path, orphan) = files.snapshot(&offsets);
    // The next commit appends, snapshots and is acknowledged.
    files.append(&entry(o + 1, 1000)).unwrap();
    offsets.apply(entry(o + 1, 1000));
    files.write_snapshot(&offsets).unwrap();
    // The orphaned write lands last; then one more commit.
    crate::log::files::write_atomically(&path, &orphan).unwrap();
    files.append(&entry(o + 2, 1000)).unwrap();
    drop(files);
    let (_, reopened) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    assert_eq!(reopened.get(&TP).unwrap().offset, o + 2);
}

/// A restart that replays nothing (the journal's first record is damaged: a write torn
/// by a power loss, say) writes the journal again from its start, at the same history
/// position. What lay after the damaged record (never acknowledged, as it was written
/// after it) must not be read back after the new records: at the same file position it
/// carries the position the new pass expects there.
#[test]
fn records_after_a_damaged_first_record_are_not_replayed_after_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join(format!("g.{:032x}", 9));
    let (mut files, _) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    files.append(&entry(1, 10)).unwrap();
    files.append(&entry(2, 10)).unwrap();
    drop(files);
    let journal = gdir.join("offsets.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[20] ^= 1; // in the first record's body: its CRC fails
    std::fs::write(&journal, &bytes).unwrap();
    let (mut files, offsets) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    assert!(offsets.get(&TP).is_none(), "nothing replayed");
    // A record as long as the damaged one, acknowledged; then a crash.
    let end = files.append(&entry(3, 10)).unwrap();
    assert_eq!(end as usize, bytes.len() / 2);
    drop(files);
    let (_, reopened) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    assert_eq!(reopened.get(&TP).unwrap().offset, 3);
}

/// A snapshot write a crash cut short leaves its temporary file; the next open removes
/// it (each write has its own, so they would pile up).
#[test]
fn open_removes_the_temporary_files_of_cut_short_snapshot_writes() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join(format!("g.{:032x}", 9));
    drop(GroupFiles::<Offsets>::open(&gdir).unwrap());
    let leftover = gdir.join("offsets.00000000000000000005.snap.3.tmp");
    std::fs::write(&leftover, b"half a snap").unwrap();
    drop(GroupFiles::<Offsets>::open(&gdir).unwrap());
    assert!(!leftover.exists());
}

/// A snapshot renamed into place whose directory sync failed is not yet durable. The
/// journal restarts at its position on the next open, so that open must make the rename
/// durable before it trusts the snapshot; if it cannot, it must fail rather than go on
/// (a power loss would bring back the older snapshot, which the journal no longer
/// continues, and lose acknowledged commits).
#[test]
fn open_makes_the_newest_snapshot_durable_before_trusting_it() {
    use crate::log::files::failpoint;
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join(format!("g.{:032x}", 9));
    let (mut files, mut offsets) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    files.append(&entry(1, 10)).unwrap();
    offsets.apply(entry(1, 10));
    // The snapshot's file syncs, its rename happens, the directory's sync fails.
    failpoint::fail_sync_under_after(&gdir, 1);
    assert!(files.write_snapshot(&offsets).is_err());
    drop(files);
    failpoint::fail_next_sync_under(&gdir);
    assert!(
        GroupFiles::<Offsets>::open(&gdir).is_err(),
        "an open that cannot sync the directory must not go on"
    );
    let (_, reopened) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    assert_eq!(reopened.get(&TP).unwrap().offset, 1);
}

/// Durability review: the group's directory entry was synced only when this open made
/// the directory. One made by an open that then failed to sync the parent, or was
/// killed before it, was never synced, and a power loss could lose the whole group with
/// its acknowledged commits.
#[test]
fn open_syncs_the_parent_of_a_group_whose_making_was_cut_short() {
    use crate::log::files::failpoint;
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join(format!("g.{:032x}", 9));
    std::fs::create_dir(&gdir).unwrap(); // made, and then the process was killed
    failpoint::fail_next_sync_of(dir.path());
    assert!(
        GroupFiles::<Offsets>::open(&gdir).is_err(),
        "the parent was not synced"
    );
    let (mut files, _) = GroupFiles::<Offsets>::open(&gdir).unwrap();
    files.append(&entry(1, 10)).unwrap();
}
