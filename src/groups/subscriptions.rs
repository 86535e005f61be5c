//! What members subscribe to, and each group's distinct subscriptions kept once: the
//! members of a group usually subscribe alike, and each member holding its own copy of
//! a list of a thousand names of 200 bytes took 255 KB (4,000 members: a gigabyte).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::broker::page::Visible;
use crate::error::{Error, Result};

/// Most a group's distinct subscriptions may take together (`Subscription::footprint`).
/// Members that subscribe alike share one, so this bounds only what members with many
/// different long lists make a group hold (255 KB each, 1 GB for 4,000 members before
/// they were shared); one list of 1,000 names of 200 bytes takes 240 KB.
pub const MAX_SUBSCRIPTION_BYTES: usize = 1 << 20;
/// Most the distinct subscriptions of every group on the server may take together:
/// without it, 100,000 groups of 1 MiB each could take 100 GB. A hundred thousand groups
/// with a pattern each take about 1.6 GB by `footprint`.
pub const MAX_SERVER_SUBSCRIPTION_BYTES: usize = 2 << 30;

/// What a member subscribes to.
#[derive(Debug, Clone)]
pub enum Subscription {
    Topics(BTreeSet<String>),
    /// The pattern as given, and compiled to match whole names; with a scope, it matches
    /// only the names the scope shows.
    Pattern(String, regex::bytes::Regex, Option<Scope>),
}

/// The topics a member may be given beyond what its pattern says: with an access
/// control list, only those its principal may read (`grpc/auth/access.rs`), so that a
/// pattern never hands a member a topic it may not read, nor shows it the name.
#[derive(Clone)]
pub struct Scope {
    /// Whose scope: members of different principals never share a subscription.
    pub who: Arc<str>,
    pub shows: Visible,
    /// Moves whenever what `shows` shows may have changed (the list read again).
    pub era: Arc<AtomicU64>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("who", &self.who).finish()
    }
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Self) -> bool {
        let who = |scope: &Option<Scope>| scope.as_ref().map(|s| Arc::clone(&s.who));
        match (self, other) {
            (Subscription::Topics(a), Subscription::Topics(b)) => a == b,
            (Subscription::Pattern(a, _, x), Subscription::Pattern(b, _, y)) => {
                a == b && who(x) == who(y)
            }
            _ => false,
        }
    }
}

impl Eq for Subscription {}

/// By what `eq` compares: the names, or the pattern's text and its scope's principal.
impl std::hash::Hash for Subscription {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Subscription::Topics(names) => names.hash(state),
            Subscription::Pattern(text, _, scope) => {
                text.hash(state);
                scope.as_ref().map(|s| &s.who).hash(state);
            }
        }
    }
}

impl Subscription {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Subscription::Topics(names) => names.contains(name),
            Subscription::Pattern(_, regex, scope) => {
                regex.is_match(name.as_bytes()) && scope.as_ref().is_none_or(|s| (s.shows)(name))
            }
        }
    }

    /// The subscription, its pattern (if it is one) limited to what `scope` shows.
    pub fn scoped(self, scope: Option<Scope>) -> Subscription {
        match self {
            Subscription::Pattern(text, regex, _) => Subscription::Pattern(text, regex, scope),
            topics => topics,
        }
    }

    /// About what it takes in memory: per name, its text plus a B-tree entry and a
    /// string header; a pattern, its text and its own matching caches (the compiled
    /// program is shared through `request.rs`'s cache, but each copy of a `Regex` has its
    /// caches: 9 to 12 KB per pattern measured after matching 1,000 names). A pattern
    /// built to fill its caches can take up to 64 KiB of lazy DFA, the limit
    /// `request.rs` sets, so for such patterns this counts a quarter of what they take.
    pub fn footprint(&self) -> usize {
        match self {
            Subscription::Topics(names) => names.iter().map(|n| n.len() + 40).sum(),
            Subscription::Pattern(text, _, scope) => {
                text.len() + (16 << 10) + scope.as_ref().map_or(0, |s| s.who.len())
            }
        }
    }
}

/// The footprint of every group's distinct subscriptions, and the most it may be.
#[derive(Debug)]
pub struct SubscriptionTally {
    bytes: AtomicUsize,
    cap: usize,
}

