//! Kafka consumer groups (the classic protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), so that a Kafka consumer can `subscribe`. Each group's membership is
//! a state machine without I/O or clock (`machine.rs`, static members in
//! `machine/statics.rs`; model-tested in `tests/`);
//! this driver holds them, hands each waiting JoinGroup and SyncGroup its answer when
//! the machine gives one, and ticks the machines whose sessions or rebalances are due.
//!
//! Membership lives in memory, as it is the clients' to rebuild: after a restart every
//! consumer joins again. Committed offsets do not: OffsetCommit stores them in strom's
//! own consumer groups (`groups::Groups`, fsynced), under the same group name, so that
//! `strom group describe` and a gRPC consumer of that group see them too.

mod answers;
mod foreign;
pub mod machine;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use machine::{code, Answer, Caller, Group, GroupView, Join, JoinAnswer, Reply, State, SyncAnswer};

/// Kafka groups held at once; a join to a new group past it is refused.
pub const MAX_GROUPS: usize = 10_000;
/// Bytes of members' own (ids, protocol metadata, assignments) held over every
/// group; a join or sync that would pass it is refused, and the client retries.
pub const MAX_HELD_BYTES: usize = 256 << 20;
/// Kafka's code for a coordinator that cannot take the call (the client retries).
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// The least time between two of the coordinator's passes over its groups (ms).
const TICK_MS: u64 = 10;
/// Kafka's code for a coordinator loading a group (the client retries).
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

struct Slot {
    group: Group,
    /// The members whose JoinGroup or SyncGroup waits, and where its answer goes.
    waiting: HashMap<String, oneshot::Sender<Reply>>,
}

impl Slot {
    fn deliver(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            let (Reply::Join(id, _) | Reply::Sync(id, _)) = &reply;
            if let Some(waiter) = self.waiting.remove(id) {
                let _ = waiter.send(reply); // a client gone meanwhile: nobody to tell
            }
        }
    }
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Slot>>,
    /// The sum of the groups' `held_bytes`.
    held: AtomicUsize,
    started: Instant,
    /// Woken when a machine's next deadline moved before `planned`.
    changed: Notify,
    /// When the tick loop means to wake next (ms on `now`'s clock): a call that leaves
    /// its group due sooner wakes it; the others do not (every heartbeat woke it to
    /// scan every group).
    planned: AtomicU64,
    stopping: watch::Receiver<bool>,
    /// How long a group's first rebalance waits for more members (ms).
    initial_delay: u64,
    /// Groups whose joins wait for an administrator's change (`foreign.rs`); locked
    /// after `groups`.
    joins_held: foreign::Held,
}

