//! DescribeGroup and FetchOffsets a page at a time, and groups whose members subscribe
//! with long lists: a whole description could pass what a client accepts (1,000 members
//! naming 1,000 topics of 200 bytes made 203 MB), so could a group's offsets with 4 KiB
//! of metadata each, and each member kept its own copy of its list.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::cli::Serve;
use common::server::TestServer;
use prost::Message;
use strom::client::{every_page, Client, GroupConfig, GroupConsumer};
use strom::grpc::pb;
use tonic::Code;

/// 1,000 topic names of about 200 bytes, `t` among them; different for each `seed`.
fn long_list(seed: usize) -> Vec<String> {
    let mut names: Vec<String> = (1..1_000)
        .map(|i| format!("s{seed:03}-{i:04}-{}", "x".repeat(190)))
        .collect();
    names.push("t".into());
    names
}

async fn join(client: &Client, group: &str, topics: Vec<String>) -> Result<String, tonic::Status> {
    let request = pb::HeartbeatRequest {
        group: group.into(),
        topics,
        session_timeout_ms: 60_000,
        ..Default::default()
    };
    let answer = client.groups().heartbeat(request).await?.into_inner();
    Ok(answer.member_id)
}

/// Every page of the group's description, `page_size` entries at most (the client's
/// `every_page` fails if a token goes back).
async fn pages(client: &Client, group: &str, page_size: u32) -> Vec<pb::DescribeGroupResponse> {
    every_page(|page_token| {
        let mut groups = client.groups();
        let request = pb::DescribeGroupRequest {
            group: group.into(),
            page_size,
            page_token,
        };
        async move {
            let page = groups.describe_group(request).await?.into_inner();
            let next = page.next_page_token.clone();
            Ok((page, next))
        }
    })
    .await
    .unwrap()
}

/// Every page of FetchOffsets for `request`, whose `page_token` each page sets.
async fn offset_pages(
    client: &Client,
    request: pb::FetchOffsetsRequest,
) -> Vec<pb::FetchOffsetsResponse> {
    every_page(|page_token| {
        let mut groups = client.groups();
        let request = pb::FetchOffsetsRequest {
            page_token,
            ..request.clone()
        };
        async move {
            let page = groups.fetch_offsets(request).await?.into_inner();
            let next = page.next_page_token.clone();
            Ok((page, next))
        }
    })
    .await
    .unwrap()
}

fn entries(pages: &[pb::DescribeGroupResponse]) -> (Vec<String>, Vec<(String, u32)>) {
    let members = pages
        .iter()
        .flat_map(|p| &p.members)
        .map(|m| m.member_id.clone());
    let offsets = pages
        .iter()
        .flat_map(|p| &p.offsets)
        .map(|o| (o.topic.clone(), o.partition));
    (members.collect(), offsets.collect())
}

/// 25 members naming 1,000 long topic names each: about 5 MB described whole, past the
/// 4 MiB a client takes. Each page stays near 1 MiB, and the pages hold every member
/// and partition once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_too_large_for_one_answer_is_described_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 20).await;
    let mut joined = BTreeSet::new();
    for _ in 0..25 {
        joined.insert(join(&client, "g", long_list(0)).await.unwrap());
    }
    let pages = pages(&client, "g", 0).await;
    assert!(pages.len() >= 5, "{} pages", pages.len());
    for page in &pages {
        assert!(
            page.encoded_len() < 1_100_000,
            "a page of {} bytes",
            page.encoded_len()
        );
        assert_eq!(page.group, "g");
    }
    let (members, offsets) = entries(&pages);
    assert_eq!(members, joined.into_iter().collect::<Vec<_>>());
    let all: Vec<(String, u32)> = (0..20).map(|p| ("t".to_string(), p)).collect();
    assert_eq!(offsets, all);
    assert!(pages
        .iter()
        .flat_map(|p| &p.members)
        .all(|m| m.topics.len() == 1_000));
    server.stop().await.unwrap();
}

