//! Fetch: every partition asked for is read, its stored batches turned into Kafka's
//! (`records::encode_batches`); if fewer than `min_bytes` came back, the request waits
//! for any of its partitions' high watermarks to move (woken by appends, not polling)
//! until `max_wait_ms`, and reads on from where each partition's last read ended (not
//! everything again: a waiting fetch costs each append only what it added).
//!
//! A topic the caller may not read (`authorize.rs`) is refused before it is opened,
//! and checked again after the wait.
//!
//! The response is a copy (Kafka's record format is not strom's): each read's bytes
//! are taken from the server's pool (`pool.rs`) before they are encoded, and held
//! until the client has read them (at most 30 s: see `connection.rs`). strom has no fetch sessions (KIP-227): it answers every fetch in
//! full with session id 0, which tells a Kafka client to send full fetches, as it
//! does to brokers that have sessions turned off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::OwnedSemaphorePermit;

use super::authorize;
use super::errors::{code, Refusal};
use super::pool::BytesPool;
use super::records::encode_batches;
use super::requests::Fetch;
use crate::broker::{Broker, Offsets, Partition};
use crate::grpc::auth::{Access, Operation};

/// What a fetch waits for of the pool when it has less than it wants: responses
/// shrink under pressure rather than queue behind large ones.
const SMALL_SHARE: usize = 64 << 10;

/// Kafka's code for a fetch session the server does not know.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// One partition of the request, and what reading it gave so far.
struct Wanted {
    topic: usize,
    index: i32,
    max_bytes: usize,
    /// The partition and whether it is compacted; or why not.
    partition: Result<(Arc<Partition>, bool), Refusal>,
    /// Where the next read starts.
    next: u64,
    records: BytesMut,
    offsets: Offsets,
}

