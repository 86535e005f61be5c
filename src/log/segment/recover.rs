//! Finding a segment's end when it is opened: taken from a trusted source (`trust`), or
//! scanned batch by batch from a known position (`scan`), and the file cut back to it
//! (`cut_to_committed`).

use std::sync::Arc;

use super::{ScanEnd, Segment};
use crate::error::{IoContext, Result};
use crate::log::format::{check_crc, check_header, HEADER_LEN};
use crate::log::record::records;
use crate::sys::map_read_only;

impl Segment {
    /// Takes the end state from a trusted source (a clean shutdown, or a sealed segment
    /// whose end is its successor's base offset) without reading the log. The indexes must
    /// cover the segment; returns false (nothing changed) if they visibly do not.
    pub fn trust(&mut self, size: u64, next_offset: u64, max_timestamp: i64) -> bool {
        let (Some(last_index), Some(last_time)) = (self.index.last(), self.time_index.last())
        else {
            // Only an empty segment has no index entries, and then it has none in either.
            return size == 0
                && next_offset == self.base
                && self.index.is_empty()
                && self.time_index.is_empty();
        };
        let rel_end = next_offset - self.base;
        if u64::from(last_index.position) + HEADER_LEN as u64 > size
            || u64::from(last_index.rel_offset) >= rel_end
            || u64::from(last_time.rel_offset) >= rel_end
            || size > self.size
        {
            return false;
        }
        self.size = size;
        self.next_offset = next_offset;
        self.max_timestamp = last_time.timestamp.max(max_timestamp);
        self.bytes_since_index = size - u64::from(last_index.position);
        true
    }

    /// Scans batches from `position`, where a batch with base offset `offset` must start,
    /// validating each (header, CRC, records) and adding index entries past what the
    /// indexes hold. Stops at the end of the file or the first invalid batch. Index
    /// entries at or past `position` are dropped first: they may describe lost bytes.
    pub fn scan(&mut self, position: u64, offset: u64, max_timestamp: i64) -> Result<ScanEnd> {
        let file_len = self.file()?.metadata().at(&self.log_path)?.len();
        if file_len > self.map.len() as u64 {
            self.map = Arc::new(map_read_only(
                self.file()?,
                file_len as usize,
                &self.log_path,
            )?);
        }
        let rel = offset - self.base;
        // An entry below `position` must also be below its offset: the file has no CRC,
        // and a damaged entry kept here would make the next one pushed go backwards.
        let keep = self
            .index
            .partition_point(|e| u64::from(e.position) < position && u64::from(e.rel_offset) < rel);
        self.index.truncate(keep)?;
        let keep = self
            .time_index
            .partition_point(|e| u64::from(e.rel_offset) < rel && e.timestamp <= max_timestamp);
        self.time_index.truncate(keep)?;
        self.size = position;
        self.next_offset = offset;
        self.max_timestamp = self
            .time_index
            .last()
            .map_or(max_timestamp, |e| e.timestamp.max(max_timestamp));
        self.bytes_since_index = self
            .index
            .last()
            .map_or(u64::MAX, |e| position - u64::from(e.position));
        let mut problem = None;
        while self.size < file_len {
            let at = self.size as usize;
            let rest = &self.map[at..file_len as usize];
            let header = match check_header(rest, Some(self.next_offset), rest.len()) {
                Ok(header) => header,
                Err(reason) => {
                    problem = Some(reason);
                    break;
                }
            };
            if let Err(err) = check_crc(rest, &header, &self.log_path, self.size) {
                problem = Some(err.to_string());
                break;
            }
            if let Err(reason) = records(&rest[..header.length as usize]) {
                problem = Some(format!("batch at offset {}: {reason}", header.base_offset));
                break;
            }
            self.record_batch(&header);
        }
        Ok(ScanEnd {
            valid_bytes: self.size,
            problem,
        })
    }

    /// Cuts the file back to the committed size (after a failed append or a torn tail),
    /// releasing any blocks reserved past it.
    pub fn cut_to_committed(&mut self) -> Result<()> {
        self.file()?.set_len(self.size).at(&self.log_path)?;
        if self.reserved != u64::MAX {
            self.reserved = self.size;
        }
        Ok(())
    }
}
