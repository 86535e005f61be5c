//! Retention against a real server: time and size limits, an idle topic, a restart after
//! deletion, fetches below the log start, DeleteRecords, consumers' reset policies, the
//! free-disk floor, server-wide defaults, and bad configuration.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::server::TestServer;
use strom::broker::{DiskFloor, Limits, TopicConfig};
use strom::client::{Client, Consumer, GroupConfig, GroupConsumer, OffsetReset, Start};
use strom::grpc::pb;
use strom::server::ServeOptions;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(30);

/// A cleaner every 100 ms, so tests wait for passes in tenths of a second.
fn quick() -> ServeOptions {
    ServeOptions {
        retention_check_interval: Duration::from_millis(100),
        upkeep_interval: Duration::from_millis(100),
        ..ServeOptions::default()
    }
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Produces one request of `n` records of `size` bytes, timestamped `ts`; returns the
/// first offset.
async fn produce(client: &Client, topic: &str, n: usize, size: usize, ts: i64) -> u64 {
    let records = (0..n)
        .map(|i| pb::Record {
            value: Bytes::from(vec![b'a' + (i % 26) as u8; size]),
            timestamp_ms: ts,
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records,
        ..Default::default()
    };
    let response = client.log().produce(request).await.unwrap().into_inner();
    response.base_offset
}

async fn fetch(
    client: &Client,
    topic: &str,
    offset: u64,
) -> Result<strom::grpc::records::FetchResponse, tonic::Status> {
    let request = pb::FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    client.log().fetch(request).await.map(|r| r.into_inner())
}

async fn partition(client: &Client, topic: &str) -> pb::PartitionDescription {
    let topic = client.admin().describe_topic(topic).await.unwrap();
    topic.partitions[0]
}

/// Waits until partition 0 of `topic` satisfies `done`.
async fn wait_for(
    client: &Client,
    topic: &str,
    done: impl Fn(&pb::PartitionDescription) -> bool,
) -> pb::PartitionDescription {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let p = partition(client, topic).await;
        if done(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> i64 {
    strom::broker::now_ms()
}

#[tokio::test]
async fn old_segments_expire_an_idle_topic_empties_and_a_restart_keeps_them_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), quick()).await;
    let client = server.client().await;
    // segment.ms of 1 ms: every produce after the first starts a segment of its own.
    let topic_config = config(&[("retention.ms", "60000"), ("segment.ms", "1")]);
    client
        .admin()
        .create_topic("t", 1, topic_config)
        .await
        .unwrap();
    let old = now_ms() - 600_000;
    produce(&client, "t", 3, 100, old).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let kept = produce(&client, "t", 3, 100, 0).await;
    let described = wait_for(&client, "t", |p| p.log_start_offset == kept).await;
    assert_eq!(kept, 3);
    let oldest = described.oldest_timestamp_ms.expect("records remain");
    assert!(
        (now_ms() - oldest).abs() < 30_000,
        "the kept record's time: {oldest}"
    );
    let due = described
        .next_deletion_ms
        .expect("due once retention.ms has passed");
    assert!((due - (oldest + 60_000)).abs() <= 1, "{due} vs {oldest}");
    let err = fetch(&client, "t", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("[3, 6)"),
        "says the range: {}",
        err.message()
    );
    assert_eq!(fetch(&client, "t", 3).await.unwrap().next_offset, 6);

    // An idle topic: one record, no more produces. Its active segment is sealed once its
    // records have all expired, and then deleted.
    client
        .admin()
        .create_topic("idle", 1, config(&[("retention.ms", "300")]))
        .await
        .unwrap();
    produce(&client, "idle", 1, 100, 0).await;
    let emptied = wait_for(&client, "idle", |p| p.log_start_offset == 1).await;
    assert_eq!((emptied.high_watermark, emptied.size_bytes), (1, 0));
    assert_eq!(emptied.oldest_timestamp_ms, None);

    drop(client);
    server.stop().await.unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let p = partition(&client, "t").await;
    assert_eq!((p.log_start_offset, p.high_watermark), (3, 6));
    assert_eq!(
        fetch(&client, "t", 0).await.unwrap_err().code(),
        Code::OutOfRange
    );
    assert_eq!(partition(&client, "idle").await.log_start_offset, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn size_retention_deletes_the_oldest_segments_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), quick()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic(
            "s",
            1,
            config(&[("segment.ms", "1"), ("retention.ms", "-1")]),
        )
        .await
        .unwrap();
    for _ in 0..8 {
        produce(&client, "s", 10, 1000, 0).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let full = partition(&client, "s").await;
    assert!(full.segment_count >= 8, "{full:?}");
    // Eight batches of the same size, each in a segment of its own (a ninth, empty
    // segment may be active too, rolled by time: it holds no bytes).
    let per_segment = full.size_bytes / 8;
    // Room for three of the ~10 KB segments.
    let limit = 3 * per_segment + 100;
    client
        .admin()
        .alter_topic_config("s", config(&[("retention.bytes", &limit.to_string())]))
        .await
        .unwrap();
    // The excess may go in more than one pass: wait for the end state, which must come
    // within the limit, not for the first deletion. (This test once divided the size by
    // the segment count, which under load counted an empty active segment: the bound
    // came out 1 KB short of the four segments retention rightly keeps.)
    let trimmed = wait_for(&client, "s", |p| {
        p.log_start_offset > 0 && p.size_bytes < limit + per_segment + 200
    })
    .await;
    assert!(trimmed.size_bytes >= limit, "{trimmed:?} limit {limit}");
    assert_eq!(trimmed.high_watermark, 80);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn delete_records_moves_the_start_and_consumers_reset_as_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("d", 1).await;
    produce(&client, "d", 10, 10, 0).await;
    let mut admin = client.admin();
    let mut earliest = Consumer::new(&client, "d", 0, Start::Offset(0))
        .await
        .unwrap();
    let mut failing = Consumer::new(&client, "d", 0, Start::Offset(0))
        .await
        .unwrap();
    failing.on_out_of_range = OffsetReset::Error;
    let mut latest = Consumer::new(&client, "d", 0, Start::Offset(0))
        .await
        .unwrap();
    latest.on_out_of_range = OffsetReset::Latest;

    assert_eq!(admin.delete_records("d", 0, Some(4)).await.unwrap(), 4);
    assert_eq!(
        admin.delete_records("d", 0, Some(2)).await.unwrap(),
        4,
        "never backwards"
    );
    let err = admin.delete_records("d", 0, Some(11)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let err = admin.delete_records("nope", 0, Some(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let request = pb::DeleteRecordsRequest {
        topic: "d".into(),
        partition: 0,
        before_offset: -2,
    };
    let mut raw = pb::admin_client::AdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let err = raw.delete_records(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let poll = Duration::from_millis(100);
    assert!(
        earliest.poll(poll).await.unwrap().is_empty(),
        "the reset itself"
    );
    // It knows the end too: `strom consume`, seeing an empty answer with the position
    // at the end, took a first poll that reset for the end of the log and printed
    // nothing.
    assert_eq!((earliest.position(), earliest.high_watermark()), (4, 10));
    let records = earliest.poll(poll).await.unwrap();
    assert_eq!(records.first().map(|r| r.offset), Some(4));
    assert_eq!(
        failing.poll(poll).await.unwrap_err().code(),
        Code::OutOfRange
    );
    latest.poll(poll).await.unwrap();
    assert_eq!(latest.position(), 10);

    // A group whose committed offset was deleted goes on from the new start.
    let mut groups = client.groups();
    let commit = pb::CommitOffsetsRequest {
        group: "g".into(),
        offsets: vec![pb::OffsetCommit {
            topic: "d".into(),
            partition: 0,
            offset: 5,
            ..Default::default()
        }],
        ..Default::default()
    };
    groups.commit_offsets(commit).await.unwrap();
    assert_eq!(admin.delete_records("d", 0, Some(7)).await.unwrap(), 7);
    // A commit below the new start (a member that retention overtook) is stored.
    let behind = pb::CommitOffsetsRequest {
        group: "behind".into(),
        offsets: vec![pb::OffsetCommit {
            topic: "d".into(),
            partition: 0,
            offset: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    groups.commit_offsets(behind).await.unwrap();
    let mut member = GroupConsumer::join(&client, GroupConfig::new("g", &["d"]))
        .await
        .unwrap();
    let batch = tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(batch) = member.poll(Duration::from_millis(200)).await.unwrap() {
                return batch;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(batch.records.first().map(|r| r.offset), Some(7));
    member.close().await.unwrap();

    // Everything, up to the high watermark; it stays so after a restart.
    assert_eq!(admin.delete_records("d", 0, None).await.unwrap(), 10);
    produce(&client, "d", 1, 10, 0).await;
    drop((client, admin, groups, earliest, failing, latest, raw));
    server.stop().await.unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let p = partition(&client, "d").await;
    assert_eq!((p.log_start_offset, p.high_watermark), (10, 11));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn produce_stops_below_the_disk_floor_and_resumes_when_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let free = strom::broker::disk::space_of(dir.path()).unwrap().free;
    // A floor 256 MiB under the free space now; a 512 MiB file takes the disk below it.
    let limits = Limits {
        min_free_disk: DiskFloor::bytes(free - (256 << 20)),
        ..Limits::default()
    };
    let server = TestServer::start_with_options(dir.path(), limits, quick()).await;
    let client = server.client_with_topic("f", 1).await;
    produce(&client, "f", 1, 10, 0).await;
    let filler_path = dir.path().join("filler");
    let filler = std::fs::File::create(&filler_path).unwrap();
    rustix::fs::fallocate(&filler, rustix::fs::FallocateFlags::empty(), 0, 512 << 20).unwrap();
    let request = || pb::ProduceRequest {
        topic: "f".into(),
        partition: Some(0),
        records: vec![pb::Record {
            value: Bytes::from_static(b"x"),
            ..Default::default()
        }],
        ..Default::default()
    };
    let refused = tokio::time::timeout(LIMIT, async {
        loop {
            match client.log().produce(request()).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("refused once the disk is below the floor");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("min_free_disk"),
        "{}",
        refused.message()
    );
    // Reads, commits and deletes still work.
    assert!(fetch(&client, "f", 0).await.unwrap().high_watermark > 0);
    let commit = pb::CommitOffsetsRequest {
        group: "g".into(),
        offsets: vec![pb::OffsetCommit {
            topic: "f".into(),
            partition: 0,
            offset: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    client.groups().commit_offsets(commit).await.unwrap();
    client
        .admin()
        .delete_records("f", 0, Some(1))
        .await
        .unwrap();
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    tokio::time::timeout(LIMIT, async {
        while client.log().produce(request()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("produce resumes by itself");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn server_defaults_apply_to_keys_a_topic_does_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut defaults = TopicConfig::default();
    defaults
        .apply(&config(&[("retention.ms", "1234000")]))
        .unwrap();
    let limits = |defaults: &TopicConfig| Limits {
        topic_defaults: defaults.clone(),
        ..Limits::default()
    };
    let server = TestServer::start_with(dir.path(), limits(&defaults)).await;
    let client = server.client().await;
    let mut admin = client.admin();
    let plain = admin
        .create_topic("plain", 1, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(plain.config["retention.ms"], "1234000");
    let own = admin
        .create_topic("own", 1, config(&[("retention.ms", "5000")]))
        .await
        .unwrap();
    assert_eq!(own.config["retention.ms"], "5000");
    // Bad values are refused by name, and nothing changes.
    for (k, v) in [
        ("retention.ms", "-5"),
        ("retention.bytes", "lots"),
        ("cleanup.policy", "shred"),
        ("retention.days", "3"),
    ] {
        let err = admin
            .alter_topic_config("own", config(&[("segment.ms", "999"), (k, v)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}");
        assert!(err.message().contains(k), "{k}: {}", err.message());
    }
    let unchanged = admin.describe_topic("own").await.unwrap();
    assert_eq!(unchanged.config, own.config);
    drop((client, admin));
    server.stop().await.unwrap();

    // A new default reaches the topic that did not set the key, not the one that did;
    // an empty value gives a key back to the default.
    defaults
        .apply(&config(&[("retention.ms", "777000")]))
        .unwrap();
    let server = TestServer::start_with(dir.path(), limits(&defaults)).await;
    let mut admin = server.client().await.admin();
    assert_eq!(
        admin.describe_topic("plain").await.unwrap().config["retention.ms"],
        "777000"
    );
    assert_eq!(
        admin.describe_topic("own").await.unwrap().config["retention.ms"],
        "5000"
    );
    let back = admin
        .alter_topic_config("own", config(&[("retention.ms", "")]))
        .await
        .unwrap();
    assert_eq!(back.config["retention.ms"], "777000");
    drop(admin);
    server.stop().await.unwrap();
}
