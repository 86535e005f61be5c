//! The server's security settings on the Kafka listener: SASL/PLAIN with a token
//! (`auth_tokens`; SCRAM's exchange is tested in `src/kafka/scram_tests.rs` and with
//! Kafka's client libraries in `kafka_clients.rs`) before anything but ApiVersions, a revoked token ending its
//! connection, the access control list deciding each request with Kafka's
//! authorization codes, and TLS with client certificates naming the caller. Kafka's
//! client libraries over SASL_SSL are in `kafka_clients.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use common::kafka::{batch, fetch, list_offsets, name, produce, record, records_of, KafkaConn};
use common::principals::as_principal;
use common::server::TestServer;
use common::tls::Certs;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use strom::broker::Limits;
use strom::client::{Client, ConnectOptions};
use strom::server::{Acl, ServeOptions, Tokens};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const UNKNOWN_TOPIC_ID: i16 = 100;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

const ACL: &str = "\
writer  write  topic:orders
reader  read   topic:orders group:billing
ops     all    topic:* group:*
";

/// Tokens for each name (each token is its name, twice), in `dir/tokens`.
fn write_tokens(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let file = dir.join("tokens");
    common::principals::write_tokens(&file, names);
    file
}

/// A server with Kafka's listener, tokens for `writer`, `reader`, `ops` and
/// `nobody`, and `ACL` (reloadable through the returned handles); topics `orders` and
/// `secret` made by `ops` over gRPC.
async fn server(dir: &Path, silent: Duration) -> (TestServer, Tokens, Acl) {
    let tokens = Tokens::load(&write_tokens(dir, &["writer", "reader", "ops", "nobody"])).unwrap();
    std::fs::write(dir.join("acl"), ACL).unwrap();
    let acl = Acl::load(&dir.join("acl")).unwrap();
    let options = ServeOptions {
        tokens: Some(tokens.clone()),
        acl: Some(acl.clone()),
        silent_client_timeout: silent,
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(&dir.join("data"), Limits::default(), options).await;
    let ops = as_principal(&server, "ops").await;
    for topic in ["orders", "secret"] {
        ops.admin()
            .create_topic(topic, 1, Default::default())
            .await
            .unwrap();
    }
    (server, tokens, acl)
}

/// A Kafka connection authenticated as `who`.
async fn kafka_as(server: &TestServer, who: &str) -> KafkaConn {
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    assert_eq!(conn.authenticate(who, &format!("{who}{who}")).await, 0);
    conn
}

fn one_record() -> Bytes {
    batch(&[record(None, Some(b"v"), &[])], Compression::None)
}

/// The error code of the one partition of a produce of one record.
async fn produce_code(conn: &mut KafkaConn, topic: &str) -> (i16, i64) {
    let response = conn
        .call(&produce(topic, &[(0, Some(one_record()))], 1), 9)
        .await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.log_start_offset)
}

fn metadata(topics: Option<&[&str]>) -> MetadataRequest {
    let mut request = MetadataRequest::default();
    request.topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(name(n));
                t
            })
            .collect()
    });
    request
}

