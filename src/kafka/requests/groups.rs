//! The consumer-group requests: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit and OffsetFetch, and the groups' administration
//! (ListGroups, DescribeGroups, DeleteGroups, OffsetDelete), decoded within their frame.

use bytes::Bytes;

use super::{topics, Partitions, Topic};
use crate::kafka::wire::{Decoded, Reader};

/// FindCoordinator's key (a group id, or a transactional id with key type 1).
pub fn find_coordinator(r: &mut Reader, version: i16) -> Decoded<(String, i8)> {
    let key = r.string("the coordinator key")?;
    let key_type = if version >= 1 { r.i8()? } else { 0 };
    r.tags()?;
    Ok((key, key_type))
}

#[derive(Debug)]
pub struct JoinGroup {
    pub group: String,
    pub session_ms: i32,
    pub rebalance_ms: i32,
    pub member_id: String,
    /// A static member's `group.instance.id` (version 5 and later).
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

pub fn join_group(r: &mut Reader, version: i16) -> Decoded<JoinGroup> {
    let group = r.string("the group id")?;
    let session_ms = r.i32()?;
    let rebalance_ms = if version >= 1 { r.i32()? } else { session_ms };
    let member_id = r.string("the member id")?;
    let instance_id = match version >= 5 {
        true => r.nullable_string("the group instance id")?,
        false => None,
    };
    let protocol_type = r.string("the protocol type")?;
    let protocols = r.array("protocols", |r| {
        let name = r.string("a protocol name")?;
        // Copied: the group keeps it, and a slice would keep the whole frame alive
        // while the group's byte count (`MAX_HELD_BYTES`) saw only the slice.
        let metadata = r.nullable_bytes("protocol metadata")?.unwrap_or_default();
        let metadata = Bytes::copy_from_slice(&metadata);
        r.tags()?;
        Ok((name, metadata))
    })?;
    r.tags()?;
    Ok(JoinGroup {
        group,
        session_ms,
        rebalance_ms,
        member_id,
        instance_id,
        protocol_type,
        protocols,
    })
}

#[derive(Debug)]
pub struct SyncGroup {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

pub fn sync_group(r: &mut Reader, version: i16) -> Decoded<SyncGroup> {
    let group = r.string("the group id")?;
    let generation = r.i32()?;
    let member_id = r.string("the member id")?;
    let instance_id = match version >= 3 {
        true => r.nullable_string("the group instance id")?,
        false => None,
    };
    if version >= 5 {
        let _protocol_type = r.nullable_string("the protocol type")?;
        let _protocol_name = r.nullable_string("the protocol name")?;
    }
    let assignments = r.array("assignments", |r| {
        let member = r.string("a member id")?;
        // Copied, as JoinGroup's metadata is.
        let assignment = r.nullable_bytes("an assignment")?.unwrap_or_default();
        let assignment = Bytes::copy_from_slice(&assignment);
        r.tags()?;
        Ok((member, assignment))
    })?;
    r.tags()?;
    Ok(SyncGroup {
        group,
        generation,
        member_id,
        instance_id,
        assignments,
    })
}

/// A member as a request names it: its member id and, for a static member, its
/// instance id.
pub type Identity = (String, Option<String>);

/// A Heartbeat: group, generation and member.
pub fn heartbeat(r: &mut Reader, version: i16) -> Decoded<(String, i32, Identity)> {
    let group = r.string("the group id")?;
    let generation = r.i32()?;
    let member_id = r.string("the member id")?;
    let instance_id = match version >= 3 {
        true => r.nullable_string("the group instance id")?,
        false => None,
    };
    r.tags()?;
    Ok((group, generation, (member_id, instance_id)))
}

/// A LeaveGroup: the group and the members leaving (one before version 3; from
/// then on, a static member may be named by its instance id alone).
pub fn leave_group(r: &mut Reader, version: i16) -> Decoded<(String, Vec<Identity>)> {
    let group = r.string("the group id")?;
    let mut count = Partitions::new();
    let members = match version {
        0..=2 => vec![(r.string("the member id")?, None)],
        _ => r.array("members", |r| {
            count.add(1)?;
            let member = r.string("a member id")?;
            let instance_id = r.nullable_string("a group instance id")?;
            r.tags()?;
            Ok((member, instance_id))
        })?,
    };
    r.tags()?;
    Ok((group, members))
}

/// A topic's partitions committed: (partition, offset, metadata).
pub type Committed = Topic<(i32, i64, Option<String>)>;
/// A topic's partitions asked for.
pub type Asked = (String, Vec<i32>);

#[derive(Debug)]
pub struct OffsetCommit {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// (topic, [(partition, offset, metadata)]).
    pub topics: Vec<Committed>,
}

pub fn offset_commit(r: &mut Reader, version: i16) -> Decoded<OffsetCommit> {
    let group = r.string("the group id")?;
    let generation = r.i32()?;
    let member_id = r.string("the member id")?;
    let instance_id = match version >= 7 {
        true => r.nullable_string("the group instance id")?,
        false => None,
    };
    if (2..=4).contains(&version) {
        let _retention_time_ms = r.i64()?;
    }
    let topics = topics(r, |r| {
        let index = r.i32()?;
        let offset = r.i64()?;
        if version >= 6 {
            let _leader_epoch = r.i32()?;
        }
        Ok((index, offset, r.nullable_string("commit metadata")?))
    })?;
    r.tags()?;
    Ok(OffsetCommit {
        group,
        generation,
        member_id,
        instance_id,
        topics,
    })
}

/// An OffsetFetch: the group, and its topics and partitions (None: every topic).
pub fn offset_fetch(r: &mut Reader, version: i16) -> Decoded<(String, Option<Vec<Asked>>)> {
    let group = r.string("the group id")?;
    let mut count = Partitions::new();
    let topics = r.nullable_array("topics", |r| {
        let name = r.string("a topic name")?;
        let partitions = r.array("partitions", |r| {
            count.add(1)?;
            r.i32()
        })?;
        r.tags()?;
        Ok((name, partitions))
    })?;
    if version >= 7 {
        let _require_stable = r.bool()?;
    }
    r.tags()?;
    Ok((group, topics))
}

/// A ListGroups request: the states asked for (version 4; none: every state).
pub fn list_groups(r: &mut Reader, version: i16) -> Decoded<Vec<String>> {
    let mut count = Partitions::new();
    let states = match version >= 4 {
        true => r.array("states", |r| {
            count.add(1)?;
            r.string("a state")
        })?,
        false => Vec::new(),
    };
    r.tags()?;
    Ok(states)
}

/// An OffsetDelete request (version 0): the group, and the partitions whose committed
/// offsets to delete.
pub fn offset_delete(r: &mut Reader) -> Decoded<(String, Vec<Topic<i32>>)> {
    let group = r.string("the group id")?;
    let topics = topics(r, |r| r.i32())?;
    Ok((group, topics))
}

/// A DescribeGroups or DeleteGroups request: the groups named (DescribeGroups'
/// `include_authorized_operations`, from version 3, is read and dropped).
pub fn named_groups(r: &mut Reader, version: i16, describe: bool) -> Decoded<Vec<String>> {
    let mut count = Partitions::new();
    let groups = r.array("groups", |r| {
        count.add(1)?;
        r.string("a group id")
    })?;
    if describe && version >= 3 {
        let _include_authorized_operations = r.bool()?;
    }
    r.tags()?;
    Ok(groups)
}
