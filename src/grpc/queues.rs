//! `strom.v1.Queues`: share groups. Each unary handler converts, calls
//! `groups::share::ShareGroups`, and converts back; `ShareStream` is a loop of the same
//! calls (see `share_stream`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::auth::{Access, Grant, Kind, Operation};
use super::pb::{self, queues_server, share_stream_request::Body};
use super::quota::{self, Taken};
use super::{access, page, status};
use crate::error::Error;
use crate::groups::share::{count_acks, Ack, AckBatch, Delivered, Refused, ShareGroups};
use crate::groups::ResetTo;

pub struct QueuesService {
    queues: Arc<ShareGroups>,
}

impl QueuesService {
    pub fn new(queues: Arc<ShareGroups>) -> QueuesService {
        QueuesService { queues }
    }
}

pub(super) fn shared(d: Delivered) -> pb::SharedRecord {
    pb::SharedRecord {
        partition: d.partition,
        delivery_count: d.delivery_count as u32,
        record: Some(pb::Record {
            offset: d.offset,
            timestamp_ms: d.timestamp_ms,
            key: d.key,
            value: d.value,
            headers: d
                .headers
                .into_iter()
                .map(|(name, value)| pb::Header { name, value })
                .collect(),
        }),
    }
}

pub(super) fn acks(acks: Vec<pb::Acknowledgement>) -> Result<Vec<AckBatch>, Status> {
    // Counted before they are converted: a message of a million empty entries is
    // refused without being copied once more.
    count_acks(acks.iter().map(|a| a.offsets.len())).map_err(status)?;
    acks.into_iter()
        .map(|a| {
            let ack = match pb::AckType::try_from(a.r#type) {
                Ok(pb::AckType::Accept) => Ack::Accept,
                Ok(pb::AckType::Release) => Ack::Release,
                Ok(pb::AckType::Reject) => Ack::Reject,
                Ok(pb::AckType::Renew) => Ack::Renew,
                _ => {
                    return Err(status(Error::InvalidArgument(format!(
                        "acknowledgement type {} is not one of ACCEPT (1), RELEASE (2), REJECT (3), RENEW (4)",
                        a.r#type
                    ))))
                }
            };
            Ok(AckBatch {
                partition: a.partition,
                offsets: a.offsets,
                ack,
            })
        })
        .collect()
}

pub(super) fn refused(refused: Vec<Refused>) -> Vec<pb::RefusedAck> {
    refused
        .into_iter()
        .map(|r| pb::RefusedAck {
            partition: r.partition,
            offset: r.offset,
            code: Code::FailedPrecondition as i32,
            message: r.reason.message().to_string(),
        })
        .collect()
}

/// Consuming a queue reads its topic for its group; and with a dead-letter topic
/// (`dead_letters`, once the group's config is at hand), writes the records the member
/// fails there, on its behalf: a member's records go only where it may write, or where
/// one who may read them all sent them (`alter_share_group_config`).
pub(super) fn may_consume(
    access: &Access,
    group: &str,
    topic: &str,
    dead_letters: Option<&str>,
) -> crate::Result<()> {
    access
        .check(Operation::Read, Kind::Group, group)
        .and_then(|()| access.check(Operation::Read, Kind::Topic, topic))
        .and_then(|()| match dead_letters {
            Some(dead_letters) => access.check(Operation::Write, Kind::Topic, dead_letters),
            None => Ok(()),
        })
}

