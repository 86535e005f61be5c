//! `strom.v1.Log`: produce and consume.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Access, Kind, Operation};
use super::budget::Charge;
use super::pb::{self, log_server::Log};
use super::produce::prepare;
use super::produce_stream::produce_stream;
use super::quota::{self, Flow, Owed, Quota, Taken};
use super::records::{FetchResponse, RecordSet, SubscribeResponse};
use super::subscribe::subscribe_stream;
use super::{access, produce_response, status, BoxStream};
use crate::broker::Broker;

/// Fetch and Subscribe answer with this many bytes when the client does not say.
const DEFAULT_MAX_BYTES: usize = 1 << 20;
pub struct LogService {
    broker: Arc<Broker>,
}

impl LogService {
    pub fn new(broker: Arc<Broker>) -> LogService {
        LogService { broker }
    }
}

pub(super) fn invalid(msg: &str) -> Status {
    Status::invalid_argument(msg)
}

/// Bytes of records a response of at most `max_bytes` may carry: the rest is for its
/// other fields (three varints of at most 11 bytes each, with their tags).
pub(super) fn records_budget(max_bytes: usize) -> usize {
    max_bytes.saturating_sub(36).max(1)
}

pub(super) fn max_bytes(requested: u32) -> usize {
    if requested == 0 {
        DEFAULT_MAX_BYTES
    } else {
        requested as usize
    }
}

/// Answers one Produce, holding `charge` (its share of the produce budget) until then.
/// The client's quota, if any, is charged what the batch takes beyond the request's
/// size on the wire (`quota::Owed`).
pub(super) async fn produce_one(
    broker: Arc<Broker>,
    request: pb::ProduceRequest,
    charge: Option<OwnedSemaphorePermit>,
    (access, quota): (Access, Option<Quota>),
) -> Result<pb::ProduceResponse, Status> {
    access
        .check(Operation::Write, Kind::Topic, &request.topic)
        .map_err(status)?;
    let wire = quota
        .as_ref()
        .map(|_| prost::Message::encoded_len(&request));
    // Spawned so that a client hanging up cannot cancel the append halfway.
    let produced = tokio::spawn(async move {
        let prepared = prepare(&broker, request)?;
        let owed = Owed::of(quota.as_ref().zip(wire), &prepared);
        let appended = prepared.append().await?;
        owed.pay(&appended);
        let produced = appended.durable().await;
        drop(charge);
        produced
    })
    .await
    .map_err(|e| Status::internal(format!("produce task failed: {e}")))?
    .map_err(status)?;
    Ok(produce_response(produced))
}

/// The bytes a read for a client of `quota` may take: `limit`, or less once the client
/// has waited its turn (at least one record goes, however small the allowance), and
/// the allowance taken for it (none without a fetch limit), to settle with what the
/// read came to. A server that begins to stop (`stopping`) ends the wait.
pub(super) async fn quota_limit(
    stopping: &watch::Receiver<bool>,
    quota: &Quota,
    limit: usize,
) -> Result<(usize, Option<Taken>), Status> {
    let mut stopping = stopping.clone();
    let taken = tokio::select! {
        taken = quota.read_turn(Flow::Fetch, limit) => taken,
        _ = stopping.wait_for(|stopping| *stopping) => return Err(Status::unavailable(
            "server shutting down; fetch again after reconnecting",
        )),
    };
    Ok((taken.as_ref().map_or(limit, Taken::bytes), taken))
}

