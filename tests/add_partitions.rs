//! Adding partitions to a topic: what AddPartitions takes and refuses, that the new
//! count survives a restart and a SIGKILL, that a crash's leftover directory is not
//! served, that alters and deletes racing an add leave `topic.json` whole, and that
//! consumers (group members and queues starting at the latest offset) read everything
//! produced to the new partitions. Kafka's CreatePartitions is in `kafka_admin.rs`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::server::TestServer;
use strom::broker::partitioner::partition_for_key;
use strom::broker::Limits;
use strom::client::{Client, GroupConfig, GroupConsumer, Start};
use strom::grpc::pb;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(60);

async fn produce(
    client: &Client,
    topic: &str,
    partition: Option<u32>,
    key: &str,
    value: &str,
) -> u32 {
    let request = pb::ProduceRequest {
        topic: topic.into(),
        partition,
        records: vec![pb::Record {
            key: Some(Bytes::from(key.to_string())),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .log()
        .produce(request)
        .await
        .unwrap()
        .into_inner()
        .partition
}

/// Group "g" on topic "t", starting at the latest offset.
fn at_latest() -> GroupConfig {
    let mut config = GroupConfig::new("g", &["t"]);
    config.session_timeout = Duration::from_secs(6);
    config.start = Start::Latest;
    config
}

/// Polls `members` until they have read every value of `expected` (none twice, none
/// else): what they read.
async fn read_all(members: &mut [GroupConsumer], expected: &BTreeSet<String>) -> BTreeSet<String> {
    let mut read = BTreeSet::new();
    let began = Instant::now();
    while read.len() < expected.len() {
        assert!(
            began.elapsed() < LIMIT,
            "read {read:?}; missing {:?}",
            expected.difference(&read).collect::<Vec<_>>()
        );
        for m in members.iter_mut() {
            if let Some(batch) = m.poll(Duration::from_millis(20)).await.unwrap() {
                for record in batch.records {
                    let value = String::from_utf8(record.value.to_vec()).unwrap();
                    assert!(read.insert(value.clone()), "{value} read twice");
                }
            }
        }
    }
    read
}

fn created(topic: &pb::TopicDescription) -> Vec<i64> {
    topic.partitions.iter().map(|p| p.created_ms).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_added_kept_across_a_restart_and_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_partitions: 8,
        ..Limits::default()
    };
    let server = TestServer::start_with(dir.path(), limits.clone()).await;
    let client = server.client_with_topic("t", 2).await;
    let mut admin = client.admin();

    let checked = admin.add_partitions("t", 4, true).await.unwrap();
    assert_eq!(checked.partitions.len(), 2, "validate_only changes nothing");
    let before = admin.describe_topic("t").await.unwrap();
    assert_eq!(before.partitions.len(), 2);

    let grown = admin.add_partitions("t", 4, false).await.unwrap();
    assert_eq!(grown.partitions.len(), 4);
    let times = created(&grown);
    assert!(times[0] > 0 && times[0] == times[1], "{times:?}");
    assert!(times[2] >= times[0] && times[2] == times[3], "{times:?}");

    // The same count again is done already (a retry after a lost answer); fewer never.
    let again = admin.add_partitions("t", 4, false).await.unwrap();
    assert_eq!(created(&again), times);
    let fewer = admin.add_partitions("t", 3, false).await.unwrap_err();
    assert_eq!(fewer.code(), Code::FailedPrecondition, "{fewer:?}");
    assert!(fewer.message().contains("never removed"), "{fewer:?}");
    let too_many = admin.add_partitions("t", 9, false).await.unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument, "{too_many:?}");
    assert!(too_many.message().contains("at most 8"), "{too_many:?}");
    let unknown = admin.add_partitions("nope", 4, false).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    // Two adds in the same millisecond: each run of partitions is made later than the
    // one before (readers tell added partitions by it).
    admin.add_partitions("t", 5, false).await.unwrap();
    let times = created(&admin.add_partitions("t", 6, false).await.unwrap());
    assert!(times[4] > times[3] && times[5] > times[4], "{times:?}");

    // The new partitions take records, by number and by key over all six.
    assert_eq!(produce(&client, "t", Some(3), "k", "in three").await, 3);
    for i in 0..20 {
        let key = format!("key-{i}");
        let p = produce(&client, "t", None, &key, "keyed").await;
        assert_eq!(p, partition_for_key(key.as_bytes(), 6), "{key}");
    }
    server.stop().await.unwrap();

    let server = TestServer::start_with(dir.path(), limits).await;
    let client = server.client().await;
    let reopened = client.admin().describe_topic("t").await.unwrap();
    assert_eq!(reopened.partitions.len(), 6);
    assert_eq!(created(&reopened), times);
    let three = common::fetch_all(&client, "t", 3).await;
    assert_eq!(three.first().map(|(_, v)| v.as_str()), Some("in three"));
    server.stop().await.unwrap();
}

/// A partition's directory that an add left behind when a crash came before
/// `topic.json` counted it is not served, and the next add makes it afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_a_crashed_add_left_is_not_served_and_is_made_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    produce(&client, "t", Some(0), "k", "zero").await;
    server.stop().await.unwrap();
    // What a crash leaves looks like a partition: here, partition 0's own files.
    let topic = common::topic_dir(dir.path(), "t");
    let leftover = topic.join("1");
    std::fs::create_dir(&leftover).unwrap();
    for file in std::fs::read_dir(topic.join("0")).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, leftover.join(file.file_name().unwrap())).unwrap();
    }

    // And one as an interrupted add leaves it, empty: gone at the next start.
    let empty = topic.join("5");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("00000000000000000000.log"), b"").unwrap();

    let server = TestServer::start(dir.path()).await;
    assert!(!empty.exists(), "an empty leftover is removed at start");
    assert!(
        leftover.exists(),
        "one holding records is left for the operator"
    );
    let client = server.client().await;
    let mut admin = client.admin();
    assert_eq!(admin.describe_topic("t").await.unwrap().partitions.len(), 1);
    let grown = admin.add_partitions("t", 2, false).await.unwrap();
    assert_eq!(grown.partitions[1].high_watermark, 0, "{grown:?}");
    assert!(common::fetch_all(&client, "t", 1).await.is_empty());
    server.stop().await.unwrap();
}

