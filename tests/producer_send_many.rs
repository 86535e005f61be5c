//! `Producer::send_many` against the real server: a call's acknowledgements come back in
//! the order of its records and name where each was stored, its records are partitioned
//! as `send`'s are, and a call whose records cannot be delivered is answered with the
//! failure instead of hanging. Every wait is bounded.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::fetch_all;
use common::requests::config;
use common::server::TestServer;
use strom::broker::partitioner::partition_for_key;
use strom::client::{Producer, ProducerConfig};
use strom::grpc::pb;
use tonic::Code;

const BOUND: Duration = Duration::from_secs(30);

/// A call's answer, within `BOUND`.
async fn answer<T>(
    rx: tokio::sync::oneshot::Receiver<Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(BOUND, rx)
        .await
        .expect("answered in time")
        .expect("answered, not dropped")
}

fn record(key: Option<String>, value: String) -> pb::Record {
    pb::Record {
        key: key.map(Bytes::from),
        value: Bytes::from(value),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_acknowledgement_names_where_its_record_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 3, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    // Small batches, so that one call's records fill many batches in every partition.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_bytes: 2048,
            ..ProducerConfig::default()
        },
    );
    let mut calls = Vec::new();
    let mut singles = Vec::new();
    for call in 0..4 {
        let records: Vec<_> = (0..1000)
            .map(|i| {
                let key = (i % 3 != 0).then(|| format!("k{}", i % 17));
                (key, format!("c{call}-{i}"))
            })
            .collect();
        let sent = records.iter().cloned().map(|(k, v)| record(k, v)).collect();
        calls.push((records, producer.send_many("t", None, sent).await));
        // A single send between calls shares batches with them.
        let value = format!("single-{call}");
        let ack = producer.send("t", None, record(None, value.clone())).await;
        singles.push((value, ack));
    }
    let empty = answer(producer.send_many("t", None, Vec::new()).await).await;
    assert!(empty.unwrap().is_empty());

    let mut stored: HashMap<(u32, u64), String> = HashMap::new();
    for p in 0..3 {
        for (offset, value) in fetch_all_after_flush(&producer, &client, p).await {
            stored.insert((p, offset), value);
        }
    }
    // Keyless records stick to a partition for a batch, then move on to the next.
    let mut keyless_in = [0; 3];
    for (records, call) in calls {
        let acks = answer(call).await.unwrap();
        assert_eq!(acks.len(), records.len());
        for ((key, value), ack) in records.iter().zip(&acks) {
            match key {
                Some(key) => assert_eq!(ack.partition, partition_for_key(key.as_bytes(), 3)),
                None => keyless_in[ack.partition as usize] += 1,
            }
            assert_eq!(
                stored.get(&(ack.partition, ack.offset)),
                Some(value),
                "the record acknowledged at {ack:?}"
            );
        }
    }
    assert!(
        keyless_in.iter().all(|&n| n > 0),
        "keyless records spread over the partitions: {keyless_in:?}"
    );
    for (value, ack) in singles {
        let ack = answer(ack).await.unwrap();
        assert_eq!(stored.get(&(ack.partition, ack.offset)), Some(&value));
    }
    assert_eq!(stored.len(), 4 * 1000 + 4, "every record stored once");
    producer.close().await;
    server.stop().await.unwrap();
}

async fn fetch_all_after_flush(
    producer: &Producer,
    client: &strom::client::Client,
    partition: u32,
) -> Vec<(u64, String)> {
    tokio::time::timeout(BOUND, producer.flush()).await.unwrap();
    fetch_all(client, "t", partition).await
}

#[tokio::test]
async fn a_call_that_cannot_be_delivered_is_answered_with_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 2, config(&[]))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let records = || (0..10).map(|i| record(None, i.to_string())).collect();

    // No such topic: the lookup of its partition count fails.
    let err = answer(producer.send_many("missing", None, records()).await)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // No such partition: the server refuses the batch.
    let err = answer(producer.send_many("t", Some(9), records()).await)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The producer goes on: a good call after the bad ones is stored.
    let acks = answer(producer.send_many("t", Some(1), records()).await)
        .await
        .unwrap();
    assert_eq!(
        acks.iter().map(|a| a.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    producer.close().await;
    server.stop().await.unwrap();
}

/// A flush waits for the records sent before it, not for those another task keeps
/// sending: with a sender that never pauses, a batch is always filling, and a flush
/// that waited until none was never returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_returns_while_another_task_keeps_sending() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 2, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    // Batches close only at their linger, so the sender's next batch is always filling.
    let config = ProducerConfig {
        linger: Duration::from_secs(2),
        batch_bytes: 64 << 20,
        ..ProducerConfig::default()
    };
    let producer = std::sync::Arc::new(Producer::new(client, config));
    let sender = {
        let producer = std::sync::Arc::clone(&producer);
        tokio::spawn(async move {
            for i in 0u64.. {
                drop(producer.send("t", None, record(None, i.to_string())).await);
                // Never pausing, but never holding its thread: once the producer is
                // closed (the test failed), send returns at once, and a task that never
                // yields kept the runtime from shutting down, hanging the suite.
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = producer
        .send("t", None, record(None, "before".into()))
        .await;
    tokio::time::timeout(BOUND, producer.flush())
        .await
        .expect("the flush returned while the other task was still sending");
    let mut before = before;
    let ack = before
        .try_recv()
        .expect("answered by the time flush returned");
    assert!(ack.is_ok(), "{ack:?}");
    assert!(!sender.is_finished(), "the other task was still sending");
    sender.abort();
    let _ = sender.await;
    // The server's graceful stop waits for the producer's stream to close.
    let producer = std::sync::Arc::into_inner(producer).expect("the sender's copy is gone");
    tokio::time::timeout(BOUND, producer.close()).await.unwrap();
    server.stop().await.unwrap();
}

/// Large batches of small records close at `batch_records`: a server refuses a request
/// of more than its max_records_per_request (100,000 by default), and every record of
/// it failed. (A 64 MiB batch of tiny records held 112,661 of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_holds_more_records_than_the_server_takes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 1, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_bytes: 64 << 20,
            linger: Duration::from_secs(1),
            ..ProducerConfig::default()
        },
    );
    let records: Vec<pb::Record> = (0..150_000).map(|i| record(None, i.to_string())).collect();
    let acks = answer(producer.send_many("t", Some(0), records).await)
        .await
        .unwrap();
    assert_eq!(acks.len(), 150_000);
    assert_eq!(acks.last().unwrap().offset, 149_999);
    producer.close().await;
    server.stop().await.unwrap();
}

/// A topic deleted and created again with more partitions: keyed records go where the
/// new count puts them once the producer's partition count is `metadata_max_age` old.
/// It was kept for the producer's life, so they were hashed over the old count (a
/// review found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_a_topic_created_again_with_more_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 2, config(&[]))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            metadata_max_age: Duration::from_millis(200),
            ..ProducerConfig::default()
        },
    );
    // A key whose partition differs between 2 and 8 partitions.
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), 8) >= 2)
        .unwrap();
    let send = async |value: &str| {
        let ack = producer
            .send("t", None, record(Some(key.clone()), value.into()))
            .await;
        answer(ack).await.unwrap()
    };
    assert_eq!(
        send("before").await.partition,
        partition_for_key(key.as_bytes(), 2)
    );
    client.admin().delete_topic("t").await.unwrap();
    client
        .admin()
        .create_topic("t", 8, config(&[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send("after").await.partition,
        partition_for_key(key.as_bytes(), 8)
    );
    producer.close().await;
    server.stop().await.unwrap();
}
