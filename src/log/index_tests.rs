//! Tests of `index.rs`.

use super::*;

fn entry(i: u32) -> OffsetEntry {
    OffsetEntry {
        rel_offset: i * 10,
        position: i * 4096,
    }
}

#[test]
fn entries_survive_persist_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.index");
    let (mut index, ok) = Index::<OffsetEntry>::open(path.clone(), 100).unwrap();
    assert!(ok && index.is_empty());
    for i in 0..5 {
        index.push(entry(i));
    }
    index.persist().unwrap();
    index.push(entry(5)); // not persisted: lost on reopen, as after a crash
    assert_eq!(index.len(), 6);
    assert_eq!(index.partition_point(|e| e.rel_offset <= 25), 3);
    drop(index);
    let (index, ok) = Index::<OffsetEntry>::open(path, 100).unwrap();
    assert!(ok);
    assert_eq!(
        index.entries().collect::<Vec<_>>(),
        (0..5).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn damaged_file_is_cut_to_its_well_formed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.index");
    let mut bytes = Vec::new();
    for i in 0..4 {
        entry(i).encode(&mut bytes);
    }
    entry(1).encode(&mut bytes); // goes backwards
    bytes.extend_from_slice(&[1, 2, 3]); // partial entry
    std::fs::write(&path, &bytes).unwrap();
    let (index, ok) = Index::<OffsetEntry>::open(path.clone(), 100).unwrap();
    assert!(!ok);
    assert_eq!(index.len(), 4);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * 8);
}

#[test]
fn truncate_inside_the_map_and_inside_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.timeindex");
    let (mut index, _) = Index::<TimeEntry>::open(path.clone(), 100).unwrap();
    for i in 0..4 {
        index.push(TimeEntry {
            timestamp: i64::from(i) * 5,
            rel_offset: i,
        });
    }
    index.persist().unwrap();
    drop(index);
    let (mut index, _) = Index::<TimeEntry>::open(path.clone(), 100).unwrap();
    index.push(TimeEntry {
        timestamp: 100,
        rel_offset: 10,
    });
    index.persist().unwrap();
    index.truncate(4).unwrap();
    assert_eq!(index.len(), 4);
    index.truncate(2).unwrap();
    assert_eq!(
        index.last(),
        Some(TimeEntry {
            timestamp: 5,
            rel_offset: 1
        })
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * 12);
}
