//! The read side of a segment: finding a batch by offset or timestamp, and handing out
//! whole batches as slices of the map.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use super::Segment;
use crate::error::{Error, Result};
use crate::log::format::{check_crc, check_header, BatchHeader};
use crate::log::record::records;

/// A `Bytes` owner: a range of a segment's map, kept alive while any slice of it lives.
struct MapRange {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapRange {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// A segment's map and committed end, taken under the log's lock and read without it:
/// bytes below the committed end never change (see sys.rs).
#[derive(Debug, Clone)]
pub struct SegmentView {
    map: Arc<Mmap>,
    size: u64,
    path: PathBuf,
}

impl SegmentView {
    /// Whole batches from the batch at `start` (which holds `offset`), as one slice of
    /// the map, while they fit in `max_bytes`; with `at_least_one`, the first batch is
    /// returned even if it alone is larger. Each batch's header and CRC are verified:
    /// a damaged first batch is an error, and a damaged later one ends the slice before
    /// it (the next read starts there and gets the error), so good records are never
    /// reported as lost with a damaged neighbour. Returns the slice and the offset after
    /// it, or `None` if not even the first batch fits.
    pub fn read(
        &self,
        start: u64,
        offset: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Option<(Bytes, u64)>> {
        let bytes = &self.map[..self.size as usize];
        let (mut end, mut next) = (start, offset);
        while end < self.size {
            let rest = &bytes[end as usize..];
            let expected = (end != start).then_some(next);
            let header = match check_header(rest, expected, rest.len()) {
                Ok(header) => header,
                Err(_) if end != start => break,
                Err(reason) => {
                    return Err(Error::Corruption {
                        path: self.path.clone(),
                        position: end,
                        reason,
                    })
                }
            };
            let fits = (end - start + u64::from(header.length)) as usize <= max_bytes;
            let must_take = at_least_one && end == start;
            if !fits && !must_take {
                break;
            }
            match check_crc(rest, &header, &self.path, end) {
                Ok(()) => {}
                Err(_) if end != start => break,
                Err(err) => return Err(err),
            }
            end += u64::from(header.length);
            next = header.next_offset();
        }
        if end == start {
            return Ok(None);
        }
        let slice = Bytes::from_owner(MapRange {
            map: Arc::clone(&self.map),
            start: start as usize,
            end: end as usize,
        });
        Ok(Some((slice, next)))
    }
}

impl Segment {
    /// Position of the batch that holds `offset` (which must be in this segment), or of
    /// the first batch after it if compaction removed it; the segment's size if no
    /// batch of the segment holds `offset` or anything after it.
    pub fn position_of(&self, offset: u64) -> Result<u64> {
        let rel = (offset - self.base) as u32;
        let i = self.index.partition_point(|e| e.rel_offset <= rel);
        let hint = i.checked_sub(1).map(|i| self.index.get(i));
        match hint {
            Some(e) => self
                .walk_to(
                    offset,
                    u64::from(e.position),
                    self.base + u64::from(e.rel_offset),
                )
                // An index entry that does not point at its batch is a damaged cache, not
                // damaged data: find the batch from the segment's start instead.
                .or_else(|_| self.walk_to(offset, 0, self.base)),
            None => self.walk_to(offset, 0, self.base),
        }
    }

    /// Walks batch headers from the batch at `pos` (base offset `expected`) to the one
    /// holding `offset`.
    fn walk_to(&self, offset: u64, mut pos: u64, mut expected: u64) -> Result<u64> {
        loop {
            if pos >= self.size {
                return Ok(self.size);
            }
            let header = self.header_at(pos, Some(expected))?;
            if header.next_offset() > offset {
                return Ok(pos);
            }
            pos += u64::from(header.length);
            expected = header.next_offset();
        }
    }

