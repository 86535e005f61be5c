//! `Received`: a produce request's records as they arrived, each kept whole (a slice of
//! the receive buffer, or copied into one shared buffer when small).

use bytes::{Buf, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

/// Records at least this long are kept as slices of the receive buffer: a `Bytes`
/// handle is 32 bytes, so a shorter record costs less copied.
const SHARE_AT_LEAST: usize = 32;
/// Marks an entry of `Received::entries` that indexes `large` rather than `small`.
const LARGE: u32 = 1 << 31;

/// Records as received, in order: each one's encoded `Record` message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    /// Small records, back to back.
    pub(super) small: Vec<u8>,
    /// Large records, each a slice of the receive buffer.
    pub(super) large: Vec<Bytes>,
    /// Per record: the end of its bytes in `small`, or `LARGE | index` into `large`.
    pub(super) entries: Vec<u32>,
    /// More records came than this type counts (never with the server's request-size
    /// limit): the request is refused.
    pub(super) overflowed: bool,
}

/// Records a `Received` holds at most.
const MAX_ENTRIES: usize = (LARGE - 1) as usize;

impl Received {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records kept as slices of the buffer they were received in (for tests).
    #[cfg(test)]
    pub fn shared(&self) -> &[Bytes] {
        &self.large
    }

    /// Bytes the records take, as received.
    pub fn bytes(&self) -> usize {
        self.small.len() + self.large.iter().map(Bytes::len).sum::<usize>()
    }

    pub(super) fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // A slice of the receive buffer (tonic's buffer hands out slices, not copies).
        let mut record = Bytes::new();
        encoding::bytes::merge(wire_type, &mut record, buf, ctx)?;
        if self.entries.len() >= MAX_ENTRIES || self.small.len() + record.len() >= LARGE as usize {
            self.overflowed = true; // refused when the batch is built
        } else if record.len() >= SHARE_AT_LEAST {
            self.entries.push(LARGE | self.large.len() as u32);
            self.large.push(record);
        } else {
            self.small.extend_from_slice(&record);
            self.entries.push(self.small.len() as u32);
        }
        Ok(())
    }

    /// Each record's encoded message, in order, borrowed.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        spans(&self.entries).map(|span| match span {
            Span::Small(range) => &self.small[range],
            Span::Large(i) => &self.large[i][..],
        })
    }
}

/// Where one received record is: a range of `Received::small`, or an index into
/// `Received::large`.
pub(super) enum Span {
    Small(std::ops::Range<usize>),
    Large(usize),
}

/// The records' places, in order, from `Received::entries`.
pub(super) fn spans(entries: &[u32]) -> impl Iterator<Item = Span> + '_ {
    let mut start = 0usize;
    entries.iter().map(move |&entry| {
        if entry & LARGE != 0 {
            Span::Large((entry & !LARGE) as usize)
        } else {
            let end = entry as usize;
            let span = Span::Small(start..end);
            start = end;
            span
        }
    })
}
