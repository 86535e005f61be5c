//! Tests of `producer_ids`.
use std::fs;
use std::path::Path;

use super::*;

/// The live size kept as names come is what a rewrite of the journal would hold,
/// at open and after new and repeated names: compaction starts when it should.
#[test]
fn the_live_size_kept_is_what_a_rewrite_holds() {
    let dir = tempfile::tempdir().unwrap();
    let live = |ids: &ProducerIds| {
        let inner = ids.inner.lock().unwrap();
        (
            inner.live_bytes,
            journal::encode_names(inner.names.iter()).len() as u64,
        )
    };
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    for name in ["a", "billing", "a", "a-much-longer-name", "billing"] {
        ids.init(Some(name)).unwrap();
        ids.init(None).unwrap();
        let (kept, rewrite) = live(&ids);
        assert_eq!(kept, rewrite, "after {name}");
    }
    drop(ids);
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (kept, rewrite) = live(&ids);
    assert_eq!(kept, rewrite, "after a reopen");
    assert_eq!(kept, 3 * 18 + 1 + 7 + 18);
}

#[test]
fn ids_are_never_reused_across_restarts_and_names_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (a, _) = ids.init(None).unwrap();
    let (b, _) = ids.init(None).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        ids.init(Some("billing")).unwrap().1,
        1,
        "a name starts at 1"
    );
    let (named, epoch) = ids.init(Some("billing")).unwrap();
    assert_eq!(epoch, 2);
    drop(ids); // a crash: nothing is closed
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (c, _) = ids.init(None).unwrap();
    assert!(c > named && c > b, "{c} after {a}, {b}, {named}");
    assert_eq!(ids.init(Some("billing")).unwrap(), (named, 3));
    // Epoch 2 is fenced now; epoch 4 was never handed out; an unnamed id has epoch 0.
    assert!(ids
        .check(named, 2)
        .unwrap_err()
        .to_string()
        .contains("fenced"));
    assert!(ids
        .check(named, 4)
        .unwrap_err()
        .to_string()
        .contains("no epoch 4"));
    ids.check(named, 3).unwrap();
    ids.check(c, 0).unwrap();
    assert!(ids.check(c, 1).is_err());
    assert!(ids
        .check(c + 5_000, 0)
        .unwrap_err()
        .to_string()
        .contains("never handed out"));
}

#[test]
fn a_torn_last_record_is_cut_and_damage_gives_new_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (id, _) = ids.init(Some("a")).unwrap();
    let (b_old, _) = ids.init(Some("b")).unwrap();
    drop(ids);
    let path = dir.path().join(NAMES_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&encode_record("c", 77, 0)[..12]);
    fs::write(&path, &bytes).unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    assert_eq!(
        ids.init(Some("a")).unwrap(),
        (id, 2),
        "a torn tail loses nothing"
    );
    drop(ids);
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len - 1] ^= 1; // the last record's name: damage, not a torn write
    fs::write(&path, &bytes).unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (new, epoch) = ids.init(Some("a")).unwrap();
    assert!(
        new != id && epoch == FIRST_EPOCH,
        "damage: a new id, never a reused epoch"
    );
    assert!(
        ids.check(id, 1).unwrap_err().to_string().contains("fenced"),
        "the old id is fenced"
    );
    drop(ids);
    // What the damage decided survives the next start.
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    assert_eq!(ids.init(Some("a")).unwrap(), (new, 2));
    let (b, _) = ids.init(Some("b")).unwrap();
    assert!(
        b != b_old && b != new,
        "b's record was before the damage, and b gets a new id too"
    );
}

#[test]
fn bad_names_are_refused_and_an_unreadable_next_id_skips_far_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    assert!(ids.init(Some(&"x".repeat(300))).is_err());
    assert!(ids.init(Some("a\nb")).is_err());
    let (first, _) = ids.init(None).unwrap();
    drop(ids);
    fs::write(dir.path().join(NEXT_ID_FILE), b"junk").unwrap();
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    let (after, _) = ids.init(None).unwrap();
    assert!(after > first, "{after} after {first}");
    drop(ids);
    let ids = ProducerIds::open(dir.path(), NameLimits::default()).unwrap();
    assert!(
        ids.init(None).unwrap().0 > after,
        "the new floor was written"
    );
}

fn limits(max_names: usize) -> NameLimits {
    NameLimits {
        max_names,
        expiry: Duration::from_secs(1),
    }
}

