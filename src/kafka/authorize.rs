//! What each Kafka request needs of the access control list (`acl`), in strom's three
//! operations, as a gRPC call of the same kind needs (`grpc/auth/access.rs`); refusals
//! carry Kafka's authorization codes, per partition where Kafka answers per partition.
//! Each handler checks before it looks anything up, so a refused caller learns
//! nothing, not even whether a topic exists.
//!
//! | request | needs |
//! |---|---|
//! | Produce | write on the topic |
//! | Fetch (checked again after a long poll) | read on the topic |
//! | ListOffsets | any operation on the topic |
//! | Metadata | any operation on the topic (all topics: lists only those) |
//! | InitProducerId | write on some topic (Kafka's idempotent write) |
//! | CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords | admin on the topic |
//! | DescribeConfigs | any operation on the topic (a broker's: nothing, and none shown) |
//! | AlterConfigs, IncrementalAlterConfigs | admin on the topic |
//! | FindCoordinator | any operation on the group |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | read on the group |
//! | OffsetCommit | read on the group and on each topic |
//! | OffsetFetch | any operation on the group and on each topic (all topics: those with a grant) |
//! | ListGroups | lists only groups with a grant |
//! | DescribeGroups | any operation on the group |
//! | DeleteGroups | admin on the group |
//! | ApiVersions, SaslHandshake, SaslAuthenticate | nothing |

use super::errors::{code, Refusal};
use crate::error::Error;
use crate::grpc::auth::{Access, Kind, Operation};

/// Ok if the caller may do `op` (None: anything) to the topic; TOPIC_AUTHORIZATION_FAILED
/// if not.
pub fn topic(access: &Access, op: Option<Operation>, name: &str) -> Result<(), Refusal> {
    check(
        access,
        op,
        Kind::Topic,
        name,
        code::TOPIC_AUTHORIZATION_FAILED,
    )
}

/// Ok if the caller may do `op` (None: anything) to the group;
/// GROUP_AUTHORIZATION_FAILED if not.
pub fn group(access: &Access, op: Option<Operation>, name: &str) -> Result<(), Refusal> {
    check(
        access,
        op,
        Kind::Group,
        name,
        code::GROUP_AUTHORIZATION_FAILED,
    )
}

/// Ok if the caller may write some topic: what an idempotent producer's id needs
/// (Kafka's IDEMPOTENT_WRITE, or WRITE on any topic); CLUSTER_AUTHORIZATION_FAILED if
/// not.
pub fn idempotent_write(access: &Access) -> Result<(), Refusal> {
    access
        .check_some(Operation::Write, Kind::Topic)
        .map_err(|err| refusal(err, code::CLUSTER_AUTHORIZATION_FAILED))
}

fn check(
    access: &Access,
    op: Option<Operation>,
    kind: Kind,
    name: &str,
    code: i16,
) -> Result<(), Refusal> {
    let checked = match op {
        Some(op) => access.check(op, kind, name),
        None => access.check_any(kind, name),
    };
    checked.map_err(|err| refusal(err, code))
}

fn refusal(err: Error, code: i16) -> Refusal {
    Refusal::new(code, err.to_string())
}
