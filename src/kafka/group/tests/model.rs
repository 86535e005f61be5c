//! The group machine's model test: simulated clients that follow the protocol, some
//! of them static (with an instance id), driven through random joins, leaves,
//! crashes, restarts, duplicate processes of one instance and pauses, must always
//! settle into one stable generation in which every live client, and no other,
//! holds its share of the partitions (a process another of its instance replaced
//! stops when it is told it was fenced, as a Kafka client does).

use bytes::Bytes;
use proptest::prelude::*;

use super::join_as;
use crate::kafka::group::machine::{code, Answer, Group, JoinAnswer, Reply, State};

const PARTITIONS: u32 = 6;
/// Clients' (session, rebalance) timeouts, in ms.
const TIMEOUTS: [(u64, u64); 4] = [
    (10_000, 30_000),
    (60_000, 5_000),
    (6_000, 6_000),
    (120_000, 60_000),
];

/// A client following the protocol, as the model drives it.
#[derive(Debug, Clone, Default)]
struct Client {
    id: String,
    /// Its session and rebalance timeouts (ms): sometimes a session longer than a
    /// rebalance, as static members' often are.
    timeouts: (u64, u64),
    /// A static member's instance id.
    instance: Option<String>,
    alive: bool,
    waiting: bool,
    /// The generation it joined, and whether it leads it.
    joined: Option<(i32, bool, Vec<String>)>,
    synced: Option<(i32, Bytes)>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A client, static (with an instance id of its own) or not.
    /// A client, static or not, with the timeouts of `TIMEOUTS[.1]`.
    NewClient(bool, usize),
    Step(usize),
    Kill(usize),
    /// A client crashes and its process starts again at once: a static one with
    /// its instance id, as a consumer restarted in place.
    Restart(usize),
    /// A second process of a static client's instance starts while the first runs
    /// (a zombie, say, paused and not dead): the first must be fenced.
    Duplicate(usize),
    Leave(usize),
    /// An administrator removes a static client's member by its instance id; the
    /// client goes on, and joins again when it finds out.
    Remove(usize),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), 0..TIMEOUTS.len()).prop_map(|(s, t)| Op::NewClient(s, t)),
        8 => (0..10usize).prop_map(Op::Step),
        1 => (0..10usize).prop_map(Op::Kill),
        1 => (0..10usize).prop_map(Op::Restart),
        1 => (0..10usize).prop_map(Op::Duplicate),
        1 => (0..10usize).prop_map(Op::Leave),
        1 => (0..10usize).prop_map(Op::Remove),
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
                let new_id = format!("m{}", self.ids);
                let mut join = join_as(&c.id, &new_id, c.instance.as_deref(), &["range"]);
                (join.session_ms, join.rebalance_ms) = c.timeouts;
                let (answer, replies) = self.group.join(now, join);
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
                let caller = (c.id.as_str(), c.instance.as_deref());
                let (answer, replies) = self.group.sync(now, caller, *generation, assignment);
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
                let caller = (c.id.as_str(), c.instance.as_deref());
                let error = self.group.heartbeat(now, caller, *generation);
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
            a.members.iter().map(|m| m.id.clone()).collect(),
        )),
        _ => None,
    };
    if a.error == code::UNKNOWN_MEMBER_ID {
        c.id.clear();
    }
    if a.error == code::FENCED_INSTANCE_ID {
        c.alive = false; // another process has its instance: it stops
    }
}

/// A call failed: rejoin (with no id if the group forgot it).
fn lost(c: &mut Client, error: i16) {
    c.joined = None;
    c.synced = None;
    if error == code::UNKNOWN_MEMBER_ID {
        c.id.clear();
    }
    if error == code::FENCED_INSTANCE_ID {
        c.alive = false;
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
    fn clients_that_follow_the_protocol_always_settle(
        ops in prop::collection::vec(op(), 1..120),
        initial_delay in prop_oneof![Just(0u64), Just(3_000), 0..20_000u64],
    ) {
        let mut m = Model { group: Group::new(initial_delay), clients: Vec::new(), now: 0, ids: 0 };
        for op in ops {
            match op {
                Op::NewClient(stable, t) if m.clients.len() < 10 => {
                    let instance = stable.then(|| format!("i{}", m.clients.len()));
                    let timeouts = TIMEOUTS[t];
                    m.clients.push(Client { alive: true, instance, timeouts, ..Client::default() })
                }
                Op::NewClient(..) => {}
                Op::Step(i) => m.step(i),
                Op::Kill(i) => if let Some(c) = m.clients.get_mut(i) { c.alive = false },
                Op::Restart(i) => if let Some(c) = m.clients.get_mut(i) {
                    *c = Client { alive: true, instance: c.instance.clone(), timeouts: c.timeouts, ..Client::default() };
                }
                Op::Duplicate(i) => {
                    let instance = m.clients.get(i).and_then(|c| c.instance.clone());
                    if instance.is_some() && m.clients.len() < 10 {
                        let timeouts = m.clients[i].timeouts;
                        m.clients.push(Client { alive: true, instance, timeouts, ..Client::default() });
                    }
                }
                Op::Leave(i) => {
                    if let Some(c) = m.clients.get(i).filter(|c| c.alive && !c.id.is_empty()).cloned() {
                        let caller = (c.id.as_str(), c.instance.as_deref());
                        let (_, replies) = m.group.leave(m.now, caller);
                        m.clients[i] = Client { alive: true, instance: c.instance, timeouts: c.timeouts, ..Client::default() };
                        m.deliver(replies);
                    }
                }
                Op::Remove(i) => {
                    if let Some(instance) = m.clients.get(i).and_then(|c| c.instance.clone()) {
                        let (_, replies) = m.group.leave(m.now, ("", Some(&instance)));
                        m.deliver(replies);
                    }
                }
                Op::Wait(ms) => {
                    m.now += ms;
                    let replies = m.group.tick(m.now);
                    m.deliver(replies);
                }
            }
            m.group.check_statics();
        }
        // Every live client keeps to the protocol, once a second, for long enough.
        for _ in 0..400 {
            m.now += 1_000;
            let replies = m.group.tick(m.now);
            m.deliver(replies);
            for i in 0..m.clients.len() {
                m.step(i);
            }
            m.group.check_statics();
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
