//! `Log.Subscribe`: a server stream of a partition's records from a starting point,
//! then following new ones as they are appended, flow controlled by the client's
//! reading and charged to its fetch quota.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::auth::{Access, Grant, Kind, Operation};
use super::log_service::{invalid, max_bytes, quota_limit, records_budget};
use super::pb;
use super::quota::Quota;
use super::records::{RecordSet, SubscribeResponse};
use super::{status, BoxStream};
use crate::broker::Broker;
use crate::error::Error;

/// Answers a Subscribe: its responses and the grant they need, or the status that
/// refuses it. The auth layer checks the grant again between the messages it sends
/// once the list changes, so that a grant taken away (a new acl read on SIGHUP) ends
/// the stream before its next message; the reading stops when the stream ends.
pub(super) async fn subscribe_stream(
    broker: &Broker,
    r: pb::SubscribeRequest,
    access: Access,
    quota: Option<Quota>,
) -> Result<(BoxStream<SubscribeResponse>, Grant), Status> {
    let topic = r.topic.clone();
    let grant = Grant::new(move || access.check(Operation::Read, Kind::Topic, &topic));
    grant.check().map_err(status)?;
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
    let quota_stopping = stopping.clone();
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
            // The client's turn first, if it has a quota (a subscriber gone or a topic
            // deleted meanwhile ends the wait).
            let (limit, taken) = match &quota {
                None => (limit, None),
                Some(quota) => tokio::select! {
                    limit = quota_limit(&quota_stopping, quota, limit) => match limit {
                        Ok(limit) => limit,
                        Err(stopping) => {
                            let _ = tx.send(Err(stopping)).await;
                            return;
                        }
                    },
                    () = &mut deleted => {
                        let gone = Error::TopicNotFound { topic: partition.topic.clone() };
                        let _ = tx.send(Err(status(gone))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                },
            };
            let sent = match partition.read(next, limit).await {
                Ok((read, offsets)) if !read.chunks.is_empty() => {
                    let (records, after) =
                        RecordSet::from_batches(&read, next, records_budget(limit));
                    if let Some(taken) = taken {
                        taken.settle(records.encoded_len());
                    }
                    let message = SubscribeResponse {
                        records,
                        high_watermark: offsets.high_watermark,
                        next_offset: after,
                    };
                    next = after;
                    tx.send(Ok(message)).await
                }
                Ok(_) => {
                    drop(taken); // not held while the partition is idle
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
    Ok((Box::pin(ReceiverStream::new(rx)), grant))
}
