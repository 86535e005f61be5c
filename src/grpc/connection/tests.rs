use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::{ConnectionInfo, Place, Timeouts, Watched};
use tonic::transport::server::Connected;

/// A connected pair on loopback: the server's end watched, the client's plain.
async fn pair(stall_timeout: Duration) -> (Watched, std::net::TcpStream, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let timeouts = Timeouts {
        stall: stall_timeout,
        silent: Duration::from_secs(60),
    };
    let uncounted = super::Admission::new(0).take(None).unwrap();
    let place = Place::take(&open, uncounted);
    // No server to hang up: the sender goes at once, and the watchdog carries on.
    let (_, hangup) = tokio::sync::watch::channel(false);
    (Watched::new(socket, timeouts, place, hangup), client, open)
}

/// A connection making many short responses keeps a list of about the live ones, not
/// of every one since the watchdog last looked (75 s by default).
#[tokio::test]
async fn ended_responses_do_not_pile_up_between_watchdog_rounds() {
    let (watched, _client, _) = pair(Duration::from_secs(300)).await;
    let info: ConnectionInfo = watched.connect_info();
    let live: Vec<_> = (0..10).map(|_| info.watch()).collect();
    for _ in 0..100_000 {
        drop(info.watch());
    }
    let listed = super::lock(&info.0.responses).len();
    assert!(listed <= 64, "{listed} responses listed, 10 live");
    drop(live);
}

/// A client whose kernel stops taking data (a stopped process: the socket's buffers
/// fill) is as stalled as one whose HTTP/2 window is shut: writes fail after the
/// timeout, and the connection goes.
#[tokio::test]
async fn a_socket_that_takes_no_data_is_closed_after_the_timeout() {
    let (mut watched, client, open) = pair(Duration::from_millis(300)).await;
    let chunk = vec![0u8; 64 << 10];
    let filled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(err) = watched.write_all(&chunk).await {
                return err;
            }
        }
    })
    .await
    .expect("the writes were not failed");
    assert_eq!(filled.kind(), std::io::ErrorKind::TimedOut, "{filled}");
    drop(watched);
    assert_eq!(open.load(Ordering::Relaxed), 0, "counted out when dropped");
    drop(client);
}

/// A client that keeps reading is not stalled, though each write waits for the kernel
/// to free a third of the socket's buffer (at 6.4 MB/s, about 0.2 s).
#[tokio::test]
async fn a_slow_reader_is_not_closed() {
    let (mut watched, mut client, _) = pair(Duration::from_secs(1)).await;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        while total < 8 << 20 {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        total
    });
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..8 {
        watched.write_all(&chunk).await.unwrap();
    }
    drop(watched);
    assert_eq!(reader.join().unwrap(), 8 << 20);
}