    /// Whether the batches below `position` end exactly there, with `next_offset` the
    /// offset after them, as a recovery checkpoint says. The last of them is found
    /// through the index and only headers are read (the bytes below a checkpoint were
    /// synced before it was written, so their CRCs are not checked again). A checkpoint
    /// that fails this disagrees with the log, and trusting it would leave offsets
    /// without bytes.
    pub fn ends_at(&self, position: u64, next_offset: u64) -> bool {
        if position == 0 || next_offset <= self.base || position > self.size {
            return position == 0 && next_offset == self.base;
        }
        let Ok(at) = self.position_of(next_offset - 1) else {
            return false;
        };
        if at >= position {
            return false;
        }
        self.header_at(at, None).is_ok_and(|header| {
            header.next_offset() == next_offset && at + u64::from(header.length) == position
        })
    }

    /// The header of the batch at `pos`, checked (and its base offset if `expected`).
    pub fn header_at(&self, pos: u64, expected: Option<u64>) -> Result<BatchHeader> {
        let rest = self.bytes().get(pos as usize..).unwrap_or_default();
        check_header(rest, expected, rest.len()).map_err(|reason| Error::Corruption {
            path: self.log_path.clone(),
            position: pos,
            reason,
        })
    }

    /// What a reader needs to read this segment's batches up to its committed end
    /// without holding the segment: its map and that end.
    pub fn view(&self) -> SegmentView {
        SegmentView {
            map: Arc::clone(&self.map),
            size: self.size,
            path: self.log_path.clone(),
        }
    }

    /// Whole batches from the one holding `offset` (see `SegmentView::read`).
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Option<(Bytes, u64)>> {
        let start = self.position_of(offset)?;
        self.view().read(start, offset, max_bytes, at_least_one)
    }

    /// The first record in this segment at or after offset `from` whose timestamp is at
    /// least `ts`: its offset and timestamp. A damaged batch is skipped, as a reader
    /// told to resume after it would: the lookup goes on at the next batch that reads.
    pub fn offset_for_timestamp(&self, ts: i64, from: u64) -> Result<Option<(u64, i64)>> {
        if self.max_timestamp < ts || from >= self.next_offset {
            return Ok(None);
        }
        let i = self.time_index.partition_point(|e| e.timestamp < ts);
        let hint = match i.checked_sub(1) {
            Some(i) => self.base + u64::from(self.time_index.get(i).rel_offset),
            None => self.base,
        };
        // An offset of the batch at `pos`: where to skip from if it is damaged.
        let mut at = hint.max(from);
        let mut pos = self.position_of(at)?;
        while pos < self.size {
            match self.timestamp_in_batch(pos, ts, from) {
                Ok(InBatch::Found(hit)) => return Ok(Some(hit)),
                Ok(InBatch::Next { pos: next, offset }) => (pos, at) = (next, offset),
                Err(err) => {
                    let resume = self.next_readable_after(at);
                    tracing::warn!(%err, resume, "a time lookup skipped damaged records");
                    let next_pos = match resume < self.next_offset {
                        true => self.position_of(resume)?,
                        false => self.size,
                    };
                    if next_pos <= pos {
                        return Err(err);
                    }
                    (pos, at) = (next_pos, resume);
                }
            }
        }
        Ok(None)
    }

    /// The first record of the batch at `pos` at or after `from` with a timestamp of at
    /// least `ts`; else the next batch's position and first offset.
    fn timestamp_in_batch(&self, pos: u64, ts: i64, from: u64) -> Result<InBatch> {
        let header = self.header_at(pos, None)?;
        let rest = &self.bytes()[pos as usize..];
        if header.max_timestamp >= ts {
            check_crc(rest, &header, &self.log_path, pos)?;
            let batch = &rest[..header.length as usize];
            let found = records(batch).map_err(|reason| Error::Corruption {
                path: self.log_path.clone(),
                position: pos,
                reason,
            })?;
            if let Some(record) = found
                .iter()
                .find(|r| r.offset >= from && r.timestamp_ms >= ts)
            {
                return Ok(InBatch::Found((record.offset, record.timestamp_ms)));
            }
        }
        Ok(InBatch::Next {
            pos: pos + u64::from(header.length),
            offset: header.next_offset(),
        })
    }
}

/// What a time lookup found in one batch.
enum InBatch {
    /// The record's offset and timestamp.
    Found((u64, i64)),
    /// Nothing: the next batch's position and first offset.
    Next { pos: u64, offset: u64 },
}
