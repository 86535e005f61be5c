//! Consumer groups against a real server: sharing partitions, rebalancing when members
//! come and go, fencing, durable offsets (restart and SIGKILL), resets, lag, topic
//! re-creation, and bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::cli::Serve;
use common::server::TestServer;
use strom::broker::Limits;
use strom::client::{Client, GroupConfig, GroupConsumer, OffsetReset};
use strom::grpc::pb::{self, reset_offsets_request::To};
use strom::server::ServeOptions;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(60);

async fn produce(
    client: &Client,
    topic: &str,
    partition: u32,
    values: &[String],
    timestamp_ms: i64,
) {
    let records = values
        .iter()
        .map(|v| pb::Record {
            value: Bytes::from(v.clone()),
            timestamp_ms,
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        records,
        ..Default::default()
    };
    client.log().produce(request).await.unwrap();
}

/// `per_partition` records in each of `partitions`, valued "p<partition>-<i>".
async fn fill(
    client: &Client,
    topic: &str,
    partitions: u32,
    per_partition: usize,
) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for p in 0..partitions {
        let values: Vec<String> = (0..per_partition).map(|i| format!("p{p}-{i}")).collect();
        produce(client, topic, p, &values, 0).await;
        all.extend(values);
    }
    all
}

fn config(group: &str, topic: &str) -> GroupConfig {
    let mut config = GroupConfig::new(group, &[topic]);
    config.session_timeout = Duration::from_millis(3_000);
    config.auto_commit = Some(Duration::from_millis(200));
    config
}

async fn heartbeat(
    client: &Client,
    group: &str,
    member_id: &str,
    epoch: i64,
    topics: &[&str],
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    heartbeat_for(client, group, member_id, epoch, topics, 10_000).await
}

async fn heartbeat_for(
    client: &Client,
    group: &str,
    member_id: &str,
    epoch: i64,
    topics: &[&str],
    session_timeout_ms: u32,
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    let request = pb::HeartbeatRequest {
        group: group.into(),
        member_id: member_id.into(),
        member_epoch: epoch,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        session_timeout_ms,
        ..Default::default()
    };
    client
        .groups()
        .heartbeat(request)
        .await
        .map(|r| r.into_inner())
}

async fn commit(
    client: &Client,
    group: &str,
    member: (&str, i64),
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<(), tonic::Status> {
    commit_with(client, group, member, topic, partition, offset, "m").await
}

async fn commit_with(
    client: &Client,
    group: &str,
    member: (&str, i64),
    topic: &str,
    partition: u32,
    offset: u64,
    metadata: &str,
) -> Result<(), tonic::Status> {
    let request = pb::CommitOffsetsRequest {
        group: group.into(),
        member_id: member.0.into(),
        member_epoch: member.1,
        offsets: vec![pb::OffsetCommit {
            topic: topic.into(),
            partition,
            offset,
            metadata: metadata.into(),
        }],
    };
    client.groups().commit_offsets(request).await.map(|_| ())
}

async fn fetch_offsets(client: &Client, group: &str) -> BTreeMap<(String, u32), u64> {
    let request = pb::FetchOffsetsRequest {
        group: group.into(),
        topics: vec![],
        ..Default::default()
    };
    let response = client
        .groups()
        .fetch_offsets(request)
        .await
        .unwrap()
        .into_inner();
    response
        .offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect()
}

/// Asserts a refusal's code and that its message says `says`.
fn assert_refused(status: &tonic::Status, code: Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{}", status.message());
}

/// The whole group, through the client's `describe_group` (every page).
async fn describe(client: &Client, group: &str) -> pb::DescribeGroupResponse {
    client.describe_group(group).await.unwrap()
}

/// Polls every consumer in turn until `want` records have come back (or the limit).
async fn consume_all(members: &mut [GroupConsumer], want: usize) -> Vec<Vec<String>> {
    let mut got = vec![Vec::new(); members.len()];
    let deadline = tokio::time::Instant::now() + LIMIT;
    while got.iter().map(Vec::len).sum::<usize>() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed {:?} of {want}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, member) in members.iter_mut().enumerate() {
            if let Some(batch) = member.poll(Duration::from_millis(20)).await.unwrap() {
                got[i].extend(
                    batch
                        .records
                        .iter()
                        .map(|r| String::from_utf8(r.value.to_vec()).unwrap()),
                );
            }
        }
    }
    got
}

