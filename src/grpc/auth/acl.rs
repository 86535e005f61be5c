//! The access control list (`acl`): which principal may do what to which topics,
//! groups and named producers. Without one, any caller the server lets in may do
//! anything; with one, a call is refused (PERMISSION_DENIED) unless a line grants it.
//!
//! One rule a line, `PRINCIPAL OPERATIONS RESOURCE...`:
//!
//! ```text
//! # who        may               on what
//! orders-api   write             topic:orders producer:orders-api
//! billing      read              topic:orders group:billing
//! ops          all               topic:* group:* producer:*
//! *            read              topic:public.*
//! ```
//!
//! - PRINCIPAL: a token's name in `auth_tokens` (or, with mutual TLS and no tokens,
//!   the common name of the client's certificate), or `*` for any caller with one. Not
//!   a prefix, as Kafka's principals are not: `ops*` would also grant a certificate a
//!   CA issued to `ops-intern`.
//! - OPERATIONS: `read`, `write`, `admin`, comma-separated, or `all`.
//! - RESOURCE: `topic:NAME`, `group:NAME` (consumer groups and share groups),
//!   `producer:NAME` (InitProducer's name) or `exchange:NAME`, each NAME exact or a
//!   prefix ending in `*`; or `metrics`, the metrics endpoint (with `metrics_auth`).
//!
//! Which call needs what is in `access.rs`. Rules only grant: there is no deny line,
//! so the order of lines does not matter. SIGHUP reads the file again.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::reloadable::Reloadable;
use crate::error::{Error, IoContext, Result};

/// What a call does to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read records (Fetch, Subscribe, a group's or a queue's consumption).
    Read,
    /// Append records; name a producer.
    Write,
    /// Create, configure, delete, reset.
    Admin,
}

impl Operation {
    const ALL: [Operation; 3] = [Operation::Read, Operation::Write, Operation::Admin];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Admin => "admin",
        }
    }
}

/// The kinds of resource a rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Topic,
    /// A consumer group or a share group (one namespace for the list).
    Group,
    /// A producer name given to InitProducer.
    Producer,
    /// An exchange: write publishes to it, admin creates, binds and deletes it.
    Exchange,
    /// The metrics endpoint (`metrics_auth`): read scrapes it. Written `metrics`, with
    /// no name.
    Metrics,
}

impl Kind {
    /// The operations that mean something on this kind (`Operation::bit`s): what
    /// "any operation" (describing, listing) looks for, so that a line granting one
    /// that means nothing there (write on a group) grants nothing.
    fn operations(self) -> u8 {
        match self {
            Kind::Topic => Operation::Read.bit() | Operation::Write.bit() | Operation::Admin.bit(),
            Kind::Group => Operation::Read.bit() | Operation::Admin.bit(),
            Kind::Producer => Operation::Write.bit(),
            Kind::Exchange => Operation::Write.bit() | Operation::Admin.bit(),
            Kind::Metrics => Operation::Read.bit(),
        }
    }

    /// The least operation that means something on this kind: what a message
    /// suggests granting for "any operation".
    pub fn least(self) -> Operation {
        match self {
            Kind::Topic | Kind::Group | Kind::Metrics => Operation::Read,
            Kind::Producer | Kind::Exchange => Operation::Write,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Topic => "topic",
            Kind::Group => "group",
            Kind::Producer => "producer",
            Kind::Exchange => "exchange",
            Kind::Metrics => "metrics",
        }
    }
}

/// A name, or every name with a prefix (`prefix*`; `*` alone is every name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Option<Pattern> {
        let pattern = match text.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_string()),
            None => Pattern::Exact(text.to_string()),
        };
        let (Pattern::Exact(name) | Pattern::Prefix(name)) = &pattern;
        // A `*` anywhere else would read as a wildcard and match only itself.
        (!name.contains('*') && !(text.is_empty())).then_some(pattern)
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    principal: Pattern,
    /// `Operation::bit`s.
    operations: u8,
    resources: Vec<(Kind, Pattern)>,
}