impl SubscriptionTally {
    pub fn new(cap: usize) -> SubscriptionTally {
        SubscriptionTally {
            bytes: AtomicUsize::new(0),
            cap,
        }
    }
}

/// A group's distinct subscriptions, each with how many members have it.
#[derive(Debug)]
pub struct Subscriptions {
    users: HashMap<Arc<Subscription>, usize>,
    /// The footprint of them all, counted in `server` too.
    bytes: usize,
    server: Arc<SubscriptionTally>,
    /// The era counter of the scoped patterns (one list for the server, so one
    /// counter), kept from the first: a heartbeat reads it without walking them all.
    era: Option<Arc<AtomicU64>>,
}

/// A group counted alone, with the server's cap (tests and benches).
impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions::counted_in(Arc::new(SubscriptionTally::new(
            MAX_SERVER_SUBSCRIPTION_BYTES,
        )))
    }
}

/// A group dropped gives its part back (groups are dropped only once they have no
/// members, which have given theirs back already; this is for the rest: tests, a stop).
impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.server.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Subscriptions {
    pub fn counted_in(server: Arc<SubscriptionTally>) -> Subscriptions {
        Subscriptions {
            users: HashMap::new(),
            bytes: 0,
            server,
            era: None,
        }
    }

    /// The era of the scoped patterns' scopes, if one was ever interned.
    pub fn era(&self) -> Option<u64> {
        self.era.as_ref().map(|era| era.load(Ordering::Acquire))
    }

    /// Each distinct subscription, in no particular order.
    pub fn distinct(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.users.keys()
    }

    /// The group's copy of `sub`, for one more member: one copy however many members
    /// subscribe alike. Refused if new and past `MAX_SUBSCRIPTION_BYTES`; `replacing`,
    /// the subscription the member gives up for it, counts as gone if only it had it.
    pub fn intern(
        &mut self,
        group: &str,
        sub: Subscription,
        replacing: Option<&Arc<Subscription>>,
    ) -> Result<Arc<Subscription>> {
        if let Subscription::Pattern(_, _, Some(scope)) = &sub {
            self.era.get_or_insert_with(|| Arc::clone(&scope.era));
        }
        if let Some((kept, _)) = self.users.get_key_value(&sub) {
            let kept = Arc::clone(kept);
            *self.users.get_mut(&sub).expect("just found") += 1;
            return Ok(kept);
        }
        let freed = replacing
            .filter(|old| self.users.get(&***old) == Some(&1))
            .map_or(0, |old| old.footprint());
        let size = sub.footprint();
        if self.bytes - freed + size > MAX_SUBSCRIPTION_BYTES {
            return Err(Error::LimitReached(format!(
                "group {} keeps at most {MAX_SUBSCRIPTION_BYTES} bytes of different subscriptions; its members' {} take {}, and this one would take {size} more: subscribe as the other members do, or with a topic_pattern (under an acl, one per principal)",
                crate::error::quote(group),
                self.users.len(),
                self.bytes,
            )));
        }
        // Reserved in one step, so that groups taking room at once cannot pass the cap
        // together (the tally holds this group's bytes, so at least `freed`).
        let cap = self.server.cap;
        let reserved =
            self.server
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    (held - freed + size <= cap).then_some(held + size)
                });
        if let Err(held) = reserved {
            return Err(Error::LimitReached(format!(
                "the server keeps at most {cap} bytes of different subscriptions over all consumer groups; they take {held}, and this one would take {size} more: subscribe as the other members of group {} do, or with a topic_pattern (members leaving give room back)",
                crate::error::quote(group),
            )));
        }
        self.bytes += size;
        let sub = Arc::new(sub);
        self.users.insert(Arc::clone(&sub), 1);
        Ok(sub)
    }

    /// One member fewer has `sub`; the last one gives its room back.
    pub fn release(&mut self, sub: &Arc<Subscription>) {
        if let Some(users) = self.users.get_mut(&**sub) {
            *users -= 1;
            if *users == 0 {
                self.users.remove(&**sub);
                self.bytes -= sub.footprint();
                self.server
                    .bytes
                    .fetch_sub(sub.footprint(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
#[path = "subscriptions_tests.rs"]
mod tests;
