//! The read side of a segment: finding a batch by offset or timestamp, and handing out
//! whole batches as slices of the map.

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

impl Segment {
    /// Position of the batch that holds `offset` (which must be in this segment).
    pub fn position_of(&self, offset: u64) -> Result<u64> {
        let rel = (offset - self.base) as u32;
        let i = self.index.partition_point(|e| e.rel_offset <= rel);
        let (mut pos, mut expected) = match i.checked_sub(1).map(|i| self.index.get(i)) {
            Some(e) => (u64::from(e.position), self.base + u64::from(e.rel_offset)),
            None => (0, self.base),
        };
        loop {
            let header = self.header_at(pos, Some(expected))?;
            if header.next_offset() > offset {
                return Ok(pos);
            }
            pos += u64::from(header.length);
            expected = header.next_offset();
        }
    }

    /// The header of the batch at `pos`, checked (and its base offset if `expected`).
    pub fn header_at(&self, pos: u64, expected: Option<u64>) -> Result<BatchHeader> {
        let rest = &self.bytes()[pos as usize..];
        check_header(rest, expected, rest.len()).map_err(|reason| Error::Corruption {
            path: self.log_path.clone(),
            position: pos,
            reason,
        })
    }

    /// Whole batches from the one holding `offset`, as one slice of the map, while they
    /// fit in `max_bytes`; with `at_least_one`, the first batch is returned even if it
    /// alone is larger. Each batch's header and CRC are verified. Returns the slice and
    /// the offset after it, or `None` if not even the first batch fits.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Option<(Bytes, u64)>> {
        let start = self.position_of(offset)?;
        let (mut end, mut next) = (start, offset);
        while end < self.size {
            let expected = (end != start).then_some(next);
            let header = self.header_at(end, expected)?;
            let fits = (end - start + u64::from(header.length)) as usize <= max_bytes;
            let must_take = at_least_one && end == start;
            if !fits && !must_take {
                break;
            }
            check_crc(&self.bytes()[end as usize..], &header, &self.log_path, end)?;
            end += u64::from(header.length);
            next = header.next_offset();
        }
        if end == start {
            return Ok(None);
        }
        let map = Arc::clone(&self.map);
        let slice = Bytes::from_owner(MapRange {
            map,
            start: start as usize,
            end: end as usize,
        });
        Ok(Some((slice, next)))
    }

    /// The first offset in this segment whose record timestamp is at least `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let i = self.time_index.partition_point(|e| e.timestamp < ts);
        let from = match i.checked_sub(1) {
            Some(i) => self.base + u64::from(self.time_index.get(i).rel_offset),
            None => self.base,
        };
        let mut pos = self.position_of(from)?;
        while pos < self.size {
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
                if let Some(record) = found.iter().find(|r| r.timestamp_ms >= ts) {
                    return Ok(Some(record.offset));
                }
            }
            pos += u64::from(header.length);
        }
        Ok(None)
    }
}
