//! The group machine, deterministically: the protocol's steps one by one, then
//! simulated clients that follow the protocol, driven through random joins, leaves,
//! crashes and pauses, must always settle into one stable generation in which every
//! live client, and no other, holds its share of the partitions.

use bytes::Bytes;
use proptest::prelude::*;

use super::machine::{code, Answer, Group, Join, JoinAnswer, Reply, State};

const SESSION: u64 = 10_000;
const REBALANCE: u64 = 30_000;
const PARTITIONS: u32 = 6;

fn join(member_id: &str, new_id: &str, protocols: &[&str]) -> Join {
    Join {
        member_id: member_id.into(),
        client_id: "test".into(),
        session_ms: SESSION,
        rebalance_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("{member_id}{new_id}"))))
            .collect(),
        id_required: true,
        new_id: new_id.into(),
    }
}

fn now_answer(answer: Answer<JoinAnswer>) -> JoinAnswer {
    match answer {
        Answer::Now(a) => a,
        Answer::Later(id) => panic!("{id} waits"),
    }
}

#[test]
fn two_members_join_sync_and_a_third_rebalances_them() {
    let mut g = Group::default();
    // Version 4: a new member is given its id first.
    let (a, _) = g.join(0, join("", "a", &["range"]));
    let a = now_answer(a);
    assert_eq!(
        (a.error, a.member_id.as_str()),
        (code::MEMBER_ID_REQUIRED, "a")
    );
    let (a, _) = g.join(0, join("a", "x", &["range"]));
    let a = now_answer(a); // alone: the rebalance ends at once
    assert_eq!((a.error, a.generation, a.leader.as_str()), (0, 1, "a"));
    let (s, _) = g.sync(0, "a", 1, vec![("a".into(), Bytes::from_static(b"all"))]);
    assert!(matches!(s, Answer::Now(s) if s.assignment == "all"));
    assert_eq!(g.state, State::Stable);

    // b joins: a rebalance, which waits for a.
    g.join(1, join("", "b", &["range", "roundrobin"]));
    let (b, _) = g.join(1, join("b", "", &["range", "roundrobin"]));
    assert_eq!(b, Answer::Later("b".into()));
    assert_eq!(g.heartbeat(2, "a", 1), code::REBALANCE_IN_PROGRESS);
    let (a, replies) = g.join(3, join("a", "", &["range"]));
    let a = now_answer(a);
    assert_eq!(
        (a.generation, a.protocol.as_str(), a.members.len()),
        (2, "range", 2)
    );
    assert!(
        matches!(&replies[..], [Reply::Join(id, b)] if id == "b" && b.members.is_empty() && b.generation == 2)
    );
    // b's sync waits for the leader's, which answers both.
    assert_eq!(g.sync(4, "b", 2, vec![]).0, Answer::Later("b".into()));
    assert_eq!(g.heartbeat(4, "b", 1), code::ILLEGAL_GENERATION);
    let assignment = vec![
        ("a".into(), Bytes::from_static(b"0")),
        ("b".into(), Bytes::from_static(b"1")),
    ];
    let (s, replies) = g.sync(5, "a", 2, assignment);
    assert!(matches!(s, Answer::Now(s) if s.assignment == "0"));
    assert!(matches!(&replies[..], [Reply::Sync(id, s)] if id == "b" && s.assignment == "1"));
    assert_eq!(g.heartbeat(6, "b", 2), code::NONE);
    // A protocol nobody else has is refused, before an id is given.
    let (c, _) = g.join(7, join("", "c", &["sticky"]));
    assert_eq!(now_answer(c).error, code::INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(g.state, State::Stable);
}

/// Two members started together: both given ids, then joined as one generation.
fn two_stable_members(g: &mut Group) -> i32 {
    for id in ["a", "b"] {
        g.join(0, join("", id, &["range"]));
    }
    // a waits for b, which was given an id too (Kafka's barrier counts it).
    assert_eq!(
        g.join(0, join("a", "", &["range"])).0,
        Answer::Later("a".into())
    );
    let (b, replies) = g.join(0, join("b", "", &["range"]));
    let generation = now_answer(b).generation;
    assert!(
        matches!(&replies[..], [Reply::Join(id, a)] if id == "a" && a.generation == generation)
    );
    assert_eq!(
        g.sync(0, "b", generation, vec![]).0,
        Answer::Later("b".into())
    );
    g.sync(0, "a", generation, vec![]);
    assert_eq!(g.state, State::Stable);
    generation
}

#[test]
fn a_silent_member_is_dropped_and_a_late_one_misses_the_generation() {
    let mut g = Group::default();
    let generation = two_stable_members(&mut g);
    assert_eq!(generation, 1, "one generation for both");
    // b heartbeats, a does not: after a session, a is gone and b must rejoin.
    assert_eq!(g.heartbeat(SESSION / 2, "b", 1), code::NONE);
    assert_eq!(g.next_wake(), Some(SESSION));
    assert!(g.tick(SESSION).is_empty());
    assert_eq!(g.state, State::Preparing);
    assert_eq!(g.heartbeat(SESSION, "a", 1), code::UNKNOWN_MEMBER_ID);
    let (b, _) = g.join(SESSION + 1, join("b", "", &["range"]));
    assert_eq!(now_answer(b).generation, 2);
    // A rebalance that a member does not join in time goes on without it.
    g.join(SESSION + 2, join("", "c", &["range"]));
    assert_eq!(
        g.join(SESSION + 2, join("c", "", &["range"])).0,
        Answer::Later("c".into())
    );
    assert!(g.next_wake().unwrap() <= SESSION + 2 + REBALANCE);
    // b keeps its session with heartbeats, but does not join again in time.
    for at in (SESSION + 1_000..SESSION + REBALANCE).step_by(5_000) {
        assert_eq!(g.heartbeat(at, "b", 2), code::REBALANCE_IN_PROGRESS);
        assert!(g.tick(at).is_empty());
    }
    let replies = g.tick(SESSION + 2 + REBALANCE);
    assert!(
        matches!(&replies[..], [Reply::Join(id, c)] if id == "c" && c.generation == 3 && c.leader == "c")
    );
    assert_eq!(
        g.check_commit(SESSION + 3 + REBALANCE, "b", 2),
        code::UNKNOWN_MEMBER_ID
    );
}

/// An id handed out and never used holds the barrier until it lapses, not for ever.
#[test]
fn an_id_never_used_holds_a_rebalance_for_a_session_only() {
    let mut g = Group::default();
    g.join(0, join("", "a", &["range"]));
    g.join(0, join("", "ghost", &["range"]));
    assert_eq!(
        g.join(0, join("a", "", &["range"])).0,
        Answer::Later("a".into())
    );
    assert_eq!(g.next_wake(), Some(SESSION));
    let replies = g.tick(SESSION);
    assert!(matches!(&replies[..], [Reply::Join(id, a)] if id == "a" && a.generation == 1));
}

/// A follower waiting in SyncGroup sends no heartbeat (its connection carries one
/// request at a time): it is not dropped for it. Its leader, silent, is; then the
/// follower is told to join again. A member that sends JoinGroup again meanwhile,
/// unchanged, is told the generation as it is (its answer was lost).
#[test]
fn a_follower_waiting_for_its_assignment_outlives_its_session() {
    let mut g = Group::default();
    for id in ["a", "b"] {
        g.join(0, join("", id, &["range"]));
    }
    g.join(0, join("a", "", &["range"]));
    g.join(0, join("b", "", &["range"]));
    assert_eq!(g.sync(0, "b", 1, vec![]).0, Answer::Later("b".into()));
    let (again, replies) = g.join(1, join("b", "", &["range"]));
    assert!(replies.is_empty());
    assert_eq!(now_answer(again).generation, 1, "the generation as it is");
    assert_eq!(g.state, State::Completing);
    // a never syncs and never heartbeats: past both sessions, a goes, b (waiting) is
    // answered.
    let replies = g.tick(SESSION + 5);
    assert!(
        matches!(&replies[..], [Reply::Sync(id, s)] if id == "b" && s.error == code::REBALANCE_IN_PROGRESS)
    );
    assert_eq!(g.state, State::Preparing);
    assert_eq!(
        g.heartbeat(SESSION, "b", 1),
        code::REBALANCE_IN_PROGRESS,
        "b is still a member"
    );
}

#[test]
fn commits_need_the_current_generation_or_an_empty_group() {
    let mut g = Group::default();
    assert_eq!(g.check_commit(0, "", -1), code::NONE);
    g.join(0, join("", "a", &["range"]));
    g.join(0, join("a", "", &["range"]));
    assert_eq!(
        g.check_commit(0, "a", 1),
        code::REBALANCE_IN_PROGRESS,
        "before the sync"
    );
    g.sync(0, "a", 1, vec![]);
    assert_eq!(g.check_commit(0, "a", 1), code::NONE);
    assert_eq!(g.check_commit(0, "a", 0), code::ILLEGAL_GENERATION);
    assert_eq!(
        g.check_commit(0, "", -1),
        code::UNKNOWN_MEMBER_ID,
        "a member holds the group"
    );
    assert_eq!(g.leave(1, "a").0, code::NONE);
    assert!(g.is_idle());
    assert_eq!(g.check_commit(1, "", -1), code::NONE);
}

/// A client following the protocol, as the model drives it.
#[derive(Debug, Clone, Default)]
struct Client {
    id: String,
    alive: bool,
    waiting: bool,
    /// The generation it joined, and whether it leads it.
    joined: Option<(i32, bool, Vec<String>)>,
    synced: Option<(i32, Bytes)>,
}

#[derive(Debug, Clone)]
enum Op {
    NewClient,
    Step(usize),
    Kill(usize),
    Leave(usize),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::NewClient),
        8 => (0..8usize).prop_map(Op::Step),
        1 => (0..8usize).prop_map(Op::Kill),
        1 => (0..8usize).prop_map(Op::Leave),
        2 => (0..15_000u64).prop_map(Op::Wait),
    ]
}

