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
//!
//! Here: handing out and acknowledging; `returns`: records coming back by themselves
//! (ended locks, departed members, dead letters); `upkeep`: the log changing under the
//! window, resets, replay and snapshots; `memory`: the window's allocation.

use std::collections::{HashMap, VecDeque};

use super::config::ShareConfig;

mod memory;
mod returns;
mod types;
mod upkeep;

pub use types::*;

/// A member of the group, by a number the group gives it; never reused while the
/// server runs, so a slot never names the wrong member.
pub type MemberIdx = u32;

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

#[derive(Debug, Clone, Default)]
pub struct SharePartition {
    start: u64,
    slots: VecDeque<Slot>,
    acquired: u32,
    totals: Totals,
    /// No lock ends before this (a lower bound; 0 when unknown): expiry passes that
    /// cannot find anything skip the scan of the window.
    next_lock_end: i64,
    /// A slot may be dying (owed to the dead letters) since `dying` last found none:
    /// the sweeper asks every group's partitions twenty times a second, and scanning
    /// every window each time cost a core with 400 groups of 100,000 in flight
    /// (hostile-client finding).
    may_be_dying: bool,
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
    /// handed out again (in a key-ordered group, not held back by an earlier record of
    /// its key), else the first never handed out if the window has room.
    pub fn next_candidate(&self, now: i64, cfg: &ShareConfig, high_watermark: u64) -> Option<u64> {
        let first_open = self.first_open(cfg);
        let again = self.slots.iter().enumerate().position(|(i, s)| {
            s.state == State::Available
                && s.until <= now
                && (s.key == 0
                    || !cfg.key_ordered
                    || first_open.get(&s.key) == Some(&(self.start + i as u64)))
        });
        match again {
            Some(i) => Some(self.start + i as u64),
            None => (self.end() < high_watermark && self.slots.len() < cfg.max_in_flight as usize)
                .then(|| self.end()),
        }
    }

    /// In a key-ordered group, each key's first unfinished record in the window: only it
    /// may be handed out.
    fn first_open(&self, cfg: &ShareConfig) -> HashMap<u64, u64> {
        let mut first_open = HashMap::new();
        if cfg.key_ordered {
            for (i, s) in self.slots.iter().enumerate() {
                if s.key != 0 && !s.state.is_done() && !s.state.is_dying() {
                    first_open.entry(s.key).or_insert(self.start + i as u64);
                }
            }
        }
        first_open
    }

    /// Locks records of `offered` to `member`, as many as `want` allows: each that is
    /// available now, within the window, and (key-ordered) the first unfinished record
    /// of its key. Window slots in the offered range with no record there were
    /// compacted away, and are finished. Returns the offsets locked and their delivery
    /// counts.
    pub fn acquire(
        &mut self,
        member: MemberIdx,
        offered: Offered<'_>,
        want: Want,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
    ) -> Vec<(u64, u16)> {
        self.mark_gaps(offered, changes);
        let mut first_open = self.first_open(cfg);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in offered.records {
            let first = out.is_empty() && want.first_may_exceed;
            if out.len() >= want.records || (!first && bytes + r.size as usize > want.bytes) {
                break;
            }
            if r.offset < self.start {
                continue;
            }
            if r.offset >= self.end() {
                if self.slots.is_empty() && r.offset > self.start {
                    // Nothing unfinished before it, and no record between (compacted
                    // away): the window starts at it. Slots for the gap would have
                    // been dropped at once, and a gap of max.in.flight or more made the
                    // window full for good.
                    self.start = r.offset;
                    changes.push(Change::Start {
                        offset: self.start,
                        totals: self.totals,
                    });
                }
                if r.offset - self.start >= cfg.max_in_flight as u64 {
                    break; // the window is full
                }
                // Offsets with no record in between (compaction) are finished.
                while self.end() < r.offset {
                    let gone = Slot {
                        state: State::Gone,
                        ..NEW
                    };
                    self.push(gone, cfg.max_in_flight as usize);
                    changes.push(self.change(self.slots.len() - 1));
                }
                let slot = Slot {
                    until: r.deliver_at,
                    key: r.key,
                    ..NEW
                };
                self.push(slot, cfg.max_in_flight as usize);
                if cfg.key_ordered && r.key != 0 {
                    first_open.entry(r.key).or_insert(r.offset);
                }
            }
            let i = (r.offset - self.start) as usize;
            let s = self.slots[i];
            if s.state == State::Available && s.count >= cfg.max_deliveries {
                // Locked at a crash on its last delivery, or max.deliveries was lowered.
                self.slots[i].state = State::Exhausted;
                self.may_be_dying = true;
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
            self.next_lock_end = self.next_lock_end.min(slot.until);
            self.acquired += 1;
            bytes += r.size as usize;
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

    /// Takes back a lock on `offset` that `member` got from a fetch that never
    /// answered (dropped or failed first): the record is available again at once, its
    /// delivery uncounted, since it never left the server. False if `member` does not
    /// hold it.
    pub fn unacquire(&mut self, member: MemberIdx, offset: u64, changes: &mut Vec<Change>) -> bool {
        let Some(i) = self.index(offset) else {
            return false;
        };
        let s = &mut self.slots[i];
        if s.state != State::Acquired || s.member != member {
            return false;
        }
        s.count = s.count.saturating_sub(1);
        s.until = 0;
        self.finish(i, State::Available);
        changes.push(self.change(i));
        true
    }

    /// Ends the lock of slot `i` in `state`.
    fn finish(&mut self, i: usize, state: State) {
        self.slots[i].state = state;
        self.may_be_dying |= state.is_dying();
        self.acquired -= 1;
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
            self.trim();
        }
    }
}
