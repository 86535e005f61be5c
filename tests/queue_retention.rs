//! Retention and share groups: retention by age keeps every record a share group has not
//! finished; retention by size deletes them anyway, and the group counts them as lost.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::server::TestServer;
use strom::broker::Limits;
use strom::client::Client;
use strom::grpc::pb::{self, AckType};
use strom::server::ServeOptions;

const LIMIT: Duration = Duration::from_secs(30);

fn quick() -> ServeOptions {
    ServeOptions {
        retention_check_interval: Duration::from_millis(100),
        upkeep_interval: Duration::from_millis(100),
        ..ServeOptions::default()
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One record per request, each in its own segment (segment.ms = 1), an hour old.
async fn produce_old(client: &Client, topic: &str, n: usize, size: usize) {
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let request = pb::ProduceRequest {
            topic: topic.into(),
            partition: Some(0),
            records: vec![pb::Record {
                value: Bytes::from(vec![b'x'; size]),
                timestamp_ms: strom::broker::now_ms() - 3_600_000,
                ..Default::default()
            }],
            ..Default::default()
        };
        client.log().produce(request).await.unwrap();
    }
}

async fn log_start(client: &Client, topic: &str) -> u64 {
    client
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions[0]
        .log_start_offset
}

async fn share(client: &Client, group: &str, topic: &str, max: u32) -> Vec<u64> {
    let r = client
        .queues()
        .share_fetch(pb::ShareFetchRequest {
            group: group.into(),
            member_id: "m".into(),
            topic: topic.into(),
            max_records: max,
            max_wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    r.records
        .iter()
        .map(|r| r.record.as_ref().unwrap().offset)
        .collect()
}

async fn accept(client: &Client, group: &str, topic: &str, offsets: &[u64]) {
    let refused = client
        .queues()
        .share_acknowledge(pb::ShareAcknowledgeRequest {
            group: group.into(),
            member_id: "m".into(),
            topic: topic.into(),
            acks: vec![pb::Acknowledgement {
                partition: 0,
                offsets: offsets.to_vec(),
                r#type: AckType::Accept as i32,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .refused;
    assert!(refused.is_empty(), "{refused:?}");
}

async fn start_group(client: &Client, group: &str, topic: &str) {
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: group.into(),
            config: [("start".to_string(), "earliest".to_string())].into(),
        })
        .await
        .unwrap();
    // The group's first fetch gives it a start offset in the partition.
    assert!(share(client, group, topic, 1).await.is_empty());
}

#[tokio::test]
async fn retention_by_age_waits_for_the_share_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), quick()).await;
    let client = server.client().await;
    let config = map(&[("retention.ms", "300"), ("segment.ms", "1")]);
    client.admin().create_topic("old", 1, config).await.unwrap();
    start_group(&client, "q", "old").await;
    produce_old(&client, "old", 5, 10).await;
    assert_eq!(share(&client, "q", "old", 2).await, [0, 1]);
    accept(&client, "q", "old", &[0]).await;
    // Everything is past retention.ms, but the group has finished only offset 0.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while log_start(&client, "old").await < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // several cleaner passes
    assert_eq!(log_start(&client, "old").await, 1);
    // And DescribeTopic names no deletion time while the group holds it (it said now).
    let described = client.admin().describe_topic("old").await.unwrap();
    assert_eq!(described.partitions[0].next_deletion_ms, None);
    // Once the group has finished everything, retention takes it all.
    accept(&client, "q", "old", &[1]).await;
    let rest = share(&client, "q", "old", 10).await;
    assert_eq!(rest, [2, 3, 4]);
    accept(&client, "q", "old", &rest).await;
    while log_start(&client, "old").await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retention_by_size_deletes_anyway_and_the_group_counts_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), quick()).await;
    let client = server.client().await;
    let config = map(&[("retention.bytes", "2000"), ("segment.ms", "1")]);
    client
        .admin()
        .create_topic("sized", 1, config)
        .await
        .unwrap();
    start_group(&client, "q", "sized").await;
    produce_old(&client, "sized", 1, 500).await;
    assert_eq!(share(&client, "q", "sized", 1).await, [0]);
    // 5,000 bytes where 2,000 are kept: the locked record goes too.
    produce_old(&client, "sized", 9, 500).await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while log_start(&client, "sized").await < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = log_start(&client, "sized").await;
    let d = client
        .queues()
        .describe_share_group(pb::DescribeShareGroupRequest { group: "q".into() })
        .await
        .unwrap()
        .into_inner();
    let p = &d.partitions[0];
    assert_eq!(
        (p.start_offset, p.lost, p.in_flight),
        (start, start, 0),
        "{p:?}"
    );
    // The group goes on from the new start.
    assert_eq!(share(&client, "q", "sized", 1).await, [start]);
    server.stop().await.unwrap();
}
