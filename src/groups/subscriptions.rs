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
mod tests {
    use super::*;
    use crate::groups::coordinator::Heartbeat;

    /// A list of 1,000 names of 200 bytes, different for each `seed`.
    fn long_list(seed: usize) -> Subscription {
        let names = (0..1_000).map(|i| format!("{seed:04}-{i:04}-{}", "x".repeat(190)));
        Subscription::Topics(names.collect())
    }

    /// A heartbeat of `id` (empty to join) at `epoch`, subscribing with `sub`.
    fn heartbeat(id: &str, epoch: i64, sub: Subscription, instance: Option<&str>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            subscription: sub,
            instance_id: instance.map(String::from),
            session_timeout_ms: 10_000,
            owned: Vec::new(),
        }
    }

    #[test]
    fn members_subscribing_alike_share_one_copy() {
        let mut subs = Subscriptions::default();
        let first = subs.intern("g", long_list(0), None).unwrap();
        for _ in 0..999 {
            let again = subs.intern("g", long_list(0), None).unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(subs.bytes, first.footprint());
        assert_eq!(subs.distinct().count(), 1);
    }

    #[test]
    fn different_subscriptions_are_refused_past_the_cap_until_room_is_freed() {
        let mut subs = Subscriptions::default();
        let size = long_list(0).footprint();
        let fit = MAX_SUBSCRIPTION_BYTES / size;
        let held: Vec<_> = (0..fit)
            .map(|seed| subs.intern("g", long_list(seed), None).unwrap())
            .collect();
        let err = subs.intern("g", long_list(fit), None).unwrap_err();
        assert!(
            matches!(&err, Error::LimitReached(m) if m.contains("group \"g\"") && m.contains("topic_pattern")),
            "{err}"
        );
        // A member alone with its list may swap it for another of the same size.
        let swapped = subs.intern("g", long_list(fit), Some(&held[0])).unwrap();
        subs.release(&held[0]);
        // Two members share the next one: one leaving frees nothing.
        let shared = subs.intern("g", long_list(1), None).unwrap();
        subs.release(&shared);
        assert!(subs.intern("g", long_list(fit + 1), None).is_err());
        // Its last member leaving does.
        subs.release(&held[1]);
        subs.intern("g", long_list(fit + 1), None).unwrap();
        assert_eq!(subs.distinct().count(), fit);
        drop(swapped);
    }

    /// Through the coordinator: a join refused for the cap changes nothing; a member
    /// refused a change of subscription is removed (fenced).
    #[test]
    fn a_refused_join_changes_nothing_and_a_refused_change_removes_the_member() {
        use crate::groups::coordinator::Membership;
        use crate::groups::TopicsView;
        let view = Arc::new(TopicsView::default());
        let mut group = Membership::new("g", 1_000, Arc::clone(&view));
        let fit = MAX_SUBSCRIPTION_BYTES / long_list(0).footprint();
        let mut answers = Vec::new();
        for seed in 0..fit {
            let hb = heartbeat("", 0, long_list(seed), None);
            answers.push(
                group
                    .heartbeat(hb, &view, 0, || format!("m{seed}"))
                    .unwrap(),
            );
        }
        let epoch = group.epoch();
        let hb = heartbeat("", 0, long_list(fit), None);
        let err = group.heartbeat(hb, &view, 0, || "late".into()).unwrap_err();
        assert!(matches!(err, Error::LimitReached(_)), "{err}");
        assert_eq!((group.members().count(), group.epoch()), (fit, epoch));
        // Joining with a list the group has costs nothing: m0's list now has two members.
        let hb = heartbeat("", 0, long_list(0), None);
        group.heartbeat(hb, &view, 0, || "twin".into()).unwrap();
        let epoch = group.epoch();
        // So m0 changing to a new list would keep both: refused, and m0 is fenced (kept
        // on, it would hold its partitions without hearing its assignment).
        let m0 = &answers[0];
        let hb = heartbeat(&m0.member_id, m0.member_epoch, long_list(fit), None);
        let err = group.heartbeat(hb, &view, 1, String::new).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("removed") && m.contains("topic_pattern")),
            "{err}"
        );
        assert!(group.members().all(|m| &*m.id != "m0"));
        assert_eq!(group.epoch(), epoch + 1);
        let epoch = group.epoch();
        let kept = |group: &Membership, id: &str| {
            let member = group.members().find(|m| &*m.id == id).unwrap();
            Subscription::clone(&member.subscription)
        };
        // m1 is alone with its list: it may swap it for a new one.
        let m1 = &answers[1];
        let hb = heartbeat(&m1.member_id, m1.member_epoch, long_list(fit), None);
        group.heartbeat(hb, &view, 1, String::new).unwrap();
        assert!(kept(&group, "m1") == long_list(fit));
        assert_eq!(group.epoch(), epoch + 1);
    }

    /// A static member that left, then sent a late heartbeat with a subscription the
    /// group refuses, has still left: its restart takes its place (the refusal counted
    /// it as back, and the restart was told it "has not left").
    #[test]
    fn a_refused_late_heartbeat_does_not_bring_a_static_member_back() {
        use crate::groups::coordinator::Membership;
        use crate::groups::TopicsView;
        let view = Arc::new(TopicsView::default());
        let mut group = Membership::new("g", 1_000, Arc::clone(&view));
        let fit = MAX_SUBSCRIPTION_BYTES / long_list(0).footprint();
        for seed in 1..fit {
            let hb = heartbeat("", 0, long_list(seed), None);
            group
                .heartbeat(hb, &view, 0, || format!("m{seed}"))
                .unwrap();
        }
        let hb = heartbeat("", 0, long_list(0), Some("i"));
        let s = group.heartbeat(hb, &view, 0, || "s".into()).unwrap();
        let hb = heartbeat("", 0, long_list(0), None);
        group.heartbeat(hb, &view, 0, || "twin".into()).unwrap();
        group.leave("s", &view);
        let late = heartbeat("s", s.member_epoch, long_list(fit), Some("i"));
        assert!(group.heartbeat(late, &view, 1, String::new).is_err());
        let restart = heartbeat("", 0, long_list(0), Some("i"));
        group.heartbeat(restart, &view, 2, || "s2".into()).unwrap();
    }

    /// Groups share the server's cap: a group is refused once the others hold it, and
    /// gets room back as they release theirs or are dropped.
    #[test]
    fn groups_share_the_servers_cap() {
        let size = long_list(0).footprint();
        let server = Arc::new(SubscriptionTally::new(3 * size));
        let mut a = Subscriptions::counted_in(Arc::clone(&server));
        let mut b = Subscriptions::counted_in(Arc::clone(&server));
        let held = a.intern("a", long_list(0), None).unwrap();
        a.intern("a", long_list(1), None).unwrap();
        b.intern("b", long_list(2), None).unwrap();
        let err = b.intern("b", long_list(3), None).unwrap_err();
        assert!(
            matches!(&err, Error::LimitReached(m) if m.contains("server")),
            "{err}"
        );
        // A member alone with its list may swap it at the cap.
        let swapped = a.intern("a", long_list(4), Some(&held)).unwrap();
        a.release(&held);
        assert!(b.intern("b", long_list(5), None).is_err());
        a.release(&swapped);
        b.intern("b", long_list(5), None).unwrap();
        assert!(b.intern("b", long_list(6), None).is_err());
        drop(a);
        b.intern("b", long_list(6), None).unwrap();
        drop(b);
        assert_eq!(server.bytes.load(Ordering::Relaxed), 0);
    }

    /// Through the coordinator: a member fenced for the server's cap is told so.
    #[test]
    fn a_member_refused_for_the_servers_cap_is_told_which_cap() {
        use crate::groups::coordinator::Membership;
        use crate::groups::TopicsView;
        let view = Arc::new(TopicsView::default());
        let server = Arc::new(SubscriptionTally::new(2 * long_list(0).footprint()));
        let mut groups: Vec<Membership> = ["a", "b"]
            .iter()
            .map(|g| Membership::new(g, 1_000, Arc::clone(&view)).counted_in(Arc::clone(&server)))
            .collect();
        let m = groups[0]
            .heartbeat(heartbeat("", 0, long_list(0), None), &view, 0, || {
                "m".into()
            })
            .unwrap();
        groups[0]
            .heartbeat(heartbeat("", 0, long_list(0), None), &view, 0, || {
                "twin".into()
            })
            .unwrap();
        groups[1]
            .heartbeat(heartbeat("", 0, long_list(1), None), &view, 0, || {
                "n".into()
            })
            .unwrap();
        let hb = heartbeat("m", m.member_epoch, long_list(2), None);
        let err = groups[0].heartbeat(hb, &view, 1, String::new).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("removed") && m.contains("the server keeps")),
            "{err}"
        );
    }
}
