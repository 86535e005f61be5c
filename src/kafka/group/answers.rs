//! What the group machine (`machine.rs`) takes and gives: a JoinGroup as it needs it,
//! the answers to JoinGroup and SyncGroup, Kafka's codes for them, and its bounds.

use bytes::Bytes;

/// Kafka's error codes of the group calls.
pub mod code {
    pub const NONE: i16 = 0;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    /// A static member's call whose member id is no longer its instance's: another
    /// process took the instance id (the client stops; it is a zombie).
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// Kafka's bounds on a member's session timeout (`group.min.session.timeout.ms` and
/// `group.max.session.timeout.ms`).
pub const MIN_SESSION_MS: u64 = 6_000;
pub const MAX_SESSION_MS: u64 = 1_800_000;
/// Members (and members told their id but not yet joined) a group may have.
pub const MAX_MEMBERS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    /// A rebalance: waiting for members to join again.
    Preparing,
    /// Joined and answered: waiting for the leader's assignment.
    Completing,
    Stable,
}

impl State {
    /// Kafka's name for it, as DescribeGroups and ListGroups give it.
    pub fn kafka_name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::Preparing => "PreparingRebalance",
            State::Completing => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A member as a call names it: its member id, and a static member's instance id.
pub type Caller<'a> = (&'a str, Option<&'a str>);

/// A JoinGroup as the machine needs it.
#[derive(Debug, Clone)]
pub struct Join {
    /// Empty for a new member.
    pub member_id: String,
    /// A static member's `group.instance.id` (JoinGroup version 5 and later): a
    /// process that joins with it takes the place of the member that had it.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_ms: u64,
    pub rebalance_ms: u64,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Version 4 and later: a new member is first given its id (MEMBER_ID_REQUIRED)
    /// and joins again with it.
    pub id_required: bool,
    /// The id the machine gives a new member (the caller makes it unique).
    pub new_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member's id, instance id and metadata for the chosen
    /// protocol (assignors order static members by instance id, so that an instance
    /// keeps its partitions across rebalances).
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnswer {
    pub error: i16,
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

/// An answer to a member whose call is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(String, JoinAnswer),
    Sync(String, SyncAnswer),
}

/// The caller's own answer: now, or once the member `.0` is replied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Now(T),
    Later(String),
}

pub(super) fn join_error(error: i16, member_id: &str) -> JoinAnswer {
    JoinAnswer {
        error,
        generation: -1,
        protocol_type: String::new(),
        protocol: String::new(),
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

pub(super) fn sync_error(error: i16) -> SyncAnswer {
    SyncAnswer {
        error,
        protocol_type: String::new(),
        protocol: String::new(),
        assignment: Bytes::new(),
    }
}
