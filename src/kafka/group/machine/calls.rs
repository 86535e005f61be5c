//! A member's calls once it has joined: SyncGroup, Heartbeat, OffsetCommit's check
//! and LeaveGroup.

use bytes::Bytes;

use super::{code, join_error, sync_error, Answer, Caller, Group, Reply, State, SyncAnswer};

impl Group {
    /// Checks a member (and its instance id, if static) and its generation: the
    /// error for a call from it, if any.
    fn check(&self, member_id: &str, instance: Option<&str>, generation: i32) -> Option<i16> {
        if let Err(error) = self.check_instance(member_id, instance) {
            return Some(error);
        }
        if !self.members.contains_key(member_id) {
            return Some(code::UNKNOWN_MEMBER_ID);
        }
        (generation != self.generation).then_some(code::ILLEGAL_GENERATION)
    }

    pub fn sync(
        &mut self,
        now: u64,
        (member_id, instance): Caller<'_>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> (Answer<SyncAnswer>, Vec<Reply>) {
        if let Some(error) = self.check(member_id, instance, generation) {
            return (Answer::Now(sync_error(error)), Vec::new());
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        match self.state {
            State::Empty | State::Preparing => (
                Answer::Now(sync_error(code::REBALANCE_IN_PROGRESS)),
                Vec::new(),
            ),
            State::Stable => (Answer::Now(self.sync_answer(member_id)), Vec::new()),
            State::Completing => {
                if let Some(member) = self.members.get_mut(member_id) {
                    member.syncing = true;
                }
                if member_id != self.leader {
                    return (Answer::Later(member_id.to_string()), Vec::new());
                }
                for (id, assignment) in assignments {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.assignment = assignment;
                    }
                }
                self.state = State::Stable;
                let mut replies = Vec::new();
                let mut mine = None;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let member = self.members.get_mut(&id).expect("listed");
                    if std::mem::take(&mut member.syncing) {
                        member.last_heard = now; // its session starts again
                        let answer = self.sync_answer(&id);
                        match id == member_id {
                            true => mine = Some(answer),
                            false => replies.push(Reply::Sync(id, answer)),
                        }
                    }
                }
                (Answer::Now(mine.expect("the leader was syncing")), replies)
            }
        }
    }

    fn sync_answer(&self, id: &str) -> SyncAnswer {
        SyncAnswer {
            error: code::NONE,
            protocol_type: self.protocol_type().to_string(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    pub fn heartbeat(
        &mut self,
        now: u64,
        (member_id, instance): Caller<'_>,
        generation: i32,
    ) -> i16 {
        if let Some(error) = self.check(member_id, instance, generation) {
            return error;
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        match self.state {
            State::Preparing => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Whether `member_id` at `generation` may commit offsets: a member of this
    /// generation (also while its group prepares a rebalance, so that members commit
    /// what they processed before they join again), or anyone while the group has no
    /// members (a consumer that assigns itself partitions: id "", generation -1).
    pub fn check_commit(
        &mut self,
        now: u64,
        (member_id, instance): Caller<'_>,
        generation: i32,
    ) -> i16 {
        // (An instance id named with no member is checked below, as Kafka does:
        // FENCED_INSTANCE_ID if a member has it.)
        if member_id.is_empty() && generation < 0 {
            match (self.members.is_empty(), instance) {
                (true, _) => return code::NONE,
                (false, None) => return code::UNKNOWN_MEMBER_ID,
                (false, Some(_)) => {}
            }
        }
        if let Some(error) = self.check(member_id, instance, generation) {
            return error;
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        match self.state {
            State::Completing => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Member `member_id` leaves; or, given an instance id, the static member that has
    /// it (the id may then be empty: an administrator removing it by instance).
    pub fn leave(&mut self, now: u64, (member_id, instance): Caller<'_>) -> (i16, Vec<Reply>) {
        let member_id = match (instance, self.static_member(instance)) {
            (None, _) => member_id.to_string(),
            (Some(_), None) => return (code::UNKNOWN_MEMBER_ID, Vec::new()),
            (Some(_), Some(id)) if !member_id.is_empty() && id != member_id => {
                return (code::FENCED_INSTANCE_ID, Vec::new());
            }
            (Some(_), Some(id)) => id,
        };
        let member_id = member_id.as_str();
        let mut replies = Vec::new();
        if self.pending.remove(member_id).is_some() {
            // The rebalance may have been waiting for it alone.
            if self.state == State::Preparing && self.may_complete_join() {
                self.complete_join(now, &mut replies);
            }
            return (code::NONE, replies);
        }
        let Some(member) = self.remove_member(member_id) else {
            return (code::UNKNOWN_MEMBER_ID, Vec::new());
        };
        if member.joining {
            replies.push(Reply::Join(
                member_id.to_string(),
                join_error(code::UNKNOWN_MEMBER_ID, member_id),
            ));
        }
        if member.syncing {
            replies.push(Reply::Sync(
                member_id.to_string(),
                sync_error(code::UNKNOWN_MEMBER_ID),
            ));
        }
        self.member_gone(now, &mut replies);
        (code::NONE, replies)
    }
}
