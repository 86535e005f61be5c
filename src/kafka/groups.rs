//! The consumer-group calls, from decoded request to response: membership through the
//! coordinator (`group/`), committed offsets through strom's own consumer groups
//! (`groups::Groups`), so that a Kafka group's offsets are the same group's offsets
//! over gRPC and in `strom group describe` (OffsetCommit and OffsetFetch are in
//! `offsets.rs`).

use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::BrokerId;

use super::authorize;
use super::errors::{code, Refusal};
use super::group::machine::{Join, MAX_SESSION_MS};
use super::requests::groups::{Identity, JoinGroup, SyncGroup};
use super::text;
use super::Kafka;
use crate::groups::GrpcMembers;
use crate::grpc::auth::{Access, Operation};

/// strom coordinates every group itself.
pub fn find_coordinator(
    (group, key_type): (&str, i8),
    address: (&str, u16),
    version: i16,
    access: &Access,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    let allowed = match key_type {
        0 => authorize::group(access, None, group),
        _ => Ok(()),
    };
    if let Err(refusal) = allowed {
        response.error_code = refusal.code;
        if version >= 1 {
            response.error_message = Some(text(refusal.message));
        }
        response.node_id = BrokerId(-1);
        return response;
    }
    if key_type != 0 {
        response.error_code = code::INVALID_REQUEST;
        if version >= 1 {
            response.error_message = Some(text(
                "strom coordinates consumer groups only (no Kafka transactions)",
            ));
        }
        response.node_id = BrokerId(-1);
        return response;
    }
    response.node_id = BrokerId(0);
    response.host = text(address.0);
    response.port = i32::from(address.1);
    response
}

pub async fn join_group(
    kafka: &Kafka,
    request: JoinGroup,
    client_id: Option<String>,
    version: i16,
    access: &Access,
) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    if let Err(refusal) = read_group(access, &request.group).and_then(|()| check_names(&request)) {
        response.error_code = refusal.code;
        return response;
    }
    let join = Join {
        member_id: request.member_id,
        instance_id: request.instance_id,
        client_id: client_id.unwrap_or_default(),
        session_ms: u64::try_from(request.session_ms).unwrap_or(0),
        rebalance_ms: u64::try_from(request.rebalance_ms)
            .unwrap_or(0)
            .min(MAX_SESSION_MS),
        protocol_type: request.protocol_type,
        protocols: request.protocols,
        id_required: version >= 4,
        new_id: format!("strom-{}", uuid::Uuid::new_v4().simple()),
    };
    // A group strom's gRPC consumers are in is theirs: both would read the same
    // partitions. Kafka's code for a group of another kind.
    match kafka.groups.grpc_members(&request.group).await {
        GrpcMembers::Count(0) => {}
        GrpcMembers::Count(_) => {
            tracing::info!(
                group = request.group,
                "kafka JoinGroup refused: the group has gRPC members; use another group name"
            );
            response.error_code = INCONSISTENT_GROUP_PROTOCOL;
            return response;
        }
        // Retried by Kafka's clients: the gRPC members of before a restart are known
        // (or gone) once the group's hold ends.
        GrpcMembers::Unknown { .. } => {
            response.error_code = code::COORDINATOR_LOAD_IN_PROGRESS;
            return response;
        }
    }
    let answer = match check_group_name(&request.group) {
        Ok(()) => kafka.coordinator.join(&request.group, join).await,
        Err(refusal) => {
            response.error_code = refusal.code;
            return response;
        }
    };
    tracing::debug!(
        group = request.group,
        member = answer.member_id,
        generation = answer.generation,
        leader = answer.leader,
        error = answer.error,
        "kafka JoinGroup answered"
    );
    response.error_code = answer.error;
    response.generation_id = answer.generation;
    if version >= 7 {
        response.protocol_type = Some(text(answer.protocol_type));
    }
    response.protocol_name = Some(text(answer.protocol));
    response.leader = text(answer.leader);
    response.member_id = text(answer.member_id);
    for joined in answer.members {
        let mut member = JoinGroupResponseMember::default();
        member.member_id = text(joined.id);
        // Encoded from version 5, which has the field.
        member.group_instance_id = joined.instance_id.map(text);
        member.metadata = joined.metadata;
        response.members.push(member);
    }
    response
}

