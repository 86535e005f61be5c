//! Static members (KIP-345), step by step: a restarted process of an instance takes
//! its member's place without a rebalance, the process it replaced is fenced, and
//! calls that name an instance are checked against it.

use bytes::Bytes;

use super::{join, join_as, now_answer, REBALANCE, SESSION};
use crate::kafka::group::machine::{code, Answer, Group, Reply, State, SyncAnswer};

fn assigned(answer: Answer<SyncAnswer>) -> Bytes {
    match answer {
        Answer::Now(s) if s.error == code::NONE => s.assignment,
        other => panic!("not assigned: {other:?}"),
    }
}

/// Dynamic member a (the leader, assigned "0") and static member s of instance "i"
/// (assigned "1"), stable at generation 2.
fn a_and_static_s(g: &mut Group) {
    g.join(0, join("", "a", &["range"]));
    g.join(0, join("a", "", &["range"]));
    g.sync(0, ("a", None), 1, vec![]);
    // A static member joins at once: no MEMBER_ID_REQUIRED round.
    let (s, _) = g.join(1, join_as("", "s", Some("i"), &["range"]));
    assert_eq!(s, Answer::Later("s".into()));
    let a = now_answer(g.join(1, join("a", "", &["range"])).0);
    assert_eq!((a.generation, a.leader.as_str()), (2, "a"));
    // The leader is told each member's instance id (assignors sort by it).
    let instances: Vec<(&str, Option<&str>)> = (a.members.iter())
        .map(|m| (m.id.as_str(), m.instance_id.as_deref()))
        .collect();
    assert_eq!(instances, [("a", None), ("s", Some("i"))]);
    assert_eq!(
        g.sync(1, ("s", Some("i")), 2, vec![]).0,
        Answer::Later("s".into())
    );
    let assignment = vec![
        ("a".into(), Bytes::from_static(b"0")),
        ("s".into(), Bytes::from_static(b"1")),
    ];
    let (_, replies) = g.sync(1, ("a", None), 2, assignment);
    assert!(matches!(&replies[..], [Reply::Sync(id, s)] if id == "s" && s.assignment == "1"));
    assert_eq!(g.state, State::Stable);
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let mut g = Group::default();
    a_and_static_s(&mut g);
    // s's process dies without leaving; a new one of instance "i" joins.
    let (answer, replies) = g.join(2, join_as("", "s2", Some("i"), &["range"]));
    let answer = now_answer(answer);
    assert!(replies.is_empty());
    assert_eq!(
        (answer.error, answer.generation, answer.member_id.as_str()),
        (code::NONE, 2, "s2")
    );
    assert_eq!((answer.leader.as_str(), answer.members.len()), ("a", 0));
    assert_eq!(g.state, State::Stable, "no rebalance");
    assert_eq!(assigned(g.sync(3, ("s2", Some("i")), 2, vec![]).0), "1");
    assert_eq!(g.heartbeat(3, ("a", None), 2), code::NONE, "a goes on");
    // The old process, were it still running, is fenced, with or without its
    // instance id.
    assert_eq!(
        g.heartbeat(3, ("s", Some("i")), 2),
        code::FENCED_INSTANCE_ID
    );
    assert_eq!(g.heartbeat(3, ("s", None), 2), code::UNKNOWN_MEMBER_ID);
    assert_eq!(
        g.check_commit(3, ("s", Some("i")), 2),
        code::FENCED_INSTANCE_ID
    );
    let old_join = now_answer(g.join(3, join_as("s", "", Some("i"), &["range"])).0);
    assert_eq!(old_join.error, code::FENCED_INSTANCE_ID);
    assert_eq!(g.generation, 2);
    let ids: Vec<&str> = g.members().map(|(id, _, _)| id).collect();
    assert_eq!(ids, ["a", "s2"]);
}

#[test]
fn a_restarted_static_leader_follows_and_leads_the_next_generation() {
    let mut g = Group::default();
    g.join(0, join_as("", "s", Some("i"), &["range"]));
    g.sync(
        0,
        ("s", Some("i")),
        1,
        vec![("s".into(), Bytes::from_static(b"all"))],
    );
    let answer = now_answer(g.join(1, join_as("", "s2", Some("i"), &["range"])).0);
    // Named the leader it replaced, so it does not assign generation 1 again.
    assert_eq!((answer.generation, answer.leader.as_str()), (1, "s"));
    assert!(answer.members.is_empty());
    assert_eq!(assigned(g.sync(1, ("s2", Some("i")), 1, vec![]).0), "all");
    // It leads the next generation.
    g.join(2, join("", "b", &["range"]));
    g.join(2, join("b", "", &["range"]));
    let answer = now_answer(g.join(2, join_as("s2", "", Some("i"), &["range"])).0);
    assert_eq!((answer.generation, answer.leader.as_str()), (2, "s2"));
    assert_eq!(answer.members.len(), 2);
}

