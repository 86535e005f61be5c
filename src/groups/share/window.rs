//! One partition of a share group, as a state machine without I/O or clock: which
//! records are available, locked to which member until when, finished, or waiting to be
//! dead-lettered. Callers pass `now` (wall-clock ms: deadlines are persisted) and get
//! back the changes to journal and the records to dead-letter.
//!
//! The partition keeps a start offset (every record below it is finished) and a window
//! of slots, one per offset from the start to `end` (the first offset never handed
//! out). The window never spans more than `max.in.flight` offsets, so a queue of a
//! billion records costs what its unfinished window costs; finished slots at the front
//! are dropped as they finish.

use std::collections::{HashMap, VecDeque};

use super::config::{ShareConfig, MAX_IN_FLIGHT};

/// A member of the group, by a number the group gives it; never reused while the
/// server runs, so a slot never names the wrong member.
pub type MemberIdx = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Can be handed out from `until` on.
    Available = 0,
    /// Locked to `member` until `until`.
    Acquired = 1,
    /// Done: acknowledged with ACCEPT.
    Accepted = 2,
    /// Done: dead-lettered (appended to the dead-letter topic, or only marked).
    Archived = 3,
    /// Rejected, waiting to be appended to the dead-letter topic.
    Rejected = 4,
    /// Out of deliveries, waiting to be appended to the dead-letter topic.
    Exhausted = 5,
    /// Done: no record has this offset (compacted away), or retention deleted it.
    Gone = 6,
}

impl State {
    pub fn from_u8(b: u8) -> Option<State> {
        Some(match b {
            0 => State::Available,
            1 => State::Acquired,
            2 => State::Accepted,
            3 => State::Archived,
            4 => State::Rejected,
            5 => State::Exhausted,
            6 => State::Gone,
            _ => return None,
        })
    }

    pub fn is_done(self) -> bool {
        matches!(self, State::Accepted | State::Archived | State::Gone)
    }

    /// Rejected or exhausted: never handed out again, owed to the dead-letter topic.
    pub fn is_dying(self) -> bool {
        matches!(self, State::Rejected | State::Exhausted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    state: State,
    /// Deliveries so far.
    count: u16,
    member: MemberIdx,
    /// Acquired: when the lock ends. Available: when the record may be handed out.
    until: i64,
    /// A hash of the record's key (0: no key), for key-ordered groups.
    key: u64,
}

const NEW: Slot = Slot {
    state: State::Available,
    count: 0,
    member: 0,
    until: 0,
    key: 0,
};

/// A record read from the log, offered for acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub offset: u64,
    /// Hash of the key (0: no key; see `key_hash`).
    pub key: u64,
    /// `strom-deliver-at`, or 0.
    pub deliver_at: i64,
}

/// A hash of a record key that is never 0 (0 means "no key").
pub fn key_hash(key: Option<&[u8]>) -> u64 {
    match key {
        None => 0,
        Some(key) => {
            let lo = crc32fast::hash(key) as u64;
            let mut h = crc32fast::Hasher::new_with_initial(0x9E37_79B9);
            h.update(key);
            ((h.finalize() as u64) << 32 | lo) | 1
        }
    }
}

/// What a change to a partition's state is, for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The slot at `offset` is now in `state`.
    Slot {
        offset: u64,
        state: State,
        count: u16,
        until: i64,
    },
    /// Records below `offset` are finished; the counts are of records ever passed below
    /// the start by outcome.
    Start { offset: u64, totals: Totals },
    /// Everything is forgotten; the partition starts again at `offset`.
    Reset { offset: u64, totals: Totals },
}

/// Records finished below the start offset, by how they finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub dead_lettered: u64,
    /// Deleted by retention before they were finished.
    pub lost: u64,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotDelivered,
    NotHeld,
    Finished,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotDelivered => "the record was never delivered to this group",
            Refusal::NotHeld => {
                "the member does not hold this record: its lock expired, or another member holds it; fetch again"
            }
            Refusal::Finished => "the record is already finished (accepted or dead-lettered)",
        }
    }
}

/// A record owed to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dying {
    pub offset: u64,
    /// Deliveries it had.
    pub count: u16,
    /// Rejected by a member (else out of deliveries).
    pub rejected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Accept,
    Release,
    Reject,
    Renew,
}

