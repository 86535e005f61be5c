//! `strom.v1.Log`: produce and consume.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::budget::Charge;
use super::pb::{self, log_server::Log};
use super::produce::prepare;
use super::records::{FetchResponse, RecordSet, SubscribeResponse};
use super::{code, status};
use crate::broker::{self, Broker};
use crate::error::Error;

/// Fetch and Subscribe answer with this many bytes when the client does not say.
const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Requests of one ProduceStream read and not yet answered to the client, at most.
pub const MAX_UNANSWERED: usize = 256;

/// What a ProduceStream request holds until its response is taken: its turn among the
/// stream's unanswered requests, and its share of the server's produce budget.
type Held = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

pub struct LogService {
    broker: Arc<Broker>,
}

impl LogService {
    pub fn new(broker: Arc<Broker>) -> LogService {
        LogService { broker }
    }
}

fn invalid(msg: &str) -> Status {
    Status::invalid_argument(msg)
}

fn produce_response(p: broker::Produced) -> pb::ProduceResponse {
    pb::ProduceResponse {
        partition: p.partition,
        base_offset: p.base_offset,
        last_offset: p.last_offset,
        log_append_time_ms: p.log_append_time_ms,
    }
}

fn stream_reply(
    correlation_id: u64,
    result: Result<broker::Produced, Error>,
) -> pb::ProduceStreamResponse {
    let result = match result {
        Ok(p) => pb::produce_stream_response::Result::Response(produce_response(p)),
        Err(e) => pb::produce_stream_response::Result::Error(pb::Error {
            code: code(&e) as i32,
            message: e.to_string(),
        }),
    };
    pb::ProduceStreamResponse {
        correlation_id,
        result: Some(result),
    }
}

/// Bytes of records a response of at most `max_bytes` may carry: the rest is for its
/// other fields (three varints of at most 11 bytes each, with their tags).
fn records_budget(max_bytes: usize) -> usize {
    max_bytes.saturating_sub(36).max(1)
}

fn max_bytes(requested: u32) -> usize {
    if requested == 0 {
        DEFAULT_MAX_BYTES
    } else {
        requested as usize
    }
}

