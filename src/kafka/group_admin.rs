//! The groups' administration: ListGroups, DescribeGroups and DeleteGroups, so that
//! Kafka's tools (`kafka-consumer-groups.sh --list`, `--describe`, `--delete`, admin
//! clients) see strom's groups.
//!
//! A group is a Kafka group while Kafka clients are its members (the coordinator's,
//! `group/`), and strom's consumer group of the same name keeps its offsets; a group
//! whose members are strom's gRPC consumers is listed with protocol type `strom`
//! (Kafka's tools list consumer groups by protocol type `consumer` or none, so they
//! leave it out) and described without members, which are not Kafka's to show. A
//! group with offsets and no members is `Empty`, as in Kafka.
//!
//! Access (`authorize.rs`): listed and described, groups with any grant; deleted, admin
//! on the group.

use std::collections::BTreeMap;

use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::protocol::StrBytes;

use super::authorize;
use super::errors::code::{GROUP_ID_NOT_FOUND, INVALID_GROUP_ID, NON_EMPTY_GROUP};
use super::errors::Refusal;
use super::text;
use super::Kafka;
use crate::broker::page::Page;
use crate::error::Error;
use crate::groups::ForeignMembers;
use crate::grpc::auth::{Access, Kind, Operation};
use tokio::sync::OwnedSemaphorePermit;

/// The protocol type strom's own consumer groups are listed with.
const STROM: &str = "strom";

/// strom's groups (those with offsets or gRPC members) the caller may see, and
/// whether each has gRPC members.
async fn strom_groups(
    kafka: &Kafka,
    only: Option<crate::broker::page::Visible>,
) -> BTreeMap<String, bool> {
    let page = Page {
        only,
        ..Page::all()
    };
    let listed = kafka.groups.list(&page).await;
    let groups = listed.entries.into_iter();
    groups
        .map(|(name, _, members)| (name, members > 0))
        .collect()
}

/// Every group the caller may see: Kafka's with members, and strom's; in `states`
/// only (Kafka's names, any case), if any are given.
pub async fn list_groups(
    kafka: &Kafka,
    states: Vec<String>,
    version: i16,
    access: &Access,
) -> ListGroupsResponse {
    let visible = access.visible(Kind::Group);
    let mut listed: BTreeMap<String, (String, &'static str)> = strom_groups(kafka, visible)
        .await
        .into_iter()
        .map(|(name, grpc)| match grpc {
            true => (name, (STROM.to_string(), "Stable")),
            false => (name, (String::new(), "Empty")),
        })
        .collect();
    for (name, state, protocol_type) in kafka.coordinator.list() {
        if access.shows(Kind::Group, &name) {
            listed.insert(name, (protocol_type, state.kafka_name()));
        }
    }
    let mut response = ListGroupsResponse::default();
    for (name, (protocol_type, state)) in listed {
        if !states.is_empty() && !states.iter().any(|s| s.eq_ignore_ascii_case(state)) {
            continue;
        }
        let mut group = ListedGroup::default();
        group.group_id = text(name).into();
        group.protocol_type = text(protocol_type);
        if version >= 4 {
            group.group_state = StrBytes::from_static_str(state);
        }
        response.groups.push(group);
    }
    response
}

/// Each group named (once, however often named), and the response's hold on the
/// server's pool of response bytes: members' metadata and assignments are copies, up
/// to 256 MiB over the coordinator's groups, and a response holds its share until it
/// is written, as a Fetch's does.
pub async fn describe_groups(
    kafka: &Kafka,
    groups: Vec<String>,
    version: i16,
    access: &Access,
) -> (DescribeGroupsResponse, Option<OwnedSemaphorePermit>) {
    let mut response = DescribeGroupsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for name in groups.into_iter().filter(|g| seen.insert(g.clone())) {
        let mut group = DescribedGroup::default();
        group.group_id = text(name.clone()).into();
        if let Err(refusal) = authorize::group(access, None, &name) {
            group.error_code = refusal.code;
            response.groups.push(group);
            continue;
        }
        match kafka.coordinator.describe(&name) {
            Some(view) => {
                group.group_state = StrBytes::from_static_str(view.state.kafka_name());
                group.protocol_type = text(view.protocol_type);
                group.protocol_data = text(view.protocol);
                for m in view.members {
                    let mut member = DescribedGroupMember::default();
                    member.member_id = text(m.id);
                    // Encoded from version 4, which has the field.
                    member.group_instance_id = m.instance_id.map(text);
                    member.client_id = text(m.client_id);
                    member.member_metadata = m.metadata;
                    member.member_assignment = m.assignment;
                    group.members.push(member);
                }
            }
            None => {
                let state = match kafka.groups.known(&name) {
                    Some(members) if members > 0 => {
                        group.protocol_type = StrBytes::from_static_str(STROM);
                        "Stable"
                    }
                    Some(_) => "Empty",
                    // Kafka's answer for a group it does not know, in these versions.
                    None => "Dead",
                };
                group.group_state = StrBytes::from_static_str(state);
            }
        }
        if version >= 3 {
            group.authorized_operations = i32::MIN; // not asked for, or not given
        }
        response.groups.push(group);
    }
    // Taken once, for the whole response (members' bytes are shared with their
    // groups until encoded): a response that held part of the pool while waiting for
    // more could wait for ever on another doing the same, and stop every Fetch.
    let members = response.groups.iter().flat_map(|g| &g.members);
    let bytes: usize = members
        .map(|m| m.member_metadata.len() + m.member_assignment.len())
        .sum();
    let held = match bytes {
        0 => None,
        bytes => Some(kafka.responses.take(bytes).await),
    };
    (response, held)
}

/// Deletes each group and its committed offsets: refused while it has members,
/// Kafka's or gRPC's.
pub async fn delete_groups(
    kafka: &Kafka,
    groups: Vec<String>,
    access: &Access,
) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for name in groups.into_iter().filter(|g| seen.insert(g.clone())) {
        let mut result = DeletableGroupResult::default();
        result.group_id = text(name.clone()).into();
        if let Err(refusal) = delete(kafka, &name, access).await {
            refusal.log_about(&name);
            result.error_code = refusal.code;
        }
        response.results.push(result);
    }
    response
}

async fn delete(kafka: &Kafka, name: &str, access: &Access) -> Result<(), Refusal> {
    authorize::group(access, Some(Operation::Admin), name)?;
    crate::groups::validate_group_name(name)
        .map_err(|err| Refusal::new(INVALID_GROUP_ID, err.to_string()))?;
    // Also checked under the group's lock by `Groups::delete`; here for a Kafka group
    // that has members but no offsets yet, which strom's groups do not know.
    if kafka.coordinator.has_members(name) {
        return Err(Refusal::new(NON_EMPTY_GROUP, "the group has Kafka members"));
    }
    kafka.groups.delete(name).await.map_err(|err| {
        let code = match &err {
            Error::GroupNotFound { .. } => GROUP_ID_NOT_FOUND,
            Error::FailedPrecondition(_) => NON_EMPTY_GROUP,
            _ => return Refusal::from(err),
        };
        Refusal::new(code, err.to_string())
    })?;
    tracing::info!(group = name, "kafka DeleteGroups");
    Ok(())
}