#[derive(Debug, Clone, Default)]
pub struct SharePartition {
    start: u64,
    slots: VecDeque<Slot>,
    acquired: u32,
    totals: Totals,
}

/// A partition's counts, for DescribeShareGroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub start: u64,
    pub end: u64,
    /// Available in the window now or later (backoff, delayed), plus those past it.
    pub available: u64,
    pub in_flight: u64,
    pub accepted: u64,
    pub dead_lettered: u64,
    pub lost: u64,
}

impl SharePartition {
    pub fn new(start: u64) -> SharePartition {
        SharePartition {
            start,
            ..SharePartition::default()
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// The first offset never handed out.
    pub fn end(&self) -> u64 {
        self.start + self.slots.len() as u64
    }

    pub fn in_flight(&self) -> u32 {
        self.acquired
    }

    fn index(&self, offset: u64) -> Option<usize> {
        let i = offset.checked_sub(self.start)? as usize;
        (i < self.slots.len()).then_some(i)
    }

    fn change(&self, i: usize) -> Change {
        let s = &self.slots[i];
        Change::Slot {
            offset: self.start + i as u64,
            state: s.state,
            count: s.count,
            until: s.until,
        }
    }

    /// Where a read for records to hand out should start: the first record that can be
    /// handed out again, else the first never handed out if the window has room.
    pub fn next_candidate(&self, now: i64, cfg: &ShareConfig, high_watermark: u64) -> Option<u64> {
        let again = self
            .slots
            .iter()
            .position(|s| s.state == State::Available && s.until <= now);
        match again {
            Some(i) => Some(self.start + i as u64),
            None => (self.end() < high_watermark && self.slots.len() < cfg.max_in_flight as usize)
                .then(|| self.end()),
        }
    }

    /// Locks up to `max` of `records` (read from the log, in offset order) to `member`:
    /// each that is available now, within the window, and (key-ordered) the first
    /// unfinished record of its key. Returns their offsets and delivery counts.
    pub fn acquire(
        &mut self,
        member: MemberIdx,
        records: &[Candidate],
        max: usize,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
    ) -> Vec<(u64, u16)> {
        let mut first_open: HashMap<u64, u64> = HashMap::new();
        if cfg.key_ordered {
            for (i, s) in self.slots.iter().enumerate() {
                if s.key != 0 && !s.state.is_done() && !s.state.is_dying() {
                    first_open.entry(s.key).or_insert(self.start + i as u64);
                }
            }
        }
        let mut out = Vec::new();
        for r in records {
            if out.len() >= max {
                break;
            }
            if r.offset < self.start {
                continue;
            }
            if r.offset >= self.end() {
                if r.offset - self.start >= cfg.max_in_flight as u64 {
                    break; // the window is full
                }
                // Offsets with no record in between (compaction) are finished.
                while self.end() < r.offset {
                    self.slots.push_back(Slot {
                        state: State::Gone,
                        ..NEW
                    });
                    changes.push(self.change(self.slots.len() - 1));
                }
                self.slots.push_back(Slot {
                    until: r.deliver_at,
                    key: r.key,
                    ..NEW
                });
                if cfg.key_ordered && r.key != 0 {
                    first_open.entry(r.key).or_insert(r.offset);
                }
            }
            let i = (r.offset - self.start) as usize;
            let s = self.slots[i];
            if s.state == State::Available && s.count >= cfg.max_deliveries {
                // Locked at a crash on its last delivery, or max.deliveries was lowered.
                self.slots[i].state = State::Exhausted;
                changes.push(self.change(i));
                continue;
            }
            let blocked =
                cfg.key_ordered && s.key != 0 && first_open.get(&s.key) != Some(&r.offset);
            if s.state != State::Available || s.until > now || blocked {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.state = State::Acquired;
            slot.count = slot.count.saturating_add(1);
            slot.member = member;
            slot.until = now.saturating_add(cfg.lock_ms as i64);
            self.acquired += 1;
            out.push((r.offset, slot.count));
            changes.push(self.change(i));
        }
        self.advance(changes);
        out
    }

    /// Applies one acknowledgement of `offset` by `member`.
    pub fn acknowledge(
        &mut self,
        member: MemberIdx,
        offset: u64,
        ack: Ack,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
    ) -> Result<(), Refusal> {
        let Some(i) = self.index(offset) else {
            return Err(if offset < self.start {
                Refusal::Finished
            } else {
                Refusal::NotDelivered
            });
        };
        let s = self.slots[i];
        match s.state {
            State::Acquired if s.member == member && s.until > now => {}
            State::Available if s.count == 0 => return Err(Refusal::NotDelivered),
            st if st.is_done() || st.is_dying() => return Err(Refusal::Finished),
            _ => return Err(Refusal::NotHeld),
        }
        match ack {
            Ack::Renew => {
                // Not journaled: after a restart every lock is gone anyway.
                self.slots[i].until = now.saturating_add(cfg.lock_ms as i64);
                return Ok(());
            }
            Ack::Accept => self.finish(i, State::Accepted),
            Ack::Reject => self.finish(i, State::Rejected),
            Ack::Release => self.give_back(i, now, cfg),
        }
        changes.push(self.change(i));
        self.advance(changes);
        Ok(())
    }

    /// Ends the lock of slot `i` in `state`.
    fn finish(&mut self, i: usize, state: State) {
        self.slots[i].state = state;
        self.acquired -= 1;
    }

    /// Returns slot `i` to the queue after a release or an expired lock, or to the dead
    /// letters if it is out of deliveries.
    fn give_back(&mut self, i: usize, now: i64, cfg: &ShareConfig) {
        let count = self.slots[i].count;
        if count >= cfg.max_deliveries {
            self.finish(i, State::Exhausted);
        } else {
            self.finish(i, State::Available);
            self.slots[i].until = now.saturating_add(cfg.backoff(count) as i64);
        }
    }

    /// Returns every record whose lock ended by `now`. True if any came back.
    pub fn expire(&mut self, now: i64, cfg: &ShareConfig, changes: &mut Vec<Change>) -> bool {
        self.give_back_where(now, cfg, changes, |s| s.until <= now)
    }

    /// Returns every record `member` holds (it left, or its session ended).
    pub fn release_member(
        &mut self,
        member: MemberIdx,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
    ) -> bool {
        self.give_back_where(now, cfg, changes, |s| s.member == member)
    }

    fn give_back_where(
        &mut self,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
        pick: impl Fn(&Slot) -> bool,
    ) -> bool {
        if self.acquired == 0 {
            return false;
        }
        let mut any = false;
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.state == State::Acquired && pick(s) {
                self.give_back(i, now, cfg);
                changes.push(self.change(i));
                any = true;
            }
        }
        self.advance(changes);
        any
    }

    /// Records locked to `member`.
    pub fn held_by(&self, member: MemberIdx) -> u64 {
        if self.acquired == 0 {
            return 0;
        }
        self.slots
            .iter()
            .filter(|s| s.state == State::Acquired && s.member == member)
            .count() as u64
    }

    /// Records waiting for the dead-letter topic.
    pub fn dying(&self) -> Vec<Dying> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.is_dying())
            .map(|(i, s)| Dying {
                offset: self.start + i as u64,
                count: s.count,
                rejected: s.state == State::Rejected,
            })
            .collect()
    }

