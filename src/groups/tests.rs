//! The coordinator driven through random histories of joins, heartbeats, leaves, lost
//! answers, static restarts, topic changes and time, against a simple model: which
//! members are alive, and what each client believes it owns.
//!
//! Restarts restore the group from what it saved (`coordinator/saved.rs`), and the
//! clients carry on as if nothing happened.
//!
//! Properties: no partition is ever owned by two live clients at once (the server never
//! hands out a partition before its old owner stopped listing it); the server's members
//! are exactly the model's live ones; and once every client has heartbeated a few times
//! with nothing changing, every subscribed partition has exactly one owner, the split is
//! even, and the group is stable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::coordinator::{Heartbeat, Membership, Subscription};
use super::subscriptions::SubscriptionTally;
use super::{GroupState, TopicsView, Tp};
use crate::broker::TopicMeta;

const SESSION_MS: u64 = 3_000;

#[derive(Debug, Clone)]
enum Op {
    Join {
        instance: Option<u8>,
    },
    Heartbeat {
        client: usize,
        lose_answer: bool,
        slow_release: bool,
    },
    Leave {
        client: usize,
    },
    Advance {
        ms: u64,
    },
    CreateTopic {
        partitions: u32,
    },
    DeleteTopic {
        index: usize,
    },
    /// The server restarts: the group is restored from what it saved.
    Restart,
    /// A client subscribes the other way from its next heartbeat on.
    Switch {
        client: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => proptest::option::weighted(0.3, 0u8..3).prop_map(|instance| Op::Join { instance }),
        8 => (0usize..8, proptest::bool::weighted(0.1), proptest::bool::weighted(0.3))
            .prop_map(|(client, lose_answer, slow_release)| Op::Heartbeat { client, lose_answer, slow_release }),
        1 => (0usize..8).prop_map(|client| Op::Leave { client }),
        2 => (0u64..2_000).prop_map(|ms| Op::Advance { ms }),
        1 => (1u32..5).prop_map(|partitions| Op::CreateTopic { partitions }),
        1 => (0usize..4).prop_map(|index| Op::DeleteTopic { index }),
        1 => Just(Op::Restart),
        1 => (0usize..8).prop_map(|client| Op::Switch { client }),
    ]
}

/// A well-behaved client: it owns what it was told, gives back what it loses (at once,
/// or one heartbeat later when slow), and heartbeats with what it owns.
#[derive(Debug, Clone)]
struct Client {
    member_id: String,
    epoch: i64,
    instance: Option<String>,
    owned: BTreeSet<Tp>,
    /// Revoked partitions a slow client still holds until its next heartbeat.
    releasing: BTreeSet<Tp>,
    /// In the model: not left, not expired, not replaced, not fenced.
    alive: bool,
    /// Answers lost since the last one received.
    lost: u32,
    /// Subscribes by a list of names rather than a pattern (`World::subscription`).
    listed: bool,
    deadline: u64,
}

struct World {
    group: Membership,
    view: Arc<TopicsView>,
    topics: Vec<TopicMeta>,
    version: u64,
    next_topic: u32,
    clients: Vec<Client>,
    now: u64,
    next_id: u64,
    /// The group's `changes` when last saved, and its bytes then.
    saved: (u64, Vec<u8>),
}

impl World {
    fn new() -> World {
        let topics = vec![TopicMeta {
            name: "t0".into(),
            id: format!("{:032x}", 0),
            partitions: 6,
        }];
        let view = Arc::new(TopicsView::new(0, topics.clone()));
        let group = Membership::new("g", 1_000, Arc::clone(&view));
        World {
            saved: (group.changes(), group.saved()),
            group,
            view,
            topics,
            version: 0,
            next_topic: 1,
            clients: Vec::new(),
            now: 0,
            next_id: 0,
        }
    }

    /// Every topic there can be, by a pattern or by a list of names: the two are
    /// distinct subscriptions (kept apart, and saved apart) that match alike.
    fn subscription(listed: bool) -> Subscription {
        match listed {
            true => super::subscription((0..100).map(|i| format!("t{i}")).collect(), ""),
            false => super::subscription(Vec::new(), "t.*"),
        }
        .unwrap()
    }