/// Answers one Produce, holding `charge` (its share of the produce budget) until then.
pub(super) async fn produce_one(
    broker: Arc<Broker>,
    request: pb::ProduceRequest,
    charge: Option<OwnedSemaphorePermit>,
) -> Result<pb::ProduceResponse, Status> {
    // Spawned so that a client hanging up cannot cancel the append halfway.
    let produced = tokio::spawn(async move {
        let produced = prepare(&broker, request)?.append().await?.durable().await;
        drop(charge);
        produced
    })
    .await
    .map_err(|e| Status::internal(format!("produce task failed: {e}")))?
    .map_err(status)?;
    Ok(produce_response(produced))
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers a ProduceStream: its requests in, its responses out (see `Log::produce_stream`).
pub(super) fn produce_stream<S>(
    broker: Arc<Broker>,
    mut inbound: S,
    charge: Charge,
) -> BoxStream<pb::ProduceStreamResponse>
where
    S: Stream<Item = Result<pb::ProduceStreamRequest, Status>> + Send + Unpin + 'static,
{
    // Push back: a request is read only while fewer than MAX_UNANSWERED of this
    // stream's requests are unanswered (being appended, waiting for an fsync, or
    // answered but not yet taken by the client). A client that stops reading its
    // responses stops the server reading its requests, instead of making it hold
    // every request it sends.
    let unanswered = Arc::new(Semaphore::new(MAX_UNANSWERED));
    let (tx, rx) =
        mpsc::channel::<Result<(pb::ProduceStreamResponse, Held), Status>>(MAX_UNANSWERED);
    // Two stages, so that two cores work on one stream: this task decodes and checks
    // each request and encodes its batch; the appender appends them one after another
    // in the order sent; the waits for fsync run concurrently, so a pipeline of
    // durable requests shares fsyncs.
    let (prepared_tx, mut prepared_rx) =
        mpsc::channel::<Result<(u64, Result<broker::Prepared, Error>, Held), Status>>(4);
    tokio::spawn(async move {
        loop {
            let Ok(turn) = Arc::clone(&unanswered).acquire_owned().await else {
                break;
            };
            let message = match inbound.next().await {
                Some(Ok(message)) => message,
                // A message that does not decode ends the stream with its status
                // (INVALID_ARGUMENT), rather than with a silent OK.
                Some(Err(status)) => {
                    let _ = prepared_tx.send(Err(status)).await;
                    break;
                }
                None => break,
            };
            let held = (turn, charge.take_next());
            let prepared = match message.request {
                Some(request) => prepare(&broker, request),
                None => Err(Error::InvalidArgument(
                    "ProduceStreamRequest.request is missing".into(),
                )),
            };
            if prepared_tx
                .send(Ok((message.correlation_id, prepared, held)))
                .await
                .is_err()
            {
                break;
            }
        }
        // The client closed its side or went away: requests already read are still
        // appended and answered if the client is listening.
    });
    tokio::spawn(async move {
        while let Some(item) = prepared_rx.recv().await {
            let (id, prepared, held) = match item {
                Ok(item) => item,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            let appended = match prepared {
                Ok(prepared) => prepared.append().await,
                Err(err) => Err(err),
            };
            match appended {
                // Waits for fsync run concurrently (at most MAX_UNANSWERED of them),
                // so that later requests are appended meanwhile and share the next
                // fsync.
                Ok(appended) if appended.needs_sync() => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let reply = stream_reply(id, appended.durable().await);
                        let _ = tx.send(Ok((reply, held))).await;
                    });
                }
                Ok(appended) => {
                    let reply = stream_reply(id, appended.durable().await);
                    let _ = tx.send(Ok((reply, held))).await;
                }
                Err(err) => {
                    let _ = tx.send(Ok((stream_reply(id, Err(err)), held))).await;
                }
            }
        }
    });
    // A response's turn and budget are given back when tonic takes it to send.
    let replies = ReceiverStream::new(rx).map(|item| item.map(|(reply, _held)| reply));
    Box::pin(replies)
}

/// Answers one Fetch.
pub(super) async fn fetch_one(
    broker: &Broker,
    r: pb::FetchRequest,
) -> Result<FetchResponse, Status> {
    let limit = max_bytes(r.max_bytes).min(broker.limits().max_fetch_bytes);
    let (read, offsets) = broker
        .fetch(
            &r.topic,
            r.partition,
            r.offset,
            limit,
            Duration::from_millis(r.max_wait_ms.into()),
            r.min_bytes as usize,
        )
        .await
        .map_err(status)?;
    let (records, next_offset) = RecordSet::from_batches(&read, r.offset, records_budget(limit));
    Ok(FetchResponse {
        records,
        high_watermark: offsets.high_watermark,
        log_start_offset: offsets.log_start,
        next_offset,
    })
}

