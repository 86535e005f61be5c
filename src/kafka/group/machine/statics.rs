//! Static members (Kafka's KIP-345): a member that joined with a `group.instance.id`
//! is that instance's until it leaves or its session lapses. A process that joins
//! with the instance id and no member id takes the member's place under a new id,
//! keeping its assignment; the process it replaced is fenced: its waiting call, and
//! every later one with the old id and the instance id, is answered
//! FENCED_INSTANCE_ID.

use super::{code, join_error, sync_error, Answer, Group, Join, JoinAnswer, Member, Reply, State};

impl Group {
    /// What a JoinGroup's instance id says: the static member whose place a new
    /// process of the instance (no member id) takes, if any; or the error for a
    /// known member id that is not its instance's.
    pub(super) fn replaced_by(&self, join: &Join) -> Result<Option<String>, i16> {
        let instance = join.instance_id.as_deref();
        match join.member_id.is_empty() {
            true => Ok(self.static_member(instance)),
            false => self
                .check_instance(&join.member_id, instance)
                .map(|()| None),
        }
    }

    /// The member id of the static member with `instance`, if any.
    pub(super) fn static_member(&self, instance: Option<&str>) -> Option<String> {
        self.statics.get(instance?).cloned()
    }

    /// A call that names an instance id must come from its member:
    /// UNKNOWN_MEMBER_ID for an instance the group does not have, FENCED_INSTANCE_ID
    /// for another member id (a process the instance's new one replaced).
    pub(super) fn check_instance(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), i16> {
        let Some(instance) = instance else {
            return Ok(());
        };
        match self.statics.get(instance) {
            None => Err(code::UNKNOWN_MEMBER_ID),
            Some(id) if id != member_id => Err(code::FENCED_INSTANCE_ID),
            Some(_) => Ok(()),
        }
    }

    /// Removes a member, and its instance id with it.
    pub(super) fn remove_member(&mut self, id: &str) -> Option<Member> {
        let member = self.members.remove(id)?;
        if let Some(instance) = &member.instance {
            if self.statics.get(instance).is_some_and(|m| m == id) {
                self.statics.remove(instance);
            }
        }
        Some(member)
    }

    /// After members were dropped other than by `remove_member`: forgets their
    /// instance ids.
    pub(super) fn forget_dropped_statics(&mut self) {
        let members = &self.members;
        self.statics.retain(|_, id| members.contains_key(id));
    }

    /// A new process of a static member's instance joins (no member id): it takes
    /// the place of member `old`, under the id the caller made. A stable group whose
    /// protocol it does not change is not rebalanced: the new member is answered at
    /// once with the generation as it is, and syncs to get the assignment it had.
    /// Else the group rebalances (while completing one too, as Kafka does: the
    /// leader may be assigning to the old id).
    pub(super) fn replace_static(
        &mut self,
        now: u64,
        old: String,
        join: Join,
    ) -> (Answer<JoinAnswer>, Vec<Reply>) {
        let mut replies = Vec::new();
        let mut member = self
            .remove_member(&old)
            .expect("an instance names a member");
        if std::mem::take(&mut member.joining) {
            let fenced = join_error(code::FENCED_INSTANCE_ID, &old);
            replies.push(Reply::Join(old.clone(), fenced));
        }
        if std::mem::take(&mut member.syncing) {
            replies.push(Reply::Sync(
                old.clone(),
                sync_error(code::FENCED_INSTANCE_ID),
            ));
        }
        member.client_id = join.client_id;
        member.session_ms = join.session_ms;
        member.rebalance_ms = join.rebalance_ms;
        member.protocols = join.protocols;
        member.last_heard = now;
        let id = join.new_id;
        let leader_was = self.leader.clone();
        if self.leader == old {
            self.leader = id.clone();
        }
        if let Some(instance) = &member.instance {
            self.statics.insert(instance.clone(), id.clone());
        }
        self.members.insert(id.clone(), member);
        match self.state {
            State::Stable if self.vote() == self.protocol => {
                // The leader as it was: a leader that restarted must not assign this
                // generation again (it sees itself a follower, and gets its own
                // assignment by SyncGroup); it leads the next one. (Kafka's JoinGroup
                // version 9 says so with skip_assignment; strom takes up to 7.)
                let mut answer = self.join_answer(&id);
                answer.leader = leader_was;
                answer.members.clear();
                return (Answer::Now(answer), replies);
            }
            State::Preparing => {}
            State::Stable | State::Completing | State::Empty => {
                self.start_rebalance(now, &mut replies)
            }
        }
        self.await_join(now, id, replies)
    }
}
