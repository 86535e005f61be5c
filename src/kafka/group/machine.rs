//! One Kafka consumer group's membership, as Kafka's classic group protocol has it: a
//! state machine without I/O or clock. The caller feeds requests and `now` (ms), and
//! gets back the answers to send, to the caller and to members whose JoinGroup or
//! SyncGroup is waiting; `tick` expires sessions and ends rebalances whose time is up.
//!
//! The protocol (Kafka's `GroupCoordinator`): members join; a join by a new member,
//! or by one whose protocols changed, starts a rebalance (`Preparing`), which ends when
//! every member has joined again or the rebalance timeout passes (members that did not
//! are dropped). Then the generation goes up, a leader is picked, and every joined
//! member is answered, the leader with every member's metadata (`Completing`). The
//! leader computes the assignment on its side and sends it in its SyncGroup, which
//! answers every member with its part (`Stable`). Heartbeats keep a member's session;
//! one not heard from for its session timeout is dropped, which starts a rebalance.
//! An empty group's first rebalance waits a while for more members (`Initial`), so
//! that consumers started together form one generation.
//!
//! Static members (KIP-345, `statics.rs`): a member that joins with a
//! `group.instance.id` keeps its place across restarts. A process that joins with an
//! instance id the group has takes over that member's place and assignment, without a
//! rebalance while the group is stable, and the process it replaced is fenced
//! (FENCED_INSTANCE_ID). So a consumer restarted within its session timeout does not
//! stop the group's other members, as it does without an instance id (its old member
//! would hold the rebalance until its session lapsed).

use std::collections::BTreeMap;

use bytes::Bytes;

pub use super::answers::{
    code, Answer, Caller, GroupView, Join, JoinAnswer, JoinedMember, MemberView, Reply, State,
    SyncAnswer,
};
use super::answers::{join_error, sync_error};
pub use super::answers::{MAX_MEMBERS, MAX_SESSION_MS, MIN_SESSION_MS};

mod calls;
mod rebalance;
mod statics;
mod views;

pub use views::MEMBER_COST;

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    /// A static member's instance id.
    instance: Option<String>,
    session_ms: u64,
    rebalance_ms: u64,
    protocol_type: String,
    /// (protocol name, metadata), in the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    last_heard: u64,
    /// Its JoinGroup waits for the rebalance to end.
    joining: bool,
    /// Its SyncGroup waits for the leader's.
    syncing: bool,
    assignment: Bytes,
    /// The order it joined in: the first joined is the leader when one is picked.
    joined_at: u64,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub state: State,
    pub generation: i32,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Static members: instance id -> member id.
    statics: BTreeMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, and when they lapse if not used.
    pending: BTreeMap<String, u64>,
    rebalance_deadline: u64,
    joins: u64,
    /// Kafka's `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// an empty group waits for more members before it ends.
    initial_delay: u64,
    /// That first rebalance, while it waits.
    initial: Option<Initial>,
}

/// An empty group's first rebalance waits `initial_delay` for members, however
/// many have joined (consumers started together would otherwise form a generation
/// with the first and rebalance again for each of the others), and waits again
/// while each wait saw a new member; all the waits together stop at the longest
/// rebalance timeout, as Kafka's do.
#[derive(Debug, Clone, Copy)]
struct Initial {
    /// Of the longest rebalance timeout, what is left after the current wait.
    remaining: u64,
    /// A new member joined during the current wait.
    newcomer: bool,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            state: State::Empty,
            generation: 0,
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            statics: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: 0,
            joins: 0,
            initial_delay: 0,
            initial: None,
        }
    }
}

impl Group {
    /// A group whose first rebalance waits `initial_delay` ms for more members
    /// (`Initial`); the default waits none.
    pub fn new(initial_delay: u64) -> Group {
        Group {
            initial_delay,
            ..Group::default()
        }
    }

