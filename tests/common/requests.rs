//! Requests and topic settings as the gRPC tests build them.

use std::collections::BTreeMap;

use bytes::Bytes;
use strom::grpc::pb;

/// A record with this value and nothing else.
pub fn record(value: &str) -> pb::Record {
    pb::Record {
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

/// A produce request; `None` lets the server pick the partition.
pub fn produce(
    topic: &str,
    partition: Option<u32>,
    records: Vec<pb::Record>,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition,
        records,
        ..Default::default()
    }
}

/// A topic's configuration from (key, value) pairs.
pub fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
