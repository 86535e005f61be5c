//! `strom.v1.Log`: produce and consume.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::{self, log_server::Log};
use super::records::{FetchResponse, RecordSet, SubscribeResponse};
use super::{code, status};
use crate::broker::{self, Broker, Durability};
use crate::error::Error;
use crate::log::{Header, ProducerInfo, Record};

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

fn invalid(msg: &str) -> Status {
    Status::invalid_argument(msg)
}

/// A protobuf produce request in domain terms (moves the record bytes, copies nothing).
fn produce_request(r: pb::ProduceRequest) -> Result<broker::ProduceRequest, Status> {
    let durability = match pb::Durability::try_from(r.durability) {
        Ok(pb::Durability::Unspecified) => None,
        Ok(pb::Durability::PageCache) => Some(Durability::PageCache),
        Ok(pb::Durability::Fsync) => Some(Durability::Fsync),
        Err(_) => {
            return Err(invalid(&format!(
                "durability {} is not a Durability value",
                r.durability
            )))
        }
    };
    let producer = match r.producer_id {
        None => None,
        Some(id) => Some(ProducerInfo {
            id,
            epoch: i16::try_from(r.producer_epoch.unwrap_or(0))
                .map_err(|_| invalid("producer_epoch must fit in 16 bits"))?,
            base_sequence: r.base_sequence.unwrap_or(0),
        }),
    };
    let records = r
        .records
        .into_iter()
        .map(|rec| Record {
            key: rec.key,
            value: rec.value,
            headers: rec
                .headers
                .into_iter()
                .map(|h| Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            timestamp_ms: rec.timestamp_ms,
        })
        .collect();
    Ok(broker::ProduceRequest {
        topic: r.topic,
        partition: r.partition,
        records,
        durability,
        producer,
    })
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

fn max_bytes(requested: u32) -> usize {
    if requested == 0 {
        DEFAULT_MAX_BYTES
    } else {
        requested as usize
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = produce_request(request.into_inner())?;
        // Spawned so that a client hanging up cannot cancel the append halfway.
        let broker = Arc::clone(&self.broker);
        let produced = tokio::spawn(async move { broker.produce(request).await })
            .await
            .map_err(|e| Status::internal(format!("produce task failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(produce_response(produced)))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        // Two stages, so that two cores work on one stream: this task decodes and checks
        // each request and encodes its batch; the appender appends them one after another
        // in the order sent; the waits for fsync run concurrently, so a pipeline of
        // durable requests shares fsyncs.
        let (prepared_tx, mut prepared_rx) =
            mpsc::channel::<(u64, Result<broker::Prepared, Error>)>(4);
        let broker = Arc::clone(&self.broker);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let prepared = match message.request.map(produce_request) {
                    Some(Ok(request)) => broker.prepare(request),
                    Some(Err(s)) => Err(Error::InvalidArgument(s.message().to_string())),
                    None => Err(Error::InvalidArgument(
                        "ProduceStreamRequest.request is missing".into(),
                    )),
                };
                if prepared_tx
                    .send((message.correlation_id, prepared))
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
            while let Some((id, prepared)) = prepared_rx.recv().await {
                let appended = match prepared {
                    Ok(prepared) => prepared.append().await,
                    Err(err) => Err(err),
                };
                match appended {
                    // Waits for fsync run concurrently, so that later requests are
                    // appended meanwhile and share the next fsync.
                    Ok(appended) if appended.needs_sync() => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _ = tx
                                .send(Ok(stream_reply(id, appended.durable().await)))
                                .await;
                        });
                    }
                    Ok(appended) => {
                        let _ = tx
                            .send(Ok(stream_reply(id, appended.durable().await)))
                            .await;
                    }
                    Err(err) => {
                        let _ = tx.send(Ok(stream_reply(id, Err(err)))).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let r = request.into_inner();
        let (read, offsets) = self
            .broker
            .fetch(
                &r.topic,
                r.partition,
                r.offset,
                max_bytes(r.max_bytes),
                Duration::from_millis(r.max_wait_ms.into()),
                r.min_bytes as usize,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(FetchResponse {
            records: RecordSet::from_batches(&read, r.offset),
            high_watermark: offsets.high_watermark,
            log_start_offset: offsets.log_start,
            next_offset: read.next_offset,
        }))
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let partition = self
            .broker
            .partition(&r.topic, r.partition)
            .map_err(status)?;
        let offsets = partition.offsets().map_err(status)?;
        let mut next = match r.start {
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
        partition.read(next, 1).await.map_err(status)?; // an offset outside the log fails now
        let limit = max_bytes(r.max_bytes).min(self.broker.limits().max_fetch_bytes);
        // A small channel is the flow control: the task reads the next chunk only when
        // the client has taken the previous ones.
        let (tx, rx) = mpsc::channel(2);
        let mut stopping = self.broker.shutting_down();
        tokio::spawn(async move {
            let mut moved = partition.watch();
            let deleted = partition.deleted();
            tokio::pin!(deleted);
            loop {
                let sent = match partition.read(next, limit).await {
                    Ok((read, offsets)) if !read.chunks.is_empty() => {
                        let message = SubscribeResponse {
                            records: RecordSet::from_batches(&read, next),
                            high_watermark: offsets.high_watermark,
                            next_offset: read.next_offset,
                        };
                        next = read.next_offset;
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
                            _ = stopping.changed() => {
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
