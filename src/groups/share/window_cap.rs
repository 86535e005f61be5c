//! The server's cap on records held in share groups' windows (`tally.rs`): past it, a
//! fetch hands out only what its window holds already, and a window that shrinks makes
//! room for the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{AckBatch, MemberIdx, ShareGroups};
use bytes::Bytes;

use crate::broker::{Broker, Limits};
use crate::groups::share::window::Ack;

/// A server with topic t of `records` records in one partition, a cap of `cap`
/// window slots, and share groups of `groups` (name, max.in.flight) reading it from the
/// start. A group's window takes room for at most its max.in.flight slots, so these
/// choose what each counts.
async fn server(
    records: u64,
    cap: usize,
    groups: &[(&str, u32)],
) -> (tempfile::TempDir, ShareGroups) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
    let x = Bytes::from_static(b"x");
    super::cancelled_fetch::append_to_t(&broker, 0, x, records as usize).await;
    let queues = ShareGroups::open(broker, cap).unwrap();
    for (g, max_in_flight) in groups {
        let config = BTreeMap::from([
            ("start".to_string(), "earliest".to_string()),
            ("max.in.flight".to_string(), max_in_flight.to_string()),
        ]);
        queues.alter_config(g, &config).await.unwrap();
    }
    (dir, queues)
}

/// Offsets a fetch of up to 100 records hands `member` of `group` at once.
async fn fetch(queues: &ShareGroups, group: &str, member: &str) -> Vec<u64> {
    fetch_as(queues, group, member).await.0
}

/// The same, and the member's number.
async fn fetch_as(queues: &ShareGroups, group: &str, member: &str) -> (Vec<u64>, MemberIdx) {
    let fetched = queues
        .fetch(group, member, "t", 100, Duration::ZERO, 0)
        .await
        .unwrap();
    let offsets = fetched.records.iter().map(|r| r.offset).collect();
    (offsets, fetched.member_idx)
}

async fn ack(queues: &ShareGroups, group: &str, member: &str, offsets: Vec<u64>, ack: Ack) {
    let batch = AckBatch {
        partition: 0,
        offsets,
        ack,
    };
    let refused = queues
        .acknowledge(group, member, "t", &[batch])
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
}

fn range(offsets: std::ops::Range<u64>) -> Vec<u64> {
    offsets.collect()
}

#[tokio::test]
async fn windows_past_the_cap_hand_out_only_what_they_hold() {
    let (_dir, queues) = server(40, 20, &[("a", 10), ("b", 10), ("c", 10)]).await;
    let (first, a_w) = fetch_as(&queues, "a", "w").await;
    assert_eq!(first, range(0..10));
    let (_, b_w) = fetch_as(&queues, "b", "w").await;
    assert_eq!(queues.tally.held(), 20);
    // The cap is reached: c gets nothing new.
    assert_eq!(fetch(&queues, "c", "w").await, Vec::<u64>::new());
    // Records a's window holds still go round: released, they are handed out again.
    ack(&queues, "a", "w", vec![3, 4], Ack::Release).await;
    assert_eq!(fetch(&queues, "a", "w").await, [3, 4]);
    // a finishes its records: its window empties and gives its memory back, and c
    // gets the room.
    ack(&queues, "a", "w", range(0..10), Ack::Accept).await;
    assert_eq!(queues.tally.held(), 10);
    assert_eq!(fetch(&queues, "c", "w").await, range(0..10));
    assert_eq!(queues.tally.held(), 20);
    // A deleted group gives its part back.
    queues.leave("a", "w", a_w).await.unwrap();
    queues.leave("b", "w", b_w).await.unwrap();
    queues.delete("b").await.unwrap();
    assert_eq!(queues.tally.held(), 10);
}

