//! OffsetDelete, so that `kafka-consumer-groups.sh --delete-offsets` and the admin
//! clients' `deleteConsumerGroupOffsets` delete a group's committed offsets of a
//! topic it no longer consumes, as `strom group delete-offsets` does
//! (`Groups::delete_offsets`, one snapshot for the whole request). It needs admin on
//! the group (Kafka's DELETE) and read on each topic, and is refused per topic with
//! GROUP_SUBSCRIBED_TO_TOPIC while a member of the group, Kafka's or gRPC's, consumes
//! the topic. Unlike Kafka, a non-empty group of a protocol type other than
//! `consumer` is refused topic by topic (its subscriptions cannot be read) rather than
//! with NON_EMPTY_GROUP.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};

use super::authorize;
use super::errors::code::{GROUP_ID_NOT_FOUND, INVALID_GROUP_ID, UNKNOWN_TOPIC_OR_PARTITION};

/// Kafka's code for a coordinator that cannot take the call now (the client retries).
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
use super::errors::Refusal;
use super::requests::Topic;
use super::text;
use super::Kafka;
use crate::error::Error;
use crate::grpc::auth::{Access, Operation};

/// Each partition answered as Kafka does: TOPIC_AUTHORIZATION_FAILED without read on
/// its topic, then UNKNOWN_TOPIC_OR_PARTITION for a topic or partition that does not
/// exist, then its topic's answer (NONE also for a partition that had no offset).
pub async fn offset_delete(
    kafka: &Kafka,
    group: &str,
    topics: Vec<Topic<i32>>,
    access: &Access,
) -> OffsetDeleteResponse {
    let mut response = OffsetDeleteResponse::default();
    let allowed = authorize::group(access, Some(Operation::Admin), group).and_then(|()| {
        crate::groups::validate_group_name(group)
            .map_err(|err| Refusal::new(INVALID_GROUP_ID, err.to_string()))
    });
    if let Err(refusal) = allowed {
        refusal.log_about(group);
        response.error_code = refusal.code;
        return response;
    }
    // Per topic: a code for all its partitions, or the partitions it has (to delete).
    let checked: Vec<Result<Vec<u32>, i16>> = (topics.iter())
        .map(|topic| {
            authorize::topic(access, Some(Operation::Read), &topic.name).map_err(|r| r.code)?;
            let count = match kafka.broker.topic(&topic.name) {
                Ok(t) => t.partition_count(),
                Err(_) => return Err(UNKNOWN_TOPIC_OR_PARTITION),
            };
            let known = (topic.partitions.iter()).filter_map(|&p| u32::try_from(p).ok());
            Ok(known.filter(|p| *p < count).collect())
        })
        .collect();
    let asked: Vec<(String, Vec<u32>)> = (topics.iter().zip(&checked))
        .filter_map(|(topic, checked)| match checked {
            Ok(partitions) if !partitions.is_empty() => {
                Some((topic.name.clone(), partitions.clone()))
            }
            _ => None, // an empty list would mean every partition
        })
        .collect();
    let mut answers = match delete(kafka, group, asked).await {
        Ok(answers) => answers.into_iter(),
        Err(code) => {
            response.error_code = code;
            return response;
        }
    };
    for (topic, checked) in topics.into_iter().zip(checked) {
        let code = match &checked {
            Err(code) => *code,
            Ok(partitions) if partitions.is_empty() => 0,
            Ok(_) => answers.next().expect("one answer a topic asked"),
        };
        let mut result = OffsetDeleteResponseTopic::default();
        result.name = text(topic.name).into();
        for index in topic.partitions {
            let mut answer = OffsetDeleteResponsePartition::default();
            answer.partition_index = index;
            let exists = checked
                .as_ref()
                .is_ok_and(|known| u32::try_from(index).is_ok_and(|index| known.contains(&index)));
            answer.error_code = match (exists, code) {
                (false, 0) => UNKNOWN_TOPIC_OR_PARTITION,
                (_, code) => code,
            };
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}

/// Each topic's code, in order; or the group's.
async fn delete(
    kafka: &Kafka,
    group: &str,
    topics: Vec<(String, Vec<u32>)>,
) -> Result<Vec<i16>, i16> {
    let names: Vec<String> = topics.iter().map(|(name, _)| name.clone()).collect();
    let answers = match kafka.groups.delete_offsets(group, topics).await {
        Ok(answers) => answers,
        Err(Error::GroupNotFound { .. }) => return Err(GROUP_ID_NOT_FOUND),
        // Whether its snapshot landed is not known: Kafka's admin clients retry this
        // code, and the delete may be made again.
        Err(err @ Error::Unavailable { .. }) => {
            Refusal::from(err).log_about(group);
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        Err(err) => {
            let refusal = Refusal::from(err);
            refusal.log_about(group);
            return Err(refusal.code);
        }
    };
    let codes = names
        .iter()
        .zip(answers)
        .map(|(name, answer)| match answer {
            Ok(deleted) => {
                tracing::info!(group, topic = name, partitions = ?deleted, "kafka OffsetDelete");
                0
            }
            Err(err) => {
                let refusal = Refusal::from(err);
                refusal.log_about(name);
                refusal.code
            }
        });
    Ok(codes.collect())
}
