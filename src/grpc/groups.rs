//! `strom.v1.Groups`: consumer groups. Each handler converts, calls `groups::Groups`, and
//! converts back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{Kind, Operation};
use super::pb::{self, groups_server};
use super::{access, page, status};
use crate::groups::{self, Groups, Heartbeat, NamedPartitions, ResetTo};

pub struct GroupsService {
    groups: Arc<Groups>,
}

impl GroupsService {
    pub fn new(groups: Arc<Groups>) -> GroupsService {
        GroupsService { groups }
    }
}

/// Owned partitions a heartbeat may list (a bound on the work one request can ask for).
const MAX_OWNED: usize = 1_000_000;

fn topic_partitions(named: Vec<NamedPartitions>) -> Vec<pb::TopicPartitions> {
    named
        .into_iter()
        .map(|n| pb::TopicPartitions {
            topic: n.topic,
            partitions: n.partitions,
            topic_id: n.topic_id,
        })
        .collect()
}

fn by_topic(
    map: std::collections::BTreeMap<String, Vec<u32>>,
    shown: &impl Fn(&str) -> bool,
) -> Vec<pb::TopicPartitions> {
    map.into_iter()
        .filter(|(topic, _)| shown(topic))
        .map(|(topic, partitions)| pb::TopicPartitions {
            topic,
            partitions,
            topic_id: String::new(),
        })
        .collect()
}