    fn owned_names(&self, client: &Client) -> Vec<(String, Vec<u32>)> {
        let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (id, p) in client.owned.iter().chain(&client.releasing) {
            if let Some(name) = self.view.name_of(*id) {
                by_topic.entry(name.to_string()).or_default().push(*p);
            }
        }
        by_topic.into_iter().collect()
    }

    fn heartbeat(&mut self, i: usize, lose_answer: bool, slow_release: bool) {
        let client = self.clients[i].clone();
        if !client.alive {
            return;
        }
        let hb = Heartbeat {
            member_id: client.member_id.clone(),
            member_epoch: client.epoch,
            subscription: Self::subscription(client.listed),
            instance_id: client.instance.clone(),
            session_timeout_ms: SESSION_MS,
            owned: self.owned_names(&client),
        };
        let answer = match self
            .group
            .heartbeat(hb, &self.view, self.now, || unreachable!())
        {
            Ok(answer) => answer,
            Err(err) => {
                // Only a client that missed answers (so sends an epoch two behind) may
                // be fenced; it drops its partitions, and the server let them go.
                let c = &mut self.clients[i];
                assert!(
                    c.lost > 0,
                    "a client that got every answer was fenced: {err}"
                );
                c.alive = false;
                c.owned.clear();
                c.releasing.clear();
                return;
            }
        };
        let c = &mut self.clients[i];
        c.deadline = self.now + SESSION_MS;
        // What it listed is released now on the server's side, whether or not the answer
        // arrives: a slow client released its leftovers by not listing them next time.
        c.releasing.clear();
        if lose_answer {
            c.lost += 1;
            return;
        }
        c.lost = 0;
        c.epoch = answer.member_epoch;
        let revoked: BTreeSet<Tp> = c.owned.difference(&answer.assignment).cloned().collect();
        if slow_release {
            c.releasing = revoked;
        }
        c.owned = answer.assignment;
    }

