//! The Rust `Producer` when the server goes silent: a proxy between them stops passing
//! the server's bytes on, so every call hangs until the client gives up on it. The
//! producer must still fail records past their delivery timeout while its own calls
//! hang. Bounded in time.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::requests::record;
use common::server::TestServer;
use strom::client::{Client, Producer, ProducerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to `server`: the client's bytes always pass; the server's stop passing while
/// `silent` is set (they are held, not dropped).
async fn proxy(server: SocketAddr, silent: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let silent = Arc::clone(&silent);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    while silent.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Records for a topic whose partition count the producer does not know yet each need a
/// DescribeTopic, which hangs for the client's call timeout (10 s) when the server is
/// silent. The producer's task takes waiting commands in runs; a run must end at such
/// a call, or a record already sent would wait for its delivery timeout behind every
/// one of them (six here: a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_does_not_hold_up_delivery_timeouts_behind_the_producers_own_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server
        .client()
        .await
        .admin()
        .create_topic("a", 1, Default::default())
        .await
        .unwrap();
    let silent = Arc::new(AtomicBool::new(false));
    let addr = proxy(server.addr, Arc::clone(&silent)).await;
    let client = Client::connect(&addr.to_string()).await.unwrap();
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