/// A group unloaded gives its part back (an abandoned group must not hold the cap for
/// good), and a fetch loads it again only if its windows fit: groups cycled through
/// unloads and loads must not take the room twice (review findings).
#[tokio::test]
async fn a_group_unloaded_gives_its_part_back_and_loads_again_only_if_it_fits() {
    let (_dir, queues) = server(30, 10, &[("a", 10), ("b", 10)]).await;
    let (first, a_w) = fetch_as(&queues, "a", "w").await;
    assert_eq!(first.len(), 10);
    ack(&queues, "a", "w", vec![1, 2], Ack::Accept).await;
    // Its member gone, the group is idle and unloads; its window stays on disk.
    queues.leave("a", "w", a_w).await.unwrap();
    let unload = |queues: &ShareGroups, name: &str| {
        let (_, mut guard) =
            futures_util::FutureExt::now_or_never(queues.lock(name, false, super::Admit::Always))
                .expect("not contended")
                .unwrap();
        *guard = super::SlotState::Unloaded;
        queues
            .loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    };
    unload(&queues, "a");
    assert_eq!(queues.tally.held(), 0, "given back");
    assert_eq!(fetch(&queues, "b", "w").await, range(0..10));
    // a's windows do not fit now: its fetch is refused, and loads nothing.
    let refused = queues
        .fetch("a", "v", "t", 100, Duration::ZERO, 0)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("max_share_window_records"),
        "{refused}"
    );
    assert_eq!(queues.tally.held(), 10);
    // b finishes its records, and its window gives its room back: a loads again, and
    // its window goes round.
    ack(&queues, "b", "w", range(0..10), Ack::Accept).await;
    assert_eq!(fetch(&queues, "a", "v").await, [0, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(queues.tally.held(), 10);
}

/// A group holding its fair share past nine tenths of the cap takes no new records,
/// not even into room its windows have, so that its windows shrink and the others get
/// room; and a fetch held back by the cap is woken when room is freed, not at its
/// deadline.
#[tokio::test]
async fn a_group_over_its_share_leaves_room_to_the_others() {
    let (_dir, queues) = server(60, 20, &[("a", 20), ("b", 4)]).await;
    assert_eq!(fetch(&queues, "a", "w").await, range(0..20));
    assert_eq!(fetch(&queues, "b", "w").await, Vec::<u64>::new());
    // a finishes five: its window has room for them, but a is over its share.
    ack(&queues, "a", "w", range(0..5), Ack::Accept).await;
    assert_eq!(fetch(&queues, "a", "w").await, Vec::<u64>::new());
    // b waits; a finishes more, its window shrinks under a quarter and gives back half.
    let queues = Arc::new(queues);
    tokio::spawn(Arc::clone(&queues).run_sweeper()); // which wakes fetches held back
    let waiting = {
        let queues = Arc::clone(&queues);
        tokio::spawn(async move {
            let fetched = queues
                .fetch("b", "w", "t", 100, Duration::from_secs(30), 0)
                .await
                .unwrap();
            fetched.records.iter().map(|r| r.offset).collect::<Vec<_>>()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    ack(&queues, "a", "w", range(5..16), Ack::Accept).await;
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the room freed, not at its deadline")
        .unwrap();
    assert_eq!(got, range(0..4));
}

/// A compaction gap at least as wide as max.in.flight ahead of an empty window: the
/// window starts at the next record. It stopped there as if full, on every fetch, and
/// the partition was stuck for good; under the cap, a gap wider than the room left
/// stalled it the same way.
#[test]
fn an_empty_window_starts_at_its_next_record_past_a_compaction_gap() {
    use crate::groups::share::window::{Candidate, Offered, SharePartition, Want};
    let config = crate::groups::share::ShareConfig {
        max_in_flight: 10,
        ..Default::default()
    };
    let mut p = SharePartition::new(0);
    let records = [Candidate {
        offset: 50,
        key: 0,
        deliver_at: 0,
        size: 1,
    }];
    let offered = Offered {
        from: 0,
        end: 51,
        records: &records,
    };
    let mut changes = Vec::new();
    let got = p.acquire(1, offered, Want::records(10), 0, &config, &mut changes);
    assert_eq!(got, [(50, 1)]);
    assert_eq!((p.start(), p.end()), (50, 51));
    // Replayed from the journal, the same.
    let mut replayed = SharePartition::new(0);
    for change in changes {
        replayed.restore(change);
    }
    assert_eq!((replayed.start(), replayed.end()), (50, 51));
}

/// A group refused a load for want of room counts among the groups for a while, so the
/// group holding the cap alone drops to its share and leaves room as its records
/// finish: it refilled its own room for as long as it stayed busy, and the refused
/// group waited that long (review finding).
#[tokio::test]
async fn a_group_refused_a_load_gets_room_as_the_busy_one_finishes() {
    let (_dir, queues) = server(60, 20, &[("a", 10), ("b", 18)]).await;
    let (first, a_w) = fetch_as(&queues, "a", "w").await;
    assert_eq!(first.len(), 10);
    queues.leave("a", "w", a_w).await.unwrap();
    {
        let (_, mut guard) = queues.lock("a", false, super::Admit::Always).await.unwrap();
        *guard = super::SlotState::Unloaded;
        queues
            .loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    assert_eq!(fetch(&queues, "b", "w").await, range(0..18));
    assert!(queues
        .fetch("a", "v", "t", 100, Duration::ZERO, 0)
        .await
        .is_err());
    // b finishes ten: its window has room for them, and b was within its share of the
    // cap (all of it, alone), but a waits: b is over its share now, and takes none.
    ack(&queues, "b", "w", range(0..10), Ack::Accept).await;
    assert_eq!(fetch(&queues, "b", "w").await, Vec::<u64>::new());
    // b finishes more: its window gives back half its room, and a fits.
    ack(&queues, "b", "w", range(10..15), Ack::Accept).await;
    assert_eq!(queues.tally.held(), 9);
    assert_eq!(fetch(&queues, "a", "v").await.len(), 10);
}
