//! A full disk under the real server: on a small tmpfs (mounted by the test when it runs
//! as root; skipped with a message otherwise), produce fails with RESOURCE_EXHAUSTED,
//! every record acknowledged before is intact, and produce works again once space is
//! freed, also after a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::cli::Serve;
use strom::client::Client;
use strom::grpc::pb;
use tonic::Code;

/// A tmpfs of `mib` MiB at a new directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn request(topic: &str, n: u64) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records: (0..16)
            .map(|i| pb::Record {
                value: Bytes::from(format!("{n}:{i}:{}", "v".repeat(4000))),
                ..Default::default()
            })
            .collect(),
        durability: pb::Durability::Fsync as i32,
        ..Default::default()
    }
}

/// Every record of partition 0 of `topic`, checked against what `request` sent.
async fn check_all(client: &Client, topic: &str, batches: u64) {
    let records = common::fetch_all(client, topic, 0).await;
    for (seen, (_, value)) in records.iter().enumerate() {
        let seen = seen as u64;
        let expected = format!("{}:{}:{}", seen / 16, seen % 16, "v".repeat(4000));
        assert_eq!(value, &expected, "record {seen}");
    }
    assert_eq!(
        records.len() as u64,
        batches * 16,
        "every acknowledged record, and nothing else"
    );
}

async fn fill(client: &Client, topic: &str) -> (u64, tonic::Status) {
    for n in 0.. {
        if let Err(status) = client.log().produce(request(topic, n)).await {
            return (n, status);
        }
    }
    unreachable!()
}

#[test]
fn a_full_disk_refuses_produce_damages_nothing_and_writes_resume_once_space_is_freed() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let Some(fs) = Tmpfs::mount(24) else {
        // As root the mount must work: a skip there would hide the test for good.
        assert!(!root, "running as root, and mount -t tmpfs failed");
        eprintln!("skipped: this test mounts a small tmpfs, which needs root");
        return;
    };
    // No free-space floor: the disk itself must say no (ENOSPC), mid-write.
    let serve = Serve::start_with_args(fs.path(), &["--min-free-disk", "0"]);
    for topic in ["filler", "t"] {
        serve.ok(
            &[
                "topic",
                "create",
                topic,
                "--config",
                "segment.bytes=1048576",
            ],
            b"",
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = serve.addr.clone();
    let acked = runtime.block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(120), async {
            // Half the disk to a topic that is deleted later, the rest to `t`.
            for n in 0..180 {
                client.log().produce(request("filler", n)).await.unwrap();
            }
            let (acked, status) = fill(&client, "t").await;
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            eprintln!("disk full: {}", status.message());
            assert!(acked > 10, "{acked} batches before the disk was full");
            // Still full: refused again, and reads work meanwhile.
            let again = client.log().produce(request("t", acked)).await.unwrap_err();
            assert_eq!(again.code(), Code::ResourceExhausted, "{again:?}");
            check_all(&client, "t", acked).await;
            // Free space: the filler topic goes, and `t` takes writes again.
            client.admin().delete_topic("filler").await.unwrap();
            let mut resumed = acked;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match client.log().produce(request("t", resumed)).await {
                    Ok(_) => resumed += 1,
                    Err(status) => assert!(
                        status.code() == Code::ResourceExhausted
                            && tokio::time::Instant::now() < deadline,
                        "{status:?}"
                    ),
                }
                if resumed >= acked + 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            check_all(&client, "t", resumed).await;
            resumed
        })
        .await
        .expect("within two minutes")
    });
    drop(serve); // SIGKILL
    let serve = Serve::start_with_args(fs.path(), &["--min-free-disk", "0"]);
    let addr = serve.addr.clone();
    runtime.block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        check_all(&client, "t", acked).await;
        client.log().produce(request("t", acked)).await.unwrap();
    });
}
