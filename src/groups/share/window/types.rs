//! The vocabulary of a share partition: slot states, records offered, changes to
//! journal, acknowledgements and their refusals, counts.

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

/// A record read from the log, offered for acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub offset: u64,
    /// Hash of the key (0: no key; see `key_hash`).
    pub key: u64,
    /// `strom-deliver-at`, or 0.
    pub deliver_at: i64,
    /// Bytes it takes in an answer (key, value, headers).
    pub size: u32,
}

/// Records read from the log for `acquire`: every record of offsets `from..end` (a
/// compacted topic has gaps), in offset order.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    pub from: u64,
    pub end: u64,
    pub records: &'a [Candidate],
}

/// How much one `acquire` may lock.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub records: usize,
    /// Bytes of records (`Candidate::size`).
    pub bytes: usize,
    /// Whether the first record may be larger than `bytes`: only while the answer has
    /// none yet (a member must always get a record it can be given). Later partitions
    /// of the same answer stay within the bytes left, so that an answer is never
    /// larger than the byte limit plus one record, and the server can send it.
    pub first_may_exceed: bool,
}

impl Want {
    /// Any number of bytes.
    pub fn records(records: usize) -> Want {
        Want {
            records,
            bytes: usize::MAX,
            first_may_exceed: true,
        }
    }
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
            Refusal::Finished => "the record is finished (accepted, dead-lettered, deleted, or skipped by a reset)",
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
