//! DeleteRecords, so that Kafka's admin clients and tools (`kafka-delete-records.sh`,
//! `AdminClient.delete_records`) move a partition's log start offset, as the gRPC
//! DeleteRecords and `strom topic delete-records` do (`Broker::delete_records`):
//! the records below the offset can no longer be read, and the segments wholly below
//! it are deleted. It needs admin on the topic (`authorize.rs`), as over gRPC.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::protocol::StrBytes;

use super::authorize;
use super::errors::code::{OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION};
use super::errors::Refusal;
use super::requests::Topic;
use crate::broker::Broker;
use crate::grpc::auth::{Access, Operation};

/// Deletes the records below each partition's offset (-1: the high watermark), one
/// partition after another, each answered with its new log start offset (Kafka's
/// low watermark) or its own code: OFFSET_OUT_OF_RANGE past the high watermark, as
/// Kafka answers. Unlike Kafka, a compacted topic's records can be deleted too, as
/// over gRPC.
pub async fn delete_records(
    broker: &Arc<Broker>,
    topics: Vec<Topic<(i32, i64)>>,
    access: &Access,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in topics {
        let allowed = authorize::topic(access, Some(Operation::Admin), &topic.name);
        let mut result = DeleteRecordsTopicResult::default();
        result.name = StrBytes::from_string(topic.name.clone()).into();
        for (index, offset) in topic.partitions {
            let mut answer = DeleteRecordsPartitionResult::default();
            answer.partition_index = index;
            let deleted = match &allowed {
                Ok(()) => delete(broker, &topic.name, index, offset).await,
                Err(refusal) => Err(refusal.clone()),
            };
            match deleted {
                Ok(start) => {
                    answer.low_watermark = start as i64;
                    tracing::info!(
                        topic = topic.name,
                        partition = index,
                        log_start = start,
                        "kafka DeleteRecords"
                    );
                }
                Err(refusal) => {
                    refusal.log_about(&topic.name);
                    answer.low_watermark = -1;
                    answer.error_code = refusal.code;
                }
            }
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}

async fn delete(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    offset: i64,
) -> Result<u64, Refusal> {
    let before = match offset {
        -1 => None,
        n => Some(u64::try_from(n).map_err(|_| {
            let message = format!("offset {n}: use an offset from 0, or -1 for the high watermark");
            Refusal::new(OFFSET_OUT_OF_RANGE, message)
        })?),
    };
    let partition = u32::try_from(index)
        .map_err(|_| Refusal::new(UNKNOWN_TOPIC_OR_PARTITION, format!("partition {index}")))?;
    Ok(broker.delete_records(topic, partition, before).await?)
}
