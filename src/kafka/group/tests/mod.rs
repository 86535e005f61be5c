//! The group machine, deterministically: the protocol's steps one by one (static
//! members' in `statics.rs`); then `model.rs` drives simulated clients through
//! random joins, leaves, crashes, restarts and pauses.

use bytes::Bytes;

use super::machine::{code, Answer, Group, Join, JoinAnswer, Reply, State};

mod model;
mod statics;

const SESSION: u64 = 10_000;
const REBALANCE: u64 = 30_000;

fn join(member_id: &str, new_id: &str, protocols: &[&str]) -> Join {
    join_as(member_id, new_id, None, protocols)
}

/// A JoinGroup of version 4 or later; with an instance id, a static member's.
fn join_as(member_id: &str, new_id: &str, instance: Option<&str>, protocols: &[&str]) -> Join {
    Join {
        member_id: member_id.into(),
        instance_id: instance.map(str::to_string),
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
    let (s, _) = g.sync(
        0,
        ("a", None),
        1,
        vec![("a".into(), Bytes::from_static(b"all"))],
    );
    assert!(matches!(s, Answer::Now(s) if s.assignment == "all"));
    assert_eq!(g.state, State::Stable);

    // b joins: a rebalance, which waits for a.
    g.join(1, join("", "b", &["range", "roundrobin"]));
    let (b, _) = g.join(1, join("b", "", &["range", "roundrobin"]));
    assert_eq!(b, Answer::Later("b".into()));
    assert_eq!(g.heartbeat(2, ("a", None), 1), code::REBALANCE_IN_PROGRESS);
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
    assert_eq!(
        g.sync(4, ("b", None), 2, vec![]).0,
        Answer::Later("b".into())
    );
    assert_eq!(g.heartbeat(4, ("b", None), 1), code::ILLEGAL_GENERATION);
    let assignment = vec![
        ("a".into(), Bytes::from_static(b"0")),
        ("b".into(), Bytes::from_static(b"1")),
    ];
    let (s, replies) = g.sync(5, ("a", None), 2, assignment);
    assert!(matches!(s, Answer::Now(s) if s.assignment == "0"));
    assert!(matches!(&replies[..], [Reply::Sync(id, s)] if id == "b" && s.assignment == "1"));
    assert_eq!(g.heartbeat(6, ("b", None), 2), code::NONE);
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
        g.sync(0, ("b", None), generation, vec![]).0,
        Answer::Later("b".into())
    );
    g.sync(0, ("a", None), generation, vec![]);
    assert_eq!(g.state, State::Stable);
    generation
}

#[test]
fn a_silent_member_is_dropped_and_a_late_one_misses_the_generation() {
    let mut g = Group::default();
    let generation = two_stable_members(&mut g);
    assert_eq!(generation, 1, "one generation for both");
    // b heartbeats, a does not: after a session, a is gone and b must rejoin.
    assert_eq!(g.heartbeat(SESSION / 2, ("b", None), 1), code::NONE);
    assert_eq!(g.next_wake(), Some(SESSION));
    assert!(g.tick(SESSION).is_empty());
    assert_eq!(g.state, State::Preparing);
    assert_eq!(
        g.heartbeat(SESSION, ("a", None), 1),
        code::UNKNOWN_MEMBER_ID
    );
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
        assert_eq!(g.heartbeat(at, ("b", None), 2), code::REBALANCE_IN_PROGRESS);
        assert!(g.tick(at).is_empty());
    }
    let replies = g.tick(SESSION + 2 + REBALANCE);
    assert!(
        matches!(&replies[..], [Reply::Join(id, c)] if id == "c" && c.generation == 3 && c.leader == "c")
    );
    assert_eq!(
        g.check_commit(SESSION + 3 + REBALANCE, ("b", None), 2),
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
    assert_eq!(
        g.sync(0, ("b", None), 1, vec![]).0,
        Answer::Later("b".into())
    );
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
        g.heartbeat(SESSION, ("b", None), 1),
        code::REBALANCE_IN_PROGRESS,
        "b is still a member"
    );
}

#[test]
fn commits_need_the_current_generation_or_an_empty_group() {
    let mut g = Group::default();
    assert_eq!(g.check_commit(0, ("", None), -1), code::NONE);
    g.join(0, join("", "a", &["range"]));
    g.join(0, join("a", "", &["range"]));
    assert_eq!(
        g.check_commit(0, ("a", None), 1),
        code::REBALANCE_IN_PROGRESS,
        "before the sync"
    );
    g.sync(0, ("a", None), 1, vec![]);
    assert_eq!(g.check_commit(0, ("a", None), 1), code::NONE);
    assert_eq!(g.check_commit(0, ("a", None), 0), code::ILLEGAL_GENERATION);
    assert_eq!(
        g.check_commit(0, ("", None), -1),
        code::UNKNOWN_MEMBER_ID,
        "a member holds the group"
    );
    assert_eq!(g.leave(1, ("a", None)).0, code::NONE);
    assert!(g.is_idle());
    assert_eq!(g.check_commit(1, ("", None), -1), code::NONE);
}