/// The rules of one reading of the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Whether a line grants `who` the operation `op` (any operation, for None) on the
    /// resource.
    pub fn allows(&self, who: &str, op: Option<Operation>, kind: Kind, name: &str) -> bool {
        let wanted = op.map_or(kind.operations(), Operation::bit);
        self.0.iter().any(|rule| {
            rule.operations & wanted != 0
                && rule.principal.matches(who)
                && rule
                    .resources
                    .iter()
                    .any(|(k, pattern)| *k == kind && pattern.matches(name))
        })
    }

    /// Whether a line grants `who` the operation `op` on some resource of `kind`.
    pub fn allows_some(&self, who: &str, op: Operation, kind: Kind) -> bool {
        self.0.iter().any(|rule| {
            rule.operations & op.bit() != 0
                && rule.principal.matches(who)
                && rule.resources.iter().any(|(k, _)| *k == kind)
        })
    }

    /// Parses the file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Rules> {
        let bad = |line: usize, what: String| {
            Error::InvalidArgument(format!(
                "acl {} line {line}: {what}; each line is `PRINCIPAL OPERATIONS RESOURCE...`, \
                 as `billing read,write topic:orders group:billing`",
                file.display()
            ))
        };
        let mut rules = Vec::new();
        for (at, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: String| bad(at + 1, what);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [principal, operations, resources @ ..] = &fields[..] else {
                return Err(bad("a principal and operations, and no resource".into()));
            };
            if resources.is_empty() {
                return Err(bad("no resource".into()));
            }
            let principal = match *principal {
                "*" => Pattern::Prefix(String::new()),
                name if !name.contains('*') => Pattern::Exact(name.to_string()),
                name => {
                    return Err(bad(format!(
                        "{name:?} is not a principal: a name, or * for any (no prefixes)"
                    )))
                }
            };
            let mut bits = 0;
            for op in operations.split(',') {
                bits |= match op {
                    "all" => Operation::ALL.iter().fold(0, |bits, op| bits | op.bit()),
                    _ => Operation::ALL
                        .iter()
                        .find(|known| known.as_str() == op)
                        .ok_or_else(|| {
                            bad(format!(
                                "{op:?} is not an operation (read, write, admin or all)"
                            ))
                        })?
                        .bit(),
                };
            }
            let resources = resources
                .iter()
                .map(|resource| {
                    // The metrics endpoint has no name: `metrics` is all of it.
                    if *resource == Kind::Metrics.as_str() {
                        return Ok((Kind::Metrics, Pattern::Prefix(String::new())));
                    }
                    let (kind, name) = resource.split_once(':').unwrap_or(("", resource));
                    let kind = [Kind::Topic, Kind::Group, Kind::Producer, Kind::Exchange]
                        .into_iter()
                        .find(|k| k.as_str() == kind)
                        .ok_or_else(|| {
                            bad(format!(
                                "{resource:?} is not topic:NAME, group:NAME, producer:NAME, exchange:NAME or metrics"
                            ))
                        })?;
                    let pattern = Pattern::parse(name).ok_or_else(|| {
                        bad(format!(
                            "{resource:?}: a name, or a prefix ending in * (a * elsewhere is not a wildcard)"
                        ))
                    })?;
                    Ok((kind, pattern))
                })
                .collect::<Result<Vec<_>>>()?;
            rules.push(Rule {
                principal,
                operations: bits,
                resources,
            });
        }
        // In one order, so that a reload of the same grants in another order is the
        // same list (and changes nothing: `Reloadable`).
        for rule in &mut rules {
            rule.resources.sort();
            rule.resources.dedup();
        }
        rules.sort();
        rules.dedup();
        if rules.is_empty() {
            return Err(bad(
                0,
                "no rule in the file, so no call could be served".into(),
            ));
        }
        Ok(Rules(rules))
    }
}

/// The file, read and checked; `reload` reads it again.
#[derive(Clone)]
pub struct Acl(Arc<Reloadable<Rules>>);

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl").field("file", &self.0.file()).finish()
    }
}

impl Acl {
    pub fn load(file: &Path) -> Result<Acl> {
        Ok(Acl(Arc::new(Reloadable::load(file, read)?)))
    }

    /// Reads the file again: checks from now on use it. On any error the rules in use
    /// stay, all of them; the same rules again change nothing (no stream checks its
    /// grant, no group computes its assignment again).
    pub fn reload(&self) -> Result<()> {
        self.0.reload()
    }

    /// The rules now.
    pub fn rules(&self) -> Arc<Rules> {
        self.0.current()
    }

    /// Whether a line of the rules now names a resource of `kind` (for a warning when
    /// what it grants is not checked: `metrics` without `metrics_auth`).
    pub fn names(&self, kind: Kind) -> bool {
        let rules = self.rules();
        rules
            .0
            .iter()
            .any(|rule| rule.resources.iter().any(|(k, _)| *k == kind))
    }

    /// How many times the rules changed: streams that deliver records check their
    /// grant again when it moves (`revocable.rs`).
    pub(super) fn generation(&self) -> u64 {
        self.0.generation()
    }

    /// The counter of changes itself, for what checks it without the list at hand
    /// (`groups::Scope::era`).
    pub(super) fn generation_counter(&self) -> Arc<AtomicU64> {
        self.0.generation_counter()
    }

    /// A receiver told at each change, to wake streams that have nothing to send.
    pub(super) fn reloads(&self) -> tokio::sync::watch::Receiver<()> {
        self.0.changes()
    }
}

fn read(file: &Path) -> Result<Rules> {
    Rules::parse(&std::fs::read_to_string(file).at(file)?, file)
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