/// The response, and its hold on the server's pool: keep it until the response is
/// written.
pub async fn fetch(
    broker: Arc<Broker>,
    pool: &BytesPool,
    request: Fetch,
    version: i16,
    access: &Access,
) -> (FetchResponse, Option<OwnedSemaphorePermit>) {
    let mut response = FetchResponse::default();
    if request.session_id != 0 {
        response.error_code = FETCH_SESSION_ID_NOT_FOUND;
        return (response, None);
    }
    let limit = broker.limits().max_fetch_bytes.max(1).min(pool.size());
    let total = match request.max_bytes {
        n if n > 0 => (n as usize).min(limit),
        _ => limit,
    };
    let mut names = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    // A partition named twice is answered once, as Kafka's request maps have it.
    let mut seen = HashSet::new();
    for topic in request.topics {
        for p in topic.partitions {
            if !seen.insert((topic.name.clone(), p.partition)) {
                continue;
            }
            let partition = authorize::topic(access, Some(Operation::Read), &topic.name);
            let partition = partition.and_then(|()| open(&broker, &topic.name, p.partition));
            let partition = partition.and_then(|open| match u64::try_from(p.fetch_offset) {
                Ok(_) => Ok(open),
                Err(_) => Err(Refusal::new(
                    code::OFFSET_OUT_OF_RANGE,
                    format!("offset {} is negative", p.fetch_offset),
                )),
            });
            wanted.push(Wanted {
                topic: names.len(),
                index: p.partition,
                max_bytes: p.max_bytes.max(1) as usize,
                partition,
                next: p.fetch_offset.max(0) as u64,
                records: BytesMut::new(),
                offsets: Offsets {
                    log_start: 0,
                    high_watermark: 0,
                },
            });
        }
        names.push(topic.name);
    }
    let mut held: Option<OwnedSemaphorePermit> = None;
    let wait =
        Duration::from_millis(request.max_wait_ms.max(0) as u64).min(broker.limits().max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    // More than `total` never comes back: wait for what can.
    let min_bytes = (request.min_bytes.max(1) as usize).min(total);
    let mut stopping = broker.shutting_down();
    let mut waited = false;
    loop {
        // Subscribed before reading: an append in between still wakes the wait.
        let mut watches: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.partition.as_ref().ok().map(|(p, _)| p.watch()))
            .collect();
        let (bytes, failed) = read_on(&mut wanted, total, pool, &mut held).await;
        let done = bytes >= min_bytes || failed || watches.is_empty() || *stopping.borrow();
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
        waited = true;
    }
    // Checked again after a wait: the list may have been read again meanwhile (a
    // fetch answered at once was checked a moment ago, before it was read).
    for w in wanted.iter_mut().filter(|w| waited && w.partition.is_ok()) {
        if let Err(refusal) = authorize::topic(access, Some(Operation::Read), &names[w.topic]) {
            w.partition = Err(refusal);
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
    let mut bytes = 0;
    for w in wanted {
        let mut p = PartitionData::default();
        p.partition_index = w.index;
        match w.partition {
            Ok(_) => {
                p.high_watermark = w.offsets.high_watermark as i64;
                p.last_stable_offset = w.offsets.high_watermark as i64;
                if version >= 5 {
                    p.log_start_offset = w.offsets.log_start as i64;
                }
                bytes += w.records.len();
                p.records = Some(w.records.freeze());
            }
            Err(refusal) => {
                refusal.log(w.index);
                p.error_code = refusal.code;
                p.high_watermark = -1;
                p.last_stable_offset = -1;
                p.records = Some(Default::default());
            }
        }
        p.aborted_transactions = Some(Vec::new());
        topics[w.topic].partitions.push(p);
    }
    response.responses = topics;
    // Held: what the response holds, no more (a first batch larger than what was
    // taken goes whole, with what was taken).
    if let Some(held) = held.as_mut() {
        if let Some(rest) = held
            .num_permits()
            .checked_sub(bytes.max(1))
            .filter(|n| *n > 0)
        {
            drop(held.split(rest));
        }
    }
    (response, held)
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

/// Reads every partition on from where its last read ended, within what is left of
/// `total`, each read's bytes taken from `pool` into `held` before it is encoded;
/// returns the bytes read in all, and whether a partition failed (which ends the
/// wait: the client is told at once).
async fn read_on(
    wanted: &mut [Wanted],
    total: usize,
    pool: &BytesPool,
    held: &mut Option<OwnedSemaphorePermit>,
) -> (usize, bool) {
    let mut bytes: usize = wanted.iter().map(|w| w.records.len()).sum();
    let mut failed = false;
    for w in wanted.iter_mut() {
        let Ok((partition, compacted)) = &w.partition else {
            failed = true;
            continue;
        };
        let (partition, compacted) = (Arc::clone(partition), *compacted);
        // Past its budget or the total, a partition still answers its offsets.
        let budget = (w.max_bytes.saturating_sub(w.records.len())).min(total.saturating_sub(bytes));
        let read = match budget {
            0 => partition.offsets().map(|o| (None, o)),
            budget => partition
                .read(w.next, budget)
                .await
                .map(|(read, o)| (Some(read), o)),
        };
        match read {
            Ok((read, offsets)) => {
                w.offsets = offsets;
                if let Some(read) = read {
                    // Kafka's encoding of a stored batch is about its size: a little
                    // more is taken, and given back once the response is built. Short
                    // of it, the pool's rest (a smaller answer, not a wait behind
                    // others), or a wait for a small share.
                    let size = read.size_bytes();
                    let mut budget = budget;
                    if size > 0 {
                        let want = size + size / 8 + 1024;
                        // Waiting is for a fetch that holds nothing yet: one that
                        // waited while holding could wait for the others, and they
                        // for it (for ever, a review found). Holding some, it answers
                        // with what it has.
                        let permit = match (pool.try_take_up_to(want, SMALL_SHARE), held.is_some())
                        {
                            (Some(permit), _) => permit,
                            (None, true) => continue,
                            (None, false) => pool.take(want.min(SMALL_SHARE)).await,
                        };
                        budget = budget.min(permit.num_permits() * 8 / 9);
                        match held.as_mut() {
                            Some(held) => held.merge(permit),
                            None => *held = Some(permit),
                        }
                    }
                    let before = w.records.len();
                    w.next = encode_batches(&read, w.next, budget, compacted, &mut w.records);
                    bytes += w.records.len() - before;
                }
            }
            // Records already in hand stay good (damage, retention or a reopen past
            // them is the next fetch's to report).
            Err(_) if !w.records.is_empty() => {}
            Err(err) => {
                w.partition = Err(Refusal::from(err));
                failed = true;
            }
        }
    }
    (bytes, failed)
}
