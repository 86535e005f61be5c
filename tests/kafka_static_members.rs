//! Kafka's static group members (`group.instance.id`, KIP-345) against the real
//! server, call by call: a new process of an instance takes its member's place and
//! assignment without a rebalance, the process it replaced is fenced on every call,
//! DescribeGroups shows the instance, and an administrator removes a member by its
//! instance id. librdkafka consumers killed and restarted run in `kafka_clients.rs`.

mod common;

use bytes::Bytes;
use common::kafka::KafkaConn;
use common::server::TestServer;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom::broker::Limits;
use strom::server::ServeOptions;

const FENCED_INSTANCE_ID: i16 = 82;
const UNKNOWN_MEMBER_ID: i16 = 25;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group() -> GroupId {
    text("payments").into()
}

fn join(member: &str, instance: Option<&str>) -> JoinGroupRequest {
    let mut request = common::kafka::join_group("payments", member, 30_000);
    request.group_instance_id = instance.map(text);
    request
}

fn sync(member: &str, instance: &str, generation: i32, assign: bool) -> SyncGroupRequest {
    let mut request = SyncGroupRequest::default();
    request.group_id = group();
    request.generation_id = generation;
    request.member_id = text(member);
    request.group_instance_id = Some(text(instance));
    request.protocol_type = Some(text("consumer"));
    request.protocol_name = Some(text("range"));
    if assign {
        let mut assignment = SyncGroupRequestAssignment::default();
        assignment.member_id = text(member);
        assignment.assignment = Bytes::from_static(b"partition 0");
        request.assignments.push(assignment);
    }
    request
}

fn heartbeat(member: &str, instance: &str, generation: i32) -> HeartbeatRequest {
    let mut request = HeartbeatRequest::default();
    request.group_id = group();
    request.generation_id = generation;
    request.member_id = text(member);
    request.group_instance_id = Some(text(instance));
    request
}

fn commit(member: &str, instance: &str, generation: i32) -> OffsetCommitRequest {
    let mut request = OffsetCommitRequest::default();
    request.group_id = group();
    request.generation_id_or_member_epoch = generation;
    request.member_id = text(member);
    request.group_instance_id = Some(text(instance));
    let mut partition = OffsetCommitRequestPartition::default();
    partition.committed_offset = 0;
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text("orders"));
    topic.partitions.push(partition);
    request.topics.push(topic);
    request
}

