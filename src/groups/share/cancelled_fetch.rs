//! A ShareFetch dropped after it locked records and before it answered (its client
//! went away while it read the next partition): the records it locked are given back,
//! their deliveries uncounted, not held for `lock.ms` by a member that never saw them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use super::topic_races::poll_once;
use super::ShareGroups;
use crate::broker::{Broker, Limits, ProduceTarget};

/// 12 records of 100 KB in each partition: in 1 MiB segments, reads from offset 0
/// touch a sealed segment, and sealed segments are read on a blocking thread.
async fn fill(broker: &Broker, partitions: u32) {
    for p in 0..partitions {
        for _ in 0..12 {
            let target = ProduceTarget {
                topic: "t".into(),
                partition: Some(p),
                durability: None,
                producer: None,
            };
            let mut writer = broker.begin_produce(target, 1, 0).unwrap();
            let value = Bytes::from(vec![b'x'; 100_000]);
            writer.push(None, value, std::iter::empty(), 0).unwrap();
            writer
                .finish()
                .unwrap()
                .append()
                .await
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
    }
}

#[test]
fn a_fetch_dropped_between_partitions_gives_back_what_it_locked() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let config = BTreeMap::from([("segment.bytes".to_string(), (1u64 << 20).to_string())]);
        broker.create_topic("t", 2, &config).await.unwrap();
        fill(&broker, 2).await;
        let queues = ShareGroups::open(Arc::clone(&broker)).unwrap();
        let earliest = BTreeMap::from([("start".to_string(), "earliest".to_string())]);
        queues.alter_config("q", &earliest).await.unwrap();
        // The first partition's read goes to the one blocking thread; a blocker queued
        // behind it holds the thread, so the fetch, once it has locked the first
        // partition's records, waits at the second partition's read.
        let mut fetch = Box::pin(queues.fetch("q", "", "t", 100, Duration::ZERO, 0));
        if let Poll::Ready(r) = poll_once(&mut fetch).await {
            panic!(
                "{:?}",
                r.map(|f| f
                    .records
                    .iter()
                    .map(|r| (r.partition, r.offset))
                    .collect::<Vec<_>>())
            );
        }
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || wait.recv());
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(poll_once(&mut fetch).await.is_pending());
        }
        drop(fetch); // the client went away
        go.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let other = queues
            .fetch("q", "", "t", 100, Duration::ZERO, 0)
            .await
            .unwrap();
        let firsts: Vec<(u32, u16)> = other
            .records
            .iter()
            .filter(|r| r.offset == 0)
            .map(|r| (r.partition, r.delivery_count))
            .collect();
        assert_eq!(
            firsts.len(),
            2,
            "both partitions' first records: {firsts:?}"
        );
        assert!(
            other.records.iter().all(|r| r.delivery_count == 1),
            "{:?}",
            other
                .records
                .iter()
                .map(|r| (r.partition, r.offset, r.delivery_count))
                .collect::<Vec<_>>()
        );
    });
}