    fn join(&mut self, instance: Option<u8>) {
        let instance = instance.map(|i| format!("instance-{i}"));
        self.next_id += 1;
        let id = format!("m{}", self.next_id);
        let listed = self.next_id % 2 == 0;
        let hb = Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscription: Self::subscription(listed),
            instance_id: instance.clone(),
            session_timeout_ms: SESSION_MS,
            owned: Vec::new(),
        };
        let live_twin = instance.as_ref().is_some_and(|i| {
            self.clients
                .iter()
                .any(|c| c.alive && c.instance.as_ref() == Some(i))
        });
        let answer = match self
            .group
            .heartbeat(hb, &self.view, self.now, || id.clone())
        {
            Ok(answer) => answer,
            Err(err) => {
                // Refused only while a live process holds the instance id.
                assert!(live_twin, "join refused: {err}");
                return;
            }
        };
        assert!(
            !live_twin,
            "a second live process took instance {instance:?}"
        );
        self.clients.push(Client {
            member_id: answer.member_id,
            epoch: answer.member_epoch,
            instance,
            owned: answer.assignment,
            releasing: BTreeSet::new(),
            alive: true,
            lost: 0,
            deadline: self.now + SESSION_MS,
            listed,
        });
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Join { instance } => self.join(instance),
            Op::Heartbeat {
                client,
                lose_answer,
                slow_release,
            } => {
                if client < self.clients.len() {
                    self.heartbeat(client, lose_answer, slow_release)
                }
            }
            Op::Leave { client } => {
                if let Some(c) = self.clients.get_mut(client).filter(|c| c.alive) {
                    self.group.leave(&c.member_id, &self.view);
                    // A static member's partitions wait for its restart; its process has
                    // stopped consuming either way.
                    if c.instance.is_none() {
                        c.alive = false;
                    } else {
                        // It stays a member until its session ends, owning nothing.
                    }
                    c.owned.clear();
                    c.releasing.clear();
                    if c.instance.is_some() {
                        c.alive = false;
                        c.deadline = c.deadline.min(self.now + SESSION_MS);
                    }
                }
            }
            Op::Advance { ms } => {
                self.now += ms;
                let expired = self.group.expire(self.now, &self.view);
                for c in &mut self.clients {
                    if expired.contains(&c.member_id) {
                        // The process may still run, a zombie: it believes it owns its
                        // partitions, but any request it makes is refused.
                        c.alive = false;
                        c.owned.clear();
                        c.releasing.clear();
                    }
                }
            }
            Op::CreateTopic { partitions } => {
                let n = self.next_topic;
                self.next_topic += 1;
                self.topics.push(TopicMeta {
                    name: format!("t{n}"),
                    id: format!("{n:032x}"),
                    partitions,
                });
                self.bump_view();
            }
            Op::DeleteTopic { index } => {
                if index < self.topics.len() {
                    self.topics.remove(index);
                    self.bump_view();
                }
            }
            Op::Switch { client } => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.listed = !c.listed;
                }
            }
            Op::Restart => {
                // What the server last saved: it saves when `changes` moves.
                let saved = self.saved.1.clone();
                let tally = Arc::new(SubscriptionTally::new(usize::MAX));
                let view = Arc::clone(&self.view);
                // Held as the server holds a group found on disk: two intervals.
                self.group =
                    Membership::restore("g", 1_000, view, tally, &saved, self.now, &|_| None)
                        .expect("a saved membership restores")
                        .held_until(self.now + 2_000);
                // A new count of changes: the server saves a restored group anew.
                self.saved.0 = u64::MAX;
            }
        }
    }

    fn bump_view(&mut self) {
        self.version += 1;
        self.view = Arc::new(TopicsView::new(self.version, self.topics.clone()));
    }

    /// Saves the group as the server does, only when its `changes` moved; and checks
    /// that nothing saved changed without it.
    fn save(&mut self) {
        let bytes = self.group.saved();
        if self.group.changes() == self.saved.0 {
            assert_eq!(
                bytes, self.saved.1,
                "the saved state changed without `changes`"
            );
        }
        self.saved = (self.group.changes(), bytes);
    }

    /// No partition is owned by two live clients; the server's members are the model's.
    fn check(&self) -> Result<(), TestCaseError> {
        let mut seen: BTreeMap<&Tp, &str> = BTreeMap::new();
        for c in self.clients.iter().filter(|c| c.alive) {
            for tp in c.owned.iter().chain(&c.releasing) {
                if let Some(other) = seen.insert(tp, &c.member_id) {
                    return Err(TestCaseError::fail(format!(
                        "{tp:?} owned by {other} and {}",
                        c.member_id
                    )));
                }
            }
        }
        let server: BTreeSet<&str> = self.group.members().map(|m| &*m.id).collect();
        for c in self.clients.iter().filter(|c| c.alive) {
            prop_assert!(
                server.contains(c.member_id.as_str()),
                "live client {} unknown to the server",
                c.member_id
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn partitions_never_have_two_owners_and_always_converge(ops in proptest::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op);
            world.save();
            world.check()?;
        }
        // Let static members that left run out their sessions, then settle.
        world.now += SESSION_MS + 1;
        let expired = world.group.expire(world.now, &world.view);
        for c in &mut world.clients {
            if expired.contains(&c.member_id) {
                c.alive = false;
                c.owned.clear();
            }
        }
        for i in 0..world.clients.len() {
            if world.clients[i].alive { world.clients[i].deadline = world.now + SESSION_MS; }
        }
        for _ in 0..4 {
            for i in 0..world.clients.len() {
                world.heartbeat(i, false, false);
                world.check()?;
            }
        }
        let live: Vec<&Client> = world.clients.iter().filter(|c| c.alive).collect();
        let all: BTreeSet<Tp> = world.topics.iter().flat_map(|t| (0..t.partitions).map(|p| (super::topic_id(&t.id).unwrap(), p))).collect();
        if live.is_empty() {
            prop_assert_eq!(world.group.state(), GroupState::Empty);
            return Ok(());
        }
        let owned: BTreeSet<Tp> = live.iter().flat_map(|c| c.owned.iter().cloned()).collect();
        prop_assert_eq!(&owned, &all, "every partition is owned once the group settles");
        let counts: Vec<usize> = live.iter().map(|c| c.owned.len()).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Per topic the split is even, so over topics a member can be ahead by one per topic.
        prop_assert!(max - min <= world.topics.len(), "uneven split {:?}", counts);
        prop_assert_eq!(world.group.state(), GroupState::Stable);
        let epochs: BTreeSet<i64> = live.iter().map(|c| c.epoch).collect();
        prop_assert_eq!(epochs, BTreeSet::from([world.group.epoch()]));
    }
}

