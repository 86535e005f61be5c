//! What the server logs when nothing is wrong. An operator reads WARN and ERROR lines
//! as trouble, so a topic deleted while it is being written must not leave any: its
//! background syncs, recovery checkpoints and producer snapshots fail because its files
//! are gone, which is what a delete means (before: 41 WARN lines for 30 such deletes).
//! One test in this binary: it installs the process's tracing subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::requests::{config, produce, record};
use common::server::TestServer;
use strom::grpc::pb;

/// Everything logged, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_while_it_is_written_logs_no_warning() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    for round in 0..12 {
        let name = format!("t{round}");
        // Small segments: rolls start background syncs of the sealed ones.
        let settings = config(&[("segment.bytes", "1048576")]);
        client
            .admin()
            .create_topic(&name, 4, settings)
            .await
            .unwrap();
        let writers: Vec<_> = (0..4u32)
            .map(|p| {
                let mut log = client.log();
                let topic = name.clone();
                tokio::spawn(async move {
                    let durability = match p % 2 {
                        0 => pb::Durability::PageCache,
                        _ => pb::Durability::Fsync,
                    };
                    let mut request =
                        produce(&topic, Some(p), vec![record(&"x".repeat(1000)); 100]);
                    request.durability = durability as i32;
                    // Until the topic is gone.
                    while log.produce(request.clone()).await.is_ok() {}
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.admin().delete_topic(&name).await.unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    // The syncs and checkpoints the deletes cut short have run by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop().await.unwrap();
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let trouble: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(trouble.is_empty(), "{}", trouble.join("\n"));
    assert!(logged.contains("topic deleted"), "the log was captured");
}