pub async fn sync_group(
    kafka: &Kafka,
    request: SyncGroup,
    version: i16,
    access: &Access,
) -> SyncGroupResponse {
    if let Err(refusal) = read_group(access, &request.group) {
        let mut response = SyncGroupResponse::default();
        response.error_code = refusal.code;
        return response;
    }
    let answer = kafka
        .coordinator
        .sync(
            &request.group,
            (&request.member_id, request.instance_id.as_deref()),
            request.generation,
            request.assignments,
        )
        .await;
    tracing::debug!(
        group = request.group,
        member = request.member_id,
        generation = request.generation,
        error = answer.error,
        assignment = answer.assignment.len(),
        "kafka SyncGroup answered"
    );
    let mut response = SyncGroupResponse::default();
    response.error_code = answer.error;
    if version >= 5 {
        response.protocol_type = Some(text(answer.protocol_type));
        response.protocol_name = Some(text(answer.protocol));
    }
    response.assignment = answer.assignment;
    response
}

pub fn heartbeat(
    kafka: &Kafka,
    group: &str,
    generation: i32,
    (member_id, instance_id): &Identity,
    access: &Access,
) -> HeartbeatResponse {
    let mut response = HeartbeatResponse::default();
    let member = (member_id.as_str(), instance_id.as_deref());
    response.error_code = match read_group(access, group) {
        Ok(()) => kafka.coordinator.heartbeat(group, member, generation),
        Err(refusal) => refusal.code,
    };
    if response.error_code != 0 {
        tracing::debug!(
            group,
            member_id,
            generation,
            error = response.error_code,
            "kafka Heartbeat answered"
        );
    }
    response
}

/// Each member named leaves: by its member id, or a static member by its instance
/// id (an administrator's removal names no member id).
pub fn leave_group(
    kafka: &Kafka,
    group: &str,
    members: Vec<Identity>,
    version: i16,
    access: &Access,
) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default();
    if let Err(refusal) = read_group(access, group) {
        response.error_code = refusal.code;
        return response;
    }
    for (id, instance_id) in members {
        let error = kafka
            .coordinator
            .leave(group, (&id, instance_id.as_deref()));
        if version >= 3 {
            // As named (Kafka's admin client looks its answers up by both ids).
            let mut member = MemberResponse::default();
            member.error_code = error;
            member.member_id = text(id);
            member.group_instance_id = instance_id.map(text);
            response.members.push(member);
        } else {
            response.error_code = error;
        }
    }
    response
}

/// The names a JoinGroup gives its member, held and shown to others: its instance
/// id, protocol type and protocols' names. At most `MAX_NAME` bytes each, as Kafka's
/// clients keep instance ids (one of 40 KB could not even be encoded in the older
/// versions of DescribeGroups and JoinGroup, whose strings end at 32,767 bytes).
fn check_names(request: &JoinGroup) -> Result<(), Refusal> {
    let protocols = request.protocols.iter().map(|(name, _)| name.as_str());
    let instance = request.instance_id.as_deref();
    let names = instance.into_iter().chain([request.protocol_type.as_str()]);
    match names.chain(protocols).find(|name| name.len() > MAX_NAME) {
        None => Ok(()),
        Some(name) => {
            let message = format!(
                "a group instance id, protocol type or protocol name of {} bytes: at most {MAX_NAME}",
                name.len()
            );
            tracing::info!(group = request.group, "kafka JoinGroup refused: {message}");
            Err(Refusal::new(code::INVALID_REQUEST, message))
        }
    }
}

/// Longest instance id, protocol type or protocol name a JoinGroup may give, in bytes.
const MAX_NAME: usize = 249;

/// What the membership calls and OffsetCommit need of the group.
pub(super) fn read_group(access: &Access, group: &str) -> Result<(), Refusal> {
    authorize::group(access, Some(Operation::Read), group)
}

/// strom's rules for a group's name (it names a directory of strom's groups).
pub(super) fn check_group_name(group: &str) -> Result<(), Refusal> {
    crate::groups::validate_group_name(group)
        .map_err(|err| Refusal::new(INVALID_GROUP_ID, err.to_string()))
}

const INVALID_GROUP_ID: i16 = 24;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