/// Polls (consuming nothing more) until every member owns `counts` partitions.
async fn settle(members: &mut [GroupConsumer], counts: &[usize]) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let now: Vec<usize> = members.iter().map(|m| m.assignment().len()).collect();
        if now == counts {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "assignment sizes {now:?}, want {counts:?}"
        );
        for member in members.iter_mut() {
            assert!(
                member
                    .poll(Duration::from_millis(20))
                    .await
                    .unwrap()
                    .is_none(),
                "no records expected while settling"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_and_each_record_is_consumed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("orders", 6).await;
    let produced = fill(&client, "orders", 6, 50).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            GroupConsumer::join(&client, config("billing", "orders"))
                .await
                .unwrap(),
        );
    }
    let got = consume_all(&mut members, produced.len()).await;
    let all: Vec<&String> = got.iter().flatten().collect();
    let unique: BTreeSet<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(all.len(), unique.len(), "a record was consumed twice");
    assert_eq!(unique, produced);
    settle(&mut members, &[2, 2, 2]).await;
    let owned: BTreeSet<(String, u32)> = members.iter().flat_map(|m| m.assignment()).collect();
    assert_eq!(owned.len(), 6, "every partition has one owner");
    for member in members {
        member.close().await.unwrap();
    }
    let offsets = fetch_offsets(&client, "billing").await;
    assert_eq!(offsets.len(), 6);
    assert!(offsets.values().all(|&o| o == 50), "{offsets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_heartbeating_loses_its_partitions_and_nothing_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("events", 4).await;
    let first = fill(&client, "events", 4, 20).await;
    let mut members = vec![
        GroupConsumer::join(&client, config("g", "events"))
            .await
            .unwrap(),
        GroupConsumer::join(&client, config("g", "events"))
            .await
            .unwrap(),
    ];
    let got = consume_all(&mut members, first.len()).await;
    settle(&mut members, &[2, 2]).await;
    let seen: BTreeSet<String> = got.into_iter().flatten().collect();
    assert_eq!(seen, first);
    // The second member vanishes without leaving (a crash): its partitions move only
    // once its session (3 s) has ended.
    let gone = members.pop().unwrap();
    let gone_partitions = gone.assignment();
    drop(gone);
    let mut more = BTreeSet::new();
    for p in 0..4 {
        let values: Vec<String> = (0..10).map(|i| format!("late-p{p}-{i}")).collect();
        produce(&client, "events", p, &values, 0).await;
        more.extend(values);
    }
    let started = std::time::Instant::now();
    let got = consume_all(&mut members, more.len()).await;
    let seen: BTreeSet<String> = got.into_iter().flatten().collect();
    // Records of the vanished member's partitions it had returned but not committed
    // may come again (at least once); none may be missing.
    assert!(
        seen.is_superset(&more),
        "missing: {:?}",
        more.difference(&seen).collect::<Vec<_>>()
    );
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "took over {elapsed:?}");
    settle(&mut members, &[4]).await;
    let owned: BTreeSet<(String, u32)> = members[0].assignment().into_iter().collect();
    assert!(gone_partitions.iter().all(|p| owned.contains(p)));
}

#[tokio::test]
async fn fenced_and_stale_members_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    fill(&client, "t", 1, 5).await;
    // A 3 s session, renewed before each check that needs the member alive, so a slow
    // machine cannot end it early.
    let joined = heartbeat_for(&client, "g", "", 0, &["t"], 3_000)
        .await
        .unwrap();
    let me = (joined.member_id.as_str(), joined.member_epoch);
    assert_eq!(joined.assignment.len(), 1);
    let alive = || async {
        heartbeat_for(&client, "g", me.0, me.1, &["t"], 3_000)
            .await
            .unwrap();
    };
    commit(&client, "g", me, "t", 0, 3).await.unwrap();
    alive().await;
    // A stale epoch is refused.
    let stale = commit(&client, "g", (me.0, me.1 - 5), "t", 0, 4)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("stale"), "{}", stale.message());
    // Fenced first, out of range after: a client that drops the positions past the end
    // on OUT_OF_RANGE and sends the rest would get Ok for a commit of nothing.
    let stale = commit(&client, "g", (me.0, me.1 - 5), "t", 0, 99)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let stale = commit(&client, "g", (me.0, me.1 - 5), "deleted", 0, 1)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    // A commit of nothing is checked all the same.
    let nothing = pb::CommitOffsetsRequest {
        group: "g".into(),
        member_id: "bogus".into(),
        member_epoch: 1,
        offsets: vec![],
    };
    let bogus = client.groups().commit_offsets(nothing).await.unwrap_err();
    assert_eq!(bogus.code(), Code::FailedPrecondition);
    alive().await;
    let future = commit(&client, "g", (me.0, me.1 + 5), "t", 0, 4)
        .await
        .unwrap_err();
    assert!(
        future.message().contains("never given"),
        "{}",
        future.message()
    );
    // Without a member id while the group has a member: refused.
    alive().await;
    let anonymous = commit(&client, "g", ("", 0), "t", 0, 4).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::FailedPrecondition);
    // The session (3 s) ends: the member is removed, and its commit is refused.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let zombie = commit(&client, "g", me, "t", 0, 5).await.unwrap_err();
    assert_refused(&zombie, Code::FailedPrecondition, "join again");
    let again = heartbeat(&client, "g", me.0, me.1, &["t"])
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(fetch_offsets(&client, "g").await[&("t".to_string(), 0)], 3);
    // An empty group takes commits without a member (self-assigned consumers).
    commit(&client, "g", ("", 0), "t", 0, 5).await.unwrap();
    assert_eq!(fetch_offsets(&client, "g").await[&("t".to_string(), 0)], 5);
}

