//! What happens to a share partition besides handing out and acknowledging: the log
//! changing under it (compaction gaps, retention, a log cut short), resets, replay from
//! the journal, snapshots and counts.

use std::collections::VecDeque;

use super::{Candidate, Change, Counts, Offered, SharePartition, Slot, State, NEW};
use crate::groups::share::config::MAX_IN_FLIGHT;

impl SharePartition {
    /// Finishes available slots in `offered`'s range that have no record there (it was
    /// compacted away after the slot was made).
    pub(super) fn mark_gaps(&mut self, offered: Offered<'_>, changes: &mut Vec<Change>) {
        let (from, to) = (offered.from.max(self.start), offered.end.min(self.end()));
        let mut present = offered.records.iter().map(|r| r.offset).peekable();
        for offset in from..to {
            while present.peek().is_some_and(|&o| o < offset) {
                present.next();
            }
            if present.peek() == Some(&offset) {
                continue;
            }
            let i = (offset - self.start) as usize;
            if self.slots[i].state == State::Available {
                self.slots[i].state = State::Gone;
                changes.push(self.change(i));
            }
        }
    }

    /// The log ends at `high_watermark`, before the window does: records the group saw
    /// were lost (a power cut took back records that were never fsynced). The window is
    /// cut back to the log's end, its unfinished records counted as lost, so records
    /// appended from there on are new ones.
    pub fn fit_to_log(&mut self, high_watermark: u64, changes: &mut Vec<Change>) {
        if self.end() <= high_watermark {
            return;
        }
        if self.start >= high_watermark {
            let lost = self.slots.iter().filter(|s| !s.state.is_done()).count() as u64;
            self.totals.lost += lost;
            self.reset(high_watermark, changes);
            return;
        }
        while self.end() > high_watermark {
            let s = self.slots.pop_back().expect("end > start");
            if s.state == State::Acquired {
                self.acquired -= 1;
            }
            if !s.state.is_done() {
                self.totals.lost += 1;
            }
        }
        // Journaled as a reset and the slots kept: replay cannot shrink a window.
        self.snapshot(changes);
        self.trim();
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
        self.trim();
        changes.push(Change::Start {
            offset: self.start,
            totals: self.totals,
        });
    }

    /// Forgets everything and starts again at `offset` (a reset of the group).
    pub fn reset(&mut self, offset: u64, changes: &mut Vec<Change>) {
        self.slots = VecDeque::new();
        self.acquired = 0;
        self.start = offset;
        changes.push(Change::Reset {
            offset,
            totals: self.totals,
        });
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
                if offset - self.start >= MAX_IN_FLIGHT as u64 || offset > u64::MAX / 2 {
                    // No window is this wide, and no log this long: only damage could
                    // say so, and it must not make the server allocate a slot per
                    // offset up to it (nor overflow the window's end).
                    tracing::warn!(
                        offset,
                        start = self.start,
                        "ignoring a share slot far past its window"
                    );
                    return;
                }
                while self.end() <= offset {
                    self.push(NEW, MAX_IN_FLIGHT as usize);
                }
                let i = (offset - self.start) as usize;
                let (state, until) = match state {
                    State::Acquired => (State::Available, 0),
                    state => (state, until),
                };
                self.may_be_dying |= state.is_dying();
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
    pub fn restore_records(&mut self, records: &[Candidate], changes: &mut Vec<Change>) {
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
                _ if self.slots[i].state == State::Available => {
                    self.slots[i].state = State::Gone;
                    changes.push(self.change(i));
                }
                _ => {}
            }
            next += 1;
        }
        self.advance(changes);
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