#[test]
fn a_restart_that_changes_the_protocol_rebalances() {
    let mut g = Group::default();
    g.join(0, join_as("", "s", Some("i"), &["range", "roundrobin"]));
    g.sync(0, ("s", Some("i")), 1, vec![]);
    // Of another protocol type, even alone in the group, it is refused.
    let mut connect = join_as("", "s2", Some("i"), &["range"]);
    connect.protocol_type = "connect".into();
    let refused = now_answer(g.join(1, connect).0);
    assert_eq!(refused.error, code::INCONSISTENT_GROUP_PROTOCOL);
    let (answer, _) = g.join(1, join_as("", "s2", Some("i"), &["roundrobin"]));
    // Alone, its join ends the rebalance at once, in a new generation.
    let answer = now_answer(answer);
    assert_eq!(
        (
            answer.generation,
            answer.protocol.as_str(),
            answer.leader.as_str()
        ),
        (2, "roundrobin", "s2")
    );
    assert_eq!(g.state, State::Completing);
}

#[test]
fn a_restart_fences_the_old_process_s_waiting_calls() {
    // While the group waits for the leader's assignment: the old process's sync is
    // fenced, and the group rebalances (the leader may be assigning to the old id).
    let mut g = Group::default();
    a_and_static_s(&mut g);
    g.join(2, join("", "c", &["range"]));
    g.join(2, join("c", "", &["range"]));
    g.join(2, join_as("s", "", Some("i"), &["range"]));
    g.join(2, join("a", "", &["range"]));
    assert_eq!(g.state, State::Completing);
    assert_eq!(
        g.sync(3, ("s", Some("i")), 3, vec![]).0,
        Answer::Later("s".into())
    );
    let (answer, replies) = g.join(4, join_as("", "s2", Some("i"), &["range"]));
    assert!(
        replies.iter().any(
            |r| matches!(r, Reply::Sync(id, s) if id == "s" && s.error == code::FENCED_INSTANCE_ID)
        ),
        "{replies:?}"
    );
    assert_eq!(answer, Answer::Later("s2".into()));
    assert_eq!(g.state, State::Preparing);

    // While the group prepares a rebalance: the old process's join is fenced, and
    // the new one's takes its place in it.
    let mut g = Group::default();
    a_and_static_s(&mut g);
    g.join(5, join("", "c", &["range"]));
    g.join(5, join("c", "", &["range"]));
    g.join(5, join_as("s", "", Some("i"), &["range"]));
    let (answer, replies) = g.join(6, join_as("", "s2", Some("i"), &["range"]));
    assert!(
        matches!(&replies[..], [Reply::Join(id, j)] if id == "s" && j.error == code::FENCED_INSTANCE_ID),
        "{replies:?}"
    );
    assert_eq!(answer, Answer::Later("s2".into()));
    let (_, replies) = g.join(6, join("a", "", &["range"]));
    assert_eq!(replies.len(), 2, "c and s2 answered: {replies:?}");
    let ids: Vec<&str> = g.members().map(|(id, _, _)| id).collect();
    assert_eq!(ids, ["a", "c", "s2"]);
}

#[test]
fn calls_naming_an_instance_are_checked_against_it() {
    let mut g = Group::default();
    a_and_static_s(&mut g);
    let unknown = ("s", Some("other"));
    assert_eq!(g.heartbeat(2, unknown, 2), code::UNKNOWN_MEMBER_ID);
    assert_eq!(g.check_commit(2, unknown, 2), code::UNKNOWN_MEMBER_ID);
    let sync = g.sync(2, unknown, 2, vec![]).0;
    assert!(matches!(sync, Answer::Now(s) if s.error == code::UNKNOWN_MEMBER_ID));
    // a is no static member: it cannot claim an instance.
    assert_eq!(
        g.heartbeat(2, ("a", Some("i")), 2),
        code::FENCED_INSTANCE_ID
    );
    let join = now_answer(g.join(2, join_as("a", "", Some("other"), &["range"])).0);
    assert_eq!(join.error, code::UNKNOWN_MEMBER_ID);
    assert_eq!(g.heartbeat(2, ("s", Some("i")), 2), code::NONE);
    // A commit naming the instance but no member is checked against it (Kafka's
    // exception is for a group with no members).
    assert_eq!(
        g.check_commit(2, ("", Some("i")), -1),
        code::FENCED_INSTANCE_ID
    );
    assert_eq!(
        g.check_commit(2, ("", Some("other")), -1),
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(g.state, State::Stable);
}

#[test]
fn a_static_member_that_does_not_join_a_rebalance_keeps_its_place() {
    let mut g = Group::default();
    let mut s = join_as("", "s", Some("i"), &["range"]);
    s.session_ms = 3 * REBALANCE; // longer than a rebalance, as static members' are
    g.join(0, s);
    g.sync(0, ("s", Some("i")), 1, vec![]);
    // a joins; s, the leader (its process gone), does not join again.
    let mut a = join("", "a", &["range"]);
    a.id_required = false;
    assert_eq!(g.join(1, a).0, Answer::Later("a".into()));
    let replies = g.tick(1 + REBALANCE);
    let leader = replies.iter().find_map(|r| match r {
        Reply::Join(id, answer) if id == "a" => Some(answer.clone()),
        _ => None,
    });
    let leader = leader.expect("the rebalance ended");
    // a leads (s did not join); s stays in the generation, to be assigned partitions.
    let ids: Vec<&str> = leader.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        (leader.generation, leader.leader.as_str(), &ids[..]),
        (2, "a", &["a", "s"][..])
    );
    let assignment: Vec<(String, Bytes)> = ["a", "s"]
        .iter()
        .map(|id| (id.to_string(), Bytes::from(format!("{id}'s"))))
        .collect();
    g.sync(2 + REBALANCE, ("a", None), 2, assignment);
    assert_eq!(g.state, State::Stable);
    // A process of the instance takes what was assigned to s, without a rebalance.
    let s2 = now_answer(
        g.join(3 + REBALANCE, join_as("", "s2", Some("i"), &["range"]))
            .0,
    );
    assert_eq!(s2.generation, 2);
    let synced = g.sync(3 + REBALANCE, ("s2", Some("i")), 2, vec![]).0;
    assert_eq!(assigned(synced), "s's");
}

