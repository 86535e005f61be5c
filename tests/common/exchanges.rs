//! What the exchange tests share: topics made, records read back, publishes sent.

use bytes::Bytes;
use strom::client::{Client, Consumer, Exchanges, Start};
use strom::grpc::pb;

use super::requests::{config, record};

pub async fn topic(client: &Client, name: &str, partitions: u32, pairs: &[(&str, &str)]) {
    client
        .admin()
        .create_topic(name, partitions, config(pairs))
        .await
        .unwrap();
}

/// Every record of every partition of `topic`, as (partition, key, value, headers).
pub async fn records(client: &Client, topic: &str) -> Vec<(u32, Option<Bytes>, Bytes, usize)> {
    let partitions = client
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions
        .len() as u32;
    let mut all = Vec::new();
    for partition in 0..partitions {
        let mut consumer = Consumer::new(client, topic, partition, Start::Earliest)
            .await
            .unwrap();
        loop {
            let batch = consumer.poll(std::time::Duration::ZERO).await.unwrap();
            if batch.is_empty() {
                break;
            }
            all.extend(
                batch
                    .into_iter()
                    .map(|r| (r.partition, r.key, r.value, r.headers.len())),
            );
        }
    }
    all
}

pub fn keyed(key: &str, value: &str) -> pb::Record {
    pb::Record {
        key: Some(Bytes::from(key.to_string())),
        headers: vec![pb::Header {
            name: "h".into(),
            value: Bytes::from_static(b"v"),
        }],
        ..record(value)
    }
}

pub fn topics(published: &pb::PublishResponse) -> Vec<&str> {
    published.topics.iter().map(|t| t.topic.as_str()).collect()
}

pub async fn publish(
    exchanges: &mut Exchanges,
    exchange: &str,
    key: &str,
    records: Vec<pb::Record>,
) -> Result<pb::PublishResponse, tonic::Status> {
    exchanges
        .publish(exchange, key, records, pb::Durability::Unspecified)
        .await
}