#[tonic::async_trait]
impl groups_server::Groups for GroupsService {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        access
            .check(Operation::Read, Kind::Group, &r.group)
            .and_then(|()| {
                r.topics
                    .iter()
                    .try_for_each(|topic| access.check(Operation::Read, Kind::Topic, topic))
            })
            .map_err(status)?;
        let owned_count: usize = r.owned.iter().map(|t| t.partitions.len()).sum();
        if owned_count > MAX_OWNED {
            return Err(status(crate::Error::InvalidArgument(format!(
                "{owned_count} owned partitions listed; at most {MAX_OWNED}"
            ))));
        }
        let heartbeat = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            // A pattern matches only topics the member may read.
            subscription: groups::subscription(r.topics, &r.topic_pattern)
                .map_err(status)?
                .scoped(access.read_scope()),
            instance_id: groups::instance_id(r.instance_id).map_err(status)?,
            session_timeout_ms: groups::session_timeout(r.session_timeout_ms).map_err(status)?,
            owned: r
                .owned
                .into_iter()
                .map(|t| (t.topic, t.partitions))
                .collect(),
        };
        // Before the group looks at the topics: a partition made after this time may be
        // in the assignment, and its member then reads it from its first offset.
        let server_time_ms = crate::broker::now_ms();
        let (answer, assignment) = self
            .groups
            .heartbeat(&r.group, heartbeat)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            heartbeat_interval_ms: answer.heartbeat_interval_ms.min(u32::MAX as u64) as u32,
            assignment: topic_partitions(assignment),
            server_time_ms,
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        // Read, as to join: leaving hands the member's partitions to the others.
        access(&request)
            .check(Operation::Read, Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        let r = request.into_inner();
        self.groups
            .leave(&r.group, &r.member_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        access
            .check(Operation::Read, Kind::Group, &r.group)
            .and_then(|()| {
                r.offsets
                    .iter()
                    .try_for_each(|o| access.check(Operation::Read, Kind::Topic, &o.topic))
            })
            .map_err(status)?;
        let offsets = r
            .offsets
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset, o.metadata))
            .collect();
        self.groups
            .commit(&r.group, &r.member_id, r.member_epoch, offsets)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let access = access(&request);
        access
            .check_any(Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        let r = request.into_inner();
        // Unpaged (all or a refusal) unless the client asks for pages: see the proto.
        let paged = (r.page_size != 0 || !r.page_token.is_empty())
            .then(|| page(r.page_size, r.page_token, None));
        // Only the topics the caller has a grant on, as Kafka's OffsetFetch.
        let only = access.visible(Kind::Topic);
        let fetched = self
            .groups
            .fetch_offsets(&r.group, &r.topics, paged.as_ref(), only.as_ref())
            .await
            .map_err(status)?;
        let offsets = fetched
            .offsets
            .into_iter()
            .map(|(topic, partition, c)| pb::CommittedOffset {
                topic,
                partition,
                offset: c.offset,
                metadata: c.metadata,
                commit_timestamp_ms: c.commit_ms,
            })
            .collect();
        Ok(Response::new(pb::FetchOffsetsResponse {
            offsets,
            next_page_token: fetched.next_page_token.unwrap_or_default(),
        }))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        use pb::reset_offsets_request::To;
        let access = access(&request);
        let r = request.into_inner();
        access
            .check(Operation::Admin, Kind::Group, &r.group)
            .and_then(|()| access.check(Operation::Read, Kind::Topic, &r.topic))
            .map_err(status)?;
        let to = match r.to {
            Some(To::Earliest(true)) => ResetTo::Earliest,
            Some(To::Latest(true)) => ResetTo::Latest,
            Some(To::Earliest(false) | To::Latest(false)) => {
                return Err(status(crate::Error::InvalidArgument(
                    "earliest and latest are flags: set the one you mean to true".into(),
                )))
            }
            Some(To::Offset(o)) => ResetTo::Offset(o),
            Some(To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
            Some(To::DurationMs(ms)) => ResetTo::Duration(ms),
            Some(To::ShiftBy(n)) => ResetTo::ShiftBy(n),
            None => {
                return Err(status(crate::Error::InvalidArgument(
                    "say where to reset to: earliest, latest, offset, timestamp_ms, duration_ms or shift_by".into(),
                )))
            }
        };
        let plan = self
            .groups
            .reset(&r.group, &r.topic, &r.partitions, to, r.dry_run)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResetOffsetsResponse {
            topic: plan.topic,
            offsets: plan
                .partitions
                .into_iter()
                .map(|(partition, previous, offset)| pb::OffsetReset {
                    partition,
                    previous: previous.map_or(-1, |p| p as i64),
                    offset,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let access = access(&request);
        access
            .check_any(Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        // A caller with a grant on the group sees its rows only for the topics it has
        // a grant on (as Kafka's OffsetFetch).
        let shown = |topic: &str| access.shows(Kind::Topic, topic);
        let r = request.into_inner();
        // Its partitions' rows only for topics the caller has a grant on.
        let page = page(r.page_size, r.page_token, access.visible(Kind::Topic));
        let g = self
            .groups
            .describe(&r.group, &page)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DescribeGroupResponse {
            group: g.name,
            state: g.state.to_string(),
            group_epoch: g.epoch,
            members: g
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.id,
                    instance_id: m.instance_id.unwrap_or_default(),
                    member_epoch: m.epoch,
                    topics: m.topics.into_iter().filter(|t| shown(t)).collect(),
                    topic_pattern: m.pattern,
                    assignment: by_topic(m.assignment, &shown),
                    revoking: by_topic(m.revoking, &shown),
                    session_timeout_ms: m.session_timeout_ms as u32,
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|o| pb::PartitionLag {
                    topic: o.topic,
                    partition: o.partition,
                    committed: o.committed.map_or(-1, |c| c as i64),
                    high_watermark: o.high_watermark,
                    lag: o
                        .committed
                        .map_or(-1, |c| o.high_watermark.saturating_sub(c) as i64),
                    member_id: o.owner.unwrap_or_default(),
                })
                .collect(),
            next_page_token: g.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let visible = access(&request).visible(Kind::Group);
        let request = request.into_inner();
        let listed = self
            .groups
            .list(&page(request.page_size, request.page_token, visible))
            .await;
        let groups = listed
            .entries
            .into_iter()
            .map(|(group, state, members)| pb::GroupListing {
                group,
                state: state.as_str().to_string(),
                members: members as u32,
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse {
            groups,
            next_page_token: listed.next_after.unwrap_or_default(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Group, &request.get_ref().group)
            .map_err(status)?;
        let r = request.into_inner();
        self.groups.delete(&r.group).await.map_err(status)?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    /// Needs what ResetOffsets does: admin on the group, read on the topic.
    async fn delete_offsets(
        &self,
        request: Request<pb::DeleteOffsetsRequest>,
    ) -> Result<Response<pb::DeleteOffsetsResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        access
            .check(Operation::Admin, Kind::Group, &r.group)
            .and_then(|()| access.check(Operation::Read, Kind::Topic, &r.topic))
            .map_err(status)?;
        let topics = vec![(r.topic, r.partitions)];
        let answers = self.groups.delete_offsets(&r.group, topics).await;
        let deleted = answers
            .and_then(|answers| answers.into_iter().next().expect("one answer a topic"))
            .map_err(status)?;
        Ok(Response::new(pb::DeleteOffsetsResponse { deleted }))
    }
}
