//! Records coming back to a share partition's queue by themselves: locks that end,
//! members that leave, and records out of deliveries, owed to the dead-letter topic
//! until they are appended there.

use std::collections::HashMap;

use super::{Change, Dying, MemberIdx, SharePartition, Slot, State};
use crate::groups::share::config::ShareConfig;

impl SharePartition {
    /// Returns slot `i` to the queue after a release or an expired lock, or to the dead
    /// letters if it is out of deliveries.
    pub(super) fn give_back(&mut self, i: usize, now: i64, cfg: &ShareConfig) {
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
        if self.acquired == 0 || now < self.next_lock_end {
            return false;
        }
        let any = self.give_back_where(now, cfg, changes, |s| s.until <= now);
        self.next_lock_end = self
            .slots
            .iter()
            .filter(|s| s.state == State::Acquired)
            .map(|s| s.until)
            .min()
            .unwrap_or(i64::MAX);
        any
    }

    /// Returns every record `members` hold (they left, or their sessions ended).
    pub fn release_members(
        &mut self,
        members: &std::collections::HashSet<MemberIdx>,
        now: i64,
        cfg: &ShareConfig,
        changes: &mut Vec<Change>,
    ) -> bool {
        self.give_back_where(now, cfg, changes, |s| members.contains(&s.member))
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

    /// Adds the records each member holds to `held`.
    pub fn count_held(&self, held: &mut HashMap<MemberIdx, u64>) {
        if self.acquired == 0 {
            return;
        }
        for s in self.slots.iter().filter(|s| s.state == State::Acquired) {
            *held.entry(s.member).or_default() += 1;
        }
    }

    /// Whether any record is owed to the dead-letter topic.
    pub fn has_dying(&self) -> bool {
        self.may_be_dying && self.slots.iter().any(|s| s.state.is_dying())
    }

    /// Records waiting for the dead-letter topic.
    pub fn dying(&mut self) -> Vec<Dying> {
        if !self.may_be_dying {
            return Vec::new();
        }
        let dying: Vec<Dying> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.is_dying())
            .map(|(i, s)| Dying {
                offset: self.start + i as u64,
                count: s.count,
                rejected: s.state == State::Rejected,
            })
            .collect();
        self.may_be_dying = !dying.is_empty();
        dying
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
}