/// A name unused for the expiry is forgotten, in the journal too, so the table has room
/// again; its id stays fenced; a name whose id produced meanwhile is kept.
#[test]
fn unused_names_are_forgotten_and_their_ids_stay_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), limits(2)).unwrap();
    let a = ids.init(Some("a")).unwrap();
    let b = ids.init(Some("b")).unwrap();
    let full = ids.init(Some("c")).unwrap_err().to_string();
    assert!(full.contains("already knows 2 producer names"), "{full}");
    ids.skip(Duration::from_millis(600));
    ids.check(b.0, b.1).unwrap(); // b produces
    ids.skip(Duration::from_millis(600));
    let c = ids.init(Some("c")).unwrap();
    assert_eq!(c.1, FIRST_EPOCH);
    let fenced = ids.check(a.0, a.1).unwrap_err().to_string();
    assert!(fenced.contains("forgotten"), "{fenced}");
    ids.check(b.0, b.1).unwrap();
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(3)).unwrap();
    assert_eq!(ids.init(Some("b")).unwrap(), (b.0, b.1 + 1), "b was kept");
    let again = ids.init(Some("a")).unwrap();
    assert!(
        again.0 > c.0 && again.1 == FIRST_EPOCH,
        "a was forgotten in the journal too: a new id, {again:?}"
    );
    assert!(ids.check(a.0, a.1).is_err(), "the old id is still fenced");
}

/// `n` ids handed out, then the server opened again on a names journal that `journal`
/// makes of them, as one from before `expiry-floor` existed: every id is below the floor.
fn before_the_floor(
    dir: &Path,
    n: usize,
    journal: impl FnOnce(&[i64]) -> Vec<u8>,
) -> (ProducerIds, Vec<i64>) {
    let ids = ProducerIds::open(dir, limits(10)).unwrap();
    let handed: Vec<i64> = (0..n).map(|_| ids.init(None).unwrap().0).collect();
    drop(ids);
    fs::write(dir.join(NAMES_FILE), journal(&handed)).unwrap();
    fs::remove_file(dir.join(FLOOR_FILE)).unwrap();
    (ProducerIds::open(dir, limits(10)).unwrap(), handed)
}

/// Ids named before names started at epoch 1 (a journal without `expiry-floor`) may
/// have instances at epoch 0, which a forgotten id would let in as an unnamed one: they
/// are never forgotten, across restarts too. Names after them are.
#[test]
fn ids_below_the_floor_are_never_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, handed) = before_the_floor(dir.path(), 1, |ids| encode_record("old", ids[0], 0));
    let old = handed[0];
    assert_eq!(ids.init(Some("old")).unwrap(), (old, 1));
    let new = ids.init(Some("new")).unwrap();
    ids.skip(Duration::from_secs(5));
    ids.init(Some("third")).unwrap(); // looks for unused names
    assert!(ids
        .check(old, 0)
        .unwrap_err()
        .to_string()
        .contains("fenced"));
    assert_eq!(ids.init(Some("old")).unwrap(), (old, 2), "kept");
    assert_ne!(ids.init(Some("new")).unwrap().0, new.0, "forgotten");
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    ids.skip(Duration::from_secs(5));
    ids.init(Some("third")).unwrap();
    assert_eq!(
        ids.init(Some("old")).unwrap(),
        (old, 3),
        "the floor was kept"
    );
}

/// A rewrite whose directory sync fails after its rename: appends go on to the file now
/// at the path, and names get new ids rather than epochs a lost record may have handed
/// out. Every (id, epoch) handed out stays unique across the restart, and no record
/// written after the failure is lost.
#[test]
fn a_failed_rewrite_loses_no_record_and_repeats_no_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    let mut given = std::collections::HashSet::new();
    given.insert(ids.init(Some("a")).unwrap());
    let b = ids.init(Some("b")).unwrap();
    given.insert(b);
    ids.skip(Duration::from_millis(1_200));
    ids.check(b.0, b.1).unwrap(); // b is used, a is not
    crate::log::files::failpoint::fail_sync_under_after(dir.path(), 1);
    let c = ids.init(Some("c")).unwrap(); // forgetting a: the rewrite fails after its rename
    given.insert(c);
    for _ in 0..2 {
        assert!(given.insert(ids.init(Some("b")).unwrap()), "{given:?}");
    }
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    let again = ids.init(Some("b")).unwrap();
    assert!(
        given.insert(again),
        "{again:?} was handed out before: {given:?}"
    );
    assert_eq!(
        ids.init(Some("c")).unwrap(),
        (c.0, c.1 + 1),
        "c's record was kept"
    );
}