// Regressions found in review, each a scenario the random histories had missed.

fn view_of(version: u64, topics: &[(&str, u128, u32)]) -> Arc<TopicsView> {
    let metas = topics
        .iter()
        .map(|(name, id, partitions)| TopicMeta {
            name: name.to_string(),
            id: format!("{id:032x}"),
            partitions: *partitions,
        })
        .collect();
    Arc::new(TopicsView::new(version, metas))
}

fn hb(
    id: &str,
    epoch: i64,
    instance: Option<&str>,
    owned: &BTreeSet<Tp>,
    view: &TopicsView,
) -> Heartbeat {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in owned {
        by_topic
            .entry(view.name_of(*t).unwrap().to_string())
            .or_default()
            .push(*p);
    }
    Heartbeat {
        member_id: id.into(),
        member_epoch: epoch,
        subscription: World::subscription(false),
        instance_id: instance.map(String::from),
        session_timeout_ms: SESSION_MS,
        owned: by_topic.into_iter().collect(),
    }
}

/// A group held after a restart (`Membership::held_until`) hands out nothing before
/// the hold ends, telling its member to come back sooner than the interval, and what
/// the target says once it has ended.
#[test]
fn a_held_group_hands_out_nothing_until_its_hold_ends() {
    let v = view_of(0, &[("t0", 0, 2)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v)).held_until(5_000);
    let none = BTreeSet::new();
    let mut a = g
        .heartbeat(hb("", 0, None, &none, &v), &v, 0, || "a".into())
        .unwrap();
    assert!(a.assignment.is_empty(), "{:?}", a.assignment);
    assert!(
        a.heartbeat_interval_ms < 1_000,
        "{}",
        a.heartbeat_interval_ms
    );
    for now in [1_000, 4_999, 5_000] {
        a = g
            .heartbeat(
                hb("a", a.member_epoch, None, &a.assignment, &v),
                &v,
                now,
                || unreachable!(),
            )
            .unwrap();
        let given = a.assignment.len();
        assert_eq!(given, if now < 5_000 { 0 } else { 2 }, "at {now}");
    }
}

#[test]
fn a_topic_seen_first_by_a_stray_leave_is_still_assigned() {
    let v0 = view_of(0, &[("t0", 0, 2)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v0));
    let none = BTreeSet::new();
    let mut a = g
        .heartbeat(hb("", 0, None, &none, &v0), &v0, 0, || "a".into())
        .unwrap();
    let v1 = view_of(1, &[("t0", 0, 2), ("t1", 1, 2)]);
    g.leave("gone-already", &v1);
    for i in 1..4 {
        a = g
            .heartbeat(
                hb("a", a.member_epoch, None, &a.assignment, &v1),
                &v1,
                i * 100,
                || unreachable!(),
            )
            .unwrap();
    }
    assert_eq!(a.assignment.len(), 4, "{:?}", a.assignment);
}

