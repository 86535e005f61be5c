//! The Rust consumers when the server goes silent (stopped, or its machine gone without
//! a reset): a proxy between them stops passing the server's bytes on. Every call must
//! end, with UNAVAILABLE, once the connection's keep-alive PING goes unanswered, so that
//! `strom consume --group` can still exit. Bounded in time.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::proxy::behind_a_proxy;
use strom::client::{Consumer, GroupConfig, GroupConsumer, Start};
use strom::grpc::pb;

/// About the keep-alive's interval and timeout (10 s each), with room to spare.
const BOUND: Duration = Duration::from_secs(40);

async fn produce(client: &strom::client::Client, n: usize) {
    let records = (0..n)
        .map(|i| pb::Record {
            value: format!("r{i}").into(),
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: "a".into(),
        partition: Some(0),
        records,
        ..Default::default()
    };
    client.log().produce(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_members_poll_and_close_end_when_the_server_goes_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, silent, client) = behind_a_proxy(dir.path()).await;
    produce(&client, 10).await;
    let config = GroupConfig {
        auto_commit: Some(Duration::from_millis(100)),
        ..GroupConfig::new("g", &["a"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    let mut got = 0;
    let deadline = Instant::now() + BOUND;
    while got < 10 {
        assert!(Instant::now() < deadline, "records never came");
        if let Some(batch) = member.poll(Duration::from_millis(200)).await.unwrap() {
            got += batch.records.len();
        }
    }
    silent.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await; // an auto-commit falls due
    let started = Instant::now();
    let polled = tokio::time::timeout(BOUND, member.poll(Duration::from_millis(200))).await;
    assert!(
        polled.is_ok(),
        "poll hung on its commit for {:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(BOUND, member.close()).await;
    let err = closed.expect("close hung").unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_consumers_poll_ends_when_the_server_goes_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, silent, client) = behind_a_proxy(dir.path()).await;
    produce(&client, 1).await;
    let mut consumer = Consumer::new(&client, "a", 0, Start::Earliest)
        .await
        .unwrap();
    assert_eq!(consumer.poll(Duration::ZERO).await.unwrap().len(), 1);
    silent.store(true, Ordering::Relaxed);
    // A response the proxy was already passing on may still arrive: poll until one
    // fails.
    let failed = tokio::time::timeout(BOUND, async {
        loop {
            if let Err(err) = consumer.poll(Duration::from_millis(100)).await {
                return err;
            }
        }
    })
    .await
    .expect("poll hung");
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
}
