//! A group member keeps the partitions it was given while it looks up where to start
//! them (their committed offsets), however long that takes: the server takes a
//! partition its member does not report as owned for given back, and gave one to a
//! member joining meanwhile, and then both consumed it (hostile-client finding). The
//! first member reaches the server through a proxy that holds back its first
//! FetchOffsets answer (`tests/python/delaying_proxy.py`, grpcio; `scripts/test.sh`
//! installs it and sets STROM_PYTHON).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::requests::{produce, record};
use common::server::TestServer;
use strom::broker::Limits;
use strom::client::{Client, GroupConfig, GroupConsumer};
use strom::groups::GroupsConfig;
use strom::server::ServeOptions;
use tokio::time::Instant;

/// How long the proxy holds back the first member's committed offsets.
const DELAY: Duration = Duration::from_secs(4);

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy in front of `upstream`, and the address it listens on.
fn delaying_proxy(upstream: &str) -> (Proxy, String) {
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/delaying_proxy.py"
    );
    let mut child = Command::new(python)
        .args([
            script,
            upstream,
            "FetchOffsets",
            &DELAY.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs (scripts/test.sh installs grpcio)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the proxy said {line:?}"))
        .trim()
        .to_string();
    (Proxy(child), format!("127.0.0.1:{port}"))
}

type Seen = Arc<Mutex<Vec<(u32, u64, Instant)>>>;

/// Polls `member` until `until`, noting each record's partition, offset and when.
fn consume(mut member: GroupConsumer, until: Instant) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let noted = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while Instant::now() < until {
            if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                let now = Instant::now();
                let mut noted = noted.lock().unwrap();
                noted.extend(batch.records.iter().map(|r| (r.partition, r.offset, now)));
            }
        }
        member.close().await.unwrap();
    });
    (seen, task)
}

fn config() -> GroupConfig {
    let mut config = GroupConfig::new("g", &["t"]);
    config.session_timeout = Duration::from_secs(10);
    config.auto_commit = Some(Duration::from_millis(200));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_keeps_its_partitions_while_it_looks_up_where_to_start_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        groups: GroupsConfig::new(Duration::from_millis(200), Duration::from_secs(600)),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("t", 2).await;
    for partition in 0..2 {
        let request = produce("t", Some(partition), vec![record("x"); 100]);
        client.log().produce(request).await.unwrap();
    }
    let (_proxy, address) = delaying_proxy(&server.addr.to_string());
    let started = Instant::now();
    let end = started + DELAY + Duration::from_secs(5);
    // The first member gets both partitions, and waits for their committed offsets.
    let slow = Client::connect(&address).await.unwrap();
    let first = GroupConsumer::join(&slow, config()).await.unwrap();
    let (first_seen, first_task) = consume(first, end);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The second joins meanwhile: the first still holds both, set up or not.
    let second = GroupConsumer::join(&client, config()).await.unwrap();
    let (second_seen, second_task) = consume(second, end);
    first_task.await.unwrap();
    second_task.await.unwrap();

    let first_seen = first_seen.lock().unwrap().clone();
    let second_seen = second_seen.lock().unwrap().clone();
    let early: Vec<_> = second_seen
        .iter()
        .filter(|(_, _, at)| *at < started + DELAY)
        .map(|(p, o, _)| (p, o))
        .collect();
    assert!(
        early.is_empty(),
        "the second member consumed {} records while the first was still setting its partitions up",
        early.len()
    );
    let first_offsets: BTreeSet<(u32, u64)> = first_seen.iter().map(|(p, o, _)| (*p, *o)).collect();
    let both: Vec<_> = second_seen
        .iter()
        .filter(|(p, o, _)| first_offsets.contains(&(*p, *o)))
        .collect();
    assert!(both.is_empty(), "consumed by both: {}", both.len());
}