#[tokio::test]
async fn offsets_survive_a_clean_restart_and_many_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    fill(&client, "t", 2, 3000).await;
    // Enough commits (of 3 KB of metadata each) to pass the journal's snapshot
    // threshold (1 MiB) several times.
    let metadata = "x".repeat(3000);
    for i in 0..1_200u64 {
        commit_with(&client, "g", ("", 0), "t", (i % 2) as u32, i + 1, &metadata)
            .await
            .unwrap();
    }
    let before = fetch_offsets(&client, "g").await;
    assert_eq!(before[&("t".to_string(), 1)], 1200);
    server.stop().await.unwrap();
    let journal_bytes: u64 = walk(dir.path())
        .iter()
        .filter(|p| p.ends_with("offsets.journal"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        journal_bytes <= 2 << 20,
        "the journal is bounded: {journal_bytes} bytes"
    );
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    assert_eq!(fetch_offsets(&client, "g").await, before);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path());
    let client = Client::connect(&serve.addr).await.unwrap();
    client
        .admin()
        .create_topic("t", 4, BTreeMap::new())
        .await
        .unwrap();
    fill(&client, "t", 4, 1000).await;
    // Concurrent committers; every acknowledged commit is remembered.
    let mut tasks = Vec::new();
    let progress: Vec<_> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for p in 0..4u32 {
        let client = client.clone();
        let progress = Arc::clone(&progress[p as usize]);
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for offset in 1..=1000 {
                match commit(&client, "g", ("", 0), "t", p, offset).await {
                    Ok(()) => last = offset,
                    Err(_) => break,
                }
                progress.store(last, Ordering::Relaxed);
            }
            last
        }));
    }
    // Kill mid-stream, once every committer has had a commit acknowledged (however
    // slow the machine), not after a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while progress.iter().any(|p| p.load(Ordering::Relaxed) < 3) {
        assert!(
            std::time::Instant::now() < deadline,
            "no commits acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.child.kill().unwrap(); // SIGKILL
    let _ = serve.child.wait();
    let mut acked = HashMap::new();
    for (p, task) in tasks.into_iter().enumerate() {
        acked.insert(p as u32, task.await.unwrap());
    }
    assert!(
        acked.values().all(|&last| last > 0),
        "some commits were acknowledged: {acked:?}"
    );
    let serve = Serve::start(dir.path());
    let client = Client::connect(&serve.addr).await.unwrap();
    let offsets = fetch_offsets(&client, "g").await;
    for (p, last) in acked {
        let stored = offsets.get(&("t".to_string(), p)).copied().unwrap_or(0);
        assert!(
            stored >= last,
            "partition {p}: acknowledged {last}, stored {stored}"
        );
    }
}