/// Added with the CLI, written to, then SIGKILLed: the count and the records
/// acknowledged in the new partition are there after the restart.
#[test]
fn added_partitions_and_their_records_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    serve.ok(&["topic", "create", "t", "-p", "1"], b"");
    let out = serve.ok(&["topic", "alter", "t", "--partitions", "3"], b"");
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.lines()
            .filter(|l| l.trim_start().starts_with('2'))
            .count()
            == 1,
        "{out}"
    );
    serve.ok(&["produce", "-t", "t", "-p", "2"], b"a\nb\n");
    let refused = serve.run(&["topic", "alter", "t", "--partitions", "2"], b"");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("never removed"));
    drop(serve); // SIGKILL

    let serve = Serve::start(dir.path());
    let described = String::from_utf8(serve.ok(&["topic", "describe", "t"], b"")).unwrap();
    let rows: Vec<&str> = described
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 3, "{described}");
    // When each run of partitions was made.
    let made: Vec<&str> = described.lines().filter(|l| l.contains(" made ")).collect();
    assert_eq!(made.len(), 2, "{described}");
    assert!(
        made[0].trim_start().starts_with("partition 0 made 20"),
        "{described}"
    );
    assert!(
        made[1]
            .trim_start()
            .starts_with("partitions 1 to 2 made 20"),
        "{described}"
    );
    let read = serve.ok(
        &[
            "consume", "-t", "t", "-p", "2", "--from", "earliest", "-n", "2",
        ],
        b"",
    );
    assert_eq!(read, b"a\nb\n");
}