    pub fn join(&mut self, now: u64, join: Join) -> (Answer<JoinAnswer>, Vec<Reply>) {
        let refuse = |error| (Answer::Now(join_error(error, &join.member_id)), Vec::new());
        if !(MIN_SESSION_MS..=MAX_SESSION_MS).contains(&join.session_ms) {
            return refuse(code::INVALID_SESSION_TIMEOUT);
        }
        let known = self.members.contains_key(&join.member_id);
        let replaced = match self.replaced_by(&join) {
            Ok(replaced) => replaced,
            Err(error) => return refuse(error),
        };
        // The group's protocol type (the joiner's own, and the member's it replaces,
        // included: a group has one), and some protocol of the joiner's that every
        // other member has too (the member it replaces left out): else no assignment
        // could serve them all.
        let same_type = (self.members.values()).all(|m| m.protocol_type == join.protocol_type);
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| **id != join.member_id && Some(*id) != replaced.as_ref())
            .map(|(_, m)| m)
            .collect();
        let shared = join.protocols.iter().any(|(p, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        });
        if !same_type || !shared {
            return refuse(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let id = match (join.member_id.is_empty(), known) {
            (false, true) => join.member_id.clone(),
            (false, false) if self.pending.remove(&join.member_id).is_some() => {
                join.member_id.clone()
            }
            (false, false) => return refuse(code::UNKNOWN_MEMBER_ID),
            (true, _) => {
                if let Some(old) = replaced {
                    return self.replace_static(now, old, join);
                }
                if self.members.len() + self.pending.len() >= MAX_MEMBERS {
                    return refuse(code::GROUP_MAX_SIZE_REACHED);
                }
                // A static member joins at once: its instance id already names it.
                if join.id_required && join.instance_id.is_none() {
                    self.pending
                        .insert(join.new_id.clone(), now + join.session_ms);
                    let answer = join_error(code::MEMBER_ID_REQUIRED, &join.new_id);
                    return (Answer::Now(answer), Vec::new());
                }
                join.new_id.clone()
            }
        };
        if self.members.len() >= MAX_MEMBERS && !self.members.contains_key(&id) {
            return refuse(code::GROUP_MAX_SIZE_REACHED);
        }
        let mut replies = Vec::new();
        let changed = match self.members.get_mut(&id) {
            Some(member) => {
                let changed = member.protocols != join.protocols;
                member.protocols = join.protocols;
                member.session_ms = join.session_ms;
                member.rebalance_ms = join.rebalance_ms;
                member.last_heard = now;
                changed
            }
            None => {
                self.joins += 1;
                if let Some(initial) = &mut self.initial {
                    initial.newcomer = true;
                }
                if let Some(instance) = &join.instance_id {
                    self.statics.insert(instance.clone(), id.clone());
                }
                let member = Member {
                    client_id: join.client_id,
                    instance: join.instance_id,
                    session_ms: join.session_ms,
                    rebalance_ms: join.rebalance_ms,
                    protocol_type: join.protocol_type,
                    protocols: join.protocols,
                    last_heard: now,
                    joining: false,
                    syncing: false,
                    assignment: Bytes::new(),
                    joined_at: self.joins,
                };
                self.members.insert(id.clone(), member);
                true
            }
        };
        // A known member, unchanged, of a group waiting for its assignment, or of a
        // stable group whose leader it is not, is told the generation as it is (it
        // lost its answer, say), as Kafka does; anything else rebalances.
        let as_it_is = match self.state {
            State::Completing => true,
            State::Stable => id != self.leader,
            State::Empty | State::Preparing => false,
        };
        if as_it_is && !changed {
            let answer = self.join_answer(&id);
            return (Answer::Now(answer), replies);
        }
        if self.state != State::Preparing {
            self.start_rebalance(now, &mut replies);
        }
        self.await_join(now, id, replies)
    }

    /// Member `id` joins the rebalance under way: answered now if it was the last
    /// awaited, else once it ends.
    fn await_join(
        &mut self,
        now: u64,
        id: String,
        mut replies: Vec<Reply>,
    ) -> (Answer<JoinAnswer>, Vec<Reply>) {
        if let Some(member) = self.members.get_mut(&id) {
            member.joining = true;
        }
        if self.may_complete_join() {
            self.complete_join(now, &mut replies);
        }
        let mine = replies
            .iter()
            .position(|r| matches!(r, Reply::Join(m, _) if *m == id));
        match mine.map(|i| replies.remove(i)) {
            Some(Reply::Join(_, answer)) => (Answer::Now(answer), replies),
            _ => (Answer::Later(id), replies),
        }
    }

    /// Drops members whose session lapsed (a member whose JoinGroup or SyncGroup waits
    /// is not: its connection carries no heartbeat meanwhile, and the rebalance's
    /// deadline or its leader's session bounds the wait), and ends a rebalance whose
    /// deadline passed or whose last awaited id lapsed.
    pub fn tick(&mut self, now: u64) -> Vec<Reply> {
        let pending = self.pending.len();
        self.pending.retain(|_, lapses| *lapses > now);
        let mut replies = Vec::new();
        let lapsed: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.joining && !m.syncing && m.last_heard + m.session_ms <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lapsed {
            if let Some(member) = self.remove_member(id) {
                if member.syncing {
                    replies.push(Reply::Sync(id.clone(), sync_error(code::UNKNOWN_MEMBER_ID)));
                }
            }
        }
        if !lapsed.is_empty() {
            self.member_gone(now, &mut replies);
        } else if self.pending.len() < pending
            && self.state == State::Preparing
            && self.may_complete_join()
        {
            self.complete_join(now, &mut replies);
        }
        if self.state == State::Preparing && now >= self.rebalance_deadline {
            match self
                .initial
                .as_mut()
                .filter(|i| i.newcomer && i.remaining > 0)
            {
                Some(initial) => {
                    // Members are still arriving: wait again, within the timeout.
                    let wait = self.initial_delay.min(initial.remaining);
                    *initial = Initial {
                        remaining: initial.remaining - wait,
                        newcomer: false,
                    };
                    self.rebalance_deadline = now + wait;
                }
                None => self.complete_join(now, &mut replies),
            }
        }
        replies
    }

    /// When `tick` next has something to do, if ever.
    pub fn next_wake(&self) -> Option<u64> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.joining && !m.syncing)
            .map(|m| m.last_heard + m.session_ms);
        let rebalance = (self.state == State::Preparing).then_some(self.rebalance_deadline);
        sessions
            .chain(rebalance)
            .chain(self.pending.values().copied())
            .min()
    }
}