/// A member given its id that leaves instead of joining (LeaveGroup with the id)
/// no longer holds the rebalance.
#[test]
fn an_id_handed_out_and_given_back_ends_the_rebalance_it_held() {
    let mut g = Group::default();
    g.join(0, join("", "a", &["range"]));
    g.join(0, join("", "b", &["range"]));
    assert_eq!(
        g.join(0, join("b", "", &["range"])).0,
        Answer::Later("b".into())
    );
    let (error, replies) = g.leave(1, ("a", None));
    assert_eq!(error, code::NONE);
    assert!(
        matches!(&replies[..], [Reply::Join(id, b)] if id == "b" && b.generation == 1),
        "{replies:?}"
    );
    assert_eq!(g.state, State::Completing);
}

/// A group has one protocol type: a member cannot change it by joining again, even
/// alone in the group (as Kafka refuses it).
#[test]
fn a_member_cannot_change_the_group_s_protocol_type() {
    let mut g = Group::default();
    let mut a = join("", "a", &["range"]);
    a.id_required = false;
    g.join(0, a);
    let mut again = join("a", "", &["range"]);
    again.protocol_type = "connect".into();
    let answer = now_answer(g.join(1, again).0);
    assert_eq!(answer.error, code::INCONSISTENT_GROUP_PROTOCOL);
}

/// The bytes a group holds count what each member costs beyond its names and
/// metadata (about a kilobyte), so that the coordinator's bound bounds memory.
#[test]
fn a_members_cost_counts_beyond_its_bytes() {
    let mut g = Group::default();
    for i in 0..10 {
        let mut j = join("", &format!("m{i}"), &["range"]);
        j.id_required = false;
        g.join(0, j);
    }
    assert_eq!(g.member_count(), 10);
    assert!(g.held_bytes() >= 10 * 1024, "{}", g.held_bytes());
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
        g.sync(1, ("b", None), generation + 1, vec![]).0,
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
        g.sync(3, ("a", None), generation + 1, vec![]).0,
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

#[test]
fn an_empty_group_s_first_rebalance_waits_for_more_members() {
    const DELAY: u64 = 3_000;
    let mut g = Group::new(DELAY);
    let enter = |g: &mut Group, now, id: &str| {
        g.join(now, join("", id, &["range"]));
        g.join(now, join(id, "", &["range"])).0
    };
    // Alone, a waits rather than forming a generation at once.
    assert_eq!(enter(&mut g, 0, "a"), Answer::Later("a".into()));
    assert_eq!(g.next_wake(), Some(DELAY));
    // b joins during the wait: it ends, but another wait begins, as b was new.
    assert_eq!(enter(&mut g, 1_000, "b"), Answer::Later("b".into()));
    assert!(g.tick(DELAY).is_empty());
    assert_eq!(g.next_wake(), Some(2 * DELAY));
    let replies = g.tick(2 * DELAY);
    let answered: Vec<(&str, i32)> = replies
        .iter()
        .map(|r| match r {
            Reply::Join(id, a) => (id.as_str(), a.generation),
            Reply::Sync(id, _) => (id.as_str(), -1),
        })
        .collect();
    assert_eq!(answered, [("a", 1), ("b", 1)], "one generation for both");
    g.sync(2 * DELAY, ("b", None), 1, vec![]);
    g.sync(2 * DELAY, ("a", None), 1, vec![]);
    assert_eq!(g.state, State::Stable);

    // A later rebalance does not wait: it ends when every member has joined.
    let now = 2 * DELAY + 1;
    assert_eq!(enter(&mut g, now, "c"), Answer::Later("c".into()));
    assert_eq!(
        g.join(now, join("a", "", &["range"])).0,
        Answer::Later("a".into())
    );
    let (b, _) = g.join(now, join("b", "", &["range"]));
    assert_eq!(now_answer(b).generation, 2);

    // Members arriving all the time: the waits stop at the rebalance timeout.
    let mut g = Group::new(DELAY);
    let mut now = 0;
    while g.generation == 0 {
        enter(&mut g, now, &format!("m{now}"));
        now += 1_000;
        g.tick(now);
    }
    assert_eq!(now, REBALANCE, "formed at the rebalance timeout");
    assert_eq!(g.member_count(), (REBALANCE / 1_000) as usize);
}
