//! The Rust `Producer` when the server goes silent: a proxy between them stops passing
//! the server's bytes on, so every call hangs until the client gives up on it. The
//! producer must still fail records past their delivery timeout while its own calls
//! hang. Bounded in time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::behind_a_proxy;
use common::requests::record;
use strom::client::{Producer, ProducerConfig};
use strom::grpc::pb;

/// Records for a topic whose partition count the producer does not know yet each need a
/// DescribeTopic, which hangs for the client's call timeout (10 s) when the server is
/// silent. The producer's task takes waiting commands in runs; a run must end at such
/// a call, or a record already sent would wait for its delivery timeout behind every
/// one of them (six here: a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_does_not_hold_up_delivery_timeouts_behind_the_producers_own_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, silent, client) = behind_a_proxy(dir.path()).await;
    let producer = Producer::new(
        client,
        ProducerConfig {
            // Every record is a batch of its own, sent as soon as it is added.
            batch_bytes: 1,
            delivery_timeout: Duration::from_secs(1),
            idempotent: false,
            ..ProducerConfig::default()
        },
    );
    // The stream is open and topic a's partition count known.
    let first = producer.send("a", None, record("first")).await;
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("bounded")
        .unwrap()
        .expect("acknowledged");

    silent.store(true, Ordering::Relaxed);
    let stuck = producer.send("a", None, record("stuck")).await;
    let mut hanging = Vec::new();
    for i in 0..6 {
        hanging.push(producer.send("b", None, record(&i.to_string())).await);
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(45), stuck)
        .await
        .expect("the record sent to the silent server is answered")
        .expect("answered, not dropped");
    let waited = started.elapsed();
    let status = answer.expect_err("no acknowledgement came");
    assert!(
        waited < Duration::from_secs(25),
        "failed after {waited:?} ({status:?}): its delivery timeout is 1 s, and one hanging DescribeTopic takes 10 s"
    );
}

/// A caller faster than the server is held back: with the server silent, `send_many`
/// waits once `buffer_bytes` of records wait for the producer's task, rather than
/// queueing without bound (4,096 calls of any size, before the bound); `send` takes
/// its room the same way (`Producer::room_for`). When the server answers again, the
/// room comes back and the caller goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_once_the_producers_buffer_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (server, silent, client) = behind_a_proxy(dir.path()).await;
    let producer = Arc::new(Producer::new(
        client,
        ProducerConfig {
            // A call of ten 1,000-byte records is a batch, one of them in flight at
            // most, and the buffer holds nine calls.
            batch_bytes: 10_000,
            max_in_flight: 1,
            buffer_bytes: 100_000,
            idempotent: false,
            ..ProducerConfig::default()
        },
    ));
    let first = producer.send("a", None, record("first")).await;
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("bounded")
        .unwrap()
        .expect("acknowledged");

    silent.store(true, Ordering::Relaxed);
    let returned = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (producer, returned) = (Arc::clone(&producer), Arc::clone(&returned));
        tokio::spawn(async move {
            loop {
                let records = (0..10)
                    .map(|_| pb::Record {
                        value: Bytes::from(vec![b'x'; 1000]),
                        ..Default::default()
                    })
                    .collect();
                drop(producer.send_many("a", Some(0), records).await);
                returned.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = returned.load(Ordering::Relaxed);
    // One call in flight (unanswered, so the task takes no more), nine in the buffer,
    // and one that may have taken its room as the task took the first.
    assert!(
        (5..=12).contains(&calls),
        "{calls} calls of 10,240 bytes returned against a 100,000-byte buffer"
    );
    // The server speaks again: the room the waiting calls held comes back, and the
    // caller goes on (room never given back would hold it for good).
    silent.store(false, Ordering::Relaxed);
    let bound = Instant::now() + Duration::from_secs(20);
    while returned.load(Ordering::Relaxed) < calls + 100 {
        assert!(Instant::now() < bound, "the caller did not go on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    caller.abort();
    let _ = caller.await;
    let producer = Arc::into_inner(producer).expect("the caller's copy is gone");
    tokio::time::timeout(Duration::from_secs(20), producer.close())
        .await
        .expect("closed");
    server.stop().await.unwrap();
}
