//! What one call may do: the auth layer puts an `Access` in every call's extensions,
//! and each handler checks it before it looks anything up, so that a refused caller
//! learns nothing, not even whether the topic or group exists.
//!
//! Which call needs what (Kafka's mapping, with its operations folded into three):
//!
//! | call | needs |
//! |---|---|
//! | Produce, ProduceStream (each message) | write on the topic |
//! | Fetch (checked again after a long poll), Subscribe | read on the topic |
//! | ListOffsets, DescribeTopic | any operation on the topic |
//! | CreateTopic, DeleteTopic, AlterTopicConfig, AddPartitions, DeleteRecords | admin on the topic |
//! | ListTopics, ListGroups, ListShareGroups | lists only what the caller has any operation on |
//! | InitProducer | with a name: write on `producer:NAME`; without: write on some topic |
//! | Heartbeat, CommitOffsets | read on the group and on each topic named (a `topic_pattern` matches only topics the member may read) |
//! | LeaveGroup | read on the group |
//! | FetchOffsets, DescribeGroup | any operation on the group (topics shown: those with any grant) |
//! | ResetOffsets, DeleteOffsets | admin on the group, read on the topic |
//! | DeleteGroup, DeleteShareGroup | admin on the group |
//! | ShareFetch (before each round of a long poll), ShareAcknowledge, ShareStream (each round of its fetches) | read on the group and the topic; a fetch, write on the group's dead-letter topic |
//! | AlterShareGroupConfig | admin on the group; to set a dead.letter.topic, admin on it and read on every topic the group consumes |
//! | ResetShareGroup | admin on the group, read on the topic |
//! | DescribeShareGroup | any operation on the group (topics shown: those with any grant) |
//! | Publish | write on the exchange (not on the topics it routes to: binding them needed that; the answer names only topics with a grant) |
//! | CreateExchange, DeleteExchange | admin on the exchange |
//! | Unbind | admin on the exchange or on the topic |
//! | Bind | admin on the exchange and write on the topic |
//! | DescribeExchange | any operation on the exchange |
//! | ListExchanges | lists only what the caller has any operation on |
//!
//! Subscribe and ShareStream also leave their grant (`Grant`) on their response: the
//! auth layer checks it between messages after each reload (`revocable.rs`).

use std::sync::Arc;

use super::acl::{Acl, Kind, Operation, Rules};
use super::Principal;
use crate::broker::page::Visible;
use crate::error::{Error, Result};
use crate::groups::Scope;

/// What a stream that delivers records must still be granted: its handler leaves it in
/// the response's extensions, and the auth layer checks it again between messages
/// whenever the list has been read again (`revocable.rs`), ending the stream with
/// PERMISSION_DENIED in place of its next message once the grant is gone.
#[derive(Clone)]
pub struct Grant(Arc<dyn Fn() -> Result<()> + Send + Sync>);

impl Grant {
    pub fn new(check: impl Fn() -> Result<()> + Send + Sync + 'static) -> Grant {
        Grant(Arc::new(check))
    }

    /// Ok while the grant stands.
    pub fn check(&self) -> Result<()> {
        (self.0)()
    }
}

/// What a call may do (in its request's extensions).
#[derive(Clone, Debug)]
pub enum Access {
    /// The server has no access control list.
    Everything,
    /// The list decides, for this principal (None: the call came with no identity).
    Listed { who: Option<Principal>, acl: Acl },
    /// The call's access was never worked out: it may do nothing. Only a call that
    /// skipped the auth layer (none should) gets this.
    Nothing,
}

impl Access {
    /// What `who` may do by `acl`: everything without a list. The one rule, for
    /// gRPC's calls (the auth layer) and Kafka's connections (`kafka/session.rs`).
    pub fn of_principal(acl: Option<&Acl>, who: Option<Principal>) -> Access {
        match acl {
            None => Access::Everything,
            Some(acl) => Access::Listed {
                who,
                acl: acl.clone(),
            },
        }
    }

