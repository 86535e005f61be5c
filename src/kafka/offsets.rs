//! A Kafka group's committed offsets, OffsetCommit and OffsetFetch: strom's own
//! consumer group of the same name keeps them (`groups::Groups`), so they are the same
//! group's offsets over gRPC and in `strom group describe`.

use std::collections::HashMap;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};

use super::authorize;
use super::errors::{code, Refusal};
use super::group::machine::code::UNKNOWN_MEMBER_ID;
use super::groups::{check_group_name, read_group};
use super::requests::groups::OffsetCommit;
use super::text;
use super::Kafka;
use crate::groups::{ForeignMembers, GrpcMembers};
use crate::grpc::auth::{Access, Kind, Operation};

/// Stores the offsets if the committer may (`Coordinator::check_commit`): all or
/// none, on disk before the answer, in strom's group of the same name; the partitions
/// of a topic the caller may not read are answered TOPIC_AUTHORIZATION_FAILED, and
/// the others committed.
pub async fn offset_commit(
    kafka: &Kafka,
    request: OffsetCommit,
    access: &Access,
) -> OffsetCommitResponse {
    let checked =
        read_group(access, &request.group).and_then(|()| check_group_name(&request.group));
    // A commit from outside the group (no member id: an administrator's reset, or a
    // consumer that assigns itself partitions) is for a group without members: none
    // joins until it is stored.
    let joins = (checked.is_ok() && request.member_id.is_empty())
        .then(|| kafka.coordinator.hold_joins(&request.group));
    let mut error = match checked {
        Ok(()) => {
            let member = (request.member_id.as_str(), request.instance_id.as_deref());
            kafka
                .coordinator
                .check_commit(&request.group, member, request.generation)
        }
        Err(refusal) => refusal.code,
    };
    let refused: Vec<bool> = request
        .topics
        .iter()
        .map(|t| authorize::topic(access, Some(Operation::Read), &t.name).is_err())
        .collect();
    let mut offsets = Vec::new();
    for (topic, _) in request.topics.iter().zip(&refused).filter(|(_, r)| !**r) {
        for (partition, offset, metadata) in &topic.partitions {
            match (u32::try_from(*partition), u64::try_from(*offset)) {
                (Ok(p), Ok(o)) => {
                    let metadata = metadata.clone().unwrap_or_default();
                    offsets.push((topic.name.clone(), p, o, metadata))
                }
                _ if error == code::NONE => error = code::INVALID_REQUEST,
                _ => {}
            }
        }
    }
    // A commit from outside the group into one with gRPC members: Kafka answers a commit
    // without a generation into a group with members so (its tools see a gRPC group as
    // one without members, and were told only INVALID_REQUEST). Members that join after
    // this look are refused by the commit itself (INVALID_REQUEST, then).
    let outside = request.member_id.is_empty();
    if error == code::NONE && outside {
        match kafka.groups.grpc_members(&request.group).await {
            GrpcMembers::Count(0) => {}
            GrpcMembers::Count(_) => error = UNKNOWN_MEMBER_ID,
            GrpcMembers::Unknown { .. } => error = code::COORDINATOR_LOAD_IN_PROGRESS,
        }
    }
    if error == code::NONE && !offsets.is_empty() {
        if let Err(err) = kafka
            .groups
            .commit_for_kafka(&request.group, offsets, joins)
            .await
        {
            let refusal = Refusal::from(err);
            refusal.log_about(&request.group);
            error = refusal.code;
        }
    }
    let mut response = OffsetCommitResponse::default();
    for (topic, refused) in request.topics.into_iter().zip(refused) {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = text(topic.name).into();
        for (index, _, _) in topic.partitions {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = index;
            p.error_code = match refused && error == code::NONE {
                true => code::TOPIC_AUTHORIZATION_FAILED,
                false => error,
            };
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    response
}

/// The group's committed offsets; -1 for a partition with none.
pub async fn offset_fetch(
    kafka: &Kafka,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    version: i16,
    access: &Access,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    let shown = |topic: &str| authorize::topic(access, None, topic).is_ok();
    let names: Vec<String> = topics.iter().flatten().map(|(t, _)| t.clone()).collect();
    let checked = authorize::group(access, None, group).and_then(|()| check_group_name(group));
    let fetched = match checked {
        Ok(()) => {
            // Only topics the caller may see are looked up (and count in the bound).
            let visible = access.visible(Kind::Topic);
            kafka
                .groups
                .fetch_offsets(group, &names, None, visible.as_ref())
                .await
                .map_err(Refusal::from)
        }
        Err(refusal) => Err(refusal),
    };
    let mut failed = code::NONE;
    let fetched = match fetched {
        Ok(fetched) => fetched.offsets,
        Err(refusal) => {
            match version >= 2 {
                true => response.error_code = refusal.code,
                // Version 1 has no field for it but each partition's: a lookup that
                // failed must not read as "nothing committed" (-1), which a consumer
                // takes for a reason to reset its position.
                false => failed = refusal.code,
            }
            Vec::new()
        }
    };
    let by_partition: HashMap<(&str, i64), &crate::groups::offsets::Committed> = fetched
        .iter()
        .map(|(t, p, c)| ((t.as_str(), i64::from(*p)), c))
        .collect();
    let committed =
        |topic: &str, partition: i32| by_partition.get(&(topic, i64::from(partition))).copied();
    let asked: Vec<(String, Vec<i32>)> = match topics {
        Some(topics) => topics,
        None => {
            // Every topic with offsets, in the order they came.
            let mut all: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (topic, partition, _) in fetched.iter().filter(|(t, _, _)| shown(t)) {
                all.entry(topic.clone())
                    .or_default()
                    .push(*partition as i32);
            }
            all.into_iter().collect()
        }
    };
    for (topic, partitions) in asked {
        let mut t = OffsetFetchResponseTopic::default();
        let refused = !shown(&topic);
        for index in partitions {
            let mut p = OffsetFetchResponsePartition::default();
            p.partition_index = index;
            p.error_code = match refused && failed == code::NONE {
                true => code::TOPIC_AUTHORIZATION_FAILED,
                false => failed,
            };
            match committed(&topic, index).filter(|_| !refused) {
                Some(c) => {
                    p.committed_offset = c.offset as i64;
                    p.metadata = Some(text(c.metadata.clone()));
                }
                None => {
                    p.committed_offset = -1;
                    p.metadata = Some(text(""));
                }
            }
            t.partitions.push(p);
        }
        t.name = text(topic).into();
        response.topics.push(t);
    }
    response
}