fn group(name: &str) -> GroupId {
    StrBytes::from_string(name.to_string()).into()
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_with_a_token_comes_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let (server, tokens, _acl) = server(dir.path(), Duration::from_secs(1)).await;
    let addr = server.kafka.unwrap();

    // ApiVersions is answered (it lists the SASL requests); nothing else is.
    let mut conn = KafkaConn::connect(addr).await;
    let versions = conn.call(&ApiVersionsRequest::default(), 3).await;
    for key in [17, 36] {
        assert!(versions.api_keys.iter().any(|k| k.api_key == key), "{key}");
    }
    conn.send(&metadata(None), 12).await;
    assert!(conn.closed().await, "Metadata before authentication");

    // A mechanism strom does not take is refused, naming those it takes.
    let mut conn = KafkaConn::connect(addr).await;
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_static_str("GSSAPI");
    let answer = conn.call(&handshake, 1).await;
    assert_eq!(answer.error_code, UNSUPPORTED_SASL_MECHANISM);
    let taken = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].map(StrBytes::from_static_str);
    assert_eq!(answer.mechanisms, taken);

    // A wrong token, and a right token under another name, are refused and closed.
    for (user, password) in [("writer", "nope"), ("reader", "writerwriter")] {
        let mut conn = KafkaConn::connect(addr).await;
        assert_eq!(
            conn.authenticate(user, password).await,
            SASL_AUTHENTICATION_FAILED
        );
        assert!(conn.closed().await, "{user}");
    }

    // Before authentication, frames are small: an ApiVersions of 70 KB (which would be
    // charged to the produce budget) closes the connection unanswered.
    let mut conn = KafkaConn::connect(addr).await;
    let mut large = ApiVersionsRequest::default();
    large.client_software_name = StrBytes::from_string("x".repeat(70_000));
    let _ = conn.try_send(&large, 3).await;
    assert!(conn.closed().await, "a large frame before authentication");

    // A connection that does not authenticate within silent_client_timeout is closed.
    let mut conn = KafkaConn::connect(addr).await;
    conn.call(&ApiVersionsRequest::default(), 3).await;
    let started = std::time::Instant::now();
    assert!(conn.closed().await);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Authenticated in version 0 of SaslAuthenticate too, then served.
    let mut conn = KafkaConn::connect(addr).await;
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_static_str("PLAIN");
    assert_eq!(conn.call(&handshake, 1).await.error_code, 0);
    let mut authenticate = SaslAuthenticateRequest::default();
    authenticate.auth_bytes = Bytes::from_static(b"\0writer\0writerwriter");
    assert_eq!(conn.call(&authenticate, 0).await.error_code, 0);
    assert_eq!(produce_code(&mut conn, "orders").await.0, 0);
    // A second authentication on it is out of turn.
    conn.send(&handshake, 1).await;
    assert!(conn.closed().await, "a second handshake");

    // Revoking the token (the file read again, as SIGHUP does) ends the connections
    // it opened at their next request; the other names' connections go on.
    // A connection that sends nothing more is closed at the reload itself.
    let mut writer = kafka_as(&server, "writer").await;
    let mut reader = kafka_as(&server, "reader").await;
    assert_eq!(produce_code(&mut writer, "orders").await.0, 0);
    write_tokens(dir.path(), &["reader", "ops"]);
    tokens.reload().unwrap();
    assert!(writer.closed().await, "a revoked token's idle connection");
    let response = reader.call(&fetch("orders", 0, 0, 0), 12).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(records_of(p.records.clone().unwrap()).len(), 2);
    let mut again = KafkaConn::connect(addr).await;
    assert_eq!(
        again.authenticate("writer", "writerwriter").await,
        SASL_AUTHENTICATION_FAILED
    );

    // A fetch already waiting when its token is revoked does not deliver what it
    // waited for: the connection closes instead of answering.
    reader.send(&fetch("orders", 0, 2, 5_000), 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_tokens(dir.path(), &["ops"]);
    tokens.reload().unwrap();
    let mut ops = kafka_as(&server, "ops").await;
    assert_eq!(produce_code(&mut ops, "orders").await.0, 0);
    assert!(reader.closed().await, "a long poll of a revoked token");
    server.stop().await.unwrap();
}

