//! Kafka's DeleteRecords against the real server, in its oldest and newest versions:
//! a partition's log start moves to the offset asked (or the high watermark for -1),
//! Fetch and ListOffsets see it (and gRPC), the start survives a restart, and each
//! refusal has Kafka's code. Kafka's admin clients call it in `kafka_clients.py`.

mod common;

use common::kafka::{fetch, list_offsets, name, KafkaConn};
use common::server::TestServer;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
};
use strom::broker::Limits;
use strom::server::ServeOptions;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn delete(topic: &str, partitions: &[(i32, i64)]) -> DeleteRecordsRequest {
    let mut request = DeleteRecordsRequest::default();
    let mut t = DeleteRecordsTopic::default();
    t.name = name(topic);
    for &(index, offset) in partitions {
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = index;
        p.offset = offset;
        t.partitions.push(p);
    }
    request.topics.push(t);
    request.timeout_ms = 30_000;
    request
}

/// Each partition's (index, low watermark, code).
async fn deleted(
    conn: &mut KafkaConn,
    request: &DeleteRecordsRequest,
    version: i16,
) -> Vec<(i32, i64, i16)> {
    let response = conn.call(request, version).await;
    let partitions = response.topics.iter().flat_map(|t| &t.partitions);
    partitions
        .map(|p| (p.partition_index, p.low_watermark, p.error_code))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_deleted_over_kafka_and_refused_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let options = || ServeOptions::default();
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options()).await;
    let client = server.client_with_topic("clicks", 2).await;
    let records = (0..10)
        .map(|i| common::requests::record(&i.to_string()))
        .collect();
    let produce = common::requests::produce("clicks", Some(0), records);
    client.log().produce(produce).await.unwrap();
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    // Version 0: the first four go; version 2 (flexible): up to the end.
    let answer = deleted(&mut conn, &delete("clicks", &[(0, 4)]), 0).await;
    assert_eq!(answer, [(0, 4, 0)]);
    let fetched = conn.call(&fetch("clicks", 0, 0, 0), 4).await;
    assert_eq!(
        fetched.responses[0].partitions[0].error_code, OFFSET_OUT_OF_RANGE,
        "offset 0 is gone"
    );
    let earliest = conn.call(&list_offsets("clicks", 0, -2), 1).await;
    assert_eq!(earliest.topics[0].partitions[0].offset, 4);
    // An offset below the start changes nothing; -1 is the high watermark.
    let answer = deleted(&mut conn, &delete("clicks", &[(0, 2), (0, -1)]), 2).await;
    assert_eq!(answer, [(0, 4, 0), (0, 10, 0)]);

    // Refusals, each partition with its own code.
    let refused = delete("clicks", &[(1, 1), (0, -2), (7, 0), (-1, 0)]);
    let answer = deleted(&mut conn, &refused, 2).await;
    assert_eq!(
        answer,
        [
            (1, -1, OFFSET_OUT_OF_RANGE), // past the high watermark (0)
            (0, -1, OFFSET_OUT_OF_RANGE),
            (7, -1, UNKNOWN_TOPIC_OR_PARTITION),
            (-1, -1, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    let answer = deleted(&mut conn, &delete("nowhere", &[(0, 0)]), 1).await;
    assert_eq!(answer, [(0, -1, UNKNOWN_TOPIC_OR_PARTITION)]);

    // gRPC sees the start, and it survives a restart.
    let described = client.admin().describe_topic("clicks").await.unwrap();
    assert_eq!(described.partitions[0].log_start_offset, 10);
    server.stop().await.unwrap();
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options()).await;
    let client = server.client().await;
    let described = client.admin().describe_topic("clicks").await.unwrap();
    assert_eq!(described.partitions[0].log_start_offset, 10);
    server.stop().await.unwrap();
}
