//! Topic administration over Kafka's protocol: CreateTopics, DeleteTopics and
//! CreatePartitions in their oldest and newest versions, what each refuses and with which code, and that the
//! topics are strom's own (seen over gRPC). Kafka's admin clients run against it in
//! `kafka_clients.rs`; the access control list's part is in `kafka_security.rs`.

mod common;

use std::collections::BTreeMap;

use common::kafka::{name, KafkaConn};
use common::server::TestServer;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsRequest, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;
use strom::broker::Limits;
use strom::server::ServeOptions;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// A topic to create: `partitions` (-1 the default), replication factor `replicas`,
/// `configs`.
pub fn topic(
    topic: &str,
    partitions: i32,
    replicas: i16,
    configs: &[(&str, &str)],
) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = replicas;
    for (key, value) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(key.to_string());
        c.value = Some(StrBytes::from_string(value.to_string()));
        t.configs.push(c);
    }
    t
}

fn create(topics: Vec<CreatableTopic>, validate_only: bool) -> CreateTopicsRequest {
    let mut request = CreateTopicsRequest::default();
    request.topics = topics;
    request.timeout_ms = 5_000;
    request.validate_only = validate_only;
    request
}

/// Each topic's (name, code) in a CreateTopics response.
async fn codes(
    conn: &mut KafkaConn,
    request: &CreateTopicsRequest,
    version: i16,
) -> Vec<(String, i16)> {
    let response = conn.call(request, version).await;
    response
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_are_created_and_deleted_over_kafka_in_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_partitions: 8,
        ..Limits::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), limits, ServeOptions::default()).await;
    let client = server.client().await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    // Version 7: the id, partitions, and the topic's config with its source.
    let request = create(
        vec![topic(
            "made",
            3,
            -1,
            &[("retention.ms", "60000"), ("segment.bytes", "")],
        )],
        false,
    );
    let response = conn.call(&request, 7).await;
    let made = &response.topics[0];
    assert_eq!(
        (
            made.error_code,
            made.num_partitions,
            made.replication_factor
        ),
        (0, 3, 1)
    );
    let described = client.admin().describe_topic("made").await.unwrap();
    assert_eq!(made.topic_id.simple().to_string(), described.id);
    assert_eq!(described.partitions.len(), 3);
    assert_eq!(described.config["retention.ms"], "60000");
    let configs = made.configs.as_ref().unwrap();
    let retention = configs.iter().find(|c| &*c.name == "retention.ms").unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.config_source),
        (Some("60000"), 1)
    );
    let segment = configs
        .iter()
        .find(|c| &*c.name == "segment.bytes")
        .unwrap();
    assert_eq!(segment.config_source, 5, "a default (given empty)");

    // Version 2, the oldest; -1 partitions is the default, one; an assignment of each
    // partition to broker 0 alone gives as many partitions.
    let mut assigned = topic("assigned", -1, -1, &[]);
    for index in 0..2 {
        let mut a = CreatableReplicaAssignment::default();
        a.partition_index = index;
        a.broker_ids = vec![BrokerId(0)];
        assigned.assignments.push(a);
    }
    let request = create(vec![topic("default", -1, 1, &[]), assigned.clone()], false);
    assert_eq!(
        codes(&mut conn, &request, 2).await,
        [("default".into(), 0), ("assigned".into(), 0)]
    );
    let partitions = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .admin()
                .describe_topic(name)
                .await
                .unwrap()
                .partitions
                .len()
        }
    };
    assert_eq!(
        (partitions("default").await, partitions("assigned").await),
        (1, 2)
    );

    // Refusals, each its own code, none creating anything.
    let mut elsewhere = topic("elsewhere", -1, -1, &[]);
    let mut a = CreatableReplicaAssignment::default();
    a.broker_ids = vec![BrokerId(1)];
    elsewhere.assignments.push(a);
    let mut both = assigned.clone();
    both.name = name("both");
    both.num_partitions = 2;
    let request = create(
        vec![
            topic("made", 1, -1, &[]),
            topic("a/b", 1, -1, &[]),
            topic("zero", 0, -1, &[]),
            topic("many", 9, -1, &[]),
            topic("replicated", 1, 3, &[]),
            elsewhere,
            both,
            topic("configured", 1, -1, &[("compression.type", "zstd")]),
            topic("bad-value", 1, -1, &[("retention.ms", "soon")]),
            topic("twice", 1, -1, &[]),
            topic("twice", 2, -1, &[]),
        ],
        false,
    );
    let expected: Vec<(String, i16)> = [
        ("made", TOPIC_ALREADY_EXISTS),
        ("a/b", INVALID_TOPIC_EXCEPTION),
        ("zero", INVALID_PARTITIONS),
        ("many", INVALID_PARTITIONS),
        ("replicated", INVALID_REPLICATION_FACTOR),
        ("elsewhere", INVALID_REPLICA_ASSIGNMENT),
        ("both", INVALID_REQUEST),
        ("configured", INVALID_CONFIG),
        ("bad-value", INVALID_CONFIG),
        ("twice", INVALID_REQUEST),
    ]
    .map(|(n, c)| (n.to_string(), c))
    .to_vec();
    assert_eq!(codes(&mut conn, &request, 5).await, expected);
    let response = conn.call(&request, 5).await;
    let message = response.topics[7].error_message.as_deref().unwrap();
    assert!(message.contains("known keys"), "{message}");
    let listed = client.admin().list_topics().await.unwrap();
    assert_eq!(listed, ["assigned", "default", "made"], "nothing else made");

    // validate_only checks and makes nothing.
    let request = create(
        vec![topic("checked", 2, -1, &[]), topic("made", 1, -1, &[])],
        true,
    );
    assert_eq!(
        codes(&mut conn, &request, 4).await,
        [("checked".into(), 0), ("made".into(), TOPIC_ALREADY_EXISTS)]
    );
    assert_eq!(client.admin().list_topics().await.unwrap().len(), 3);

    // DeleteTopics by name (version 1) and by id (version 6); unknown ones refused.
    let mut by_name = DeleteTopicsRequest::default();
    by_name.topic_names = vec![name("default"), name("missing")];
    let deleted = conn.call(&by_name, 1).await;
    let codes: Vec<_> = deleted.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0, UNKNOWN_TOPIC_OR_PARTITION]);
    let mut by_id = DeleteTopicsRequest::default();
    for id in [made.topic_id, uuid::Uuid::new_v4()] {
        let mut state = DeleteTopicState::default();
        state.name = None;
        state.topic_id = id;
        by_id.topics.push(state);
    }
    let mut named = DeleteTopicState::default();
    named.name = Some(name("assigned"));
    by_id.topics.push(named);
    let assigned_id = client.admin().describe_topic("assigned").await.unwrap().id;
    let deleted = conn.call(&by_id, 6).await;
    assert_eq!(
        deleted.responses[2].topic_id.simple().to_string(),
        assigned_id,
        "by name, answered with its id"
    );
    let answers: Vec<_> = deleted
        .responses
        .iter()
        .map(|r| (r.name.as_ref().map(|n| n.to_string()), r.error_code))
        .collect();
    assert_eq!(
        answers,
        [
            (Some("made".into()), 0),
            (None, UNKNOWN_TOPIC_ID),
            (Some("assigned".into()), 0)
        ]
    );
    assert!(client.admin().list_topics().await.unwrap().is_empty());
    server.stop().await.unwrap();
}

