//! Kafka's consumer-group calls against the real server, in the oldest and newest
//! versions strom takes: a member joins, leads, assigns, heartbeats, commits and
//! leaves; calls from the wrong member or generation get Kafka's codes; committed
//! offsets are strom's own group's. Kafka's clients run the same in
//! `kafka_clients.rs`.

mod common;

use bytes::Bytes;
use common::kafka::KafkaConn;
use common::server::TestServer;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom::broker::Limits;
use strom::server::ServeOptions;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group(s: &str) -> GroupId {
    text(s).into()
}

fn join(member: &str) -> JoinGroupRequest {
    common::kafka::join_group("billing", member, 10_000)
}

fn commit(member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    let mut request = OffsetCommitRequest::default();
    request.group_id = group("billing");
    request.generation_id_or_member_epoch = generation;
    request.member_id = text(member);
    let mut partition = OffsetCommitRequestPartition::default();
    partition.partition_index = 0;
    partition.committed_offset = offset;
    partition.committed_metadata = Some(text("from kafka"));
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text("events"));
    topic.partitions.push(partition);
    request.topics.push(topic);
    request
}

fn offset_fetch() -> OffsetFetchRequest {
    let mut request = OffsetFetchRequest::default();
    request.group_id = group("billing");
    let mut topic = OffsetFetchRequestTopic::default();
    topic.name = TopicName(text("events"));
    topic.partition_indexes = vec![0, 1];
    request.topics = Some(vec![topic]);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_joins_leads_commits_and_leaves_in_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("events", 2).await;
    client
        .log()
        .produce(common::requests::produce(
            "events",
            Some(0),
            (0..5)
                .map(|i| common::requests::record(&i.to_string()))
                .collect(),
        ))
        .await
        .unwrap();
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    for version in [0, 3] {
        let mut find = FindCoordinatorRequest::default();
        find.key = text("billing");
        let found = conn.call(&find, version).await;
        assert_eq!(
            (found.error_code, found.port),
            (0, i32::from(server.kafka.unwrap().port()))
        );
    }
    let mut transactional = FindCoordinatorRequest::default();
    transactional.key = text("tx");
    transactional.key_type = 1;
    assert_ne!(
        conn.call(&transactional, 1).await.error_code,
        0,
        "no transaction coordinator"
    );

    // (join version, sync version, heartbeat version, commit version, fetch version, leave version)
    for (jv, sv, hv, cv, fv, lv) in [(0, 0, 0, 2, 1, 0), (7, 5, 4, 8, 7, 4)] {
        // From version 4 a new member is first given its id.
        let mut answer = conn.call(&join(""), jv).await;
        if jv >= 4 {
            assert_eq!(answer.error_code, 79, "MEMBER_ID_REQUIRED");
            answer = conn.call(&join(answer.member_id.as_str()), jv).await;
        }
        assert_eq!(answer.error_code, 0);
        let me = answer.member_id.to_string();
        assert_eq!(answer.leader.as_str(), me, "alone, it leads");
        assert_eq!(answer.members.len(), 1);
        assert_eq!(
            answer.members[0].metadata,
            Bytes::from_static(b"subscription")
        );
        let generation = answer.generation_id;

        let mut sync = SyncGroupRequest::default();
        sync.group_id = group("billing");
        sync.generation_id = generation;
        sync.member_id = text(&me);
        if sv >= 5 {
            sync.protocol_type = Some(text("consumer"));
            sync.protocol_name = Some(text("range"));
        }
        let mut assignment = SyncGroupRequestAssignment::default();
        assignment.member_id = text(&me);
        assignment.assignment = Bytes::from_static(b"events:0,1");
        sync.assignments.push(assignment);
        let synced = conn.call(&sync, sv).await;
        assert_eq!(
            (synced.error_code, synced.assignment.clone()),
            (0, Bytes::from_static(b"events:0,1"))
        );

        let mut beat = HeartbeatRequest::default();
        beat.group_id = group("billing");
        beat.generation_id = generation;
        beat.member_id = text(&me);
        assert_eq!(conn.call(&beat, hv).await.error_code, 0);
        beat.generation_id = generation - 1;
        assert_eq!(
            conn.call(&beat, hv).await.error_code,
            22,
            "ILLEGAL_GENERATION"
        );
        beat.member_id = text("stranger");
        assert_eq!(
            conn.call(&beat, hv).await.error_code,
            25,
            "UNKNOWN_MEMBER_ID"
        );

        // Commits: the member at its generation, not another, not an old generation,
        // and not a standalone commit while the group has a member.
        let refused = [
            (me.as_str(), generation - 1, 22),
            ("stranger", generation, 25),
            ("", -1, 25),
        ];
        for (member, g, code) in refused {
            let response = conn.call(&commit(member, g, 3), cv).await;
            assert_eq!(
                response.topics[0].partitions[0].error_code, code,
                "{member} {g}"
            );
        }
        let response = conn
            .call(&commit(&me, generation, 3 + i64::from(jv / 7)), cv)
            .await;
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
        let fetched = conn.call(&offset_fetch(), fv).await;
        let partitions = &fetched.topics[0].partitions;
        assert_eq!(
            (
                partitions[0].committed_offset,
                partitions[1].committed_offset
            ),
            (3 + i64::from(jv / 7), -1)
        );
        assert_eq!(
            partitions[0].metadata.as_ref().map(|m| m.as_str()),
            Some("from kafka")
        );

        let mut leave = LeaveGroupRequest::default();
        leave.group_id = group("billing");
        if lv >= 3 {
            let mut member = MemberIdentity::default();
            member.member_id = text(&me);
            leave.members.push(member);
        } else {
            leave.member_id = text(&me);
        }
        let left = conn.call(&leave, lv).await;
        assert_eq!(left.error_code, 0);
    }
    // With no members, a standalone commit (an assign()ing consumer's) is taken.
    let response = conn.call(&commit("", -1, 5), 8).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    // The offsets are strom's group's: gRPC sees them.
    let offsets = client
        .groups()
        .fetch_offsets(strom::grpc::pb::FetchOffsetsRequest {
            group: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offsets.offsets.len(), 1);
    assert_eq!(
        (
            offsets.offsets[0].offset,
            offsets.offsets[0].metadata.as_str()
        ),
        (5, "from kafka")
    );
    // Past the partition's end: refused as strom refuses it, nothing stored.
    let response = conn.call(&commit("", -1, 99), 8).await;
    assert_ne!(response.topics[0].partitions[0].error_code, 0);
    drop(conn);
    server.stop().await.unwrap();
}

/// A JoinGroup waits for the rebalance: a second member's join is answered once the
/// first has joined again, and a stop of the server ends a join still waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_member_waits_for_the_first_and_a_stop_ends_a_waiting_join() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let _client = server.client_with_topic("events", 2).await;
    let mut a = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut b = KafkaConn::connect(server.kafka.unwrap()).await;
    let first = a.call(&join(""), 3).await;
    assert_eq!(first.generation_id, 1);
    let waiting = b.send(&join(""), 3).await;
    // a learns of the rebalance by its heartbeat and joins again: both are answered.
    let mut beat = HeartbeatRequest::default();
    beat.group_id = group("billing");
    beat.generation_id = 1;
    beat.member_id = first.member_id.clone();
    // b's join is on another connection: a sees the rebalance once it is taken.
    let mut tries = 0;
    while a.call(&beat, 3).await.error_code != 27 {
        tries += 1;
        assert!(tries < 250, "REBALANCE_IN_PROGRESS within 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = a.call(&join(first.member_id.as_str()), 3).await;
    assert_eq!((again.generation_id, again.members.len()), (2, 2));
    let second = b.receive::<JoinGroupRequest>(waiting, 3).await;
    assert_eq!((second.error_code, second.generation_id), (0, 2));
    assert!(
        second.members.is_empty(),
        "only the leader gets the members"
    );
    // A third join waits for a and b; the stop ends it.
    let mut c = KafkaConn::connect(server.kafka.unwrap()).await;
    let _pending = c.send(&join(""), 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    server.stop().await.unwrap();
    assert!(stopping.elapsed() < std::time::Duration::from_secs(10));
}

/// A member whose JoinGroup waits for the others and that hangs up meanwhile (a
/// consumer killed mid-rebalance) gives its connection back at once, not when the
/// rebalance ends (minutes later), also after sending more requests; a member that
/// sends its next request before the answer gets both answered, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_hangs_up_while_its_join_waits_frees_its_connection() {
    use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;

    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let mut a = KafkaConn::connect(server.kafka.unwrap()).await;
    let first = a.call(&join(""), 3).await;
    assert_eq!(first.generation_id, 1);
    // (The gauge is sampled: each count is waited for.)
    connections_reach(&server, 1.0).await;
    // b's join waits for a, for up to its rebalance timeout of a minute.
    let mut waiting = join("");
    waiting.rebalance_timeout_ms = 60_000;
    let mut b = KafkaConn::connect(server.kafka.unwrap()).await;
    b.send(&waiting, 3).await;
    connections_reach(&server, 2.0).await;
    drop(b);
    connections_reach(&server, 1.0).await;

    // c sends its next request before its join is answered.
    let mut c = KafkaConn::connect(server.kafka.unwrap()).await;
    let joined = c.send(&waiting, 3).await;
    let versions = c.send(&ApiVersionsRequest::default(), 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = a.call(&join(first.member_id.as_str()), 3).await;
    assert_eq!((again.error_code, again.generation_id), (0, 2));
    let answer = c.receive::<JoinGroupRequest>(joined, 3).await;
    assert_eq!((answer.error_code, answer.generation_id), (0, 2));
    let versions = c.receive::<ApiVersionsRequest>(versions, 0).await;
    assert_eq!(versions.error_code, 0);

    // d sends a heartbeat (a whole request) behind its waiting join, then hangs up.
    let mut d = KafkaConn::connect(server.kafka.unwrap()).await;
    d.send(&waiting, 3).await;
    let mut beat = HeartbeatRequest::default();
    beat.group_id = group("billing");
    beat.member_id = text("d");
    d.send(&beat, 3).await;
    connections_reach(&server, 3.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(d);
    connections_reach(&server, 2.0).await;
    server.stop().await.unwrap();
}

const OPEN: &str = "strom_connections_open";

/// Waits up to 5 s for the server to have `n` connections open.
async fn connections_reach(server: &TestServer, n: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.metric(OPEN).await != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} connections within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A group name in use by one kind of consumer is refused to the other: a Kafka
/// member and a gRPC member would each be handed the same partitions (a hostile
/// sweep read every record twice).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_and_grpc_consumers_do_not_share_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("events", 2).await;
    let grpc_join = |group: &str| strom::grpc::pb::HeartbeatRequest {
        group: group.into(),
        topics: vec!["events".into()],
        ..Default::default()
    };
    // A gRPC member in "shared": a Kafka join is refused.
    let joined = client
        .groups()
        .heartbeat(grpc_join("shared"))
        .await
        .unwrap()
        .into_inner();
    assert!(!joined.member_id.is_empty());
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut request = join("");
    request.group_id = group("shared");
    assert_eq!(
        conn.call(&request, 3).await.error_code,
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    // A commit from outside the group (an administrator's reset, or a consumer that
    // assigns itself partitions) is refused as Kafka refuses one into a group with
    // members, not with INVALID_REQUEST (hostile-sweep finding).
    let mut outside = commit("", -1, 0);
    outside.group_id = group("shared");
    let answered = conn.call(&outside, 8).await;
    let code = answered.topics[0].partitions[0].error_code;
    assert_eq!(code, 25, "UNKNOWN_MEMBER_ID");
    // A Kafka member in "billing": a gRPC join is refused, saying why.
    assert_eq!(conn.call(&join(""), 3).await.error_code, 0);
    let refused = client
        .groups()
        .heartbeat(grpc_join("billing"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("Kafka consumers"),
        "{}",
        refused.message()
    );
    // Nor are its offsets committed or reset under its Kafka member, as those of a
    // gRPC member's.
    let commit = strom::grpc::pb::CommitOffsetsRequest {
        group: "billing".into(),
        offsets: vec![strom::grpc::pb::OffsetCommit {
            topic: "events".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let refused = client.groups().commit_offsets(commit).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("Kafka members"),
        "{}",
        refused.message()
    );
    let reset = strom::grpc::pb::ResetOffsetsRequest {
        group: "billing".into(),
        topic: "events".into(),
        to: Some(strom::grpc::pb::reset_offsets_request::To::Earliest(true)),
        ..Default::default()
    };
    let refused = client.groups().reset_offsets(reset).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("Kafka members"),
        "{}",
        refused.message()
    );
    drop(conn);
    server.stop().await.unwrap();
}

/// A gRPC group's members are saved with its offsets and carry on after a restart,
/// even before any of them heartbeats again: a Kafka join in that time is refused,
/// as it would be handed the partitions they still consume.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_members_saved_across_a_restart_keep_kafka_consumers_out() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("events", 2).await;
    let joined = client
        .groups()
        .heartbeat(strom::grpc::pb::HeartbeatRequest {
            group: "shared".into(),
            topics: vec!["events".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let committed = strom::grpc::pb::CommitOffsetsRequest {
        group: "shared".into(),
        member_id: joined.member_id.clone(),
        member_epoch: joined.member_epoch,
        offsets: vec![strom::grpc::pb::OffsetCommit {
            topic: "events".into(),
            partition: 0,
            ..Default::default()
        }],
    };
    client.groups().commit_offsets(committed).await.unwrap();
    server.stop().await.unwrap();

    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut request = join("");
    request.group_id = group("shared");
    assert_eq!(
        conn.call(&request, 3).await.error_code,
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    let mut outside = commit("", -1, 0);
    outside.group_id = group("shared");
    let answered = conn.call(&outside, 8).await;
    let code = answered.topics[0].partitions[0].error_code;
    assert_eq!(code, 25, "UNKNOWN_MEMBER_ID");
    drop(conn);
    server.stop().await.unwrap();

    // Without the saved members (the machine restarted, say), the gRPC member of
    // before is unknown but may still consume: within the group's hold a Kafka join
    // is told to retry (hostile-sweep finding: it was let in and given the partitions).
    let groups_dir = dir.path().join("groups");
    for entry in std::fs::read_dir(&groups_dir).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path().join("members"));
    }
    let interval = std::time::Duration::from_secs(2);
    let options = ServeOptions {
        groups: strom::groups::GroupsConfig::new(interval, std::time::Duration::from_secs(600)),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let answered = conn.call(&request, 3).await.error_code;
    if started.elapsed() < 2 * interval {
        assert_eq!(answered, 14, "COORDINATOR_LOAD_IN_PROGRESS");
    } else {
        eprintln!("the restart took longer than the hold: the hold was not checked");
    }
    // Once the hold is over, the member of before has had its chance to heartbeat.
    tokio::time::sleep(2 * interval).await;
    assert_eq!(conn.call(&request, 3).await.error_code, 0);
    drop(conn);
    server.stop().await.unwrap();
}

/// ListGroups, DescribeGroups and DeleteGroups over Kafka's protocol: a Kafka group
/// with a member, a gRPC consumer group (protocol type `strom`), a group with only
/// committed offsets, and one that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn groups_are_listed_described_and_deleted() {
    use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
    use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
    use kafka_protocol::messages::list_groups_request::ListGroupsRequest;

    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("events", 2).await;
    client
        .log()
        .produce(common::requests::produce(
            "events",
            Some(0),
            vec![common::requests::record("r")],
        ))
        .await
        .unwrap();
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    // A Kafka member of "billing", past its sync.
    let joined = conn.call(&join(""), 3).await;
    let mut sync = SyncGroupRequest::default();
    sync.group_id = group("billing");
    sync.generation_id = joined.generation_id;
    sync.member_id = joined.member_id.clone();
    let mut assignment = SyncGroupRequestAssignment::default();
    assignment.member_id = joined.member_id.clone();
    assignment.assignment = Bytes::from_static(b"events-0");
    sync.assignments.push(assignment);
    assert_eq!(conn.call(&sync, 3).await.error_code, 0);
    // A gRPC member of "grpc-side".
    client
        .groups()
        .heartbeat(strom::grpc::pb::HeartbeatRequest {
            group: "grpc-side".into(),
            topics: vec!["events".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Offsets only in "offsets-only" (a commit without membership).
    let mut offsets_only = commit("", -1, 1);
    offsets_only.group_id = group("offsets-only");
    let committed = conn.call(&offsets_only, 8).await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);

    let list = |states: &[&str]| {
        let mut request = ListGroupsRequest::default();
        request.states_filter = states.iter().map(|s| text(s)).collect();
        request
    };
    let listed = conn.call(&list(&[]), 4).await;
    let groups: Vec<_> = listed
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.protocol_type.to_string(),
                g.group_state.to_string(),
            )
        })
        .collect();
    let expected = [
        ("billing", "consumer", "Stable"),
        ("grpc-side", "strom", "Stable"),
        ("offsets-only", "", "Empty"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(groups, expected);
    let empty = conn.call(&list(&["empty"]), 4).await;
    assert_eq!(empty.groups.len(), 1);
    assert_eq!(conn.call(&list(&[]), 0).await.groups.len(), 3, "version 0");

    let mut describe = DescribeGroupsRequest::default();
    // A name given twice is described once (each copy of a group's members would be
    // another copy of their bytes).
    describe.groups = ["billing", "grpc-side", "offsets-only", "nothing", "billing"]
        .map(group)
        .to_vec();
    for version in [0, 5] {
        let described = conn.call(&describe, version).await;
        let states: Vec<_> = described
            .groups
            .iter()
            .map(|g| (g.error_code, g.group_state.to_string(), g.members.len()))
            .collect();
        assert_eq!(
            states,
            [
                (0, "Stable".into(), 1),
                (0, "Stable".into(), 0),
                (0, "Empty".into(), 0),
                (0, "Dead".into(), 0)
            ],
            "v{version}"
        );
        let billing = &described.groups[0];
        assert_eq!(
            (
                billing.protocol_type.as_str(),
                billing.protocol_data.as_str()
            ),
            ("consumer", "range")
        );
        let member = &billing.members[0];
        assert_eq!(member.member_id, joined.member_id);
        assert_eq!(&member.member_metadata[..], b"subscription");
        assert_eq!(&member.member_assignment[..], b"events-0");
        assert_eq!(described.groups[1].protocol_type.as_str(), "strom");
    }

    // A group with a Kafka member is not deleted over gRPC either (its offsets are
    // strom's group's, which the member commits to).
    let committed = conn
        .call(&commit(&joined.member_id, joined.generation_id, 1), 8)
        .await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let refused = client
        .groups()
        .delete_group(strom::grpc::pb::DeleteGroupRequest {
            group: "billing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = ["billing", "grpc-side", "offsets-only", "nothing", ".."]
        .map(group)
        .to_vec();
    let deleted = conn.call(&delete, 2).await;
    let codes: Vec<_> = deleted.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [68, 68, 0, 69, 24],
        "NON_EMPTY_GROUP, none, GROUP_ID_NOT_FOUND, INVALID_GROUP_ID"
    );
    let listed = conn.call(&list(&[]), 4).await;
    assert!(listed
        .groups
        .iter()
        .all(|g| g.group_id.as_str() != "offsets-only"));
    let fetched = client
        .groups()
        .fetch_offsets(strom::grpc::pb::FetchOffsetsRequest {
            group: "offsets-only".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.offsets.is_empty(), "its offsets went with it");
    server.stop().await.unwrap();
}

/// DescribeGroups takes the response pool's bytes for all its members at once: one
/// that held part of the pool while waiting for the rest waited for ever (the pool
/// never had both parts free), and every Kafka Fetch waited behind it.
#[tokio::test(flavor = "multi_thread")]
async fn describing_groups_larger_than_the_pool_does_not_wait_for_ever() {
    use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;

    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        produce_budget_bytes: 1 << 20, // and so the pool of response bytes
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let _client = server.client_with_topic("events", 1).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    for name in ["big-a", "big-b"] {
        let mut request = join("");
        request.group_id = group(name);
        request.protocols[0].metadata = Bytes::from(vec![7u8; 600 << 10]);
        assert_eq!(conn.call(&request, 3).await.error_code, 0);
    }
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group("big-a"), group("big-b")];
    let described = conn.call(&describe, 5).await;
    let sizes: Vec<_> = described
        .groups
        .iter()
        .map(|g| g.members[0].member_metadata.len())
        .collect();
    assert_eq!(sizes, [600 << 10, 600 << 10]);
    // And the pool is free again: a fetch is answered.
    let fetched = conn
        .call(&common::kafka::fetch("events", 0, 0, 0), 12)
        .await;
    assert_eq!(fetched.responses[0].partitions[0].error_code, 0);
    server.stop().await.unwrap();
}