/// Connections that have not authenticated hold at most a quarter of
/// `max_connections`, and no longer than the authentication deadline, even while the
/// server waits to write them answers they do not read.
#[tokio::test(flavor = "multi_thread")]
async fn strangers_hold_a_share_of_the_places_for_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::load(&write_tokens(dir.path(), &["ops"])).unwrap();
    let options = ServeOptions {
        tokens: Some(tokens),
        max_connections: 8,
        silent_client_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    };
    let server =
        TestServer::start_with_kafka(&dir.path().join("data"), Limits::default(), options).await;
    let addr = server.kafka.unwrap();

    // A stranger that sends requests and reads no answer is closed at the deadline,
    // not after the 30 s a client has to read an answer: its writes fail by then.
    let mut flood = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut frames = Vec::new();
    for correlation in 0..10_000i32 {
        let body = [
            &18i16.to_be_bytes()[..],
            &0i16.to_be_bytes(),
            &correlation.to_be_bytes(),
            &[0, 0],
        ]
        .concat();
        frames.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frames.extend_from_slice(&body);
    }
    let started = std::time::Instant::now();
    let flooding = async {
        loop {
            if flood.write_all(&frames).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), flooding)
        .await
        .expect("the stranger is closed at its deadline");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Two strangers (a quarter of 8) hold their places; a third is closed at once,
    // and a gRPC client still connects.
    let _silent: Vec<_> =
        futures_util::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = KafkaConn::connect(addr).await;
    let started = std::time::Instant::now();
    assert!(third.closed().await);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "closed at once"
    );
    let ops = as_principal(&server, "ops").await;
    ops.admin().list_topics().await.unwrap();
    // Once they are gone (closed at their deadline), strangers are let in again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut again = KafkaConn::connect(addr).await;
    assert_eq!(again.authenticate("ops", "opsops").await, 0);
    let refused = r#"strom_connections_refused_total{reason="unauthenticated"}"#;
    assert_eq!(server.metric(refused).await, 1.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_acl_decides_each_kafka_request() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _tokens, acl) = server(dir.path(), Duration::from_secs(10)).await;
    let mut writer = kafka_as(&server, "writer").await;
    let mut reader = kafka_as(&server, "reader").await;
    let mut nobody = kafka_as(&server, "nobody").await;

    // Produce: write on the topic. A refused partition tells nothing of the topic.
    assert_eq!(produce_code(&mut writer, "orders").await, (0, 0));
    assert_eq!(
        produce_code(&mut writer, "secret").await,
        (TOPIC_AUTHORIZATION_FAILED, -1)
    );
    assert_eq!(
        produce_code(&mut reader, "orders").await.0,
        TOPIC_AUTHORIZATION_FAILED
    );
    // Refused first, whatever else is wrong: an invalid acks tells a caller without a
    // grant nothing of the topic (no log start offset).
    let invalid_acks = produce("secret", &[(0, Some(one_record()))], 2);
    let answer = reader.call(&invalid_acks, 9).await;
    let p = &answer.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.log_start_offset),
        (TOPIC_AUTHORIZATION_FAILED, -1)
    );
    let ops = as_principal(&server, "ops").await;
    let secret = ops.admin().describe_topic("secret").await.unwrap();
    assert_eq!(secret.partitions[0].high_watermark, 0, "nothing written");

    // Fetch: read on the topic.
    let fetched = writer.call(&fetch("orders", 0, 0, 0), 12).await;
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark),
        (TOPIC_AUTHORIZATION_FAILED, -1)
    );
    let fetched = reader.call(&fetch("orders", 0, 0, 0), 4).await;
    assert_eq!(fetched.responses[0].partitions[0].error_code, 0);

    // ListOffsets: any operation on the topic.
    let listed = reader.call(&list_offsets("orders", 0, -1), 6).await;
    assert_eq!(listed.topics[0].partitions[0].offset, 1);
    let listed = reader.call(&list_offsets("secret", 0, -1), 1).await;
    let p = &listed.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (TOPIC_AUTHORIZATION_FAILED, -1));

    // Metadata: all topics lists only those with a grant; a named one without is
    // refused whether or not it exists.
    for version in [0, 12] {
        let all = writer.call(&metadata(None), version).await;
        let names: Vec<_> = all
            .topics
            .iter()
            .map(|t| t.name.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(names, ["orders"], "v{version}");
    }
    let named = writer
        .call(&metadata(Some(&["secret", "missing", "orders"])), 9)
        .await;
    let codes: Vec<_> = named
        .topics
        .iter()
        .map(|t| (t.error_code, t.partitions.len()))
        .collect();
    assert_eq!(
        codes,
        [
            (TOPIC_AUTHORIZATION_FAILED, 0),
            (TOPIC_AUTHORIZATION_FAILED, 0),
            (0, 1)
        ]
    );

    // InitProducerId: write on some topic.
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    assert_eq!(writer.call(&init, 4).await.error_code, 0);
    assert_eq!(
        reader.call(&init, 0).await.error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );

    // Groups: any operation to find one, read to be in one.
    let mut find = FindCoordinatorRequest::default();
    find.key = StrBytes::from_static_str("billing");
    assert_eq!(reader.call(&find, 3).await.error_code, 0);
    find.key = StrBytes::from_static_str("other");
    assert_eq!(
        reader.call(&find, 1).await.error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    let mut join = JoinGroupRequest::default();
    join.group_id = group("other");
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = StrBytes::from_static_str("consumer");
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = StrBytes::from_static_str("range");
    join.protocols.push(protocol);
    assert_eq!(
        reader.call(&join, 7).await.error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    let mut heartbeat = HeartbeatRequest::default();
    heartbeat.group_id = group("other");
    assert_eq!(
        reader.call(&heartbeat, 4).await.error_code,
        GROUP_AUTHORIZATION_FAILED
    );

    // OffsetCommit: read on the group and each topic; the topics granted are
    // committed, the others refused.
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = group("billing");
    commit.generation_id_or_member_epoch = -1;
    for topic in ["orders", "secret"] {
        let mut p = OffsetCommitRequestPartition::default();
        p.committed_offset = 1;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = name(topic);
        t.partitions.push(p);
        commit.topics.push(t);
    }
    let committed = reader.call(&commit, 8).await;
    let codes: Vec<_> = committed
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(codes, [0, TOPIC_AUTHORIZATION_FAILED]);
    let committed = nobody.call(&commit, 2).await;
    assert!(committed
        .topics
        .iter()
        .all(|t| t.partitions[0].error_code == GROUP_AUTHORIZATION_FAILED));
    let described = ops.describe_group("billing").await.unwrap();
    let offsets: Vec<_> = described
        .offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.committed))
        .collect();
    assert_eq!(offsets, [("orders", 1)]);

    // OffsetFetch: any operation on the group; all topics shows only those granted.
    // ops commits to `secret` too, which the reader must not see.
    let mut kafka_ops = kafka_as(&server, "ops").await;
    assert_eq!(produce_code(&mut kafka_ops, "secret").await.0, 0);
    assert!(kafka_ops
        .call(&commit, 8)
        .await
        .topics
        .iter()
        .all(|t| t.partitions[0].error_code == 0));
    let mut fetch_all = OffsetFetchRequest::default();
    fetch_all.group_id = group("billing");
    fetch_all.topics = None;
    let fetched = reader.call(&fetch_all, 7).await;
    let names: Vec<_> = fetched.topics.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["orders"]);
    let fetched = nobody.call(&fetch_all, 7).await;
    assert_eq!(fetched.error_code, GROUP_AUTHORIZATION_FAILED);

    // The groups' administration: listed, those with a grant; described, any grant;
    // deleted, admin.
    let mut other = commit.clone();
    other.group_id = group("other");
    assert!(kafka_ops
        .call(&other, 8)
        .await
        .topics
        .iter()
        .all(|t| t.partitions[0].error_code == 0));
    // A Kafka member in "hidden", which the reader has no grant on.
    let mut hidden = join.clone();
    hidden.group_id = group("hidden");
    assert_eq!(kafka_ops.call(&hidden, 3).await.error_code, 0);
    let listed = reader.call(&ListGroupsRequest::default(), 4).await;
    let names: Vec<_> = listed
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect();
    assert_eq!(names, ["billing"]);
    assert_eq!(
        kafka_ops
            .call(&ListGroupsRequest::default(), 4)
            .await
            .groups
            .len(),
        3
    );
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group("billing"), group("other")];
    let described = reader.call(&describe, 5).await;
    let codes: Vec<_> = described.groups.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, [0, GROUP_AUTHORIZATION_FAILED]);
    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![group("billing")];
    let deleted = reader.call(&delete, 2).await;
    assert_eq!(deleted.results[0].error_code, GROUP_AUTHORIZATION_FAILED);
    // OffsetDelete: admin on the group, and read on each topic.
    let mut forget = OffsetDeleteRequest::default();
    forget.group_id = group("billing");
    let mut topic = OffsetDeleteRequestTopic::default();
    topic.name = name("orders");
    topic
        .partitions
        .push(OffsetDeleteRequestPartition::default());
    forget.topics.push(topic);
    assert_eq!(
        reader.call(&forget, 0).await.error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    let forgot = kafka_ops.call(&forget, 0).await;
    assert_eq!(
        (forgot.error_code, forgot.topics[0].partitions[0].error_code),
        (0, 0)
    );

    // CreateTopics and DeleteTopics: admin on the topic; a topic refused by id is not
    // named in the answer.
    let mut create = CreateTopicsRequest::default();
    let mut new = CreatableTopic::default();
    new.name = name("made");
    new.num_partitions = 1;
    new.replication_factor = -1;
    create.topics.push(new);
    let created = writer.call(&create, 7).await;
    assert_eq!(created.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let created = kafka_ops.call(&create, 7).await;
    assert_eq!(created.topics[0].error_code, 0);
    let orders_id = ops.admin().describe_topic("orders").await.unwrap().id;
    let mut delete = DeleteTopicsRequest::default();
    let mut by_id = DeleteTopicState::default();
    by_id.name = None;
    by_id.topic_id = uuid::Uuid::parse_str(&orders_id).unwrap();
    delete.topics.push(by_id);
    let mut by_name = DeleteTopicState::default();
    by_name.name = Some(name("made"));
    delete.topics.push(by_name);
    let deleted = writer.call(&delete, 6).await;
    let answers: Vec<_> = deleted
        .responses
        .iter()
        .map(|r| (r.name.as_ref().map(|n| n.to_string()), r.error_code))
        .collect();
    assert_eq!(
        answers,
        [
            (None, TOPIC_AUTHORIZATION_FAILED),
            (Some("made".into()), TOPIC_AUTHORIZATION_FAILED)
        ]
    );
    // A caller without any grant on the topic learns nothing of its id.
    let mut only_id = delete.clone();
    only_id.topics.truncate(1);
    let deleted = nobody.call(&only_id, 6).await;
    assert_eq!(deleted.responses[0].error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(
        ops.admin().list_topics().await.unwrap(),
        ["made", "orders", "secret"]
    );

    // CreatePartitions: admin on the topic.
    let mut grow = CreatePartitionsRequest::default();
    let mut more = CreatePartitionsTopic::default();
    more.name = name("made");
    more.count = 2;
    more.assignments = None;
    grow.topics.push(more);
    let grown = writer.call(&grow, 3).await;
    assert_eq!(grown.results[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(kafka_ops.call(&grow, 3).await.results[0].error_code, 0);

    // DeleteRecords: admin on the topic.
    let mut trim = DeleteRecordsRequest::default();
    let mut topic = DeleteRecordsTopic::default();
    topic.name = name("made");
    let mut partition = DeleteRecordsPartition::default();
    partition.offset = -1;
    topic.partitions.push(partition);
    trim.topics.push(topic);
    let trimmed = writer.call(&trim, 2).await;
    let code = trimmed.topics[0].partitions[0].error_code;
    assert_eq!(code, TOPIC_AUTHORIZATION_FAILED);
    let trimmed = kafka_ops.call(&trim, 2).await;
    assert_eq!(trimmed.topics[0].partitions[0].error_code, 0);

    // Configs: described with any grant on the topic, altered with admin.
    let mut describe_configs = DescribeConfigsRequest::default();
    for topic in ["orders", "secret"] {
        let mut resource = DescribeConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = StrBytes::from_static_str(topic);
        describe_configs.resources.push(resource);
    }
    let described = reader.call(&describe_configs, 4).await;
    let codes: Vec<_> = described
        .results
        .iter()
        .map(|r| (r.error_code, r.configs.is_empty()))
        .collect();
    assert_eq!(codes, [(0, false), (TOPIC_AUTHORIZATION_FAILED, true)]);
    let mut alter = IncrementalAlterConfigsRequest::default();
    let mut resource = IncrementalResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_static_str("orders");
    let mut change = AlterableConfig::default();
    change.name = StrBytes::from_static_str("retention.ms");
    change.value = Some(StrBytes::from_static_str("1000"));
    resource.configs.push(change);
    alter.resources.push(resource);
    let altered = writer.call(&alter, 1).await;
    assert_eq!(altered.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(kafka_ops.call(&alter, 1).await.responses[0].error_code, 0);

    // A grant taken away holds from the next request, and from the end of a fetch
    // already waiting: records appended while it waits are not sent.
    std::fs::write(dir.path().join("acl"), "writer write topic:orders\n").unwrap();
    let correlation = reader.send(&fetch("orders", 0, 1, 5_000), 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    acl.reload().unwrap();
    assert_eq!(produce_code(&mut writer, "orders").await.0, 0);
    let fetched = reader
        .receive::<kafka_protocol::messages::FetchRequest>(correlation, 12)
        .await;
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(records_of(p.records.clone().unwrap()).is_empty());
    server.stop().await.unwrap();
}

/// With TLS and client certificates and no tokens, the certificate's common name is
/// the caller; a plaintext client and one without a certificate are refused.
#[tokio::test(flavor = "multi_thread")]
async fn tls_and_client_certificates_on_the_kafka_listener() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    std::fs::write(dir.path().join("acl"), "client all topic:*\n").unwrap();
    let options = ServeOptions {
        tls: Some(certs.server(true)),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        silent_client_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let server =
        TestServer::start_with_kafka(&dir.path().join("data"), Limits::default(), options).await;
    let addr = server.kafka.unwrap();
    let tls_client = ConnectOptions {
        tls: Some(certs.client(&certs.ca, Some((&certs.client_cert, &certs.client_key)))),
        token: None,
    };
    Client::connect_with(
        &format!("https://localhost:{}", server.addr.port()),
        tls_client,
    )
    .await
    .unwrap()
    .admin()
    .create_topic("orders", 1, Default::default())
    .await
    .unwrap();

    let read = |path: &Path| std::fs::read(path).unwrap();
    let ca = read(&certs.ca);
    let (cert, key) = (read(&certs.client_cert), read(&certs.client_key));
    let mut client = KafkaConn::connect_tls(addr, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    assert_eq!(produce_code(&mut client, "orders").await.0, 0);
    let fetched = client.call(&fetch("orders", 0, 0, 0), 12).await;
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records_of(records).len(), 1);
    let (cert, key) = (read(&certs.reader_cert), read(&certs.reader_key));
    let mut reader = KafkaConn::connect_tls(addr, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    assert_eq!(
        produce_code(&mut reader, "orders").await.0,
        TOPIC_AUTHORIZATION_FAILED,
        "`reader` has no grant"
    );

    // A large response (12 MB: more than the sockets buffer) over TLS arrives whole to
    // a client that reads it slowly. (The flush after each response, which TLS needs
    // when the socket fills within a write's last 64 KiB, is not forced by this: the
    // test cannot arrange that moment.)
    let values: Vec<Vec<u8>> = (0..1000)
        .map(|i| vec![b'a' + (i % 26) as u8; 1000])
        .collect();
    let records: Vec<_> = values.iter().map(|v| record(None, Some(v), &[])).collect();
    for _ in 0..12 {
        let big = produce(
            "orders",
            &[(0, Some(batch(&records, Compression::None)))],
            1,
        );
        let answer = client.call(&big, 9).await;
        assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);
    }
    let mut large = fetch("orders", 0, 0, 0);
    large.max_bytes = 16 << 20;
    large.topics[0].partitions[0].partition_max_bytes = 16 << 20;
    client.send(&large, 12).await;
    let mut size = [0u8; 4];
    client.stream.read_exact(&mut size).await.unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    let mut filled = 0;
    let slow = async {
        while filled < body.len() {
            let end = (filled + (32 << 10)).min(body.len());
            filled += client.stream.read(&mut body[filled..end]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the whole response arrives");
    let mut body = Bytes::from(body);
    body.advance(4 + 1); // the correlation id, and the header's tags
    let fetched = kafka_protocol::messages::FetchResponse::decode(&mut body, 12).unwrap();
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records_of(records).len(), 12_001);

    // Plaintext to a TLS listener: closed without an answer.
    let mut plain = KafkaConn::connect(addr).await;
    let _ = plain.try_send(&ApiVersionsRequest::default(), 3).await;
    assert!(plain.closed().await, "plaintext");
    // No client certificate, or one from another CA: the handshake fails (TLS 1.3
    // reports it at the first read).
    let (cert, key) = (
        read(&certs.other_client_cert),
        read(&certs.other_client_key),
    );
    for identity in [None, Some((&cert[..], &key[..]))] {
        if let Ok(mut conn) = KafkaConn::connect_tls(addr, &ca, identity).await {
            let _ = conn.try_send(&ApiVersionsRequest::default(), 3).await;
            assert!(conn.closed().await, "{}", identity.is_some());
        }
    }
    server.stop().await.unwrap();
}
