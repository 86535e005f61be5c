//! `strom serve` killed with SIGKILL while Kafka producers send with acks=all: after
//! each restart, every record whose produce was answered is there, at the offset the
//! answer gave, with its value. (The Kafka path appends as gRPC does; this checks that
//! its acknowledgement waits for the disk.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cli::Serve;
use common::kafka::{batch, record, records_of, KafkaConn};
use common::{env_or, free_addr};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

fn produce(value: &str) -> ProduceRequest {
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(batch(
        &[record(None, Some(value.as_bytes()), &[])],
        Compression::None,
    ));
    let mut t = TopicProduceData::default();
    t.name = StrBytes::from_static_str("crash").into();
    t.partition_data.push(p);
    request.topic_data.push(t);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_acknowledged_with_acks_all_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, kafka) = (free_addr(), free_addr());
    let args = ["--kafka-listen", kafka.as_str()];
    let mut serve = Serve::start_at_with_args(dir.path(), &grpc, &args);
    let client = strom::client::Client::connect(&grpc).await.unwrap();
    client
        .admin()
        .create_topic("crash", 1, Default::default())
        .await
        .unwrap();
    // Offset -> value, of every produce answered without an error.
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    for round in 0..env_or("STROM_KAFKA_KILLS", 3) {
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let kafka = kafka.parse().unwrap();
                tokio::spawn(async move {
                    let mut conn = KafkaConn::connect(kafka).await;
                    let mut answered = Vec::new();
                    for i in 0.. {
                        let value = format!("r{round}-p{p}-{i}");
                        let Some(correlation) = conn.try_send(&produce(&value), 9).await else {
                            break; // killed
                        };
                        let Some(mut frame) = conn.read_frame().await else {
                            break; // killed
                        };
                        use bytes::Buf;
                        assert_eq!(frame.get_i32(), correlation);
                        frame.advance(1); // the flexible header's tags
                        let response = <kafka_protocol::messages::ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut frame, 9).unwrap();
                        let part = &response.responses[0].partition_responses[0];
                        if part.error_code == 0 {
                            answered.push((part.base_offset, value));
                        }
                    }
                    answered
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + 100 * round)).await;
        serve.child.kill().unwrap(); // SIGKILL
        serve.child.wait().unwrap();
        for producer in producers {
            for (offset, value) in producer.await.unwrap() {
                assert!(
                    acked.insert(offset, value).is_none(),
                    "offset {offset} answered twice"
                );
            }
        }
        serve = Serve::start_at_with_args(dir.path(), &grpc, &args);
        // Every acknowledged record, read back over Kafka.
        let mut conn = KafkaConn::connect(kafka.parse().unwrap()).await;
        let mut found: BTreeMap<i64, String> = BTreeMap::new();
        let mut next = 0;
        loop {
            let mut request = FetchRequest::default();
            let mut p = FetchPartition::default();
            p.fetch_offset = next;
            p.partition_max_bytes = 1 << 20;
            let mut t = FetchTopic::default();
            t.topic = StrBytes::from_static_str("crash").into();
            t.partitions.push(p);
            request.topics.push(t);
            let response = conn.call(&request, 12).await;
            let records = records_of(response.responses[0].partitions[0].records.clone().unwrap());
            if records.is_empty() {
                break;
            }
            for r in records {
                next = r.offset + 1;
                found.insert(
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                );
            }
        }
        for (offset, value) in &acked {
            assert_eq!(
                found.get(offset),
                Some(value),
                "round {round}: acknowledged offset {offset} lost"
            );
        }
        assert!(!acked.is_empty());
    }
    drop(serve);
}