struct Model {
    group: Group,
    clients: Vec<Client>,
    now: u64,
    ids: u64,
}

impl Model {
    fn deliver(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            let (Reply::Join(id, _) | Reply::Sync(id, _)) = &reply;
            let Some(c) = self.clients.iter_mut().find(|c| c.id == *id && c.waiting) else {
                continue; // a client that crashed: its call is gone
            };
            c.waiting = false;
            match reply {
                Reply::Join(_, a) => take_join(c, a),
                Reply::Sync(_, s) if s.error == code::NONE => {
                    c.synced = Some((c.joined.as_ref().map_or(-1, |j| j.0), s.assignment))
                }
                Reply::Sync(_, s) => lost(c, s.error),
            }
        }
    }

    fn step(&mut self, i: usize) {
        let now = self.now;
        let Some(c) = self
            .clients
            .get(i)
            .filter(|c| c.alive && !c.waiting)
            .cloned()
        else {
            return;
        };
        match (&c.joined, &c.synced) {
            (None, _) => {
                self.ids += 1;
                let (answer, replies) = self
                    .group
                    .join(now, join(&c.id, &format!("m{}", self.ids), &["range"]));
                let c = &mut self.clients[i];
                match answer {
                    Answer::Now(a) => take_join(c, a),
                    Answer::Later(id) => (c.id, c.waiting) = (id, true),
                }
                self.deliver(replies);
            }
            (Some((generation, leader, members)), None) => {
                let assignment = match leader {
                    true => assign(members),
                    false => Vec::new(),
                };
                let (answer, replies) = self.group.sync(now, &c.id, *generation, assignment);
                let c = &mut self.clients[i];
                match answer {
                    Answer::Now(s) if s.error == code::NONE => {
                        c.synced = Some((*generation, s.assignment))
                    }
                    Answer::Now(s) => lost(c, s.error),
                    Answer::Later(_) => c.waiting = true,
                }
                self.deliver(replies);
            }
            (Some((generation, ..)), Some(_)) => {
                let error = self.group.heartbeat(now, &c.id, *generation);
                if error != code::NONE {
                    lost(&mut self.clients[i], error);
                }
            }
        }
    }
}

