//! The server with connection threads (`ServeOptions::connection_threads`,
//! `pin_connections = true`): each connection served whole on one thread of its own,
//! dealt in turn. Connections on different threads meet only through the log, so a
//! producer on one must wake a subscriber and a long poll on the others, and a stop
//! must end them all and close the log cleanly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::fetch_all;
use common::server::TestServer;
use strom::broker::Limits;
use strom::client::{Producer, ProducerConfig};
use strom::grpc::pb::{self, subscribe_request::Start};
use strom::server::ServeOptions;
use tokio_stream::StreamExt;
use tonic::Code;

fn on_threads(threads: usize) -> ServeOptions {
    ServeOptions {
        connection_threads: threads,
        ..ServeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_different_threads_meet_through_the_log_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), on_threads(2)).await;
    // Three connections, dealt in turn: the admin's and the producer's to one thread,
    // the subscriber's to the other.
    let admin = server.client_with_topic("t", 1).await;
    let subscriber = server.client().await;
    let producer_client = server.client().await;
    let request = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: Some(Start::Offset(0)),
        max_bytes: 0,
    };
    let mut stream = subscriber
        .log()
        .subscribe(request)
        .await
        .unwrap()
        .into_inner();
    // A long poll on the admin's connection, waiting for the first record.
    let mut poll = admin.log();
    let waiting = tokio::spawn(async move {
        let request = pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 10_000,
            ..Default::default()
        };
        poll.fetch(request).await.map(|r| r.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let producer = Producer::new(producer_client, ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..2000u32 {
        let record = pb::Record {
            value: Bytes::from(i.to_string()),
            ..Default::default()
        };
        acks.push(producer.send("t", None, record).await);
    }
    producer.flush().await;
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    producer.close().await;

    let fetched = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll answers within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        !fetched.records.is_empty(),
        "the long poll answered with records"
    );
    let mut received = Vec::new();
    while received.len() < 2000 {
        let reply = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the subscription delivers within 10 s")
            .expect("still open")
            .unwrap();
        received.extend(
            reply
                .records
                .iter()
                .map(|r| Bytes::copy_from_slice(r.unwrap().value)),
        );
    }
    let want: Vec<Bytes> = (0..2000u32).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(received, want, "every record, in order, once");

    // A stop ends the subscription waiting on the other thread, then closes the log.
    let stopped = tokio::spawn(server.stop());
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the subscription ends within 10 s")
        .expect("with a status, not silently");
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .expect("the server stops within 20 s")
        .unwrap()
        .unwrap();
    assert!(
        common::topic_dir(dir.path(), "t")
            .join("0/.clean-shutdown")
            .exists(),
        "closed cleanly"
    );

    // What was acknowledged is there after a restart, on threads again.
    let server = TestServer::start_with_options(dir.path(), Limits::default(), on_threads(3)).await;
    let client = server.client().await;
    let records = fetch_all(&client, "t", 0).await;
    assert_eq!(records.len(), 2000);
    server.stop().await.unwrap();
}

/// Requests whose handlers spawn tasks (a produce stream's reader and appender), from
/// eight connections on two threads at once: every record lands. (Which thread ran
/// the tasks is not observed here; `tests/cli_process.rs` checks that connections are
/// dealt to every thread.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_produce_at_once_on_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), on_threads(2)).await;
    let admin = server.client().await;
    admin
        .admin()
        .create_topic("t", 4, BTreeMap::new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..8u32 {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut acks = Vec::new();
            for i in 0..500u32 {
                let record = pb::Record {
                    value: Bytes::from(format!("{p}-{i}")),
                    ..Default::default()
                };
                acks.push(producer.send("t", Some(p % 4), record).await);
            }
            producer.flush().await;
            for ack in acks {
                ack.await.unwrap().unwrap();
            }
            producer.close().await;
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the producers finish within 30 s")
            .unwrap();
    }
    let mut total = 0;
    for p in 0..4 {
        total += fetch_all(&admin, "t", p).await.len();
    }
    assert_eq!(total, 8 * 500);
    server.stop().await.unwrap();
}