/// An id below the floor whose name moves to a new id stays fenced when the journal is
/// rewritten (one record per name) and the server restarts: its instances may be at
/// epoch 0, which an unknown id would be taken at.
#[test]
fn a_retired_id_below_the_floor_stays_fenced_across_a_rewrite_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A name at its last epoch, from before the floor: its next call moves it.
    let (ids, handed) =
        before_the_floor(dir.path(), 1, |ids| encode_record("old", ids[0], i16::MAX));
    let old = handed[0];
    let (moved, epoch) = ids.init(Some("old")).unwrap();
    assert!(moved != old && epoch == FIRST_EPOCH);
    assert!(ids
        .check(old, 0)
        .unwrap_err()
        .to_string()
        .contains("fenced"));
    ids.rewrite(&mut ids.inner.lock().unwrap(), |_| true)
        .unwrap();
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    let refused = ids.check(old, 0).unwrap_err().to_string();
    assert!(refused.contains("fenced"), "{refused}");
    assert_eq!(ids.init(Some("old")).unwrap(), (moved, 2));
}

/// A rewrite that failed after its rename, with the file at the path unopenable: named
/// calls are refused (their records would go to a file no longer there) until it opens.
#[test]
fn named_calls_wait_for_a_journal_that_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    ids.init(Some("a")).unwrap();
    let b = ids.init(Some("b")).unwrap();
    ids.skip(Duration::from_millis(1_200));
    ids.check(b.0, b.1).unwrap();
    let path = dir.path().join(NAMES_FILE);
    crate::log::files::failpoint::fail_sync_under_after(dir.path(), 1);
    // The rewrite forgetting a fails at its directory sync, after its rename; then the
    // file at the path is swapped for a directory, which cannot be opened for appends.
    let moved = dir.path().join("moved");
    let mut inner = ids.inner.lock().unwrap();
    ids.forget_unused(&mut inner);
    assert!(!inner.trusted);
    fs::rename(&path, &moved).unwrap();
    fs::create_dir(&path).unwrap();
    let _ = ids.rewrite(&mut inner, |_| true);
    assert!(inner.stale);
    drop(inner);
    assert!(
        ids.init(Some("c")).is_err(),
        "refused while the journal is away"
    );
    ids.init(None).unwrap();
    fs::remove_dir(&path).unwrap();
    fs::rename(&moved, &path).unwrap();
    let c = ids.init(Some("c")).unwrap();
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    assert_eq!(
        ids.init(Some("c")).unwrap(),
        (c.0, c.1 + 1),
        "c's record was kept"
    );
}

/// The same for a name an older server moved to a new id: the superseded record, the
/// only thing fencing the old id, becomes a tombstone at the first start.
#[test]
fn an_id_retired_before_the_floor_stays_fenced_across_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, handed) = before_the_floor(dir.path(), 2, |ids| {
        let mut journal = encode_record("svc", ids[0], i16::MAX);
        journal.extend_from_slice(&encode_record("svc", ids[1], 0));
        journal
    });
    let (old, new) = (handed[0], handed[1]);
    ids.rewrite(&mut ids.inner.lock().unwrap(), |_| true)
        .unwrap();
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    assert!(ids
        .check(old, 0)
        .unwrap_err()
        .to_string()
        .contains("fenced"));
    ids.check(new, 0).unwrap();
}

/// A tombstone written but the record moving its name lost (a crash between the two
/// writes): the name keeps its old id, which stays the name's across rewrites and
/// restarts rather than being retired under a live producer.
#[test]
fn a_tombstone_whose_move_was_lost_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, handed) = before_the_floor(dir.path(), 1, |ids| {
        let mut journal = encode_record("x", ids[0], 5);
        journal.extend_from_slice(&encode_record(&tombstone(ids[0]), ids[0], i16::MAX));
        journal
    });
    let old = handed[0];
    ids.check(old, 5).unwrap();
    assert_eq!(ids.init(Some("x")).unwrap(), (old, 6));
    ids.rewrite(&mut ids.inner.lock().unwrap(), |_| true)
        .unwrap();
    drop(ids);
    let ids = ProducerIds::open(dir.path(), limits(10)).unwrap();
    ids.check(old, 6).unwrap();
    assert!(ids
        .check(old, 0)
        .unwrap_err()
        .to_string()
        .contains("fenced"));
}