fn describe() -> DescribeGroupsRequest {
    let mut request = DescribeGroupsRequest::default();
    request.groups.push(group());
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_instance_takes_its_members_place_and_fences_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    server.client_with_topic("orders", 1).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    // A static member joins without the MEMBER_ID_REQUIRED round, leads, assigns.
    let first = conn.call(&join("", Some("pod-0")), 7).await;
    assert_eq!((first.error_code, first.generation_id), (0, 1));
    let old = first.member_id.to_string();
    assert_eq!(first.leader.as_str(), old);
    // The leader sees each member's instance id (assignors sort by it).
    let instance = first.members[0].group_instance_id.as_ref();
    assert_eq!(instance.map(|i| i.as_str()), Some("pod-0"));
    let synced = conn.call(&sync(&old, "pod-0", 1, true), 5).await;
    assert_eq!(synced.assignment, "partition 0");

    // Its process is killed and started again: the new one joins with the instance
    // id and no member id, and is answered at once in the same generation, told it
    // does not lead it (the assignment stands), and given the old assignment.
    let mut restarted = KafkaConn::connect(server.kafka.unwrap()).await;
    let second = restarted.call(&join("", Some("pod-0")), 7).await;
    let new = second.member_id.to_string();
    assert_eq!((second.error_code, second.generation_id), (0, 1));
    assert_ne!(new, old);
    assert_eq!(second.leader.as_str(), old);
    assert!(second.members.is_empty());
    let synced = restarted.call(&sync(&new, "pod-0", 1, false), 5).await;
    assert_eq!(
        (synced.error_code, synced.assignment.as_ref()),
        (0, &b"partition 0"[..])
    );
    assert_eq!(
        restarted
            .call(&heartbeat(&new, "pod-0", 1), 4)
            .await
            .error_code,
        0
    );

    // The old process is fenced on every call that names the instance.
    assert_eq!(
        conn.call(&heartbeat(&old, "pod-0", 1), 4).await.error_code,
        FENCED_INSTANCE_ID
    );
    let committed = conn.call(&commit(&old, "pod-0", 1), 8).await;
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        FENCED_INSTANCE_ID
    );
    let rejoined = conn.call(&join(&old, Some("pod-0")), 7).await;
    assert_eq!(rejoined.error_code, FENCED_INSTANCE_ID);
    assert_eq!(
        conn.call(&sync(&old, "pod-0", 1, false), 5)
            .await
            .error_code,
        FENCED_INSTANCE_ID
    );
    // The new one commits.
    let committed = restarted.call(&commit(&new, "pod-0", 1), 8).await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);

    // DescribeGroups shows the member under its instance id (version 4 and later).
    let described = conn.call(&describe(), 5).await;
    let members = &described.groups[0].members;
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].member_id.as_str(), new);
    assert_eq!(
        members[0].group_instance_id.as_ref().map(|i| i.as_str()),
        Some("pod-0")
    );

    // An administrator removes it by its instance id alone (a static consumer does
    // not leave when it closes); a wrong member id with the instance is fenced.
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = group();
    let mut wrong = MemberIdentity::default();
    wrong.member_id = text(&old);
    wrong.group_instance_id = Some(text("pod-0"));
    let mut unknown = MemberIdentity::default();
    unknown.group_instance_id = Some(text("pod-9"));
    let mut by_instance = MemberIdentity::default();
    by_instance.group_instance_id = Some(text("pod-0"));
    leave.members = vec![wrong, unknown, by_instance];
    let left = conn.call(&leave, 4).await;
    let answers: Vec<(i16, &str)> = left
        .members
        .iter()
        .map(|m| (m.error_code, m.member_id.as_str()))
        .collect();
    assert_eq!(
        answers,
        [
            (FENCED_INSTANCE_ID, old.as_str()),
            (UNKNOWN_MEMBER_ID, ""),
            (0, "")
        ]
    );
    let described = conn.call(&describe(), 5).await;
    assert_eq!(described.groups[0].group_state.as_str(), "Empty");
    server.stop().await.unwrap();
}

/// An instance id, protocol type or protocol name longer than Kafka's clients allow
/// (249 bytes) is refused: one of 40 KB was held, and could not be encoded in the
/// older versions of DescribeGroups, which then closed the connection.
#[tokio::test(flavor = "multi_thread")]
async fn names_longer_than_kafka_allows_are_refused() {
    const INVALID_REQUEST: i16 = 42;
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let long = "i".repeat(250);
    let refused = conn.call(&join("", Some(&long)), 7).await;
    assert_eq!(refused.error_code, INVALID_REQUEST);
    let mut protocol = join("", Some("pod-0"));
    protocol.protocols[0].name = text(&"p".repeat(250));
    assert_eq!(conn.call(&protocol, 7).await.error_code, INVALID_REQUEST);
    let mut kind = join("", None);
    kind.protocol_type = text(&"t".repeat(40_000));
    assert_eq!(conn.call(&kind, 7).await.error_code, INVALID_REQUEST);
    // 249 is taken, and described by the oldest version that shows it.
    let joined = conn.call(&join("", Some(&long[..249])), 7).await;
    assert_eq!(joined.error_code, 0);
    let described = conn.call(&describe(), 4).await;
    let instance = described.groups[0].members[0].group_instance_id.as_ref();
    assert_eq!(instance.map(|i| i.len()), Some(249));
    server.stop().await.unwrap();
}
