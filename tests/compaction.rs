//! Log compaction against a real server: the newest value of each key stays at its
//! offset and every reader skips the gaps; tombstones go after delete.retention.ms;
//! keyless records are refused; and a server killed with SIGKILL in the middle of
//! compactions comes back with either the old or the new segments, never a mix.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::server::TestServer;
use strom::broker::{Limits, TopicConfig};
use strom::client::{Client, Consumer, GroupConfig, GroupConsumer, Start};
use strom::grpc::pb;
use strom::log::{records, Log};
use strom::server::ServeOptions;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(60);

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Produces `(key, value)` records as one request to partition 0.
async fn produce(
    client: &Client,
    topic: &str,
    records: &[(String, String)],
) -> Result<u64, tonic::Status> {
    let records = records
        .iter()
        .map(|(k, v)| pb::Record {
            key: Some(Bytes::from(k.clone())),
            value: Bytes::from(v.clone()),
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records,
        ..Default::default()
    };
    Ok(client
        .log()
        .produce(request)
        .await?
        .into_inner()
        .base_offset)
}

/// Every record of partition 0, through the Rust consumer: (offset, key, value).
async fn consume_all(client: &Client, topic: &str) -> Vec<(u64, String, String)> {
    tokio::time::timeout(LIMIT, consume_all_unbounded(client, topic))
        .await
        .expect("the consumer reaches the end of the partition")
}

async fn consume_all_unbounded(client: &Client, topic: &str) -> Vec<(u64, String, String)> {
    let mut consumer = Consumer::new(client, topic, 0, Start::Earliest)
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(10)).await.unwrap();
        for r in records {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            out.push((r.offset, key, String::from_utf8(r.value.to_vec()).unwrap()));
        }
        if consumer.position() >= consumer.high_watermark() && consumer.high_watermark() > 0 {
            return out;
        }
    }
}

