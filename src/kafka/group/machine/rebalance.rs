//! A rebalance's steps: started (members told to join again), its longest timeout,
//! the barrier that ends it, and its end: a new generation, a leader, and every
//! joined member answered.

use bytes::Bytes;

use super::{code, sync_error, Group, Initial, Reply, State, MIN_SESSION_MS};

impl Group {
    /// Starts a rebalance (`Preparing`): members waiting in SyncGroup are told
    /// REBALANCE_IN_PROGRESS, and the members have until the longest rebalance timeout
    /// to join again; an empty group first waits its initial delay (`Initial`).
    pub(super) fn start_rebalance(&mut self, now: u64, replies: &mut Vec<Reply>) {
        for (id, member) in &mut self.members {
            if std::mem::take(&mut member.syncing) {
                replies.push(Reply::Sync(
                    id.clone(),
                    sync_error(code::REBALANCE_IN_PROGRESS),
                ));
            }
        }
        let longest = self.longest_rebalance();
        self.initial = None;
        self.rebalance_deadline = now + longest;
        if self.state == State::Empty && self.initial_delay > 0 {
            // Not past the rebalance timeout: clients wait that long for an answer.
            let wait = self.initial_delay.min(longest);
            let remaining = longest - wait;
            self.initial = Some(Initial {
                remaining,
                newcomer: false,
            });
            self.rebalance_deadline = now + wait;
        }
        self.state = State::Preparing;
    }

    /// A rebalance waits for members to join again for the longest rebalance timeout
    /// any of them asked for.
    pub(super) fn longest_rebalance(&self) -> u64 {
        let longest = self.members.values().map(|m| m.rebalance_ms).max();
        longest.unwrap_or(0)
    }

    /// Ends the join phase: dynamic members that did not join again are dropped, the
    /// generation goes up, and every joined member is answered. Static members that
    /// did not stay in it, as Kafka keeps them: the leader assigns them partitions,
    /// which wait for them (a restarted process of theirs takes them) until their
    /// session lapses. With none but those left, the phase waits another rebalance
    /// timeout, or until their sessions lapse.
    pub(super) fn complete_join(&mut self, now: u64, replies: &mut Vec<Reply>) {
        self.initial = None;
        self.members
            .retain(|_, m| m.joining || m.instance.is_some());
        self.forget_dropped_statics();
        let leader_joined = self.members.get(&self.leader).is_some_and(|m| m.joining);
        if !leader_joined {
            // The first to have joined the group, of those that joined again.
            let joined = self.members.iter().filter(|(_, m)| m.joining);
            match joined.min_by_key(|(_, m)| m.joined_at) {
                Some((id, _)) => self.leader = id.clone(),
                None if !self.members.is_empty() => {
                    // Not sooner than a session could lapse: a rebalance timeout of
                    // 0 ms would wake the coordinator every tick.
                    let wait = self.longest_rebalance().max(MIN_SESSION_MS);
                    self.rebalance_deadline = now + wait;
                    return;
                }
                None => {}
            }
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader.clear();
            self.protocol.clear();
            return;
        }
        self.protocol = self.vote();
        self.state = State::Completing;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for member in self.members.values_mut() {
            if std::mem::take(&mut member.joining) {
                member.last_heard = now;
            }
            member.assignment = Bytes::new();
        }
        for id in ids {
            let answer = self.join_answer(&id);
            replies.push(Reply::Join(id, answer));
        }
    }

    /// After members were dropped: a rebalance for those that remain.
    pub(super) fn member_gone(&mut self, now: u64, replies: &mut Vec<Reply>) {
        match self.state {
            State::Empty => {}
            State::Stable | State::Completing => self.start_rebalance(now, replies),
            State::Preparing => {}
        }
        if self.state == State::Preparing && self.may_complete_join() {
            self.complete_join(now, replies);
        }
    }

    /// Every member has joined again, and no member given its id (MEMBER_ID_REQUIRED)
    /// is still to join with it: Kafka's barrier, so that consumers starting together
    /// share one generation rather than joining one rebalance after another. An
    /// empty group's first rebalance ends only when its wait is over (`Initial`).
    pub(super) fn may_complete_join(&self) -> bool {
        self.initial.is_none()
            && self.members.values().all(|m| m.joining)
            && self.pending.is_empty()
    }
}
