//! Produce: each partition's record batch is checked and appended as a gRPC Produce's
//! records are (`Broker::begin_produce`), and answered with its own error code, as
//! Kafka does: one partition's refusal does not refuse the others.
//!
//! A topic the caller may not write (`authorize.rs`) is refused before anything of it
//! is read.
//!
//! `acks` picks the durability: `all` (-1) is acknowledged once the records are on
//! disk, the strongest promise a single node makes (Kafka's own is "on every in-sync
//! replica", fsynced or not); `1` once they are in the page cache; `0` is not answered.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{code, Refusal};
use super::pool::BytesPool;
use super::records::parse_batch;
use super::requests::Produce;
use super::{authorize, compression};
use crate::broker::{Broker, Durability, ProduceTarget};
use crate::grpc::auth::{Access, Operation};

/// What one partition's append came to: its base offset, or why not.
type Outcome = Result<u64, Refusal>;

/// What a produce came to: each topic's partitions' outcomes, and the bytes its
/// batches grew by when they were stored (decompressed, and in strom's own framing,
/// larger than Kafka's for tiny records): what was written beyond what came on the
/// wire, charged to the client's produce quota.
pub struct Done {
    pub answers: Vec<(String, Vec<(i32, Outcome)>)>,
    pub inflated_by: usize,
}

/// Appends every partition's batch, then waits for the ones an fsync must cover
/// (concurrent produces share fsyncs). Runs on a task of its own: a client that hangs
/// up cannot cancel an append halfway.
pub async fn produce(
    broker: Arc<Broker>,
    inflated: BytesPool,
    max_batch_bytes: usize,
    request: Produce,
    access: Access,
) -> Done {
    let durability = match request.acks {
        -1 => Some(Durability::Fsync),
        0 | 1 => Some(Durability::PageCache),
        acks => {
            let refusal = Refusal::new(
                code::INVALID_REQUIRED_ACKS,
                format!("acks={acks}: use 0, 1 or all (-1)"),
            );
            return refused(refuse_all(request, refusal, &access));
        }
    };
    if request.transactional_id.is_some() {
        let refusal = Refusal::new(
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "a transactional produce: strom has no Kafka transactions",
        );
        return refused(refuse_all(request, refusal, &access));
    }
    let mut inflated_by = 0;
    let mut answers = Vec::with_capacity(request.topics.len());
    let mut pending = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let allowed = authorize::topic(&access, Some(Operation::Write), &topic.name);
        for p in topic.partitions {
            let to = (&*broker, &inflated, max_batch_bytes);
            let appended = match &allowed {
                Ok(()) => append(to, &topic.name, p.index, p.records, durability).await,
                Err(refusal) => Err(refusal.clone()),
            };
            match appended {
                Ok((appended, grew)) => {
                    inflated_by += grew;
                    partitions.push((p.index, Ok(0)));
                    pending.push((answers.len(), partitions.len() - 1, appended));
                }
                Err(refusal) => partitions.push((p.index, Err(refusal))),
            }
        }
        answers.push((topic.name, partitions));
    }
    let durable = pending.into_iter().map(|(t, p, appended)| async move {
        let outcome = appended
            .durable()
            .await
            .map(|p| p.base_offset)
            .map_err(Refusal::from);
        (t, p, outcome)
    });
    for (t, p, outcome) in futures_util::future::join_all(durable).await {
        answers[t].1[p].1 = outcome;
    }
    Done {
        answers,
        inflated_by,
    }
}

fn refused(answers: Vec<(String, Vec<(i32, Outcome)>)>) -> Done {
    Done {
        answers,
        inflated_by: 0,
    }
}

/// Every partition refused: for `refusal`, or, on a topic the caller may not write,
/// for that (a refusal must not tell a caller more of a topic than it may know).
fn refuse_all(
    request: Produce,
    refusal: Refusal,
    access: &Access,
) -> Vec<(String, Vec<(i32, Outcome)>)> {
    let partitions = |t: crate::kafka::requests::ProduceTopic| {
        let refusal = match authorize::topic(access, Some(Operation::Write), &t.name) {
            Ok(()) => refusal.clone(),
            Err(refused) => refused,
        };
        let answers = t.partitions.iter().map(|p| (p.index, Err(refusal.clone())));
        (t.name, answers.collect())
    };
    request.topics.into_iter().map(partitions).collect()
}

/// Appends one partition's batch: what it came to, and the bytes it was stored in
/// beyond its size on the wire.
async fn append(
    (broker, inflated, max_batch_bytes): (&Broker, &BytesPool, usize),
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    durability: Option<Durability>,
) -> Result<(crate::broker::Appended, usize), Refusal> {
    let Some(records) = records else {
        return Err(Refusal::new(code::INVALID_RECORD, "no records (null)"));
    };
    let partition = u32::try_from(partition).map_err(|_| {
        Refusal::new(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("partition {partition} of topic {topic:?}"),
        )
    })?;
    let sent = records.len();
    let batch = parse_batch(records)?;
    // The partition first: a batch for no partition is not decompressed for nothing.
    broker.partition(topic, partition)?;
    // A decompressed batch holds its bytes of the pool until it is appended.
    let (records, _held) = match batch.compression {
        0 => (batch.records().clone(), None),
        codec => {
            let data = batch.records().clone();
            let (records, held) =
                compression::decompress(inflated, codec, data, max_batch_bytes).await?;
            (records, Some(held))
        }
    };
    let target = ProduceTarget {
        topic: topic.to_string(),
        partition: Some(partition),
        durability,
        producer: batch.producer,
    };
    // As a gRPC Produce reckons it: small values and keys are copied, large values not.
    let copied = records.len().min(batch.count * 300) + 32 * batch.count;
    let mut writer = broker.begin_produce(target, batch.count, copied)?;
    batch.push_all(records, &mut writer)?;
    let prepared = writer.finish()?;
    let written = prepared.len_bytes();
    let appended = prepared.append().await?;
    // A batch sent again (its producer's retry) wrote nothing more.
    let grew = match appended.duplicate() {
        true => 0,
        false => written.saturating_sub(sent),
    };
    Ok((appended, grew))
}

/// The response, with the fields `version` has.
pub fn response(
    broker: &Broker,
    answers: Vec<(String, Vec<(i32, Outcome)>)>,
    version: i16,
) -> ProduceResponse {
    let mut response = ProduceResponse::default();
    for (name, partitions) in answers {
        let mut topic = TopicProduceResponse::default();
        for (index, outcome) in partitions {
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            let refused = outcome.as_ref().err().map(|r| r.code);
            match outcome {
                Ok(base_offset) => p.base_offset = base_offset as i64,
                Err(refusal) => {
                    refusal.log(index);
                    p.error_code = refusal.code;
                    p.base_offset = -1;
                    if version >= 8 {
                        p.error_message = Some(StrBytes::from_string(refusal.message));
                    }
                }
            }
            // Also with an error: a Java producer told UNKNOWN_PRODUCER_ID without it
            // retries until its delivery timeout. Not to a caller refused the topic.
            if version >= 5 && refused != Some(code::TOPIC_AUTHORIZATION_FAILED) {
                p.log_start_offset = u32::try_from(index)
                    .ok()
                    .and_then(|i| broker.partition(&name, i).ok())
                    .and_then(|p| p.offsets().ok())
                    .map_or(-1, |o| o.log_start as i64);
            }
            topic.partition_responses.push(p);
        }
        topic.name = StrBytes::from_string(name).into();
        response.responses.push(topic);
    }
    response
}
