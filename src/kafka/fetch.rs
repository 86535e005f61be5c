//! Fetch: every partition asked for is read, its stored batches turned into Kafka's
//! (`records::encode_batches`); if fewer than `min_bytes` came back, the request waits
//! for any of its partitions' high watermarks to move (woken by appends, not polling)
//! until `max_wait_ms`, and reads again.
//!
//! strom has no fetch sessions (KIP-227): it answers every fetch in full with session
//! id 0, which tells a Kafka client to send full fetches, as it does to brokers that
//! have sessions turned off.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{code, Refusal};
use super::records::encode_batches;
use super::requests::Fetch;
use crate::broker::{Broker, Offsets, Partition};

/// Kafka's code for a fetch session the server does not know.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// One partition of the request, and what reading it gave.
struct Wanted {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Result<(Arc<Partition>, bool), Refusal>,
    read: Result<(Bytes, Offsets), Refusal>,
}

pub async fn fetch(broker: Arc<Broker>, request: Fetch, version: i16) -> FetchResponse {
    let mut response = FetchResponse::default();
    if request.session_id != 0 {
        response.error_code = FETCH_SESSION_ID_NOT_FOUND;
        return response;
    }
    let limit = broker.limits().max_fetch_bytes.max(1);
    let total = match request.max_bytes {
        n if n > 0 => (n as usize).min(limit),
        _ => limit,
    };
    let mut names = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for topic in request.topics {
        for p in topic.partitions {
            let partition = open(&broker, &topic.name, p.partition);
            wanted.push(Wanted {
                topic: names.len(),
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.max_bytes.max(1) as usize,
                partition,
                read: Ok((
                    Bytes::new(),
                    Offsets {
                        log_start: 0,
                        high_watermark: 0,
                    },
                )),
            });
        }
        names.push(topic.name);
    }
    let wait =
        Duration::from_millis(request.max_wait_ms.max(0) as u64).min(broker.limits().max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut stopping = broker.shutting_down();
    loop {
        // Subscribed before reading: an append in between still wakes the wait.
        let mut watches: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.partition.as_ref().ok().map(|(p, _)| p.watch()))
            .collect();
        let (bytes, failed) = read_all(&mut wanted, total).await;
        let done = bytes >= min_bytes.max(1) || failed || watches.is_empty() || *stopping.borrow();
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        let moved =
            futures_util::future::select_all(watches.iter_mut().map(|w| w.changed().boxed()));
        tokio::select! {
            _ = moved => {}
            _ = stopping.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let mut topics: Vec<FetchableTopicResponse> = names
        .into_iter()
        .map(|name| {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = StrBytes::from_string(name).into();
            topic
        })
        .collect();
    for w in wanted {
        let mut p = PartitionData::default();
        p.partition_index = w.index;
        match w.read {
            Ok((records, offsets)) => {
                p.high_watermark = offsets.high_watermark as i64;
                p.last_stable_offset = offsets.high_watermark as i64;
                if version >= 5 {
                    p.log_start_offset = offsets.log_start as i64;
                }
                p.records = Some(records);
            }
            Err(refusal) => {
                tracing::debug!(
                    partition = w.index,
                    code = refusal.code,
                    "{}",
                    refusal.message
                );
                p.error_code = refusal.code;
                p.high_watermark = -1;
                p.last_stable_offset = -1;
                p.records = Some(Bytes::new());
            }
        }
        p.aborted_transactions = Some(Vec::new());
        topics[w.topic].partitions.push(p);
    }
    response.responses = topics;
    response
}

fn open(broker: &Broker, topic: &str, partition: i32) -> Result<(Arc<Partition>, bool), Refusal> {
    let index = u32::try_from(partition).map_err(|_| {
        Refusal::new(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("partition {partition}"),
        )
    })?;
    let compacted = broker.topic(topic)?.config().cleanup_policy.compacts();
    Ok((broker.partition(topic, index)?, compacted))
}

/// Reads every partition from its offset within what is left of `total`; returns the
/// bytes read and whether a partition failed (which ends the wait: the client is told
/// at once).
async fn read_all(wanted: &mut [Wanted], total: usize) -> (usize, bool) {
    let (mut bytes, mut failed) = (0, false);
    for w in wanted.iter_mut() {
        let (partition, compacted) = match &w.partition {
            Ok(p) => p.clone(),
            Err(refusal) => {
                w.read = Err(refusal.clone());
                failed = true;
                continue;
            }
        };
        // Past the total, a partition still answers its offsets, with no records.
        let budget = w.max_bytes.min(total.saturating_sub(bytes));
        let read = match (u64::try_from(w.offset), budget) {
            (Err(_), _) => Err(Refusal::new(
                code::OFFSET_OUT_OF_RANGE,
                format!("offset {} is negative", w.offset),
            )),
            (Ok(_), 0) => partition
                .offsets()
                .map(|o| (Bytes::new(), o))
                .map_err(Refusal::from),
            (Ok(offset), budget) => partition
                .read(offset, budget)
                .await
                .map(|(read, o)| (encode_batches(&read, offset, budget, compacted), o))
                .map_err(Refusal::from),
        };
        match &read {
            Ok((records, _)) => bytes += records.len(),
            Err(_) => failed = true,
        }
        w.read = read;
    }
    (bytes, failed)
}