    /// A dying record has been appended to the dead-letter topic (or there is none).
    pub fn dead_lettered(&mut self, offset: u64, changes: &mut Vec<Change>) {
        if let Some(i) = self
            .index(offset)
            .filter(|&i| self.slots[i].state.is_dying())
        {
            self.slots[i].state = State::Archived;
            changes.push(self.change(i));
            self.advance(changes);
        }
    }

    /// When something next becomes available by itself: a lock ends, or a backoff or a
    /// delivery time passes.
    pub fn next_wake(&self, now: i64) -> Option<i64> {
        self.slots
            .iter()
            .filter(|s| {
                s.state == State::Acquired || (s.state == State::Available && s.until > now)
            })
            .map(|s| s.until)
            .min()
    }

    /// Retention deleted the log below `log_start`: records there that were not finished
    /// are lost, and the partition starts at `log_start`.
    pub fn lose_below(&mut self, log_start: u64, changes: &mut Vec<Change>) {
        if log_start <= self.start {
            return;
        }
        let end = self.end();
        let mut lost = log_start.saturating_sub(end);
        while self.start < log_start {
            let Some(s) = self.slots.pop_front() else {
                break;
            };
            if s.state == State::Acquired {
                self.acquired -= 1;
            }
            if !s.state.is_done() {
                lost += 1;
            }
            self.pass(s.state);
            self.start += 1;
        }
        self.start = log_start;
        self.totals.lost += lost;
        changes.push(Change::Start {
            offset: self.start,
            totals: self.totals,
        });
    }

