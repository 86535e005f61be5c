//! Kafka's OffsetDelete against the real server: a group's committed offsets of a
//! topic go (and are strom's group's, so gRPC sees them go), each refusal has Kafka's
//! code, and a topic a Kafka member subscribes to is refused with
//! GROUP_SUBSCRIBED_TO_TOPIC. Kafka's admin clients call it in `kafka_clients.py`.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::kafka::{name, KafkaConn};
use common::server::TestServer;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::protocol::StrBytes;
use strom::broker::Limits;
use strom::grpc::pb;
use strom::server::ServeOptions;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

fn offset_delete(group: &str, topics: &[(&str, &[i32])]) -> OffsetDeleteRequest {
    let mut request = OffsetDeleteRequest::default();
    request.group_id = StrBytes::from_string(group.to_string()).into();
    for &(topic, partitions) in topics {
        let mut t = OffsetDeleteRequestTopic::default();
        t.name = name(topic);
        for &index in partitions {
            let mut p = OffsetDeleteRequestPartition::default();
            p.partition_index = index;
            t.partitions.push(p);
        }
        request.topics.push(t);
    }
    request
}

/// The group-level code, and each partition's (topic, index, code).
async fn deleted(
    conn: &mut KafkaConn,
    request: &OffsetDeleteRequest,
) -> (i16, Vec<(String, i32, i16)>) {
    let response = conn.call(request, 0).await;
    let partitions = response.topics.iter().flat_map(|t| {
        let topic = t.name.to_string();
        (t.partitions.iter()).map(move |p| (topic.clone(), p.partition_index, p.error_code))
    });
    (response.error_code, partitions.collect())
}

fn codes(entries: &[(&str, i32, i16)]) -> Vec<(String, i32, i16)> {
    (entries.iter())
        .map(|&(t, p, c)| (t.to_string(), p, c))
        .collect()
}

/// A consumer's assignment (Kafka's ConsumerProtocolAssignment, version 0).
fn assignment(topics: &[(&str, &[i32])]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        out.put_i16(topic.len() as i16);
        out.put_slice(topic.as_bytes());
        out.put_i32(partitions.len() as i32);
        for p in *partitions {
            out.put_i32(*p);
        }
    }
    out.put_i32(-1); // no user data
    out.freeze()
}

fn joined_group(name: &str) -> kafka_protocol::messages::GroupId {
    StrBytes::from_string(name.to_string()).into()
}