type ShareStreamOut = Pin<Box<dyn Stream<Item = Result<pb::ShareStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl queues_server::Queues for QueuesService {
    async fn share_fetch(
        &self,
        request: Request<pb::ShareFetchRequest>,
    ) -> Result<Response<pb::ShareFetchResponse>, Status> {
        let access = access(&request);
        let quota = quota::of(request.extensions());
        let r = request.into_inner();
        // Checked again before each round of a long poll locks records, with the
        // group's dead-letter topic.
        let still =
            |dead_letters: Option<&str>| may_consume(&access, &r.group, &r.topic, dead_letters);
        still(None).map_err(status)?;
        // Its client's turn, before records are locked to it, and no more bytes than
        // its allowance (0: the server's limit; `quota::share_turn`).
        let taken = match &quota {
            Some(quota) => quota::share_turn(quota, usize::MAX).await,
            None => None,
        };
        let limits = (
            r.max_records,
            Duration::from_millis(r.max_wait_ms as u64),
            taken.as_ref().map_or(0, Taken::bytes),
        );
        let fetched = self
            .queues
            .fetch_while(&r.group, &r.member_id, &r.topic, limits, &still)
            .await
            .map_err(status)?;
        if let Some(taken) = taken {
            taken.settle(fetched.records.iter().map(Delivered::size).sum());
        }
        Ok(Response::new(pb::ShareFetchResponse {
            member_id: fetched.member_id,
            records: fetched.records.into_iter().map(shared).collect(),
        }))
    }

    async fn share_acknowledge(
        &self,
        request: Request<pb::ShareAcknowledgeRequest>,
    ) -> Result<Response<pb::ShareAcknowledgeResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        may_consume(&access, &r.group, &r.topic, None).map_err(status)?;
        let batches = acks(r.acks)?;
        let queues = Arc::clone(&self.queues);
        // Spawned: a client that hangs up cannot stop an acknowledgement halfway.
        let done = tokio::spawn(async move {
            queues
                .acknowledge(&r.group, &r.member_id, &r.topic, &batches)
                .await
        });
        let out = done
            .await
            .map_err(|_| Status::internal("acknowledge task failed"))?;
        Ok(Response::new(pb::ShareAcknowledgeResponse {
            refused: refused(out.map_err(status)?),
        }))
    }

    type ShareStreamStream = ShareStreamOut;

    async fn share_stream(
        &self,
        request: Request<Streaming<pb::ShareStreamRequest>>,
    ) -> Result<Response<ShareStreamOut>, Status> {
        let access = access(&request);
        let quota = quota::of(request.extensions());
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(pb::ShareStreamRequest {
                body: Some(Body::Open(open)),
            }) => open,
            _ => {
                return Err(status(Error::InvalidArgument(
                    "a ShareStream starts with an open message (group, member_id, topic)".into(),
                )))
            }
        };
        // One message waiting for the client at most (each about STREAM_MESSAGE_BYTES):
        // a client that stops reading holds little of the server's memory.
        let (tx, rx) = mpsc::channel(1);
        may_consume(&access, &open.group, &open.topic, None).map_err(status)?;
        // For the auth layer, to end the stream if the grant goes (`auth/access.rs`).
        let grant = {
            let (access, group, topic) = (access.clone(), open.group.clone(), open.topic.clone());
            Grant::new(move || may_consume(&access, &group, &topic, None))
        };
        tokio::spawn(super::share_stream::run(
            Arc::clone(&self.queues),
            open,
            inbound,
            tx,
            (access, quota),
        ));
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as ShareStreamOut);
        response.extensions_mut().insert(grant);
        Ok(response)
    }

    async fn alter_share_group_config(
        &self,
        request: Request<pb::AlterShareGroupConfigRequest>,
    ) -> Result<Response<pb::AlterShareGroupConfigResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        let changes: BTreeMap<String, String> = r.config.into_iter().collect();
        access
            .check(Operation::Admin, Kind::Group, &r.group)
            .map_err(status)?;
        if let Some(dead_letters) = changes.get("dead.letter.topic").filter(|t| !t.is_empty()) {
            // The server creates it if it is missing: a topic of the caller's to
            // manage.
            access
                .check(Operation::Admin, Kind::Topic, dead_letters)
                .map_err(status)?;
        }
        // And the records the group's members hold, or fail later, go there whatever
        // they were granted when they took them: so the caller must be one who may
        // read every topic the group consumes, asked under the group's lock so that no
        // fetch takes another topic's records meanwhile. (A member that takes records
        // afterwards must be allowed to write there: `may_consume`.)
        let redirect = |topic: &str| access.check(Operation::Read, Kind::Topic, topic);
        let config = self
            .queues
            .alter_config_checked(&r.group, &changes, &redirect)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AlterShareGroupConfigResponse {
            config: config.into_iter().collect(),
        }))
    }

    async fn describe_share_group(
        &self,
        request: Request<pb::DescribeShareGroupRequest>,
    ) -> Result<Response<pb::DescribeShareGroupResponse>, Status> {
        let access = access(&request);
        access
            .check_any(Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        let shown = |topic: &str| access.shows(Kind::Topic, topic);
        let r = request.into_inner();
        let d = self.queues.describe(&r.group).await.map_err(status)?;
        Ok(Response::new(pb::DescribeShareGroupResponse {
            config: d.config.into_iter().collect(),
            partitions: d
                .partitions
                .into_iter()
                .filter(|p| shown(&p.topic))
                .map(|p| pb::SharePartitionState {
                    topic: p.topic,
                    partition: p.partition,
                    start_offset: p.counts.start,
                    available: p.counts.available,
                    in_flight: p.counts.in_flight,
                    accepted: p.counts.accepted,
                    dead_lettered: p.counts.dead_lettered,
                    lost: p.counts.lost,
                })
                .collect(),
            members: d
                .members
                .into_iter()
                .map(|m| pb::ShareMember {
                    member_id: m.member_id,
                    last_seen_ms: m.last_seen_ms,
                    records_held: m.records_held,
                })
                .collect(),
        }))
    }

    async fn list_share_groups(
        &self,
        request: Request<pb::ListShareGroupsRequest>,
    ) -> Result<Response<pb::ListShareGroupsResponse>, Status> {
        let visible = access(&request).visible(Kind::Group);
        let request = request.into_inner();
        let listed = self
            .queues
            .list(&page(request.page_size, request.page_token, visible));
        Ok(Response::new(pb::ListShareGroupsResponse {
            groups: listed
                .entries
                .into_iter()
                .map(|(group, members)| pb::ShareGroupListing {
                    group,
                    members: members as u32,
                })
                .collect(),
            next_page_token: listed.next_after.unwrap_or_default(),
        }))
    }

    async fn delete_share_group(
        &self,
        request: Request<pb::DeleteShareGroupRequest>,
    ) -> Result<Response<pb::DeleteShareGroupResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        let r = request.into_inner();
        self.queues.delete(&r.group).await.map_err(status)?;
        Ok(Response::new(pb::DeleteShareGroupResponse {}))
    }

    async fn reset_share_group(
        &self,
        request: Request<pb::ResetShareGroupRequest>,
    ) -> Result<Response<pb::ResetShareGroupResponse>, Status> {
        use pb::reset_share_group_request::To;
        let access = access(&request);
        let r = request.into_inner();
        access
            .check(Operation::Admin, Kind::Group, &r.group)
            .and_then(|()| access.check(Operation::Read, Kind::Topic, &r.topic))
            .map_err(status)?;
        let to = match r.to {
            Some(To::Earliest(true)) => ResetTo::Earliest,
            Some(To::Latest(true)) => ResetTo::Latest,
            Some(To::Offset(o)) => ResetTo::Offset(o),
            Some(To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
            _ => {
                return Err(status(Error::InvalidArgument(
                    "say where to reset to: earliest, latest, offset or timestamp_ms".into(),
                )))
            }
        };
        let moved = self
            .queues
            .reset(&r.group, &r.topic, to)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResetShareGroupResponse {
            partitions: moved
                .into_iter()
                .map(|(partition, before, after)| pb::PartitionReset {
                    partition,
                    before,
                    after,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
#[path = "queues_tests.rs"]
mod tests;