    /// The access the auth layer gave the call.
    pub fn of(extensions: &http::Extensions) -> Access {
        extensions
            .get::<Access>()
            .cloned()
            .unwrap_or(Access::Nothing)
    }

    /// Ok if the caller may do `op` to the resource.
    pub fn check(&self, op: Operation, kind: Kind, name: &str) -> Result<()> {
        self.allowed(Some(op), kind, name)
    }

    /// Ok if the caller may do anything at all to the resource (describe it, list it).
    pub fn check_any(&self, kind: Kind, name: &str) -> Result<()> {
        self.allowed(None, kind, name)
    }

    /// Whether the caller has any operation on the resource: what a description shows
    /// of it (no refusal message made, for descriptions that ask of many names).
    pub fn shows(&self, kind: Kind, name: &str) -> bool {
        self.permits(None, kind, name)
    }

    /// For a listing: None shows every name, Some shows those the caller has any
    /// operation on, by the list as it is when asked.
    pub fn visible(&self, kind: Kind) -> Option<Visible> {
        match self.clone() {
            Access::Everything => None,
            access => Some(Arc::new(move |name| access.permits(None, kind, name))),
        }
    }

    /// What a pattern subscription of this caller may match: the topics it may read,
    /// by the list as it is when matched, with the list's counter of changes so that
    /// the group matches again after one. None without a list (a call without its
    /// access, `Nothing`, was refused before it subscribed).
    pub fn read_scope(&self) -> Option<Scope> {
        let Access::Listed { who, acl } = self else {
            return None;
        };
        let access = self.clone();
        Some(Scope {
            who: who
                .as_ref()
                .map_or_else(|| Arc::from(""), |who| Arc::clone(&who.0)),
            shows: Arc::new(move |name| access.permits(Some(Operation::Read), Kind::Topic, name)),
            era: acl.generation_counter(),
        })
    }

    /// Ok if some line grants the caller `op` on some resource of `kind`.
    pub fn check_some(&self, op: Operation, kind: Kind) -> Result<()> {
        if self.granted(|rules, who| rules.allows_some(who, op, kind)) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{} may not {} any {}: no line of the server's acl grants it",
            self.who(),
            op.as_str(),
            kind.as_str()
        )))
    }

    /// Whether a line grants it: no message made, for listings that ask of every name.
    fn permits(&self, op: Option<Operation>, kind: Kind, name: &str) -> bool {
        self.granted(|rules, who| rules.allows(who, op, kind, name))
    }

    /// Everything without a list; with one, what `asks` finds in it for the caller
    /// (nothing for a caller with no name).
    fn granted(&self, asks: impl FnOnce(&Rules, &str) -> bool) -> bool {
        match self {
            Access::Everything => true,
            Access::Listed {
                who: Some(who),
                acl,
            } => asks(&acl.rules(), &who.0),
            Access::Listed { who: None, .. } | Access::Nothing => false,
        }
    }

    fn allowed(&self, op: Option<Operation>, kind: Kind, name: &str) -> Result<()> {
        if self.permits(op, kind, name) {
            return Ok(());
        }
        let least = kind.least().as_str();
        let (who, name_of_who, kind) = (self.who(), self.who_name(), kind.as_str());
        Err(Error::PermissionDenied(match op {
            Some(op) => format!(
                "{who} may not {op} {kind} {name:?}: no line of the server's acl grants it (a line `{name_of_who} {op} {kind}:{name}` would)",
                op = op.as_str(),
            ),
            None => format!(
                "{who} has no access to {kind} {name:?}: no line of the server's acl grants it any operation (a line `{name_of_who} {least} {kind}:{name}` would)",
            ),
        }))
    }

    fn who(&self) -> String {
        match self {
            Access::Listed { who: Some(who), .. } => format!("{:?}", &*who.0),
            Access::Listed { who: None, .. } => {
                "a caller without a token or certificate name".into()
            }
            _ => "this call".into(),
        }
    }

    fn who_name(&self) -> &str {
        match self {
            Access::Listed { who: Some(who), .. } => &who.0,
            _ => "NAME",
        }
    }
}