/// A consumer's protocol metadata (Kafka's ConsumerProtocolSubscription, version 0)
/// subscribing to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(topics.len() as i32);
    for topic in topics {
        out.put_i16(topic.len() as i16);
        out.put_slice(topic.as_bytes());
    }
    out.put_i32(-1); // no user data
    out.freeze()
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_are_deleted_over_kafka_and_refused_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        kafka_group_initial_delay: Duration::ZERO,
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("a", 2).await;
    let mut admin = client.admin();
    admin
        .create_topic("b", 1, Default::default())
        .await
        .unwrap();
    for (topic, partition) in [("a", 0), ("a", 1), ("b", 0)] {
        let records = vec![common::requests::record("x"); 5];
        let produce = common::requests::produce(topic, Some(partition), records);
        client.log().produce(produce).await.unwrap();
    }
    let commit = |group: &str| pb::CommitOffsetsRequest {
        group: group.into(),
        offsets: [("a", 0), ("a", 1), ("b", 0)]
            .into_iter()
            .map(|(topic, partition)| pb::OffsetCommit {
                topic: topic.into(),
                partition,
                offset: 3,
                metadata: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    for group in ["g", "h"] {
        client.groups().commit_offsets(commit(group)).await.unwrap();
    }
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    let request = offset_delete("g", &[("a", &[0, 5, -1]), ("nope", &[0])]);
    let answer = deleted(&mut conn, &request).await;
    let expected = codes(&[
        ("a", 0, 0),
        ("a", 5, UNKNOWN_TOPIC_OR_PARTITION),
        ("a", -1, UNKNOWN_TOPIC_OR_PARTITION),
        ("nope", 0, UNKNOWN_TOPIC_OR_PARTITION),
    ]);
    assert_eq!(answer, (0, expected));
    let left: Vec<(String, u32)> = common::committed(&client, "g").await.into_keys().collect();
    assert_eq!(left, [("a".into(), 1), ("b".into(), 0)]);
    // Again: nothing to delete is not an error.
    let answer = deleted(&mut conn, &offset_delete("g", &[("a", &[0])])).await;
    assert_eq!(answer, (0, codes(&[("a", 0, 0)])));
    let answer = deleted(&mut conn, &offset_delete("nobody", &[("a", &[0])])).await;
    assert_eq!(answer, (GROUP_ID_NOT_FOUND, vec![]));
    // The group first, whatever the topics are.
    let answer = deleted(&mut conn, &offset_delete("nobody", &[("nope", &[0])])).await;
    assert_eq!(answer, (GROUP_ID_NOT_FOUND, vec![]));

    // A Kafka consumer joins g subscribed to b: b's offsets stay, a's can go.
    let mut join = common::kafka::join_group("g", "", 30_000);
    join.protocols[0].metadata = subscription(&["b"]);
    let joined = conn.call(&join, 3).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let request = offset_delete("g", &[("b", &[0]), ("a", &[1])]);
    let answer = deleted(&mut conn, &request).await;
    let expected = codes(&[("b", 0, GROUP_SUBSCRIBED_TO_TOPIC), ("a", 1, 0)]);
    assert_eq!(answer, (0, expected));
    let left: Vec<(String, u32)> = common::committed(&client, "g").await.into_keys().collect();
    assert_eq!(left, [("b".into(), 0)]);
    // Its assignment, once it has one, counts too: it still holds what it was given.
    let mut sync = SyncGroupRequest::default();
    sync.group_id = joined_group("g");
    sync.generation_id = 1;
    sync.member_id = joined.member_id.clone();
    let mut mine = SyncGroupRequestAssignment::default();
    mine.member_id = joined.member_id.clone();
    mine.assignment = assignment(&[("a", &[1]), ("b", &[0])]);
    sync.assignments.push(mine);
    assert_eq!(conn.call(&sync, 3).await.error_code, 0);
    client
        .groups()
        .commit_offsets(commit("g"))
        .await
        .unwrap_err(); // Kafka members
    let answer = deleted(&mut conn, &offset_delete("g", &[("a", &[0])])).await;
    assert_eq!(answer, (0, codes(&[("a", 0, GROUP_SUBSCRIBED_TO_TOPIC)])));
    // So over gRPC too.
    let grpc = pb::DeleteOffsetsRequest {
        group: "g".into(),
        topic: "b".into(),
        partitions: vec![],
    };
    let err = client.groups().delete_offsets(grpc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Kafka members"), "{}", err.message());

    // A Kafka group that never committed: nothing to delete, and its topic refused.
    let mut join = common::kafka::join_group("k", "", 30_000);
    join.protocols[0].metadata = subscription(&["b"]);
    assert_eq!(conn.call(&join, 3).await.error_code, 0);
    let grpc = |topic: &str| pb::DeleteOffsetsRequest {
        group: "k".into(),
        topic: topic.into(),
        partitions: vec![],
    };
    let nothing = client.groups().delete_offsets(grpc("a")).await.unwrap();
    assert!(nothing.into_inner().deleted.is_empty());
    let err = client.groups().delete_offsets(grpc("b")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let answer = deleted(&mut conn, &offset_delete("k", &[("a", &[0]), ("b", &[0])])).await;
    let expected = codes(&[("a", 0, 0), ("b", 0, GROUP_SUBSCRIBED_TO_TOPIC)]);
    assert_eq!(answer, (0, expected));

    // Metadata that does not read as a subscription could name any topic.
    let mut join = common::kafka::join_group("h", "", 30_000);
    // Version 0 and a null topics array: Kafka's parser refuses it too.
    join.protocols[0].metadata = Bytes::from_static(b"\0\0\xff\xff\xff\xff\xff\xff\xff\xff");
    let joined = conn.call(&join, 3).await;
    assert_eq!(joined.error_code, 0);
    let answer = deleted(&mut conn, &offset_delete("h", &[("a", &[0])])).await;
    assert_eq!(answer, (0, codes(&[("a", 0, GROUP_SUBSCRIBED_TO_TOPIC)])));
    assert_eq!(common::committed(&client, "h").await.len(), 3);
    server.stop().await.unwrap();
}