/// Config alters racing adds: an alter writes `topic.json` with the count as it is
/// under the topic's lock, so the file never goes back to fewer partitions than an add
/// acknowledged (a crash then would lose the partitions and their records).
#[tokio::test(flavor = "multi_thread")]
async fn alters_racing_adds_never_write_an_older_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let topic_dir = common::topic_dir(dir.path(), "t");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let alters: Vec<_> = (0..2)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let config = [("retention.ms".to_string(), (60_000 + i).to_string())].into();
                    client
                        .admin()
                        .alter_topic_config("t", config)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for count in 2..=40 {
        client
            .admin()
            .add_partitions("t", count, false)
            .await
            .unwrap();
        for _ in 0..10 {
            let on_disk = strom::broker::topic::TopicMetadata::read(&topic_dir).unwrap();
            assert!(
                on_disk.partitions >= count,
                "{} on disk after an add to {count}",
                on_disk.partitions
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for alter in alters {
        alter.await.unwrap();
    }
    server.stop().await.unwrap();
    let server = TestServer::start(dir.path()).await;
    let described = server
        .client()
        .await
        .admin()
        .describe_topic("t")
        .await
        .unwrap();
    assert_eq!(described.partitions.len(), 40);
    server.stop().await.unwrap();
}

/// A delete racing adds: whichever wins, the topic is gone afterwards with nothing
/// of it left on disk, and an add that loses is answered NOT_FOUND (not an I/O error
/// from a directory renamed away under it).
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_racing_adds_leaves_nothing() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path()).await;
        let client = server.client_with_topic("t", 1).await;
        let adds = {
            let client = client.clone();
            tokio::spawn(async move {
                for count in 2..=30 {
                    if let Err(status) = client.admin().add_partitions("t", count, false).await {
                        assert_eq!(status.code(), Code::NotFound, "{status:?}");
                        return;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        client.admin().delete_topic("t").await.unwrap();
        adds.await.unwrap();
        let topics = std::fs::read_dir(dir.path().join("topics"))
            .unwrap()
            .count();
        assert_eq!(topics, 0, "round {round}: a topic directory is left");
        server.stop().await.unwrap();
    }
}

/// Two group members starting at the latest offset: partitions added while they run
/// are assigned between them, and every record produced to them from the moment they
/// exist is read, although it was produced before either member was assigned them.
#[tokio::test(flavor = "multi_thread")]
async fn group_members_read_every_record_of_partitions_added_while_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    produce(&client, "t", Some(0), "k", "before the group").await;
    let mut members = vec![
        GroupConsumer::join(&client, at_latest()).await.unwrap(),
        GroupConsumer::join(&client, at_latest()).await.unwrap(),
    ];
    // Settled: each member owns one of the two partitions.
    let began = Instant::now();
    loop {
        assert!(began.elapsed() < LIMIT, "the group never settled");
        for m in &mut members {
            assert!(m.poll(Duration::from_millis(20)).await.unwrap().is_none());
        }
        let owned: Vec<usize> = members.iter().map(|m| m.assignment().len()).collect();
        if owned == [1, 1] {
            break;
        }
    }
    client.admin().add_partitions("t", 4, false).await.unwrap();
    // At once: the members learn of the new partitions at their next heartbeats.
    let mut expected = BTreeSet::new();
    for p in 0..4 {
        for i in 0..5 {
            let value = format!("p{p}-{i}");
            produce(&client, "t", Some(p), "k", &value).await;
            expected.insert(value);
        }
    }
    let read = read_all(&mut members, &expected).await;
    assert_eq!(
        read, expected,
        "nothing from before the group, nothing twice"
    );
    let owned: usize = members.iter().map(|m| m.assignment().len()).sum();
    assert_eq!(owned, 4);
}

async fn share_fetch(client: &Client, max: u32, wait_ms: u32) -> Vec<String> {
    share_fetch_as(client, "q", max, wait_ms).await
}

async fn share_fetch_as(client: &Client, group: &str, max: u32, wait_ms: u32) -> Vec<String> {
    let response = client
        .queues()
        .share_fetch(pb::ShareFetchRequest {
            group: group.into(),
            member_id: "w".into(),
            topic: "t".into(),
            max_records: max,
            max_wait_ms: wait_ms,
        })
        .await
        .unwrap()
        .into_inner();
    response
        .records
        .into_iter()
        .map(|r| String::from_utf8(r.record.unwrap().value.to_vec()).unwrap())
        .collect()
}

/// A queue starting at the latest offset (the default) delivers the records of a
/// partition added after its first fetch, from the partition's first record; and a
/// fetch waiting for records is woken by the add, not at the end of its wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_delivers_records_of_partitions_added_since_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    produce(&client, "t", Some(0), "k", "before the queue").await;
    assert!(share_fetch(&client, 10, 0).await.is_empty());

    client.admin().add_partitions("t", 2, false).await.unwrap();
    for i in 0..3 {
        produce(&client, "t", Some(1), "k", &format!("added-{i}")).await;
    }
    let mut got = share_fetch(&client, 10, 0).await;
    got.sort();
    assert_eq!(got, ["added-0", "added-1", "added-2"]);

    // Waiting: the add and a record in the new partition end the wait.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            (share_fetch(&client, 10, 20_000).await, began.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.admin().add_partitions("t", 3, false).await.unwrap();
    produce(&client, "t", Some(2), "k", "woke").await;
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, ["woke"]);
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    server.stop().await.unwrap();
}

/// Queues starting at the latest offset on a topic of several partitions with a
/// history: the first fetch starts every partition at its end, whichever partition the
/// fetch visits first (it goes round them from a different one each time), and only a
/// partition added afterwards is read from its first record.
#[tokio::test(flavor = "multi_thread")]
async fn queues_at_latest_skip_the_history_of_every_partition_they_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 4).await;
    for p in 0..4 {
        for i in 0..3 {
            produce(&client, "t", Some(p), "k", &format!("old-{p}-{i}")).await;
        }
    }
    let groups: Vec<String> = (0..8).map(|g| format!("q{g}")).collect();
    for group in &groups {
        let first = share_fetch_as(&client, group, 100, 0).await;
        assert!(first.is_empty(), "{group} replayed {first:?}");
    }
    client.admin().add_partitions("t", 6, false).await.unwrap();
    let mut expected = Vec::new();
    for p in 0..6 {
        let value = format!("new-{p}");
        produce(&client, "t", Some(p), "k", &value).await;
        expected.push(value);
    }
    for group in &groups {
        let mut got = share_fetch_as(&client, group, 100, 0).await;
        got.sort();
        assert_eq!(got, expected, "{group}");
    }
    server.stop().await.unwrap();
}