#[test]
fn a_topic_created_during_a_static_restart_is_still_assigned() {
    let v0 = view_of(0, &[("t0", 0, 2)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v0));
    let none = BTreeSet::new();
    let a = g
        .heartbeat(hb("", 0, Some("i"), &none, &v0), &v0, 0, || "a".into())
        .unwrap();
    let v1 = view_of(1, &[("t0", 0, 2), ("t1", 1, 2)]);
    g.leave("a", &v1);
    let mut b = g
        .heartbeat(hb("", 0, Some("i"), &none, &v1), &v1, 100, || "b".into())
        .unwrap();
    assert!(
        b.assignment.is_superset(&a.assignment),
        "the restarted member takes its partitions back"
    );
    for i in 2..5 {
        b = g
            .heartbeat(
                hb("b", b.member_epoch, Some("i"), &b.assignment, &v1),
                &v1,
                i * 100,
                || unreachable!(),
            )
            .unwrap();
    }
    assert_eq!(b.assignment.len(), 4, "{:?}", b.assignment);
}

#[test]
fn a_member_fenced_for_its_epoch_lets_its_partitions_go_at_once() {
    let v0 = view_of(0, &[("t0", 0, 2)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v0));
    let none = BTreeSet::new();
    let a = g
        .heartbeat(hb("", 0, None, &none, &v0), &v0, 0, || "a".into())
        .unwrap();
    assert!(g
        .heartbeat(
            hb("a", a.member_epoch + 7, None, &a.assignment, &v0),
            &v0,
            10,
            || unreachable!()
        )
        .is_err());
    let mut b = g
        .heartbeat(hb("", 0, None, &none, &v0), &v0, 20, || "b".into())
        .unwrap();
    for i in 3..6 {
        b = g
            .heartbeat(
                hb("b", b.member_epoch, None, &b.assignment, &v0),
                &v0,
                i * 10,
                || unreachable!(),
            )
            .unwrap();
    }
    assert_eq!(b.assignment.len(), 2);
    assert_eq!(g.members().count(), 1);
}

#[test]
fn a_live_static_member_is_not_replaced_by_a_second_process() {
    let v0 = view_of(0, &[("t0", 0, 2)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v0));
    let none = BTreeSet::new();
    g.heartbeat(hb("", 0, Some("i"), &none, &v0), &v0, 0, || "a".into())
        .unwrap();
    let twin = g
        .heartbeat(hb("", 0, Some("i"), &none, &v0), &v0, 10, || "b".into())
        .unwrap_err();
    assert!(twin.to_string().contains("has not left"), "{twin}");
    // Once its session has ended, the instance id is free again.
    g.expire(SESSION_MS + 1, &v0);
    g.heartbeat(
        hb("", 0, Some("i"), &none, &v0),
        &v0,
        SESSION_MS + 2,
        || "b".into(),
    )
    .unwrap();
}

#[test]
fn a_member_that_never_gives_back_its_partitions_is_removed_after_its_session() {
    let v0 = view_of(0, &[("t0", 0, 4)]);
    let mut g = Membership::new("g", 1_000, Arc::clone(&v0));
    let none = BTreeSet::new();
    let a = g
        .heartbeat(hb("", 0, None, &none, &v0), &v0, 0, || "a".into())
        .unwrap();
    let mut b = g
        .heartbeat(hb("", 0, None, &none, &v0), &v0, 10, || "b".into())
        .unwrap();
    // `a` heartbeats on but keeps listing everything (stuck outside its poll loop).
    let mut now = 20;
    let mut a_epoch = a.member_epoch;
    while now < 2 * SESSION_MS {
        match g.heartbeat(
            hb("a", a_epoch, None, &a.assignment, &v0),
            &v0,
            now,
            || unreachable!(),
        ) {
            Ok(answer) => a_epoch = answer.member_epoch,
            Err(_) => break,
        }
        b = g
            .heartbeat(
                hb("b", b.member_epoch, None, &b.assignment, &v0),
                &v0,
                now,
                || unreachable!(),
            )
            .unwrap();
        g.expire(now, &v0);
        now += 500;
    }
    assert!(
        now <= SESSION_MS + 1_000,
        "removed about a session after the revocation began ({now} ms)"
    );
    b = g
        .heartbeat(
            hb("b", b.member_epoch, None, &b.assignment, &v0),
            &v0,
            now,
            || unreachable!(),
        )
        .unwrap();
    assert_eq!(b.assignment.len(), 4);
}