impl Coordinator {
    /// `initial_delay`: how long an empty group's first rebalance waits for more
    /// members, so that consumers started together form one generation.
    pub fn new(stopping: watch::Receiver<bool>, initial_delay: Duration) -> Coordinator {
        Coordinator {
            initial_delay: initial_delay.as_millis() as u64,
            joins_held: Default::default(),
            groups: Mutex::new(HashMap::new()),
            held: Default::default(),
            planned: AtomicU64::new(0),
            started: Instant::now(),
            changed: Notify::new(),
            stopping,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on group `id`'s machine (made if `create` and there is room), and
    /// hands out the answers it gave to waiting members. Else the code to answer:
    /// UNKNOWN_MEMBER_ID for no such group, COORDINATOR_NOT_AVAILABLE (the client
    /// retries) for no room.
    fn with<T>(
        &self,
        id: &str,
        create: bool,
        adds: usize,
        f: impl FnOnce(&mut Group, u64) -> (T, Vec<Reply>),
    ) -> Result<(T, Option<oneshot::Receiver<Reply>>), i16>
    where
        T: Waits,
    {
        let now = self.now();
        let mut groups = self.groups();
        if adds > 0 && self.held.load(Ordering::Acquire) + adds > MAX_HELD_BYTES {
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        if !groups.contains_key(id) {
            if !create {
                return Err(code::UNKNOWN_MEMBER_ID);
            }
            if groups.len() >= MAX_GROUPS {
                return Err(COORDINATOR_NOT_AVAILABLE);
            }
            let slot = Slot {
                group: Group::new(self.initial_delay),
                waiting: HashMap::new(),
            };
            groups.insert(id.to_string(), slot);
        }
        let slot = groups.get_mut(id).expect("present");
        let before = slot.group.held_bytes();
        let (answer, replies) = f(&mut slot.group, now);
        let after = slot.group.held_bytes();
        self.held.fetch_add(after, Ordering::AcqRel);
        self.held.fetch_sub(before, Ordering::AcqRel);
        slot.deliver(replies);
        let waiter = answer.waits_for().map(|member| {
            let (tx, rx) = oneshot::channel();
            slot.waiting.insert(member.to_string(), tx);
            rx
        });
        let due = slot.group.next_wake();
        if slot.group.is_idle() && slot.waiting.is_empty() {
            groups.remove(id);
        }
        drop(groups);
        if due.is_some_and(|due| due < self.planned.load(Ordering::Acquire)) {
            self.changed.notify_one();
        }
        Ok((answer, waiter))
    }

    /// Waits for a member's answer, or the server's stop.
    async fn answer(&self, waiter: Option<oneshot::Receiver<Reply>>) -> Option<Reply> {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            reply = async { waiter?.await.ok() } => reply,
            _ = stopping.wait_for(|stop| *stop) => None,
        }
    }

    pub async fn join(&self, group: &str, join: Join) -> JoinAnswer {
        let member_id = join.member_id.clone();
        let failed = |error| answers::join_error(error, &member_id);
        let adds: usize = join
            .protocols
            .iter()
            .map(|(p, md)| p.len() + md.len())
            .sum::<usize>()
            + join.new_id.len()
            + machine::MEMBER_COST
            + join.client_id.len()
            + join
                .instance_id
                .as_ref()
                .map_or(0, |i| 2 * i.len() + join.new_id.len());
        let join = |g: &mut Group, now| match self.joins_are_held(group) {
            true => (
                Answer::Now(failed(COORDINATOR_LOAD_IN_PROGRESS)),
                Vec::new(),
            ),
            false => g.join(now, join),
        };
        let (answer, waiter) = match self.with(group, true, adds, join) {
            Ok(done) => done,
            Err(error) => return failed(error),
        };
        match answer {
            Answer::Now(answer) => answer,
            Answer::Later(_) => match self.answer(waiter).await {
                Some(Reply::Join(_, answer)) => answer,
                _ => failed(code::REBALANCE_IN_PROGRESS),
            },
        }
    }

    pub async fn sync(
        &self,
        group: &str,
        member: Caller<'_>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> SyncAnswer {
        let failed = answers::sync_error;
        let adds = assignments.iter().map(|(id, a)| id.len() + a.len()).sum();
        let sync = |g: &mut Group, now| g.sync(now, member, generation, assignments);
        let (answer, waiter) = match self.with(group, false, adds, sync) {
            Ok(done) => done,
            Err(error) => return failed(error),
        };
        match answer {
            Answer::Now(answer) => answer,
            Answer::Later(_) => match self.answer(waiter).await {
                Some(Reply::Sync(_, answer)) => answer,
                _ => failed(code::REBALANCE_IN_PROGRESS),
            },
        }
    }

    pub fn heartbeat(&self, group: &str, member: Caller<'_>, generation: i32) -> i16 {
        let beat = |g: &mut Group, now| (g.heartbeat(now, member, generation), Vec::new());
        self.with(group, false, 0, beat)
            .map_or_else(|e| e, |(e, _)| e)
    }

    pub fn leave(&self, group: &str, member: Caller<'_>) -> i16 {
        self.with(group, false, 0, |g, now| g.leave(now, member))
            .map_or_else(|e| e, |(e, _)| e)
    }

    /// Whether a commit by `member` at `generation` may go ahead (see
    /// `Group::check_commit`); a group strom holds no members of takes any commit.
    pub fn check_commit(&self, group: &str, member: Caller<'_>, generation: i32) -> i16 {
        let check = |g: &mut Group, now| (g.check_commit(now, member, generation), Vec::new());
        match self.with(group, false, 0, check) {
            Ok((error, _)) => error,
            Err(code::UNKNOWN_MEMBER_ID) if member.0.is_empty() && generation < 0 => code::NONE,
            Err(error) => error,
        }
    }

    /// Ticks the machines whose deadlines are due, until the server stops.
    pub async fn run(&self) {
        let mut stopping = self.stopping.clone();
        loop {
            let now = self.now();
            let mut next = now + 1_000;
            {
                let mut groups = self.groups();
                groups.retain(|_, slot| {
                    if slot.group.next_wake().is_some_and(|due| due <= now) {
                        let before = slot.group.held_bytes();
                        let replies = slot.group.tick(now);
                        slot.deliver(replies);
                        let after = slot.group.held_bytes();
                        self.held.fetch_add(after, Ordering::AcqRel);
                        self.held.fetch_sub(before, Ordering::AcqRel);
                    }
                    if let Some(due) = slot.group.next_wake() {
                        next = next.min(due);
                    }
                    !(slot.group.is_idle() && slot.waiting.is_empty())
                });
                // At least TICK_MS apart: each wake looks at every group, and groups
                // made one after another have deadlines a millisecond apart (hostile
                // sweep: 8,000 groups joining over 8 s took 3.1 s of CPU).
                next = next.max(now + TICK_MS);
                // Under the lock: a call after it compares with this plan.
                self.planned.store(next, Ordering::Release);
            }
            let passed = Instant::now();
            let sleep = Duration::from_millis(next - now);
            let called = tokio::select! {
                () = tokio::time::sleep(sleep) => false,
                () = self.changed.notified() => true,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            if called {
                // A call made a deadline sooner: still TICK_MS after this pass.
                let tick = passed + Duration::from_millis(TICK_MS);
                tokio::select! {
                    () = tokio::time::sleep_until(tick) => {}
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// An answer that may name a member to wait for.
trait Waits {
    fn waits_for(&self) -> Option<&str>;
}

impl<T> Waits for Answer<T> {
    fn waits_for(&self) -> Option<&str> {
        match self {
            Answer::Later(member) => Some(member),
            Answer::Now(_) => None,
        }
    }
}

impl Waits for i16 {
    fn waits_for(&self) -> Option<&str> {
        None
    }
}

impl Coordinator {
    /// Under the `groups` lock: whether the group's joins are held (`foreign.rs`).
    fn joins_are_held(&self, group: &str) -> bool {
        let held = self.joins_held.lock().unwrap_or_else(|e| e.into_inner());
        held.contains_key(group)
    }

    /// The group's members and state; None for a group the coordinator does not
    /// hold (one with neither members nor member ids handed out).
    pub fn describe(&self, group: &str) -> Option<GroupView> {
        self.groups().get(group).map(|slot| slot.group.view())
    }

    /// Every group the coordinator holds: its name, state and protocol type (no
    /// member's bytes copied, under the lock every group call takes).
    pub fn list(&self) -> Vec<(String, State, String)> {
        let groups = self.groups();
        let listed = groups.iter().map(|(name, slot)| {
            let group = &slot.group;
            (name.clone(), group.state, group.protocol_type().to_string())
        });
        listed.collect()
    }
}