/// DescribeConfigs of a topic (and of the broker, empty), IncrementalAlterConfigs
/// setting and deleting keys, AlterConfigs replacing the set; the configs are the
/// topic's own, as gRPC describes them.
#[tokio::test(flavor = "multi_thread")]
async fn topic_configs_are_described_and_altered_over_kafka() {
    use kafka_protocol::messages::alter_configs_request::{
        AlterConfigsRequest, AlterConfigsResource, AlterableConfig as Replacing,
    };
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource as IncrementalResource, AlterableConfig,
        IncrementalAlterConfigsRequest,
    };

    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client().await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let request = create(
        vec![topic("conf", 1, -1, &[("retention.ms", "60000")])],
        false,
    );
    assert_eq!(codes(&mut conn, &request, 7).await[0].1, 0);

    for version in [1, 4] {
        let all = configs(&mut conn, version).await;
        assert_eq!(
            all["retention.ms"],
            ("60000".into(), 1),
            "set for the topic"
        );
        assert_eq!(all["cleanup.policy"], ("delete".into(), 5), "a default");
        assert_eq!(all.len(), 11, "every key strom has");
    }
    let one = conn
        .call(&describe(2, "conf", Some(&["segment.ms"])), 4)
        .await;
    assert_eq!(one.results[0].configs.len(), 1);
    // A resource named twice is answered once.
    let mut twice = describe(2, "conf", None);
    twice.resources.push(twice.resources[0].clone());
    assert_eq!(conn.call(&twice, 4).await.results.len(), 1);
    let missing = conn.call(&describe(2, "missing", None), 4).await;
    assert_eq!(missing.results[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let node = conn.call(&describe(4, "0", None), 4).await;
    assert_eq!(
        (node.results[0].error_code, node.results[0].configs.len()),
        (0, 0)
    );

    // Incremental: SET one key, DELETE (back to the default) another.
    let incremental = |changes: &[(&str, i8, Option<&str>)], validate_only: bool| {
        let mut resource = IncrementalResource::default();
        resource.resource_type = 2;
        resource.resource_name = StrBytes::from_static_str("conf");
        for (key, operation, value) in changes {
            let mut config = AlterableConfig::default();
            config.name = StrBytes::from_string(key.to_string());
            config.config_operation = *operation;
            config.value = value.map(|v| StrBytes::from_string(v.to_string()));
            resource.configs.push(config);
        }
        let mut request = IncrementalAlterConfigsRequest::default();
        request.resources.push(resource);
        request.validate_only = validate_only;
        request
    };
    let set_and_delete = incremental(
        &[
            ("cleanup.policy", 0, Some("compact")),
            ("retention.ms", 1, None),
        ],
        false,
    );
    let answer = conn.call(&set_and_delete, 1).await;
    assert_eq!(answer.responses[0].error_code, 0);
    let all = configs(&mut conn, 4).await;
    assert_eq!(all["cleanup.policy"], ("compact".into(), 1));
    assert_eq!(all["retention.ms"].1, 5, "back to the default");
    let described = client.admin().describe_topic("conf").await.unwrap();
    assert_eq!(
        described.config["cleanup.policy"], "compact",
        "the topic's own"
    );
    // Refused: APPEND, a key strom does not have, a bad value, a key given twice;
    // validate_only changes nothing.
    for (changes, code) in [
        (
            vec![("segment.ms", 0, Some("1000")), ("segment.ms", 1, None)],
            INVALID_REQUEST,
        ),
        (vec![("cleanup.policy", 2, Some("delete"))], INVALID_CONFIG),
        (vec![("compression.type", 0, Some("zstd"))], INVALID_CONFIG),
        (vec![("retention.ms", 0, Some("soon"))], INVALID_CONFIG),
        (vec![("segment.ms", 0, Some("1000"))], 0),
    ] {
        let answer = conn.call(&incremental(&changes, true), 0).await;
        assert_eq!(answer.responses[0].error_code, code, "{changes:?}");
    }
    assert_eq!(
        configs(&mut conn, 4).await["segment.ms"].1,
        5,
        "validated, not set"
    );

    // AlterConfigs replaces the set: cleanup.policy, not given, goes back.
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_static_str("conf");
    let mut config = Replacing::default();
    config.name = StrBytes::from_static_str("retention.ms");
    config.value = Some(StrBytes::from_static_str("1000"));
    resource.configs.push(config);
    let mut replace = AlterConfigsRequest::default();
    replace.resources.push(resource);
    let answer = conn.call(&replace, 2).await;
    assert_eq!(answer.responses[0].error_code, 0);
    let all = configs(&mut conn, 1).await;
    assert_eq!(all["retention.ms"], ("1000".into(), 1));
    assert_eq!(all["cleanup.policy"], ("delete".into(), 5));
    server.stop().await.unwrap();
}

/// A DescribeConfigs of one resource (2 a topic, 4 a broker), of `keys` or all.
fn describe(kind: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsRequest {
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = kind;
    resource.resource_name = StrBytes::from_string(name.to_string());
    resource.configuration_keys = keys.map(|keys| {
        keys.iter()
            .map(|k| StrBytes::from_string(k.to_string()))
            .collect()
    });
    let mut request = DescribeConfigsRequest::default();
    request.resources.push(resource);
    request
}

/// Topic `conf`'s configs as DescribeConfigs gives them: key, (value, source).
async fn configs(conn: &mut KafkaConn, version: i16) -> BTreeMap<String, (String, i8)> {
    let response = conn.call(&describe(2, "conf", None), version).await;
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    result
        .configs
        .iter()
        .map(|c| {
            let value = c.value.as_deref().unwrap_or_default().to_string();
            (c.name.to_string(), (value, c.config_source))
        })
        .collect()
}

/// A topic deleted by id is that topic: one deleted and made again under its name
/// since its id was looked up (DeleteTopics by id looks ids up before it deletes) is
/// left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_by_id_leaves_a_topic_made_again_under_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        std::sync::Arc::new(strom::broker::Broker::open(dir.path(), Limits::default()).unwrap());
    let none = BTreeMap::new();
    let old = broker.create_topic("x", 1, &none).await.unwrap().id;
    broker.delete_topic("x").await.unwrap();
    let new = broker.create_topic("x", 1, &none).await.unwrap().id;
    let refused = broker.delete_topic_of("x", Some(&old)).await.unwrap_err();
    assert!(
        matches!(refused, strom::Error::TopicNotFound { .. }),
        "{refused}"
    );
    assert_eq!(broker.topic("x").unwrap().id, new, "the new topic stays");
    broker.delete_topic_of("x", Some(&new)).await.unwrap();
    assert!(broker.topic("x").is_err());
}

/// Each topic's (name, code) in a CreatePartitions response.
async fn answer(
    conn: &mut KafkaConn,
    request: CreatePartitionsRequest,
    version: i16,
) -> Vec<(String, i16)> {
    let response = conn.call(&request, version).await;
    let results = response.results.iter();
    results
        .map(|r| (r.name.to_string(), r.error_code))
        .collect()
}

/// CreatePartitions, version 0 and 3: a topic grows to the count asked (seen over
/// gRPC and in Metadata); a count not above the topic's, an assignment to another
/// broker, a topic named twice and an unknown topic are each refused with Kafka's code;
/// validate_only changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_added_over_kafka_and_refused_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_partitions: 8,
        ..Limits::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), limits, ServeOptions::default()).await;
    let client = server.client_with_topic("t", 2).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let more = |topic: &str, count: i32, brokers: Option<Vec<i32>>| {
        let mut t = CreatePartitionsTopic::default();
        t.name = name(topic);
        t.count = count;
        t.assignments = brokers.map(|brokers| {
            brokers
                .into_iter()
                .map(|b| {
                    let mut a = CreatePartitionsAssignment::default();
                    a.broker_ids = vec![BrokerId(b)];
                    a
                })
                .collect()
        });
        t
    };
    let request = |topics: Vec<CreatePartitionsTopic>, validate_only: bool| {
        let mut r = CreatePartitionsRequest::default();
        r.topics = topics;
        r.timeout_ms = 5_000;
        r.validate_only = validate_only;
        r
    };
    let partitions = || {
        let client = client.clone();
        async move {
            client
                .admin()
                .describe_topic("t")
                .await
                .unwrap()
                .partitions
                .len()
        }
    };
    let conn = &mut conn;

    let checked = answer(conn, request(vec![more("t", 3, None)], true), 3).await;
    assert_eq!(checked, [("t".into(), 0)]);
    assert_eq!(partitions().await, 2, "validate_only changes nothing");
    let grown = answer(conn, request(vec![more("t", 3, None)], false), 0).await;
    assert_eq!(grown, [("t".into(), 0)]);
    assert_eq!(partitions().await, 3);
    // An assignment of each new partition to broker 0 alone; to another, refused.
    let assigned = answer(
        conn,
        request(vec![more("t", 5, Some(vec![0, 0]))], false),
        3,
    )
    .await;
    assert_eq!(assigned, [("t".into(), 0)]);
    assert_eq!(partitions().await, 5);
    let elsewhere = answer(conn, request(vec![more("t", 6, Some(vec![1]))], false), 3).await;
    assert_eq!(elsewhere, [("t".into(), INVALID_REPLICA_ASSIGNMENT)]);
    let short = answer(conn, request(vec![more("t", 7, Some(vec![0]))], false), 3).await;
    assert_eq!(short, [("t".into(), INVALID_REPLICA_ASSIGNMENT)]);
    for count in [5, 4, 0, -1, 9] {
        let refused = answer(conn, request(vec![more("t", count, None)], false), 3).await;
        assert_eq!(refused, [("t".into(), INVALID_PARTITIONS)], "count {count}");
    }
    let twice = answer(
        conn,
        request(vec![more("t", 6, None), more("t", 7, None)], false),
        3,
    )
    .await;
    assert_eq!(twice, [("t".into(), INVALID_REQUEST)]);
    let unknown = answer(conn, request(vec![more("nope", 6, None)], false), 3).await;
    assert_eq!(unknown, [("nope".into(), UNKNOWN_TOPIC_OR_PARTITION)]);
    assert_eq!(partitions().await, 5);

    // Adds to the same count at once: one adds, the others are refused, as Kafka
    // (eight, and a count that takes a while to make, so that some pass the first
    // check while the first add runs).
    let same = request(vec![more("t", 7, None)], false);
    let answers = (0..8).map(|_| {
        let same = same.clone();
        let addr = server.kafka.unwrap();
        tokio::spawn(async move {
            let mut c = KafkaConn::connect(addr).await;
            c.call(&same, 3).await.results[0].error_code
        })
    });
    let mut codes: Vec<i16> = futures_util::future::join_all(answers)
        .await
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [0].into_iter()
            .chain([INVALID_PARTITIONS; 7])
            .collect::<Vec<_>>()
    );
    assert_eq!(partitions().await, 7);

    // Metadata shows the new partitions; they take records.
    let mut metadata = kafka_protocol::messages::MetadataRequest::default();
    let mut asked = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    asked.name = Some(name("t"));
    metadata.topics = Some(vec![asked]);
    let described = conn.call(&metadata, 12).await;
    assert_eq!(described.topics[0].partitions.len(), 7);
    let record = common::kafka::record(None, Some(b"four"), &[]);
    let batch = common::kafka::batch(&[record], kafka_protocol::records::Compression::None);
    let produced = conn
        .call(&common::kafka::produce("t", &[(4, Some(batch))], -1), 9)
        .await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    server.stop().await.unwrap();
}