async fn reset(
    client: &Client,
    group: &str,
    to: To,
    dry_run: bool,
) -> Result<pb::ResetOffsetsResponse, tonic::Status> {
    let request = pb::ResetOffsetsRequest {
        group: group.into(),
        topic: "t".into(),
        partitions: vec![],
        to: Some(to),
        dry_run,
    };
    client
        .groups()
        .reset_offsets(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn resets_replay_from_a_time_and_describe_shows_lag() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let now = strom::broker::now_ms();
    // 100 s apart, so the relative reset below means the same for 50 s of test time.
    for (i, ts) in [
        now - 500_000,
        now - 400_000,
        now - 300_000,
        now - 200_000,
        now - 100_000,
    ]
    .into_iter()
    .enumerate()
    {
        produce(&client, "t", 0, &[format!("r{i}")], ts).await;
    }
    commit(&client, "g", ("", 0), "t", 0, 5).await.unwrap();
    let plan = reset(&client, "g", To::TimestampMs(now - 350_000), true)
        .await
        .unwrap();
    assert_eq!((plan.offsets[0].previous, plan.offsets[0].offset), (5, 2));
    assert_eq!(
        fetch_offsets(&client, "g").await[&("t".to_string(), 0)],
        5,
        "a dry run changes nothing"
    );
    reset(&client, "g", To::TimestampMs(now - 350_000), false)
        .await
        .unwrap();
    assert_eq!(fetch_offsets(&client, "g").await[&("t".to_string(), 0)], 2);
    // A group member resumes from there: the first record at or after the time.
    let mut member = GroupConsumer::join(&client, config("g", "t"))
        .await
        .unwrap();
    let batch = loop {
        if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
            break batch;
        }
    };
    assert_eq!(batch.records[0].offset, 2);
    assert_eq!(&batch.records[0].value[..], b"r2");
    // Not while it has members.
    let busy = reset(&client, "g", To::Earliest(true), false)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition, "{busy:?}");
    member.close().await.unwrap();
    for (to, want) in [
        (To::DurationMs(250_000), 3),
        (To::ShiftBy(-10), 0),
        (To::ShiftBy(2), 2),
        (To::Latest(true), 5),
        (To::Offset(1), 1),
    ] {
        let plan = reset(&client, "g", to, false).await.unwrap();
        assert_eq!(plan.offsets[0].offset, want, "{to:?}");
    }
    let out_of_range = reset(&client, "g", To::Offset(9), false).await.unwrap_err();
    assert_eq!(out_of_range.code(), Code::OutOfRange);
    let described = describe(&client, "g").await;
    assert_eq!(described.state, "empty");
    let lag = &described.offsets[0];
    assert_eq!((lag.committed, lag.high_watermark, lag.lag), (1, 5, 4));
}

#[tokio::test]
async fn a_re_created_topic_starts_with_no_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    fill(&client, "t", 1, 3).await;
    commit(&client, "g", ("", 0), "t", 0, 3).await.unwrap();
    let mut admin = client.admin();
    admin.delete_topic("t").await.unwrap();
    admin.create_topic("t", 1, BTreeMap::new()).await.unwrap();
    assert!(fetch_offsets(&client, "g").await.is_empty());
    let described = describe(&client, "g").await;
    assert!(described.offsets.is_empty(), "{:?}", described.offsets);
}

#[tokio::test]
async fn patterns_follow_topics_as_they_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("logs.a", 1).await;
    let mut config = GroupConfig::new("g", &[]);
    config.topic_pattern = Some("logs\\..*".into());
    config.session_timeout = Duration::from_millis(3_000);
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    client
        .admin()
        .create_topic("logs.b", 2, BTreeMap::new())
        .await
        .unwrap();
    client
        .admin()
        .create_topic("metrics", 1, BTreeMap::new())
        .await
        .unwrap();
    settle(std::slice::from_mut(&mut member), &[3]).await;
    let topics: BTreeSet<String> = member.assignment().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["logs.a".to_string(), "logs.b".to_string()])
    );
    client.admin().delete_topic("logs.b").await.unwrap();
    settle(std::slice::from_mut(&mut member), &[1]).await;
}

#[tokio::test]
async fn a_restarted_static_member_takes_its_partitions_back_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 4).await;
    let static_config = || {
        let mut c = config("g", "t");
        c.instance_id = Some("worker-1".into());
        c
    };
    let mut members = vec![
        GroupConsumer::join(&client, static_config()).await.unwrap(),
        GroupConsumer::join(&client, config("g", "t"))
            .await
            .unwrap(),
    ];
    settle(&mut members, &[2, 2]).await;
    let before = describe(&client, "g").await.group_epoch;
    let first = members.remove(0);
    let partitions = first.assignment();
    first.close().await.unwrap();
    members.insert(
        0,
        GroupConsumer::join(&client, static_config()).await.unwrap(),
    );
    settle(&mut members, &[2, 2]).await;
    assert_eq!(members[0].assignment(), partitions);
    assert_eq!(
        describe(&client, "g").await.group_epoch,
        before,
        "no rebalance"
    );
}