/// A member that joins after partitions were added (a consumer restarted or scaled
/// out) reads them from their first record when the group had been reading the topic
/// before: the records produced to them before the group assigned them are not
/// skipped, although the member itself joined after they were made.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_after_an_add_reads_the_new_partitions_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    produce(&client, "t", Some(0), "k", "before the group").await;
    let mut first = GroupConsumer::join(&client, at_latest()).await.unwrap();
    let began = Instant::now();
    while first.assignment().len() < 2 {
        assert!(began.elapsed() < LIMIT, "never assigned");
        assert!(first
            .poll(Duration::from_millis(20))
            .await
            .unwrap()
            .is_none());
    }
    produce(&client, "t", Some(0), "k", "read by the first").await;
    let mut read = Vec::new();
    while read.is_empty() {
        assert!(began.elapsed() < LIMIT, "never read");
        if let Some(batch) = first.poll(Duration::from_millis(20)).await.unwrap() {
            read.extend(batch.records.into_iter().map(|r| r.value));
        }
    }
    first.close().await.unwrap(); // commits, leaves

    client.admin().add_partitions("t", 4, false).await.unwrap();
    let mut expected = BTreeSet::new();
    for p in 0..4 {
        let value = format!("after-{p}");
        produce(&client, "t", Some(p), "k", &value).await;
        expected.insert(value);
    }
    let second = GroupConsumer::join(&client, at_latest()).await.unwrap();
    let got = read_all(&mut [second], &expected).await;
    assert_eq!(got, expected);
    server.stop().await.unwrap();
}

/// Adds queued behind a long one wait without a thread each: the server's blocking
/// threads (which fsyncs run on) stay few.
#[tokio::test(flavor = "multi_thread")]
async fn adds_queued_behind_a_long_one_hold_no_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    // The process's threads, but for those a topic's create (another test's, in this
    // process) opens its partitions on for a moment (`strom-io`).
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() != "strom-io")
            .count()
    };
    let before = threads();
    let adds: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.admin().add_partitions("t", 1024, false).await })
        })
        .collect();
    let mut most = 0;
    while !adds.iter().all(|a| a.is_finished()) {
        most = most.max(threads());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for add in adds {
        assert_eq!(add.await.unwrap().unwrap().partitions.len(), 1024);
    }
    assert!(
        most < before + 40,
        "{before} threads before, {most} while the adds waited"
    );
    server.stop().await.unwrap();
}

/// Partitions added together, each with a record, fetched one record at a time: the
/// fetch that fills up on one of them still starts the other at its first record, so
/// the next fetch delivers it rather than taking it for an old partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_fetching_one_record_at_a_time_gets_every_added_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 4).await;
    assert!(share_fetch(&client, 1, 0).await.is_empty());
    client.admin().add_partitions("t", 7, false).await.unwrap();
    for p in 4..7 {
        produce(&client, "t", Some(p), "k", &format!("added-{p}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(share_fetch(&client, 1, 0).await);
    }
    got.sort();
    assert_eq!(got, ["added-4", "added-5", "added-6"]);
    server.stop().await.unwrap();
}
