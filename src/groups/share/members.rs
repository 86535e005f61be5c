//! A share group's members: ids the clients send (or the server gives on joining), and
//! when each was last heard from. In memory only: after a restart every lock is gone,
//! so a member that comes back simply starts again.

use std::collections::HashMap;

use super::window::MemberIdx;
use crate::error::{quote, Error, Result};

/// Most members one share group keeps.
pub const MAX_MEMBERS: usize = 10_000;
/// Longest member id a client may choose.
pub const MAX_MEMBER_ID_LEN: usize = 255;

/// Refuses a member id no member may have.
pub fn check_id(id: &str) -> Result<()> {
    if id.len() > MAX_MEMBER_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "member_id is {} bytes; at most {MAX_MEMBER_ID_LEN} (send an empty one to be given one)",
            id.len()
        )));
    }
    // Ids are shown by DescribeShareGroup and the CLI, and logged: a newline or an
    // escape in one would forge lines there.
    if id.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "member_id {} has control characters; use printable ones (a UUID is a good choice), or send an empty one to be given one",
            quote(id)
        )));
    }
    Ok(())
}

/// The refusal of a stream whose member `id` joined again on another stream.
pub fn replaced(id: &str) -> Error {
    Error::FailedPrecondition(format!(
        "member {} joined the share group again on another stream, which replaced this one; this stream ends",
        quote(id)
    ))
}

#[derive(Debug, Clone)]
pub struct Member {
    pub idx: MemberIdx,
    pub last_seen_ms: i64,
    /// Joined by a ShareStream, which it leaves when the stream ends: its session does
    /// not expire meanwhile. A worker on a long job sends nothing on its stream, and
    /// its member expired under it, giving its records to others while it held their
    /// locks, and its next acknowledgement ended the stream (hostile-client finding).
    /// HTTP/2's keepalive ends the stream of a client that vanished.
    pub streaming: bool,
}

#[derive(Debug, Default)]
pub struct Members {
    by_id: HashMap<String, Member>,
    next: MemberIdx,
}

impl Members {
    /// As `join`; `streaming`: for a stream's member (see `Member::streaming`).
    pub fn join_as(
        &mut self,
        id: &str,
        now_ms: i64,
        streaming: bool,
    ) -> Result<(String, MemberIdx)> {
        let (id, idx) = self.join(id, now_ms)?;
        if let Some(member) = self.by_id.get_mut(&id) {
            member.streaming |= streaming;
        }
        Ok((id, idx))
    }

    /// The member `id` (joining it if the group does not know it; an empty id gets a new
    /// one), marked as heard from now.
    pub fn join(&mut self, id: &str, now_ms: i64) -> Result<(String, MemberIdx)> {
        check_id(id)?;
        let id = match id {
            "" => uuid::Uuid::new_v4().simple().to_string(),
            id => id.to_string(),
        };
        if let Some(member) = self.by_id.get_mut(&id) {
            member.last_seen_ms = now_ms;
            return Ok((id, member.idx));
        }
        if self.by_id.len() >= MAX_MEMBERS {
            return Err(Error::LimitReached(format!(
                "the share group has {MAX_MEMBERS} members, the most it keeps; stop some workers or use another group"
            )));
        }
        self.next += 1;
        let idx = self.next;
        self.by_id.insert(
            id.clone(),
            Member {
                idx,
                last_seen_ms: now_ms,
                streaming: false,
            },
        );
        Ok((id, idx))
    }

    /// As `join`, for a stream: a member already known under `id` is replaced by a new
    /// one (a worker whose stream broke and who connected again), which does not expire
    /// while its stream is open. Returns the old number too, whose records the caller
    /// gives back, and whose stream's end then removes nothing.
    pub fn rejoin(
        &mut self,
        id: &str,
        now_ms: i64,
    ) -> Result<(String, MemberIdx, Option<MemberIdx>)> {
        let old = self.by_id.remove(id);
        match self.join_as(id, now_ms, true) {
            Ok((id, idx)) => Ok((id, idx, old.map(|m| m.idx))),
            Err(err) => {
                if let Some(old) = old {
                    self.by_id.insert(id.to_string(), old);
                }
                Err(err)
            }
        }
    }

    /// For a stream's fetch: the stream's member `id` under the number `expected` it
    /// joined as, marked as heard from now; joined again (as a stream's member) if the
    /// group lost it in a reload. Refused if `id` is another member now: the worker
    /// connected again on a new stream, which replaced this one's member (fetching for
    /// it would lock records to the new stream's member and send them on the old one,
    /// and the old stream's end would remove the new member).
    pub fn stream_member(
        &mut self,
        id: &str,
        expected: MemberIdx,
        now_ms: i64,
    ) -> Result<MemberIdx> {
        match self.by_id.get_mut(id) {
            Some(member) if member.idx == expected => {
                member.last_seen_ms = now_ms;
                Ok(expected)
            }
            Some(_) => Err(replaced(id)),
            None => self.join_as(id, now_ms, true).map(|(_, idx)| idx),
        }
    }

    /// A known member, marked as heard from now.
    pub fn touch(&mut self, id: &str, group: &str, now_ms: i64) -> Result<MemberIdx> {
        match self.by_id.get_mut(id) {
            Some(member) => {
                member.last_seen_ms = now_ms;
                Ok(member.idx)
            }
            None => Err(Error::FailedPrecondition(format!(
                "member {} is not in share group {} (its session ended, or the server restarted) and holds no records; fetch again to rejoin",
                quote(id),
                quote(group)
            ))),
        }
    }

    /// Removes the members not heard from within `timeout_ms`, but those of open
    /// streams; returns them.
    pub fn expire(&mut self, now_ms: i64, timeout_ms: u64) -> Vec<(String, MemberIdx)> {
        let gone: Vec<(String, MemberIdx)> = self
            .by_id
            .iter()
            .filter(|(_, m)| {
                !m.streaming && now_ms.saturating_sub(m.last_seen_ms) > timeout_ms as i64
            })
            .map(|(id, m)| (id.clone(), m.idx))
            .collect();
        for (id, _) in &gone {
            self.by_id.remove(id);
        }
        gone
    }

    /// Member `id` leaves, if it is still the member numbered `idx`.
    pub fn leave(&mut self, id: &str, idx: MemberIdx) -> Option<MemberIdx> {
        match self.by_id.get(id) {
            Some(m) if m.idx == idx => self.by_id.remove(id).map(|m| m.idx),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.by_id.iter()
    }
}