fn take_join(c: &mut Client, a: JoinAnswer) {
    c.id = a.member_id.clone();
    c.synced = None;
    c.joined = match a.error {
        code::NONE => Some((
            a.generation,
            a.leader == a.member_id,
            a.members.iter().map(|(id, _)| id.clone()).collect(),
        )),
        _ => None,
    };
    if a.error == code::UNKNOWN_MEMBER_ID {
        c.id.clear();
    }
}

/// A call failed: rejoin (with no id if the group forgot it).
fn lost(c: &mut Client, error: i16) {
    c.joined = None;
    c.synced = None;
    if error == code::UNKNOWN_MEMBER_ID {
        c.id.clear();
    }
}

/// The leader's assignment: partitions dealt to the members in turn, as text.
fn assign(members: &[String]) -> Vec<(String, Bytes)> {
    members
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mine: Vec<String> = (0..PARTITIONS)
                .filter(|p| *p as usize % members.len() == i)
                .map(|p| p.to_string())
                .collect();
            (id.clone(), Bytes::from(mine.join(",")))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn clients_that_follow_the_protocol_always_settle(ops in prop::collection::vec(op(), 1..120)) {
        let mut m = Model { group: Group::default(), clients: Vec::new(), now: 0, ids: 0 };
        for op in ops {
            match op {
                Op::NewClient if m.clients.len() < 8 => m.clients.push(Client { alive: true, ..Client::default() }),
                Op::NewClient => {}
                Op::Step(i) => m.step(i),
                Op::Kill(i) => if let Some(c) = m.clients.get_mut(i) { c.alive = false },
                Op::Leave(i) => {
                    if let Some(c) = m.clients.get(i).filter(|c| c.alive && !c.id.is_empty()).cloned() {
                        let (_, replies) = m.group.leave(m.now, &c.id);
                        m.clients[i] = Client { alive: true, ..Client::default() };
                        m.deliver(replies);
                    }
                }
                Op::Wait(ms) => {
                    m.now += ms;
                    let replies = m.group.tick(m.now);
                    m.deliver(replies);
                }
            }
        }
        // Every live client keeps to the protocol, once a second, for long enough.
        for _ in 0..300 {
            m.now += 1_000;
            let replies = m.group.tick(m.now);
            m.deliver(replies);
            for i in 0..m.clients.len() {
                m.step(i);
            }
        }
        let live: Vec<&Client> = m.clients.iter().filter(|c| c.alive).collect();
        let mut ids: Vec<&str> = live.iter().map(|c| c.id.as_str()).collect();
        ids.sort();
        let members: Vec<&str> = m.group.members().map(|(id, _, _)| id).collect();
        prop_assert_eq!(&members, &ids, "the members are the live clients");
        if live.is_empty() {
            prop_assert!(m.group.is_idle() || m.group.state != State::Stable);
            return Ok(());
        }
        prop_assert_eq!(m.group.state, State::Stable);
        let mut owned = Vec::new();
        for c in &live {
            let (generation, assignment) = c.synced.clone().expect("every live client synced");
            prop_assert_eq!(generation, m.group.generation);
            owned.extend(String::from_utf8(assignment.to_vec()).unwrap().split(',').filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap()));
        }
        owned.sort();
        prop_assert_eq!(owned, (0..PARTITIONS).collect::<Vec<_>>(), "each partition owned once");
    }
}