#[tokio::test]
async fn idle_groups_expire_after_the_offset_retention() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        // 3 s, so the group is still there when listed just after its commit.
        groups: strom::groups::GroupsConfig {
            sweep_interval: Duration::from_millis(100),
            ..strom::groups::GroupsConfig::new(Duration::from_secs(3), Duration::from_secs(3))
        },
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("t", 1).await;
    fill(&client, "t", 1, 3).await;
    commit(&client, "g", ("", 0), "t", 0, 1).await.unwrap();
    let list = || async {
        client
            .groups()
            .list_groups(pb::ListGroupsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .groups
    };
    assert_eq!(list().await.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !list().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = client
        .groups()
        .describe_group(pb::DescribeGroupRequest {
            group: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(fetch_offsets(&client, "g").await.is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    fill(&client, "t", 1, 3).await;
    let mut groups = client.groups();
    let unknown = groups
        .describe_group(pb::DescribeGroupRequest {
            group: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&unknown, Code::NotFound, "does not exist");
    let beyond = commit(&client, "g", ("", 0), "t", 0, 4).await.unwrap_err();
    assert_refused(&beyond, Code::OutOfRange, "past the high watermark 3");
    // A reset below the log start says so (it said "past the high watermark").
    client
        .admin()
        .delete_records("t", 0, Some(2))
        .await
        .unwrap();
    let below = reset(&client, "g", To::Offset(1), true).await.unwrap_err();
    assert_refused(&below, Code::OutOfRange, "below the log start 2");
    let no_topic = commit(&client, "g", ("", 0), "nope", 0, 0)
        .await
        .unwrap_err();
    assert_eq!(no_topic.code(), Code::NotFound);
    let bad = |pattern: &str, timeout: u32, group: &str| pb::HeartbeatRequest {
        group: group.into(),
        topic_pattern: pattern.into(),
        session_timeout_ms: timeout,
        ..Default::default()
    };
    for (request, what) in [
        (bad("(unclosed", 0, "g"), "regular expression"),
        (bad("t", 5, "g"), "session_timeout_ms"),
        (bad("t", 0, "a/b"), "group name"),
        (bad("", 0, "g"), "exactly one"),
    ] {
        let err = groups.heartbeat(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(what), "{}", err.message());
    }
    // Two offsets, one bad: neither is stored.
    let request = pb::CommitOffsetsRequest {
        group: "g2".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![
            pb::OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                metadata: String::new(),
            },
            pb::OffsetCommit {
                topic: "t".into(),
                partition: 7,
                offset: 1,
                metadata: String::new(),
            },
        ],
    };
    assert_eq!(
        groups.commit_offsets(request).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(fetch_offsets(&client, "g2").await.is_empty());
    let delete = groups
        .delete_group(pb::DeleteGroupRequest {
            group: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::NotFound);
    // Deleting a group with a member is refused; without, it goes.
    let joined = heartbeat(&client, "busy", "", 0, &["t"]).await.unwrap();
    let refused = groups
        .delete_group(pb::DeleteGroupRequest {
            group: "busy".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    groups
        .leave_group(pb::LeaveGroupRequest {
            group: "busy".into(),
            member_id: joined.member_id,
        })
        .await
        .unwrap();
    groups
        .delete_group(pb::DeleteGroupRequest {
            group: "busy".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn after_a_restart_groups_expire_by_the_time_of_their_files() {
    let dir = tempfile::tempdir().unwrap();
    // "old" is made an hour old below; "recent" must outlive a slow restart.
    let options = || ServeOptions {
        groups: strom::groups::GroupsConfig {
            sweep_interval: Duration::from_millis(100),
            ..strom::groups::GroupsConfig::new(Duration::from_secs(3), Duration::from_secs(600))
        },
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options()).await;
    let client = server.client_with_topic("t", 1).await;
    fill(&client, "t", 1, 3).await;
    commit(&client, "old", ("", 0), "t", 0, 1).await.unwrap();
    commit(&client, "recent", ("", 0), "t", 0, 2).await.unwrap();
    server.stop().await.unwrap();
    // "old" was last active an hour ago, as far as its files say.
    let groups = dir.path().join("groups");
    for entry in std::fs::read_dir(&groups).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("old.") {
            let journal = std::fs::File::options()
                .write(true)
                .open(entry.path().join("offsets.journal"))
                .unwrap();
            journal
                .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
                .unwrap();
        }
    }
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options()).await;
    let client = server.client().await;
    let names = || async {
        let list = client
            .groups()
            .list_groups(pb::ListGroupsRequest::default())
            .await
            .unwrap()
            .into_inner();
        list.groups.into_iter().map(|g| g.group).collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while names().await.contains(&"old".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle group did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(names().await, ["recent"], "a recently active group stays");
    assert_eq!(
        fetch_offsets(&client, "recent").await[&("t".to_string(), 0)],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_bounded_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let mut groups = client.groups();
    let group_dirs = || {
        std::fs::read_dir(dir.path().join("groups"))
            .unwrap()
            .count()
    };
    // A refused heartbeat leaves no group and no directory.
    let ghost = heartbeat(&client, "ghost", "nope", 3, &["t"])
        .await
        .unwrap_err();
    assert_eq!(ghost.code(), Code::FailedPrecondition);
    let no_groups = || async {
        let listed = client
            .groups()
            .list_groups(pb::ListGroupsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.groups.is_empty(), "{:?}", listed.groups);
    };
    no_groups().await;
    // Nor does a refused commit (a topic that does not exist, an offset past the end):
    // checked under the group's lock, as the group is made.
    let missing = commit(&client, "ghost", ("", 0), "nope", 0, 1)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let past = commit(&client, "ghost", ("", 0), "t", 0, 99)
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");
    no_groups().await;
    assert_eq!(group_dirs(), 0);
    // A group that only heartbeats holds no files (no descriptor, no directory).
    heartbeat(&client, "members-only", "", 0, &["t"])
        .await
        .unwrap();
    assert_eq!(group_dirs(), 0);
    // Sizes a member may send.
    let join = |instance_id: String, topics: Vec<String>| pb::HeartbeatRequest {
        group: "g".into(),
        topics,
        instance_id,
        ..Default::default()
    };
    for (request, what) in [
        (join("i".repeat(256), vec!["t".into()]), "instance_id"),
        (
            join(String::new(), (0..1001).map(|i| format!("t{i}")).collect()),
            "topics named",
        ),
    ] {
        let err = groups.heartbeat(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(what), "{}", err.message());
    }
    let reset_false = pb::ResetOffsetsRequest {
        group: "g".into(),
        topic: "t".into(),
        partitions: vec![],
        to: Some(To::Earliest(false)),
        dry_run: true,
    };
    assert_eq!(
        groups.reset_offsets(reset_false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // At most 1,000 members in one group.
    let crowd = || pb::HeartbeatRequest {
        group: "crowd".into(),
        topics: vec!["t".into()],
        session_timeout_ms: 60_000,
        ..Default::default()
    };
    let mut joins = Vec::new();
    for _ in 0..1_000 {
        let mut groups = client.groups();
        joins.push(tokio::spawn(async move {
            groups.heartbeat(crowd()).await.map(|_| ())
        }));
    }
    for join in joins {
        join.await.unwrap().unwrap();
    }
    let full = groups.heartbeat(crowd()).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert_eq!(group_dirs(), 0);
}

/// A group at its member limit: a GroupConsumer that cannot join says so from `poll`
/// (it retried every 200 ms for ever, and `strom consume --group` exited 0 having
/// printed nothing, with no word of why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refused_a_place_in_a_full_group_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let mut full = false;
    for _ in 0..2_000 {
        match heartbeat_for(&client, "full", "", 0, &["t"], 60_000).await {
            Ok(_) => {}
            Err(err) => {
                assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
                full = true;
                break;
            }
        }
    }
    assert!(full, "the group took 2,000 members");
    let mut member = GroupConsumer::join(&client, GroupConfig::new("full", &["t"]))
        .await
        .unwrap();
    let polled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(err) = member.poll(Duration::from_millis(100)).await {
                return err;
            }
        }
    })
    .await
    .expect("the refusal reaches poll");
    assert_eq!(polled.code(), Code::ResourceExhausted, "{polled:?}");
    assert!(polled.message().contains("members"), "{}", polled.message());
}

/// A fetch error that `poll` reports leaves the partition with a fetcher: here its
/// committed offset was deleted and the member is told to fail rather than reset, so
/// every poll says so until it seeks (its fetcher had stopped, and later polls returned
/// nothing for good, the partition owned by nobody that read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_fetch_failed_is_still_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce(&client, "t", 0, &values, 0).await;
    commit(&client, "g", ("", 0), "t", 0, 0).await.unwrap();
    client
        .admin()
        .delete_records("t", 0, Some(5))
        .await
        .unwrap();
    let config = GroupConfig {
        on_out_of_range: OffsetReset::Error,
        auto_commit: None,
        ..GroupConfig::new("g", &["t"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    for _ in 0..2 {
        let polls = async {
            loop {
                if let Err(err) = member.poll(Duration::from_millis(100)).await {
                    return err;
                }
            }
        };
        let err = tokio::time::timeout(Duration::from_secs(10), polls)
            .await
            .expect("the error is reported again");
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    }
    assert!(member.seek("t", 0, 5));
    let batch = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                return batch;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(batch.records[0].offset, 5);
}

/// Polls `member` until it has returned `n` records, within 20 s.
async fn poll_records(member: &mut GroupConsumer, n: u64) {
    let polls = async {
        let mut got = 0;
        while got < n {
            if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                got += batch.records.len() as u64;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), polls)
        .await
        .expect("records polled in time");
}

/// A member the group removed (its session ended while the server could not hear it)
/// must not commit its old positions: another member read on and committed since, and
/// they would move its commit back (it committed them, under the id it joined again
/// with, and the group read 15 records twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_commits_nothing() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let (server, silent, behind) = common::proxy::behind_a_proxy(dir.path()).await;
    let direct = server.client().await;
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    produce(&direct, "a", 0, &values, 0).await;
    let config = || GroupConfig {
        auto_commit: None,
        session_timeout: Duration::from_secs(1),
        max_bytes: 1, // a record a poll
        ..GroupConfig::new("g", &["a"])
    };
    let mut first = GroupConsumer::join(&behind, config()).await.unwrap();
    poll_records(&mut first, 5).await;
    first.commit().await.unwrap();
    // The server stops hearing from it: its session ends, and a second member takes
    // the partition, reads on and commits 20.
    silent.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut second = GroupConsumer::join(&direct, config()).await.unwrap();
    poll_records(&mut second, 15).await;
    second.commit().await.unwrap();
    second.close().await.unwrap();
    assert_eq!(fetch_offsets(&direct, "g").await[&("a".to_string(), 0)], 20);
    // It hears again, learns it was removed, joins again; its commit must not store
    // its old position, 5.
    silent.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = first.commit().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(fetch_offsets(&direct, "g").await[&("a".to_string(), 0)], 20);
}

/// `start: Offset(n)` starts partitions the group never committed at `n` (it meant
/// Earliest); an offset not in a partition is out of range and goes where
/// `on_out_of_range` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_start_at_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce(&client, "t", 0, &values, 0).await;
    let first_polled = |start, on_out_of_range, group: &'static str| {
        let client = client.clone();
        async move {
            let config = GroupConfig {
                start: strom::client::Start::Offset(start),
                on_out_of_range,
                auto_commit: None,
                ..GroupConfig::new(group, &["t"])
            };
            let mut member = GroupConsumer::join(&client, config).await.unwrap();
            let batch = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                        return batch;
                    }
                }
            })
            .await
            .expect("records polled in time");
            batch.records[0].offset
        }
    };
    assert_eq!(first_polled(7, OffsetReset::Earliest, "a").await, 7);
    assert_eq!(first_polled(50, OffsetReset::Earliest, "b").await, 0);
}

/// A poll dropped halfway (a `select!` with a shutdown signal, a timeout) loses nothing:
/// one dropped while it looked up where to go on after OUT_OF_RANGE left the partition
/// owned with no fetcher, and later polls never returned its records (a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_dropped_halfway_loses_no_partition() {
    use futures_util::FutureExt;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce(&client, "t", 0, &values, 0).await;
    let config = GroupConfig {
        auto_commit: None,
        ..GroupConfig::new("g", &["t"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    poll_records(&mut member, 10).await;
    // Sent back to records retention has removed meanwhile: its fetcher meets
    // OUT_OF_RANGE.
    client
        .admin()
        .delete_records("t", 0, Some(5))
        .await
        .unwrap();
    assert!(member.seek("t", 0, 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Polled once each: where one waits, it is dropped; one that ends has its batch.
    let mut first = None;
    for _ in 0..3 {
        if let Some(polled) = member.poll(Duration::from_secs(10)).now_or_never() {
            first = first.or(polled.unwrap());
        }
    }
    let batch = match first {
        Some(batch) => batch,
        None => tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                    return batch;
                }
            }
        })
        .await
        .expect("the partition is fetched again"),
    };
    assert_eq!(batch.records[0].offset, 5);
}

/// A start offset past one partition's end must not stop the group committing the
/// others: with `on_out_of_range: Error` the short partition's position stays out of
/// range until the member seeks, and a commit that sent it was refused whole
/// (OUT_OF_RANGE), so the long partition's progress was never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_offset_past_one_partitions_end_does_not_block_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let long: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let short: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
    produce(&client, "t", 0, &long, 0).await;
    produce(&client, "t", 1, &short, 0).await;
    let config = GroupConfig {
        start: strom::client::Start::Offset(5),
        on_out_of_range: OffsetReset::Error,
        auto_commit: None,
        ..GroupConfig::new("g", &["t"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    let batch = tokio::time::timeout(LIMIT, async {
        loop {
            match member.poll(Duration::from_millis(100)).await {
                Ok(Some(batch)) => return batch,
                Ok(None) => {}
                Err(status) if status.code() == Code::OutOfRange => {}
                Err(status) => panic!("{status:?}"),
            }
        }
    })
    .await
    .expect("records polled in time");
    let offsets: Vec<u64> = batch.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (5..10).collect::<Vec<u64>>());
    member
        .commit()
        .await
        .expect("the long partition's progress commits");
    let committed = fetch_offsets(&client, "g").await;
    assert_eq!(committed.get(&("t".to_string(), 0)), Some(&10));
    assert_eq!(committed.get(&("t".to_string(), 1)), None, "{committed:?}");
    // The short partition still says why it is not read.
    let err = tokio::time::timeout(LIMIT, async {
        loop {
            if let Err(status) = member.poll(Duration::from_millis(100)).await {
                return status;
            }
        }
    })
    .await
    .expect("the out-of-range partition reported in time");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
}

/// A seek past a partition's end, committed before the fetcher has reset it, leaves
/// that partition out of the commit and commits the others (review finding, every
/// policy). The server refuses a commit with an offset past a partition's end whole,
/// so one sought-past partition stopped the others' commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_past_the_end_does_not_block_the_other_partitions_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let records: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    produce(&client, "t", 0, &records, 0).await;
    produce(&client, "t", 1, &records, 0).await;
    let config = GroupConfig {
        auto_commit: None,
        ..GroupConfig::new("g", &["t"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    let mut read = BTreeMap::new();
    tokio::time::timeout(LIMIT, async {
        while read.len() < 2 {
            if let Some(batch) = member.poll(Duration::from_millis(100)).await.unwrap() {
                let last = batch.records.last().unwrap();
                read.insert(last.partition, last.offset);
            }
        }
    })
    .await
    .expect("both partitions polled in time");
    // No poll between the seek and the commit: the fetcher's answer is not taken in.
    assert!(member.seek("t", 1, 1000));
    member
        .commit()
        .await
        .expect("the other partition's progress commits");
    let committed = fetch_offsets(&client, "g").await;
    assert_eq!(committed.get(&("t".to_string(), 0)), Some(&4));
    assert_eq!(committed.get(&("t".to_string(), 1)), None, "{committed:?}");
}

/// A topic deleted while the member still owns its partitions (the heartbeat has not
/// told it yet) does not stop the other topics' positions from being committed: the
/// server refuses a commit with a deleted topic whole, and the progress was lost (and
/// read again by the next owner), also at a rebalance's commit of revoked partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_does_not_block_the_other_topics_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("a", 1).await;
    client
        .admin()
        .create_topic("b", 1, BTreeMap::new())
        .await
        .unwrap();
    let records: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    produce(&client, "a", 0, &records, 0).await;
    produce(&client, "b", 0, &records, 0).await;
    let config = GroupConfig {
        auto_commit: None,
        ..GroupConfig::new("g", &["a", "b"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    poll_records(&mut member, 8).await;
    // No poll after the deletion: the member still owns a's partition.
    client.admin().delete_topic("a").await.unwrap();
    member
        .commit()
        .await
        .expect("the other topic's progress commits");
    let committed = fetch_offsets(&client, "g").await;
    assert_eq!(
        committed.get(&("b".to_string(), 0)),
        Some(&4),
        "{committed:?}"
    );
}

/// A position past a partition's end that the log later grows to is committed: it is
/// a real position then (review finding). Under `Error` it stayed marked out of range
/// while the fetcher long-polled there, and no commit stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_log_grows_to_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let records: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    produce(&client, "t", 0, &records, 0).await;
    let config = GroupConfig {
        start: strom::client::Start::Offset(5),
        on_out_of_range: OffsetReset::Error,
        auto_commit: None,
        ..GroupConfig::new("g", &["t"])
    };
    let mut member = GroupConsumer::join(&client, config).await.unwrap();
    let err = tokio::time::timeout(LIMIT, async {
        loop {
            if let Err(status) = member.poll(Duration::from_millis(100)).await {
                return status;
            }
        }
    })
    .await
    .expect("the out-of-range start reported in time");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    produce(&client, "t", 0, &records[..2], 3).await;
    // Errors the fetcher queued before the log grew may still come.
    let _ = member.poll(Duration::from_millis(300)).await;
    member.commit().await.expect("commits");
    let committed = fetch_offsets(&client, "g").await;
    assert_eq!(
        committed.get(&("t".to_string(), 0)),
        Some(&5),
        "{committed:?}"
    );
}