#[test]
fn a_rebalance_of_absent_static_members_only_waits_for_their_sessions() {
    let mut g = Group::default();
    let mut s = join_as("", "s", Some("i"), &["range"]);
    s.session_ms = 3 * REBALANCE; // longer than a rebalance, as static members' are
    g.join(0, s);
    g.sync(0, ("s", Some("i")), 1, vec![]);
    // d joins and leaves while s's process is gone: nobody joins the rebalance.
    let mut d = join("", "d", &["range"]);
    d.id_required = false;
    assert_eq!(g.join(1, d).0, Answer::Later("d".into()));
    g.leave(2, ("d", None));
    assert!(g.tick(1 + REBALANCE).is_empty());
    assert_eq!(
        (g.state, g.generation),
        (State::Preparing, 1),
        "no generation without members"
    );
    assert_eq!(
        g.next_wake(),
        Some(1 + 2 * REBALANCE),
        "another rebalance timeout"
    );
    // s's session lapses: the group is empty.
    g.tick(3 * REBALANCE);
    assert!(g.is_idle());
}

#[test]
fn a_static_member_leaves_by_its_instance_id() {
    let mut g = Group::default();
    a_and_static_s(&mut g);
    assert_eq!(g.leave(2, ("a", Some("i"))).0, code::FENCED_INSTANCE_ID);
    assert_eq!(g.leave(2, ("", Some("other"))).0, code::UNKNOWN_MEMBER_ID);
    assert_eq!(g.state, State::Stable);
    // An administrator's removal names the instance only.
    assert_eq!(g.leave(2, ("", Some("i"))).0, code::NONE);
    assert_eq!(g.state, State::Preparing);
    // The instance is free: a process of it joins as a new member.
    let (answer, _) = g.join(3, join_as("", "s2", Some("i"), &["range"]));
    assert_eq!(answer, Answer::Later("s2".into()));
}

#[test]
fn a_static_member_whose_session_lapses_is_dropped_with_its_instance() {
    let mut g = Group::default();
    a_and_static_s(&mut g);
    for at in (1..=SESSION / 2_000 + 1).map(|i| i * 2_000) {
        assert_eq!(g.heartbeat(at, ("a", None), 2), code::NONE);
    }
    g.tick(SESSION + 1);
    assert_eq!(g.state, State::Preparing);
    assert_eq!(
        g.heartbeat(SESSION + 1, ("s", Some("i")), 2),
        code::UNKNOWN_MEMBER_ID
    );
    // A process of the instance joins as a new member, in the rebalance a's join ends.
    let (s2, _) = g.join(SESSION + 2, join_as("", "s2", Some("i"), &["range"]));
    assert_eq!(s2, Answer::Later("s2".into()));
    let (a, replies) = g.join(SESSION + 2, join("a", "", &["range"]));
    assert_eq!((now_answer(a).generation, replies.len()), (3, 1));
}

/// A rebalance timeout of 0 ms does not make such a wait wake the coordinator at
/// every tick: it is put off by a session timeout at least.
#[test]
fn a_rebalance_waiting_for_absent_members_is_put_off_by_a_session_at_least() {
    let mut g = Group::default();
    let mut s = join_as("", "s", Some("i"), &["range"]);
    (s.session_ms, s.rebalance_ms) = (3 * REBALANCE, 0);
    g.join(0, s);
    g.sync(0, ("s", Some("i")), 1, vec![]);
    let mut d = join("", "d", &["range"]);
    (d.id_required, d.rebalance_ms) = (false, 0);
    g.join(1, d);
    g.leave(2, ("d", None));
    g.tick(2);
    assert_eq!(g.state, State::Preparing);
    let wake = g.next_wake().unwrap();
    assert!(
        wake >= 2 + crate::kafka::group::machine::MIN_SESSION_MS,
        "{wake}"
    );
}