/// Pages of a few entries list the same as one page of all, and a token DescribeGroup
/// did not give is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pages_list_every_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 11).await;
    client
        .admin()
        .create_topic("t.b", 3, Default::default())
        .await
        .unwrap();
    for _ in 0..4 {
        join(&client, "g", vec!["t".into(), "t.b".into()])
            .await
            .unwrap();
    }
    let whole = pages(&client, "g", 10_000).await;
    assert_eq!(whole.len(), 1);
    let (members, offsets) = entries(&whole);
    assert_eq!((members.len(), offsets.len()), (4, 14));
    for page_size in [1, 3, 4, 5, 13] {
        let pages = pages(&client, "g", page_size).await;
        assert_eq!(
            entries(&pages),
            (members.clone(), offsets.clone()),
            "pages of {page_size}"
        );
        assert_eq!(pages.len(), 18_usize.div_ceil(page_size as usize));
    }
    // FetchOffsets over topics whose names sort by their ends ("t" < "t-" < "t.b").
    client
        .admin()
        .create_topic("t-", 2, Default::default())
        .await
        .unwrap();
    let topics = [("t", 11), ("t-", 2), ("t.b", 3)];
    let offsets = topics
        .iter()
        .flat_map(|(topic, n)| (0..*n).map(|partition| (topic.to_string(), partition)))
        .map(|(topic, partition)| pb::OffsetCommit {
            topic,
            partition,
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let all: Vec<(String, u32)> = offsets
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let commit = pb::CommitOffsetsRequest {
        group: "o".into(),
        offsets,
        ..Default::default()
    };
    client.groups().commit_offsets(commit).await.unwrap();
    for (page_size, wanted) in [
        (1, vec![]),
        (3, vec![]),
        (2, vec!["t.b".to_string(), "t".into()]),
    ] {
        let request = pb::FetchOffsetsRequest {
            group: "o".into(),
            topics: wanted.clone(),
            page_size,
            page_token: String::new(),
        };
        let seen: Vec<(String, u32)> = offset_pages(&client, request)
            .await
            .into_iter()
            .flat_map(|page| page.offsets)
            .map(|o| (o.topic, o.partition))
            .collect();
        let expected: Vec<_> = all
            .iter()
            .filter(|(t, _)| wanted.is_empty() || wanted.contains(t))
            .cloned()
            .collect();
        assert_eq!(seen, expected, "pages of {page_size} of {wanted:?}");
    }
    for bad in ["x", "p:t", "p:t,x"] {
        let request = pb::DescribeGroupRequest {
            group: "g".into(),
            page_token: bad.into(),
            ..Default::default()
        };
        let status = client.groups().describe_group(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("next_page_token"),
            "{}",
            status.message()
        );
    }
    server.stop().await.unwrap();
}

/// Members naming the same long list share it; a group refuses a new different one
/// past 1 MiB of them, with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_long_subscriptions_are_capped_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    for _ in 0..50 {
        join(&client, "alike", long_list(0)).await.unwrap();
    }
    let mut refused = None;
    for seed in 0..10 {
        if let Err(status) = join(&client, "different", long_list(seed)).await {
            refused = Some((seed, status));
            break;
        }
    }
    let (seed, status) = refused.expect("a different list was refused");
    assert_eq!(seed, 4, "four lists of 240 KB fit in 1 MiB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("topic_pattern"),
        "{}",
        status.message()
    );
    // A list the group has still joins.
    join(&client, "different", long_list(1)).await.unwrap();
    server.stop().await.unwrap();
}

/// `strom group describe` follows the pages: every member of a group too large for one.
#[test]
fn the_cli_describes_a_group_of_many_pages_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "2"], b"");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let joined: BTreeSet<String> = runtime.block_on(async {
        let client = Client::connect(&format!("http://{}", server.addr))
            .await
            .unwrap();
        let mut joined = BTreeSet::new();
        for _ in 0..12 {
            joined.insert(join(&client, "g", long_list(0)).await.unwrap());
        }
        joined
    });
    let out = String::from_utf8(server.ok(&["group", "describe", "g"], b"")).unwrap();
    let listed: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|word| joined.contains(*word))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, joined, "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.trim_start().starts_with("t "))
            .count(),
        2,
        "{out}"
    );
}

/// A group's offsets in pages; asked for all at once past 3 MiB they are refused, not
/// answered in part; and a GroupConsumer, which follows the pages, starts every
/// partition at its committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_past_one_answer_come_in_pages() {
    const PARTITIONS: u32 = 800;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", PARTITIONS).await;
    for partition in 0..PARTITIONS {
        let records = ["first", "second"]
            .map(|v| pb::Record {
                value: Bytes::from(format!("{v}-{partition}")),
                ..Default::default()
            })
            .to_vec();
        let request = pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(partition),
            records,
            ..Default::default()
        };
        client.log().produce(request).await.unwrap();
    }
    let offsets = (0..PARTITIONS)
        .map(|partition| pb::OffsetCommit {
            topic: "t".into(),
            partition,
            offset: 1,
            metadata: "m".repeat(4096),
        })
        .collect();
    let commit = pb::CommitOffsetsRequest {
        group: "g".into(),
        offsets,
        ..Default::default()
    };
    client.groups().commit_offsets(commit).await.unwrap();
    let fetch = |page_size: u32, page_token: String| pb::FetchOffsetsRequest {
        group: "g".into(),
        page_size,
        page_token,
        ..Default::default()
    };
    let status = client
        .groups()
        .fetch_offsets(fetch(0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("page_size"),
        "{}",
        status.message()
    );
    for page_size in [7, 10_000] {
        let pages = offset_pages(&client, fetch(page_size, String::new())).await;
        for page in &pages {
            let bytes = page.encoded_len();
            assert!(bytes < 1_100_000, "a page of {bytes} bytes");
        }
        let seen: Vec<(u32, u64)> = pages
            .iter()
            .flat_map(|page| &page.offsets)
            .map(|o| (o.partition, o.offset))
            .collect();
        assert_eq!(seen, (0..PARTITIONS).map(|p| (p, 1)).collect::<Vec<_>>());
        assert!(pages.len() > 1, "{} pages of {page_size}", pages.len());
    }
    let mut member = GroupConsumer::join(&client, GroupConfig::new("g", &["t"]))
        .await
        .unwrap();
    let mut values = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < PARTITIONS as usize && Instant::now() < deadline {
        if let Some(batch) = member.poll(Duration::from_millis(500)).await.unwrap() {
            values.extend(batch.records.into_iter().map(|r| r.value));
        }
    }
    let second: BTreeSet<Bytes> = (0..PARTITIONS)
        .map(|p| Bytes::from(format!("second-{p}")))
        .collect();
    assert_eq!(values, second);
    server.stop().await.unwrap();
}
