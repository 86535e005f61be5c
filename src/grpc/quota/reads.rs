//! Allowances for reads: what a fetch takes of its client's quota before it reads and
//! settles after (`Taken`), and a share fetch's turn (`share_turn`).

use std::time::Duration;

use super::{Flow, Quota};

/// An allowance taken for a read: settled with what the read came to, or given back
/// whole if the read never happened (an error, a client gone).
pub struct Taken {
    pub(super) quota: Quota,
    pub(super) flow: Flow,
    pub(super) granted: usize,
    pub(super) settled: bool,
}

impl Taken {
    /// The bytes the read may take.
    pub fn bytes(&self) -> usize {
        self.granted
    }

    /// The read came to `used` bytes: the difference is charged or given back.
    pub fn settle(mut self, used: usize) {
        self.settled = true;
        match used.checked_sub(self.granted) {
            Some(more) => self.quota.charge(self.flow, more),
            None => self.quota.refund(self.flow, self.granted - used),
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.settled {
            self.quota.refund(self.flow, self.granted);
        }
    }
}

/// The longest a share fetch waits for its client's turn: it must not wait past its
/// member's session, which a fetch keeps alive (the member would expire, and the
/// records it holds go to others). Past it, it fetches within what the client holds
/// (at least one record).
pub const SHARE_TURN: Duration = Duration::from_secs(10);

/// A share fetch's turn: waits until the client may read (at most `SHARE_TURN`), then
/// takes the client's allowance for the bytes it may lock to the member (None without
/// a fetch limit), settled with what it locked. Taken before, so that share fetches
/// running at once share it; a share fetch that waits for records holds it meanwhile,
/// but it waits only when the whole topic has nothing for the group.
pub async fn share_turn(quota: &Quota, limit: usize) -> Option<Taken> {
    let _ = tokio::time::timeout(SHARE_TURN, quota.ready_to_read(Flow::Fetch, limit)).await;
    quota.take(Flow::Fetch, limit)
}
