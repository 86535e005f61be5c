//! A group consumer's fetcher against a real server, through a TCP proxy that breaks
//! the connection under one chosen call: the way a server restart or a network blip
//! meets the fetcher between two calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tasks::fetch_loop;
use super::Fetch;
use crate::broker::{Broker, Limits};
use crate::client::{Client, OffsetReset};
use crate::grpc::pb;
use crate::server::{serve, ServeOptions};

const PREFACE: usize = 24;

/// A proxy to `server` that counts the calls clients start through it (the HTTP/2
/// HEADERS frames they send, one a call) and closes the connection that starts call
/// number `break_at` before that call reaches the server.
async fn proxy(server: SocketAddr, break_at: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            let calls = Arc::clone(&calls);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut preface = PREFACE;
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    pending.extend_from_slice(&buf[..n]);
                    // Whole frames only, each looked at before it goes on.
                    let mut ready = preface.min(pending.len());
                    preface -= ready;
                    while preface == 0 && pending.len() >= ready + 9 {
                        let header = &pending[ready..ready + 9];
                        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                        if pending.len() < ready + 9 + len {
                            break;
                        }
                        if header[3] == 1 && calls.fetch_add(1, Ordering::SeqCst) + 1 == break_at {
                            return; // both halves dropped: the connection closes
                        }
                        ready += 9 + len;
                    }
                    if server_write.write_all(&pending[..ready]).await.is_err() {
                        return;
                    }
                    pending.drain(..ready);
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The fetcher asks from offset 0, which retention removed: the server answers
/// OUT_OF_RANGE, and the connection breaks under the fetcher's lookup of the
/// partition's bounds. It asks again, as after a fetch that met a broken connection,
/// and goes on from the log start. It passed the broken lookup on to `poll` as an
/// error.
#[tokio::test]
async fn a_lookup_after_out_of_range_that_meets_a_broken_connection_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path(), Limits::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, broker, ServeOptions::default(), async {
        let _ = stopped.await;
    }));
    let direct = Client::connect(&server.to_string()).await.unwrap();
    direct
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    let records = (0..10)
        .map(|_| pb::Record {
            value: Bytes::from_static(b"x"),
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records,
        ..Default::default()
    };
    direct.log().produce(request).await.unwrap();
    direct
        .admin()
        .delete_records("t", 0, Some(5))
        .await
        .unwrap();

    // Call 1 is the fetch, call 2 the lookup.
    let client = Client::connect(&proxy(server, 2).await.to_string())
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let key = ("t".to_string(), 0);
    let fetcher = tokio::spawn(fetch_loop(
        client,
        key,
        0,
        1 << 20,
        OffsetReset::Earliest,
        1,
        tx,
    ));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the fetcher answers")
        .expect("the fetcher runs");
    match first.result {
        Ok(Fetch::Reset(5)) => {}
        Ok(Fetch::Reset(to)) => panic!("reset to {to}"),
        Ok(Fetch::Records(..)) => panic!("records before the reset"),
        Err(status) => panic!("passed on: {status:?}"),
    }
    fetcher.abort();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