fn newest_by_key(records: &[(u64, String, String)]) -> BTreeMap<String, (u64, String)> {
    records
        .iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

/// A server whose cleaner runs every 50 ms, with a compacted topic `topic` whose every
/// produce starts a segment (segment.ms 1) and whose tombstones go at once.
async fn compacting_server(dir: &std::path::Path, topic: &str) -> (TestServer, Client) {
    let options = ServeOptions {
        retention_check_interval: Duration::from_millis(50),
        upkeep_interval: Duration::from_millis(50),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_options(dir, Limits::default(), options).await;
    let client = server.client().await;
    let topic_config = config(&[
        ("cleanup.policy", "compact"),
        ("segment.ms", "1"),
        ("delete.retention.ms", "0"),
    ]);
    client
        .admin()
        .create_topic(topic, 1, topic_config)
        .await
        .unwrap();
    (server, client)
}

#[tokio::test]
async fn the_newest_value_of_each_key_stays_and_readers_skip_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = compacting_server(dir.path(), "c").await;
    let keyless = pb::ProduceRequest {
        topic: "c".into(),
        records: vec![pb::Record {
            value: Bytes::from_static(b"v"),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = client.log().produce(keyless).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("needs a key"), "{}", err.message());

    // Twenty rounds over ten keys, each round its own segment; then a tombstone for k3.
    let mut written = Vec::new();
    for round in 0..20 {
        let records: Vec<(String, String)> = (0..10)
            .map(|k| (format!("k{k}"), format!("k{k}-r{round}")))
            .collect();
        let base = produce(&client, "c", &records).await.unwrap();
        for (i, (k, v)) in records.into_iter().enumerate() {
            written.push((base + i as u64, k, v));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let base = produce(&client, "c", &[("k3".into(), String::new())])
        .await
        .unwrap();
    written.push((base, "k3".into(), String::new()));
    // One more segment, so the tombstone's is sealed and before the checkpoint's.
    tokio::time::sleep(Duration::from_millis(2)).await;
    produce(&client, "c", &[("k9".into(), "k9-last".into())])
        .await
        .unwrap();
    written.push((base + 1, "k9".into(), "k9-last".into()));
    let mut expected = newest_by_key(&written);
    expected.remove("k3"); // its tombstone goes too: delete.retention.ms is 0

    let deadline = Instant::now() + LIMIT;
    let compacted = loop {
        let all = consume_all(&client, "c").await;
        if newest_by_key(&all) == expected && all.len() == expected.len() {
            break all;
        }
        assert!(Instant::now() < deadline, "not compacted: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        compacted.windows(2).all(|w| w[0].0 < w[1].0),
        "{compacted:?}"
    );
    let start = client.admin().describe_topic("c").await.unwrap().partitions[0];
    assert_eq!(start.log_start_offset, 0, "compaction keeps the log start");
    // A fetch from inside a gap answers from the next record kept.
    let fetched = client
        .log()
        .fetch(pb::FetchRequest {
            topic: "c".into(),
            partition: 0,
            offset: 5,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = fetched.records.iter().next().unwrap().unwrap();
    assert_eq!(first.offset, compacted[0].0);
    server.stop().await.unwrap();

    // The same after a restart.
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    assert_eq!(consume_all(&client, "c").await, compacted);
    server.stop().await.unwrap();
}

#[test]
fn sigkill_in_the_middle_of_compactions_leaves_old_or_new_segments_never_a_mix() {
    let cycles: usize = std::env::var("STROM_COMPACTION_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let args = ["--retention-check-interval-ms", "20"];
    // The newest value each key was acknowledged with, as (round): values are
    // "<key>-r<round>-<padding>", rounds increase.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut round = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles {
        let server = Serve::start_with_args(dir.path(), &args);
        let client = runtime.block_on(Client::connect(&server.addr)).unwrap();
        if cycle == 0 {
            let topic_config = config(&[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "1048576"),
                ("segment.ms", "50"),
            ]);
            runtime
                .block_on(client.admin().create_topic("k", 1, topic_config))
                .unwrap();
        }
        // Produce new versions of 2,000 keys while compaction passes run, and kill the
        // server at a random moment.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(300 + rng % 900);
        let started = Instant::now();
        while started.elapsed() < kill_after {
            round += 1;
            let records: Vec<(String, String)> = (0..200)
                .map(|i| {
                    let k = format!("key{}", (round * 200 + i) % 2000);
                    let v = format!("{k}-r{round}-{}", "x".repeat(200));
                    (k, v)
                })
                .collect();
            match runtime.block_on(produce(&client, "k", &records)) {
                Ok(_) => {
                    for (k, _) in records {
                        acked.insert(k, round);
                    }
                }
                Err(status) => panic!("cycle {cycle}: produce failed before the kill: {status:?}"),
            }
        }
        drop(client);
        let mut server = server;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        // The partition as the crash left it, opened as the next start opens it: an
        // unfinished swap is completed or dropped, and every key's acknowledged value (or
        // a newer one) is there, each once, in offset order.
        let partition = partition_dir(dir.path());
        let (log, _) = Log::open(&partition, TopicConfig::default().log_config()).unwrap();
        let leftovers: Vec<String> = walk(&partition)
            .into_iter()
            .filter(|p| {
                p.contains("cleaning")
                    || p.ends_with("compaction-manifest")
                    || p.ends_with(".deleted")
            })
            .collect();
        assert!(leftovers.is_empty(), "cycle {cycle}: {leftovers:?}");
        let all = read_log(&log);
        check(&all, &acked, cycle);
        log.close().unwrap();
    }
    // The last start keeps the default cleaner interval (5 minutes): nothing changes
    // the partition while the readers below compare what they read.
    let server = Serve::start(dir.path());
    let client = runtime.block_on(Client::connect(&server.addr)).unwrap();
    let all = runtime.block_on(consume_all(&client, "k"));
    check(&all, &acked, cycles);
    assert!(
        all.len() < round as usize * 200,
        "some compaction happened: {} of {}",
        all.len(),
        round * 200
    );
    // Subscribe and the CLI read the compacted partition as the Rust consumer does.
    let offsets: Vec<u64> = all.iter().map(|r| r.0).collect();
    let request = pb::SubscribeRequest {
        topic: "k".into(),
        partition: 0,
        start: Some(pb::subscribe_request::Start::Earliest(true)),
        max_bytes: 0,
    };
    let subscribed = runtime.block_on(async {
        let mut stream = client.log().subscribe(request).await.unwrap().into_inner();
        let mut got = Vec::new();
        while got.len() < offsets.len() {
            let message = tokio::time::timeout(LIMIT, stream.message()).await.unwrap();
            for record in message.unwrap().unwrap().records.iter() {
                got.push(record.unwrap().offset);
            }
        }
        got
    });
    assert_eq!(subscribed[..offsets.len()], offsets[..]);
    let printed = server.ok(
        &[
            "consume", "-t", "k", "--from", "earliest", "--until", "latest", "--format", "%o\n",
        ],
        b"",
    );
    let printed: Vec<u64> = String::from_utf8(printed)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(printed[..offsets.len()], offsets[..]);
}

fn partition_dir(root: &std::path::Path) -> std::path::PathBuf {
    let topic = std::fs::read_dir(root.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("k."))
        .unwrap();
    topic.join("0")
}

/// Every record of a log, read directly: (offset, key, value).
fn read_log(log: &Log) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.next_offset() {
        let read = log.read(at, 1 << 20).unwrap();
        assert!(read.next_offset > at, "a read moves forward (at {at})");
        for chunk in &read.chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let header = strom::log::BatchHeader::parse(rest);
                let (batch, after) = rest.split_at(header.length as usize);
                for r in records(batch).unwrap() {
                    if r.offset >= at {
                        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                        out.push((r.offset, key, String::from_utf8(r.value.to_vec()).unwrap()));
                    }
                }
                rest = after;
            }
        }
        at = read.next_offset;
    }
    out
}

fn check(all: &[(u64, String, String)], acked: &BTreeMap<String, u64>, cycle: usize) {
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "cycle {cycle}: offsets out of order"
    );
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for (offset, key, value) in all {
        let mut parts = value.splitn(3, '-');
        let (k, r) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            k, key,
            "cycle {cycle}: offset {offset} holds another key's value"
        );
        let r: u64 = r.trim_start_matches('r').parse().unwrap();
        let seen = newest.entry(key).or_insert(0);
        assert!(
            r > *seen || *seen == 0,
            "cycle {cycle}: key {key} goes back in time at {offset}"
        );
        *seen = r;
    }
    for (key, &round) in acked {
        let have = newest.get(key.as_str()).copied().unwrap_or(0);
        assert!(
            have >= round,
            "cycle {cycle}: key {key} acknowledged at round {round}, found {have}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// Found in review: when compaction removed everything from a consumer's position to the
/// end of the log, Fetch answered with the same offset again, and consumers (and
/// `strom consume`) waited there forever.
#[tokio::test]
async fn a_gap_that_reaches_the_end_of_the_log_does_not_stall_a_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = compacting_server(dir.path(), "g").await;
    produce(&client, "g", &[("a".into(), "1".into())])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    produce(&client, "g", &[("b".into(), String::new())])
        .await
        .unwrap(); // tombstone
                   // Wait for the tombstone to go: offset 1 is then a gap up to the high watermark, 2.
    let deadline = Instant::now() + LIMIT;
    while consume_all(&client, "g").await.len() != 1 {
        assert!(Instant::now() < deadline, "the tombstone was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut consumer = Consumer::new(&client, "g", 0, Start::Offset(1))
        .await
        .unwrap();
    let records = consumer.poll(Duration::from_millis(10)).await.unwrap();
    assert!(records.is_empty());
    assert_eq!((consumer.position(), consumer.high_watermark()), (2, 2));
    // A group member too (its fetcher dropped the empty answer's next offset, so its
    // commits stopped at 1, lag 1, until a new record came).
    let config = GroupConfig {
        auto_commit: None,
        ..GroupConfig::new("gg", &["g"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    let committed = |client: Client| async move {
        let request = pb::FetchOffsetsRequest {
            group: "gg".into(),
            topics: vec![],
            ..Default::default()
        };
        let response = client.groups().fetch_offsets(request).await.unwrap();
        response.into_inner().offsets.first().map(|o| o.offset)
    };
    let deadline = Instant::now() + LIMIT;
    while committed(client.clone()).await != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the member's commit never passed the gap"
        );
        let _ = member.poll(Duration::from_millis(100)).await.unwrap();
        member.commit().await.unwrap();
    }
    member.close().await.unwrap();
    server.stop().await.unwrap();
}

/// Hostile-client finding: a pass caches when the next tombstone is due, reckoned with
/// delete.retention.ms as it was. Lowering it on a live topic did nothing until that
/// time (a day by default) or a restart.
#[tokio::test]
async fn a_lowered_delete_retention_applies_at_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = compacting_server(dir.path(), "d").await;
    let mut admin = client.admin();
    let day = config(&[("delete.retention.ms", "86400000")]);
    admin.alter_topic_config("d", day).await.unwrap();
    produce(&client, "d", &[("a".into(), "1".into())])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    produce(&client, "d", &[("a".into(), String::new())])
        .await
        .unwrap(); // tombstone
    tokio::time::sleep(Duration::from_millis(5)).await;
    produce(&client, "d", &[("b".into(), "1".into())])
        .await
        .unwrap();
    // A pass has run once a's value is gone; its tombstone stays a day.
    let deadline = Instant::now() + LIMIT;
    while consume_all(&client, "d")
        .await
        .iter()
        .any(|r| r.2 == "1" && r.1 == "a")
    {
        assert!(
            Instant::now() < deadline,
            "a's value was never compacted away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // more passes, nothing due
    assert!(consume_all(&client, "d").await.iter().any(|r| r.1 == "a"));
    let now = config(&[("delete.retention.ms", "1")]);
    admin.alter_topic_config("d", now).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consume_all(&client, "d").await.iter().any(|r| r.1 == "a") {
        assert!(
            Instant::now() < deadline,
            "the tombstone stayed after delete.retention.ms was lowered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}
