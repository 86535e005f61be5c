//! The small requests: ApiVersions, Metadata, ListOffsets and InitProducerId.
//!
//! strom is a cluster of one: Metadata names it as broker 0, the leader of every
//! partition and its only replica, at the address the client reached it on (or
//! `kafka_advertised_address`).

use std::sync::Arc;

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use super::authorize;
use super::errors::{code, Refusal};
use super::requests::{ListOffsetsTopic, APIS};
use crate::broker::Broker;
use crate::grpc::auth::{Access, Kind};

/// The node id strom gives itself.
const NODE: i32 = 0;

/// The APIs and versions strom answers; with UNSUPPORTED_VERSION when the client asked
/// in a version newer than strom's (it then asks again in one strom has).
pub fn api_versions(asked: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    if asked > super::requests::api(super::requests::key::API_VERSIONS).map_or(0, |a| a.max) {
        response.error_code = code::UNSUPPORTED_VERSION;
    }
    for api in APIS {
        let mut v = ApiVersion::default();
        v.api_key = api.key;
        v.min_version = api.min;
        v.max_version = api.max;
        response.api_keys.push(v);
    }
    response
}

pub fn metadata(
    broker: &Broker,
    asked: Option<Vec<Option<String>>>,
    advertised: (&str, u16),
    version: i16,
    access: &Access,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    let mut node = MetadataResponseBroker::default();
    node.node_id = BrokerId(NODE);
    node.host = StrBytes::from_string(advertised.0.to_string());
    node.port = i32::from(advertised.1);
    response.brokers.push(node);
    if version >= 1 {
        response.controller_id = BrokerId(NODE);
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str("strom"));
    }
    let (_, metas) = broker.topic_metas();
    let names: Vec<Option<String>> = match asked {
        None => {
            // Only the topics the caller has some grant on (`authorize.rs`).
            let mut names: Vec<_> = metas
                .iter()
                .filter(|m| access.shows(Kind::Topic, &m.name))
                .map(|m| Some(m.name.clone()))
                .collect();
            names.sort();
            names
        }
        // A name asked twice is answered once, as Kafka does: each answer holds every
        // partition of its topic, and a small request repeating a name could make a
        // response of gigabytes.
        Some(names) => {
            let mut seen = std::collections::HashSet::new();
            names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .collect()
        }
    };
    for name in names {
        let mut topic = MetadataResponseTopic::default();
        let Some(name) = name else {
            topic.error_code = code::UNKNOWN_TOPIC_ID; // asked by id: strom answers names
            if version < 12 {
                topic.name = Some(StrBytes::from_static_str("").into()); // not nullable
            }
            response.topics.push(topic);
            continue;
        };
        // Refused whether or not it exists: a refusal tells nothing of the topic.
        let allowed = authorize::topic(access, None, &name);
        match (allowed, metas.iter().find(|m| m.name == name)) {
            (Err(refusal), _) => topic.error_code = refusal.code,
            (Ok(()), None) => topic.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            (Ok(()), Some(meta)) => {
                if version >= 10 {
                    topic.topic_id = uuid::Uuid::parse_str(&meta.id).unwrap_or_default();
                }
                for index in 0..meta.partitions as i32 {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = index;
                    p.leader_id = BrokerId(NODE);
                    if version >= 7 {
                        p.leader_epoch = 0;
                    }
                    p.replica_nodes = vec![BrokerId(NODE)];
                    p.isr_nodes = vec![BrokerId(NODE)];
                    topic.partitions.push(p);
                }
            }
        }
        topic.name = Some(StrBytes::from_string(name).into());
        response.topics.push(topic);
    }
    response
}

/// Offsets by time: -1 asks for the high watermark, -2 for the log start offset, any
/// other time for the first record at or after it (offset -1 if there is none yet).
pub async fn list_offsets(
    broker: Arc<Broker>,
    topics: Vec<ListOffsetsTopic>,
    version: i16,
    access: &Access,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for asked in topics {
        let mut topic = ListOffsetsTopicResponse::default();
        let allowed = authorize::topic(access, None, &asked.name);
        for (index, timestamp) in asked.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = index;
            let found = match &allowed {
                Ok(()) => offset_for(&broker, &asked.name, index, timestamp).await,
                Err(refusal) => Err(refusal.clone()),
            };
            match found {
                Ok((offset, timestamp)) => {
                    p.offset = offset;
                    p.timestamp = timestamp;
                    if version >= 4 {
                        p.leader_epoch = 0;
                    }
                }
                Err(refusal) => {
                    refusal.log(index);
                    p.error_code = refusal.code;
                    p.offset = -1;
                    p.timestamp = -1;
                }
            }
            topic.partitions.push(p);
        }
        topic.name = StrBytes::from_string(asked.name).into();
        response.topics.push(topic);
    }
    response
}

async fn offset_for(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), Refusal> {
    let index = u32::try_from(partition).map_err(|_| {
        Refusal::new(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("partition {partition}"),
        )
    })?;
    let partition = broker.partition(topic, index)?;
    match timestamp {
        -1 => Ok((partition.offsets()?.high_watermark as i64, -1)),
        -2 => Ok((partition.offsets()?.log_start as i64, -1)),
        ts if ts < 0 => Err(Refusal::new(
            code::INVALID_REQUEST,
            format!("timestamp {ts}: strom answers -1 (latest), -2 (earliest) or a time in ms"),
        )),
        ts => Ok(match partition.offset_for_timestamp(ts).await? {
            Some((offset, at)) => (offset as i64, at),
            None => (-1, -1),
        }),
    }
}

/// An idempotent producer's id (`Broker::init_producer`); transactional ids are
/// refused: strom has no Kafka transactions.
pub async fn init_producer_id(
    broker: Arc<Broker>,
    transactional_id: Option<String>,
    access: &Access,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = (-1).into();
    response.producer_epoch = -1;
    if transactional_id.is_some() {
        tracing::debug!("InitProducerId with a transactional id refused: no Kafka transactions");
        response.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return response;
    }
    if let Err(refusal) = authorize::idempotent_write(access) {
        tracing::debug!("kafka InitProducerId refused: {}", refusal.message);
        response.error_code = refusal.code;
        return response;
    }
    match broker.init_producer(None).await {
        Ok((id, epoch)) => {
            response.producer_id = id.into();
            response.producer_epoch = epoch;
        }
        Err(err) => response.error_code = Refusal::from(err).code,
    }
    response
}