/// Answers a Subscribe: its responses, or the status that refuses it.
pub(super) async fn subscribe_stream(
    broker: &Broker,
    r: pb::SubscribeRequest,
) -> Result<BoxStream<SubscribeResponse>, Status> {
    let partition = broker.partition(&r.topic, r.partition).map_err(status)?;
    let offsets = partition.offsets().map_err(status)?;
    let mut next =
        match r.start {
            Some(pb::subscribe_request::Start::Offset(o)) => o,
            Some(pb::subscribe_request::Start::Earliest(_)) => offsets.log_start,
            Some(pb::subscribe_request::Start::Latest(_)) => offsets.high_watermark,
            Some(pb::subscribe_request::Start::TimestampMs(ts)) => partition
                .offset_for_timestamp(ts)
                .await
                .map_err(status)?
                .map_or(offsets.high_watermark, |(offset, _)| offset),
            None => return Err(invalid(
                "SubscribeRequest.start is missing: set offset, earliest, latest or timestamp_ms",
            )),
        };
    // An offset outside the log fails now, without reading (or checking) a batch.
    if next < offsets.log_start || next > offsets.high_watermark {
        return Err(status(Error::OffsetOutOfRange {
            offset: next,
            start: offsets.log_start,
            end: offsets.high_watermark,
        }));
    }
    let limit = max_bytes(r.max_bytes).min(broker.limits().max_fetch_bytes);
    // A small channel is the flow control: the task reads the next chunk only when
    // the client has taken the previous ones.
    let (tx, rx) = mpsc::channel(2);
    let mut stopping = broker.shutting_down();
    tokio::spawn(async move {
        // The value, not a change: a subscription begun after shutdown began would
        // otherwise never see it, and hold the server's graceful stop.
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let mut moved = partition.watch();
        let deleted = partition.deleted();
        tokio::pin!(deleted);
        loop {
            let sent = match partition.read(next, limit).await {
                Ok((read, offsets)) if !read.chunks.is_empty() => {
                    let (records, after) =
                        RecordSet::from_batches(&read, next, records_budget(limit));
                    let message = SubscribeResponse {
                        records,
                        high_watermark: offsets.high_watermark,
                        next_offset: after,
                    };
                    next = after;
                    tx.send(Ok(message)).await
                }
                Ok(_) => {
                    tokio::select! {
                        changed = moved.changed() => if changed.is_err() { return },
                        () = &mut deleted => {
                            let gone = Error::TopicNotFound { topic: partition.topic.clone() };
                            let _ = tx.send(Err(status(gone))).await;
                            return;
                        }
                        () = &mut stopped => {
                            let _ = tx.send(Err(Status::unavailable("server shutting down; resubscribe from next_offset"))).await;
                            return;
                        }
                        _ = tx.closed() => return,
                    }
                    Ok(())
                }
                Err(err) => tx
                    .send(Err(status(err)))
                    .await
                    .and(Err(mpsc::error::SendError(
                        Ok(SubscribeResponse::default()),
                    ))),
            };
            if sent.is_err() {
                return; // the subscriber went away, or the stream ended in an error
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
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
        let reply = produce_one(Arc::clone(&self.broker), request.into_inner(), charge).await?;
        Ok(Response::new(reply))
    }

    async fn init_producer(
        &self,
        request: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let name = request.into_inner().producer_name;
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
        let replies = produce_stream(Arc::clone(&self.broker), request.into_inner(), charge);
        Ok(Response::new(replies))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        fetch_one(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        subscribe_stream(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let r = request.into_inner();
        let partition = self
            .broker
            .partition(&r.topic, r.partition)
            .map_err(status)?;
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
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::broker::Limits;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_produce_stream_whose_replies_are_not_taken_stops_reading_requests() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let config = [("durability".to_string(), "fsync".to_string())].into();
        broker.create_topic("t", 1, &config).await.unwrap();
        // An endless client, counting the requests the server has pulled.
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&pulled);
        let requests = tokio_stream::iter(0u64..).map(move |id| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(pb::ProduceStreamRequest {
                correlation_id: id,
                request: Some(pb::ProduceRequest::decode_from(
                    "t",
                    &pb::Record {
                        value: Bytes::from_static(b"x"),
                        ..Default::default()
                    },
                )),
            })
        });
        // The replies are never taken.
        let replies = produce_stream(broker, Box::pin(requests), Charge::default());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let taken = pulled.load(Ordering::Relaxed);
        assert!(
            taken <= MAX_UNANSWERED as u64 + 2,
            "{taken} requests pulled while no reply was taken"
        );
        drop(replies);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_message_that_does_not_decode_ends_the_stream_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let requests = tokio_stream::iter(vec![Err(Status::invalid_argument("not protobuf"))]);
        let mut replies = produce_stream(broker, Box::pin(requests), Charge::default());
        let ended = replies.next().await.expect("a final item");
        assert_eq!(ended.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
