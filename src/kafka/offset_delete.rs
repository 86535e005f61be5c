//! OffsetDelete, so that `kafka-consumer-groups.sh --delete-offsets` and the admin
//! clients' `deleteConsumerGroupOffsets` delete a group's committed offsets of a
//! topic it no longer consumes, as `strom group delete-offsets` does
//! (`Groups::delete_offsets`). It needs admin on the group (Kafka's DELETE) and read
//! on each topic, and is refused per topic with GROUP_SUBSCRIBED_TO_TOPIC while a
//! member of the group, Kafka's or gRPC's, consumes the topic. Unlike Kafka, a
//! non-empty group of a protocol type other than `consumer` is refused topic by topic
//! (its subscriptions cannot be read) rather than with NON_EMPTY_GROUP.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};

use super::authorize;
use super::errors::code::{GROUP_ID_NOT_FOUND, INVALID_GROUP_ID, UNKNOWN_TOPIC_OR_PARTITION};
use super::errors::Refusal;
use super::requests::Topic;
use super::text;
use super::Kafka;
use crate::error::Error;
use crate::groups::ForeignMembers;
use crate::grpc::auth::{Access, Operation};

/// Deletes the group's offsets of each topic's partitions; each partition answered
/// with its topic's code (NONE also for a partition that had no offset, as Kafka
/// answers), or UNKNOWN_TOPIC_OR_PARTITION for one the topic does not have.
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
    for topic in topics {
        let code = match delete(kafka, group, &topic, access).await {
            Ok(()) => 0,
            Err(refusal) if refusal.code == GROUP_ID_NOT_FOUND => {
                response.error_code = GROUP_ID_NOT_FOUND;
                response.topics.clear();
                return response;
            }
            Err(refusal) => {
                refusal.log_about(&topic.name);
                refusal.code
            }
        };
        let count = kafka
            .broker
            .topic(&topic.name)
            .map_or(0, |t| t.partition_count());
        let mut result = OffsetDeleteResponseTopic::default();
        result.name = text(topic.name).into();
        for index in topic.partitions {
            let mut answer = OffsetDeleteResponsePartition::default();
            answer.partition_index = index;
            answer.error_code = match u32::try_from(index).is_ok_and(|p| p < count) {
                true => code,
                false if code == 0 => UNKNOWN_TOPIC_OR_PARTITION,
                false => code,
            };
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}

/// One topic's partitions (those it has: the others are answered apart).
async fn delete(
    kafka: &Kafka,
    group: &str,
    topic: &Topic<i32>,
    access: &Access,
) -> Result<(), Refusal> {
    authorize::topic(access, Some(Operation::Read), &topic.name)?;
    let count = kafka.broker.topic(&topic.name)?.partition_count();
    let partitions: Vec<u32> = (topic.partitions.iter())
        .filter_map(|&p| u32::try_from(p).ok().filter(|p| *p < count))
        .collect();
    if partitions.is_empty() {
        return Ok(()); // an empty list would mean every partition
    }
    match kafka
        .groups
        .delete_offsets(group, &topic.name, &partitions)
        .await
    {
        Ok(deleted) => {
            tracing::info!(group, topic = topic.name, partitions = ?deleted, "kafka OffsetDelete");
            Ok(())
        }
        // A Kafka group with members and no offsets yet: nothing to delete.
        Err(Error::GroupNotFound { .. }) if kafka.coordinator.has_members(group) => Ok(()),
        Err(err @ Error::GroupNotFound { .. }) => {
            Err(Refusal::new(GROUP_ID_NOT_FOUND, err.to_string()))
        }
        Err(err) => Err(Refusal::from(err)),
    }
}
