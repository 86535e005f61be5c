//! A TCP proxy in front of a server that can go silent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let addr = proxy(server.addr, Arc::clone(&silent)).await;
    let client = Client::connect(&addr.to_string()).await.unwrap();
    (server, silent, client)
}

/// A proxy to `server`: the client's bytes always pass; the server's stop passing while
/// `silent` is set (they are held, not dropped).
pub async fn proxy(server: SocketAddr, silent: Arc<AtomicBool>) -> SocketAddr {
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