/// Answers one Fetch.
///
/// With a fetch quota, the client's allowance is taken for a read that does not wait.
/// If that finds too little and the client asked to wait, the allowance goes back for
/// the wait (an idle long poll holds none of it: a consumer polling many quiet
/// partitions would otherwise keep its allowance from the busy ones); woken by a
/// record, the fetch waits its turn again and takes its allowance for a read that does
/// not wait, so that long polls woken together share it too.
pub(super) async fn fetch_one(
    broker: &Broker,
    r: pb::FetchRequest,
    access: Access,
    quota: Option<Quota>,
) -> Result<FetchResponse, Status> {
    access
        .check(Operation::Read, Kind::Topic, &r.topic)
        .map_err(status)?;
    let limit = max_bytes(r.max_bytes).min(broker.limits().max_fetch_bytes);
    let max_wait = Duration::from_millis(r.max_wait_ms.into());
    let fetch = |limit: usize, wait: Duration| {
        // Not more than can come back (a quota may have made the limit smaller).
        let min_bytes = (r.min_bytes as usize).min(limit);
        broker.fetch(&r.topic, r.partition, r.offset, limit, wait, min_bytes)
    };
    let asked = limit;
    let (mut limit, mut taken) = match &quota {
        Some(quota) => quota_limit(&broker.shutting_down(), quota, limit).await?,
        None => (limit, None),
    };
    let (read, offsets) = match (&quota, &taken) {
        (Some(quota), Some(_)) if !max_wait.is_zero() => {
            let (read, offsets) = fetch(limit, Duration::ZERO).await.map_err(status)?;
            let enough = (r.min_bytes as usize).clamp(1, limit);
            if read.size_bytes() >= enough {
                (read, offsets)
            } else {
                drop(taken.take());
                // Woken once what the client asked for is there (a read of it, dropped,
                // that charges nothing), or not.
                let want = (r.min_bytes as usize).clamp(1, asked);
                let (woken, offsets) = fetch(want, max_wait).await.map_err(status)?;
                if woken.chunks.is_empty() {
                    (woken, offsets)
                } else {
                    (limit, taken) = quota_limit(&broker.shutting_down(), quota, asked).await?;
                    fetch(limit, Duration::ZERO).await.map_err(status)?
                }
            }
        }
        _ => fetch(limit, max_wait).await.map_err(status)?,
    };
    // Again after a long poll: a grant taken away while it waited delivers nothing.
    access
        .check(Operation::Read, Kind::Topic, &r.topic)
        .map_err(status)?;
    let (records, next_offset) = RecordSet::from_batches(&read, r.offset, records_budget(limit));
    match (taken, &quota) {
        (Some(taken), _) => taken.settle(records.encoded_len()),
        (None, Some(quota)) => quota.charge(Flow::Fetch, records.encoded_len()),
        (None, None) => {}
    }
    Ok(FetchResponse {
        records,
        high_watermark: offsets.high_watermark,
        log_start_offset: offsets.log_start,
        next_offset,
    })
}

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        // The request's share of the produce budget, held until it is answered.
        let charge = request
            .extensions()
            .get::<Charge>()
            .and_then(Charge::take_next);
        let access = access(&request);
        let quota = super::quota::of(request.extensions());
        let reply = produce_one(
            Arc::clone(&self.broker),
            request.into_inner(),
            charge,
            (access, quota),
        )
        .await?;
        Ok(Response::new(reply))
    }

    async fn init_producer(
        &self,
        request: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let access = access(&request);
        let name = request.into_inner().producer_name;
        match name.is_empty() {
            // A producer id is only of use for writing to some topic.
            true => access.check_some(Operation::Write, Kind::Topic),
            // A name fences the name's other instances: a grant of its own.
            false => access.check(Operation::Write, Kind::Producer, &name),
        }
        .map_err(status)?;
        let (producer_id, epoch) = self
            .broker
            .init_producer((!name.is_empty()).then_some(name))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::InitProducerResponse {
            producer_id,
            producer_epoch: epoch.into(),
        }))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let charge = request
            .extensions()
            .get::<Charge>()
            .cloned()
            .unwrap_or_default();
        let access = access(&request);
        let quota = super::quota::of(request.extensions());
        let replies = produce_stream(
            Arc::clone(&self.broker),
            request.into_inner(),
            charge,
            (access, quota),
        );
        Ok(Response::new(replies))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let access = access(&request);
        let quota = quota::of(request.extensions());
        fetch_one(&self.broker, request.into_inner(), access, quota)
            .await
            .map(Response::new)
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let access = access(&request);
        let quota = quota::of(request.extensions());
        let (replies, grant) =
            subscribe_stream(&self.broker, request.into_inner(), access, quota).await?;
        let mut response = Response::new(replies);
        response.extensions_mut().insert(grant);
        Ok(response)
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        access(&request)
            .check_any(Kind::Topic, &request.get_ref().topic)
            .map_err(status)?;
        let r = request.into_inner();
        let topic = self.broker.topic(&r.topic).map_err(status)?;
        let partition = topic.partition(r.partition).map_err(status)?;
        let offsets = partition.offsets().map_err(status)?;
        let (offset, timestamp_ms) = match r.spec {
            Some(pb::list_offsets_request::Spec::Earliest(_)) => (offsets.log_start, 0),
            Some(pb::list_offsets_request::Spec::Latest(_)) => (offsets.high_watermark, 0),
            Some(pb::list_offsets_request::Spec::TimestampMs(ts)) => {
                // The found record's own timestamp, which may be later than the query.
                match partition.offset_for_timestamp(ts).await.map_err(status)? {
                    Some(found) => found,
                    None => (offsets.high_watermark, 0),
                }
            }
            None => {
                return Err(invalid(
                    "ListOffsetsRequest.spec is missing: set earliest, latest or timestamp_ms",
                ))
            }
        };
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            timestamp_ms,
            log_start_offset: offsets.log_start,
            high_watermark: offsets.high_watermark,
            partition_created_ms: topic.partition_created_ms(r.partition),
        }))
    }
}