#[test]
fn a_rebalance_answers_the_syncs_that_wait_at_once() {
    let mut g = Group::default();
    let generation = two_stable_members(&mut g);
    // Into a new generation: b waits for its assignment.
    g.join(1, join("", "c", &["range"]));
    let (c, _) = g.join(1, join("c", "", &["range"]));
    assert_eq!(c, Answer::Later("c".into()));
    g.join(1, join("a", "", &["range"]));
    let (_, replies) = g.join(1, join("b", "", &["range"]));
    assert_eq!(replies.len(), 2, "a and c answered: {replies:?}");
    assert_eq!(
        g.sync(1, "b", generation + 1, vec![]).0,
        Answer::Later("b".into())
    );
    // d comes before the leader's assignment: b must not wait for a sync that is over.
    g.join(2, join("", "d", &["range"]));
    let (d, replies) = g.join(2, join("d", "", &["range"]));
    assert_eq!(d, Answer::Later("d".into()));
    assert!(
        matches!(&replies[..], [Reply::Sync(id, s)] if id == "b" && s.error == code::REBALANCE_IN_PROGRESS)
    );
    assert_eq!(
        g.sync(3, "a", generation + 1, vec![]).0,
        Answer::Now(super::machine::SyncAnswer {
            error: code::REBALANCE_IN_PROGRESS,
            protocol_type: String::new(),
            protocol: String::new(),
            assignment: Bytes::new(),
        })
    );
}

/// The protocol is Kafka's vote: each member's first shared choice, most votes
/// winning, not the leader's own first choice.
#[test]
fn the_protocol_is_the_members_vote() {
    let mut g = Group::default();
    g.join(0, join("", "a", &["range", "roundrobin"]));
    g.join(0, join("", "b", &["roundrobin", "range"]));
    g.join(0, join("", "c", &["roundrobin", "range"]));
    g.join(0, join("a", "", &["range", "roundrobin"]));
    g.join(0, join("b", "", &["roundrobin", "range"]));
    let (c, _) = g.join(0, join("c", "", &["roundrobin", "range"]));
    let c = now_answer(c);
    assert_eq!(
        (c.leader.as_str(), c.protocol.as_str()),
        ("a", "roundrobin")
    );
}
