//! The server's cap on records held in share groups' windows (`tally.rs`): past it, a
//! fetch hands out only what its window holds already, and a window that shrinks makes
//! room for the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{AckBatch, MemberIdx, ShareGroups};
use bytes::Bytes;

use crate::broker::{Broker, Limits, ProduceTarget};
use crate::groups::share::window::Ack;

async fn server(records: u64, cap: usize) -> (tempfile::TempDir, ShareGroups) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
    let target = ProduceTarget {
        topic: "t".into(),
        partition: Some(0),
        durability: None,
        producer: None,
    };
    let mut writer = broker.begin_produce(target, records as usize, 0).unwrap();
    for _ in 0..records {
        writer
            .push(None, Bytes::from_static(b"x"), std::iter::empty(), 0)
            .unwrap();
    }
    let appended = writer.finish().unwrap().append().await.unwrap();
    appended.durable().await.unwrap();
    let queues = ShareGroups::open(broker, cap).unwrap();
    let earliest = BTreeMap::from([("start".to_string(), "earliest".to_string())]);
    for g in ["a", "b"] {
        queues.alter_config(g, &earliest).await.unwrap();
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

#[tokio::test]
async fn windows_past_the_cap_hand_out_only_what_they_hold() {
    let (_dir, queues) = server(30, 10).await;
    // Group a takes the whole cap; b gets nothing new.
    let (first, a_w) = fetch_as(&queues, "a", "w").await;
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    assert_eq!(queues.tally.held(), 10);
    assert_eq!(fetch(&queues, "b", "w").await, Vec::<u64>::new());
    // Records a's window holds still go round: released, they are handed out again.
    ack(&queues, "a", "w", vec![3, 4], Ack::Release).await;
    assert_eq!(fetch(&queues, "a", "w").await, [3, 4]);
    // Finished records at the front of a's window leave it, and b gets their room.
    ack(&queues, "a", "w", (0..6).collect(), Ack::Accept).await;
    assert_eq!(queues.tally.held(), 4);
    assert_eq!(fetch(&queues, "b", "w").await, (0..6).collect::<Vec<_>>());
    assert_eq!(queues.tally.held(), 10);
    ack(&queues, "b", "w", (0..6).collect(), Ack::Accept).await;
    assert_eq!(queues.tally.held(), 4);
    // A deleted group gives its part back.
    queues.leave("a", "w", a_w).await.unwrap();
    queues.delete("a").await.unwrap();
    assert_eq!(queues.tally.held(), 0);
}

#[tokio::test]
async fn a_group_unloaded_and_loaded_again_is_counted_once() {
    let (_dir, queues) = server(30, 10).await;
    let (first, a_w) = fetch_as(&queues, "a", "w").await;
    assert_eq!(first.len(), 10);
    ack(&queues, "a", "w", vec![1, 2], Ack::Accept).await;
    // Its member gone, the group is idle and unloads; its window stays on disk.
    queues.leave("a", "w", a_w).await.unwrap();
    assert_eq!(queues.tally.held(), 10);
    {
        let (_, mut guard) = queues.lock("a", false, super::Admit::Always).await.unwrap();
        *guard = super::SlotState::Unloaded;
        queues
            .loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    assert_eq!(queues.tally.held(), 0);
    // Loaded again by a fetch: its window (offsets 0 to 9, less the finished front) is
    // counted again, and only the room left goes to new records.
    let again = fetch(&queues, "a", "v").await;
    assert_eq!(again, [0, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(queues.tally.held(), 10);
    assert_eq!(fetch(&queues, "b", "w").await, Vec::<u64>::new());
}
