//! The Rust consumers of a server that does not long-poll (`--max-wait-ms 0`, or a cap
//! below what they ask): a quiet partition must not make them ask again at once, a
//! request per round trip, for as long as it stays quiet. A proxy counts the bytes they
//! send. Bounded in time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::server::TestServer;
use strom::broker::Limits;
use strom::client::{Client, Consumer, GroupConfig, GroupConsumer, Start};

/// How long each consumer is watched on its quiet partition.
const WATCH: Duration = Duration::from_secs(2);

/// At ten requests a second, a consumer sends about 20 Fetch requests in `WATCH`:
/// 1.2 KB measured (HPACK shrinks repeated headers to a few bytes). Asking again at
/// once, it sent 44 KB in a debug build. The bound sits between, well clear of both.
const MOST_BYTES: u64 = 8 << 10;

/// A server that never waits, a topic `a` of one empty partition, and a client reaching
/// it through a proxy that counts what the client sends.
async fn quiet_server(dir: &std::path::Path) -> (TestServer, Client, Arc<AtomicU64>) {
    let limits = Limits {
        max_wait: Duration::ZERO,
        ..Limits::default()
    };
    let server = TestServer::start_with(dir, limits).await;
    let direct = server.client_with_topic("a", 1).await;
    drop(direct);
    let sent = Arc::new(AtomicU64::new(0));
    let addr = common::proxy::proxy(server.addr, Default::default(), Arc::clone(&sent)).await;
    let client = Client::connect(&addr.to_string()).await.unwrap();
    (server, client, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_polling_a_quiet_partition_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client, sent) = quiet_server(dir.path()).await;
    let mut consumer = Consumer::new(&client, "a", 0, Start::Earliest)
        .await
        .unwrap();
    let before = sent.load(Ordering::Relaxed);
    let watch = async {
        loop {
            assert!(consumer
                .poll(Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty());
        }
    };
    let _ = tokio::time::timeout(WATCH, watch).await;
    let bytes = sent.load(Ordering::Relaxed) - before;
    assert!(bytes < MOST_BYTES, "{bytes} bytes sent in {WATCH:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_with_a_quiet_partition_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client, sent) = quiet_server(dir.path()).await;
    let config = GroupConfig {
        auto_commit: None,
        ..GroupConfig::new("g", &["a"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    // Until it owns the partition, and its fetcher has started.
    tokio::time::timeout(Duration::from_secs(20), async {
        while member.assignment().is_empty() {
            assert!(member
                .poll(Duration::from_millis(100))
                .await
                .unwrap()
                .is_none());
        }
    })
    .await
    .expect("the partition assigned in time");
    let before = sent.load(Ordering::Relaxed);
    let watch = async {
        loop {
            assert!(member.poll(Duration::from_secs(1)).await.unwrap().is_none());
        }
    };
    let _ = tokio::time::timeout(WATCH, watch).await;
    let bytes = sent.load(Ordering::Relaxed) - before;
    assert!(bytes < MOST_BYTES, "{bytes} bytes sent in {WATCH:?}");
}
