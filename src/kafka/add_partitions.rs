//! CreatePartitions, so that Kafka's admin clients and tools (`kafka-topics.sh
//! --alter --partitions`, `AdminClient.create_partitions`) add partitions to strom's
//! topics (`broker::add_partitions`). It needs admin on the topic (`authorize.rs`), as
//! the gRPC AddPartitions does.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{named_twice, named_twice_refusal, NODE};
use super::authorize;
use super::errors::code::{INVALID_PARTITIONS, INVALID_REPLICA_ASSIGNMENT};
use super::errors::Refusal;
use super::requests::admin::MorePartitions;
use crate::broker::Broker;
use crate::error::Error;
use crate::grpc::auth::{Access, Operation};

/// Adds partitions to each topic (or, with `validate_only`, checks that it could),
/// each answered with its own code. As Kafka: a count not above the topic's is
/// INVALID_PARTITIONS (the gRPC call takes an equal one as done), also for the second
/// of two adds to the same count at once, and a topic named twice is answered once,
/// INVALID_REQUEST.
pub async fn create_partitions(
    broker: &Arc<Broker>,
    topics: Vec<MorePartitions>,
    validate_only: bool,
    access: &Access,
) -> CreatePartitionsResponse {
    let twice = named_twice(topics.iter().map(|t| t.name.as_str()));
    let mut response = CreatePartitionsResponse::default();
    let mut answered = HashSet::new();
    for topic in topics {
        if !answered.insert(topic.name.clone()) {
            continue;
        }
        let added = match twice.contains(&topic.name) {
            true => Err(named_twice_refusal()),
            false => grow(broker, &topic, validate_only, access).await,
        };
        let mut result = CreatePartitionsTopicResult::default();
        result.name = StrBytes::from_string(topic.name.clone()).into();
        match added {
            Ok(()) => tracing::info!(
                topic = topic.name,
                partitions = topic.count,
                validate_only,
                "kafka CreatePartitions"
            ),
            Err(refusal) => {
                refusal.log_about(&topic.name);
                result.error_code = refusal.code;
                result.error_message = Some(StrBytes::from_string(refusal.message));
            }
        }
        response.results.push(result);
    }
    response
}

async fn grow(
    broker: &Arc<Broker>,
    topic: &MorePartitions,
    validate_only: bool,
    access: &Access,
) -> Result<(), Refusal> {
    authorize::topic(access, Some(Operation::Admin), &topic.name)?;
    let current = broker.topic(&topic.name)?.partition_count();
    let wanted = u32::try_from(topic.count).unwrap_or(0);
    if wanted <= current {
        let message = match wanted == current {
            true => format!("the topic already has {current} partitions"),
            false => format!(
                "the topic has {current} partitions and {} were asked: partitions can be added, never removed",
                topic.count
            ),
        };
        return Err(Refusal::new(INVALID_PARTITIONS, message));
    }
    if let Some(assignments) = &topic.assignments {
        let on_this_node = assignments.len() as u32 == wanted - current
            && assignments.iter().all(|brokers| brokers == &[NODE]);
        if !on_this_node {
            return Err(Refusal::new(
                INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "strom is a single node: assign each of the {} new partitions to broker 0 alone, or give no assignment",
                    wanted - current
                ),
            ));
        }
    }
    let invalid = |err: Error| match err {
        Error::InvalidArgument(_) | Error::FailedPrecondition(_) => {
            Refusal::new(INVALID_PARTITIONS, err.to_string())
        }
        err => Refusal::from(err),
    };
    if validate_only {
        return broker
            .check_add_partitions(&topic.name, wanted)
            .map(drop)
            .map_err(invalid);
    }
    match broker.add_partitions(&topic.name, wanted).await {
        Ok((_, 0)) => Err(Refusal::new(
            INVALID_PARTITIONS,
            format!("the topic already has {wanted} partitions"),
        )),
        Ok(_) => Ok(()),
        Err(err) => Err(invalid(err)),
    }
}
