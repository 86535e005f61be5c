//! A TCP proxy in front of a server that can go silent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strom::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::TestServer;

/// A server with topic `a` (one partition), and a client that reaches it through a
/// proxy that goes silent while the flag is set.
pub async fn behind_a_proxy(dir: &std::path::Path) -> (TestServer, Arc<AtomicBool>, Client) {
    let server = TestServer::start(dir).await;
    server
        .client()
        .await
        .admin()
        .create_topic("a", 1, Default::default())
        .await
        .unwrap();
    let silent = Arc::new(AtomicBool::new(false));
    let addr = proxy(server.addr, Arc::clone(&silent), Default::default()).await;
    let client = Client::connect(&addr.to_string()).await.unwrap();
    (server, silent, client)
}

/// A proxy to `server`: the client's bytes always pass, counted in `to_server`; the
/// server's stop passing while `silent` is set (they are held, not dropped).
pub async fn proxy(
    server: SocketAddr,
    silent: Arc<AtomicBool>,
    to_server: Arc<AtomicU64>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            // As the client and server set theirs: Nagle's wait on a reply split in
            // two writes would slow every round trip to the peer's delayed ACK.
            client.set_nodelay(true).unwrap();
            upstream.set_nodelay(true).unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            let to_server = Arc::clone(&to_server);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    to_server.fetch_add(n as u64, Ordering::Relaxed);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
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