    /// Forgets everything and starts again at `offset` (a reset of the group).
    pub fn reset(&mut self, offset: u64, changes: &mut Vec<Change>) {
        self.slots.clear();
        self.acquired = 0;
        self.start = offset;
        changes.push(Change::Reset {
            offset,
            totals: self.totals,
        });
    }

    fn pass(&mut self, state: State) {
        match state {
            State::Accepted => self.totals.accepted += 1,
            State::Archived => self.totals.dead_lettered += 1,
            _ => {}
        }
    }

    /// Drops finished slots from the front of the window.
    fn advance(&mut self, changes: &mut Vec<Change>) {
        let before = self.start;
        while self.slots.front().is_some_and(|s| s.state.is_done()) {
            let s = self.slots.pop_front().expect("checked");
            self.pass(s.state);
            self.start += 1;
        }
        if self.start != before {
            changes.push(Change::Start {
                offset: self.start,
                totals: self.totals,
            });
        }
    }

    pub fn counts(&self, now: i64, high_watermark: u64) -> Counts {
        let mut c = Counts {
            start: self.start,
            end: self.end(),
            accepted: self.totals.accepted,
            dead_lettered: self.totals.dead_lettered,
            lost: self.totals.lost,
            in_flight: self.acquired as u64,
            available: high_watermark.saturating_sub(self.end()),
        };
        let _ = now;
        for s in &self.slots {
            match s.state {
                State::Available => c.available += 1,
                State::Accepted => c.accepted += 1,
                State::Archived => c.dead_lettered += 1,
                _ => {}
            }
        }
        c
    }

    /// Replays one journaled change (at load). Locks do not survive a restart: a record
    /// that was locked is available again at once, its delivery count kept.
    pub fn restore(&mut self, change: Change) {
        match change {
            Change::Reset { offset, totals } => {
                *self = SharePartition::new(offset);
                self.totals = totals;
            }
            Change::Start { offset, totals } => {
                while self.start < offset && !self.slots.is_empty() {
                    self.slots.pop_front();
                    self.start += 1;
                }
                self.start = self.start.max(offset);
                self.totals = totals;
            }
            Change::Slot {
                offset,
                state,
                count,
                until,
            } => {
                if offset < self.start {
                    return;
                }
                if offset - self.start >= MAX_IN_FLIGHT as u64 {
                    // No window is this wide: only damage could say so, and it must
                    // not make the server allocate a slot per offset up to it.
                    tracing::warn!(
                        offset,
                        start = self.start,
                        "ignoring a share slot far past its window"
                    );
                    return;
                }
                while self.end() <= offset {
                    self.slots.push_back(NEW);
                }
                let i = (offset - self.start) as usize;
                let (state, until) = match state {
                    State::Acquired => (State::Available, 0),
                    state => (state, until),
                };
                self.slots[i] = Slot {
                    state,
                    count,
                    until,
                    member: 0,
                    key: self.slots[i].key,
                };
            }
        }
        self.acquired = 0;
    }

    /// After a load: the window's records as read from the log again, for their keys and
    /// delivery times (not journaled); offsets with no record are finished.
    pub fn restore_records(&mut self, records: &[Candidate]) {
        let mut next = self.start;
        let mut records = records.iter().filter(|r| r.offset >= self.start).peekable();
        while next < self.end() {
            let i = (next - self.start) as usize;
            match records.peek() {
                Some(r) if r.offset == next => {
                    self.slots[i].key = r.key;
                    if self.slots[i].count == 0 && self.slots[i].state == State::Available {
                        self.slots[i].until = r.deliver_at;
                    }
                    records.next();
                }
                _ if self.slots[i].state == State::Available => self.slots[i].state = State::Gone,
                _ => {}
            }
            next += 1;
        }
        let mut ignored = Vec::new();
        self.advance(&mut ignored);
    }

    /// Every change that rebuilds this partition's state from nothing (a snapshot).
    pub fn snapshot(&self, out: &mut Vec<Change>) {
        out.push(Change::Reset {
            offset: self.start,
            totals: self.totals,
        });
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.state != State::Available || s.count != 0 || s.until != 0 {
                out.push(self.change(i));
            }
        }
    }
}
