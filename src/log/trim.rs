//! Removing data: whole segments below an offset (retention) and everything from an
//! offset on (truncation, for a replica that must match its leader).
//!
//! Both are safe while readers hold slices: files are unlinked or replaced by rename,
//! never shrunk in place (see mmap.rs), so a slice handed out before keeps its bytes.

use std::sync::OnceLock;

use super::files::sync_dir;
use super::log::Log;
use super::recovery::remove_segment_files;
use super::segment::Segment;
use crate::error::{Error, Result};

impl Log {
    /// Deletes every segment whose records all lie below `offset`, and returns how many.
    /// With `offset` at the end of the log, the active segment is rolled first so that it
    /// can go too; the log then holds one empty segment and keeps its next offset.
    pub fn delete_segments_below(&mut self, offset: u64) -> Result<usize> {
        let offset = offset.min(self.next_offset());
        if offset == self.next_offset() {
            self.roll()?;
        }
        let doomed: Vec<u64> = {
            let bases: Vec<u64> = self.segments.keys().copied().collect();
            bases
                .windows(2)
                .take_while(|w| w[1] <= offset)
                .map(|w| w[0])
                .collect()
        };
        for &base in &doomed {
            remove_segment_files(&self.dir, base)?;
            self.segments.remove(&base);
            self.dir_changes += 1;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
            self.dir_synced = self.dir_changes;
        }
        Ok(doomed.len())
    }

    /// Removes every record at `offset` and above. `offset` must be a batch boundary
    /// within `[log start, next offset]`; the new end is synced and checkpointed before
    /// this returns.
    pub fn truncate(&mut self, offset: u64) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        if offset == end {
            return Ok(());
        }
        let holder = self.segment_for(offset)?;
        let base = holder.base();
        let position = if offset == base {
            None
        } else {
            let position = holder.position_of(offset)?;
            let header = holder.header_at(position, None)?;
            if header.base_offset != offset {
                let (first, next) = (header.base_offset, header.next_offset());
                return Err(Error::InvalidArgument(format!(
                    "offset {offset} is inside the batch of offsets {first}..{next}; truncate to {first} or {next}"
                )));
            }
            Some(position)
        };
        // Everything above the segment holding `offset` goes, and that segment too if
        // `offset` is its first record.
        let doomed: Vec<u64> = self
            .segments
            .range(base..)
            .map(|(&b, _)| b)
            .filter(|&b| b > base || position.is_none())
            .collect();
        let kept = match position {
            Some(_) => Some(
                self.segments
                    .remove(&base)
                    .expect("holder")
                    .into_inner()
                    .expect("opened by segment_for"),
            ),
            None => None,
        };
        for &b in &doomed {
            self.segments.remove(&b);
            remove_segment_files(&self.dir, b)?;
        }
        let active = match (kept, position) {
            (Some(segment), Some(position)) => segment.rewrite_prefix(&self.dir, position)?,
            _ => Segment::create(&self.dir, offset, Self::limits(&self.config, true))?,
        };
        self.segments.insert(active.base(), OnceLock::from(active));
        sync_dir(&self.dir)?;
        self.generation += 1;
        let job = self.begin_flush();
        job.run()?;
        self.flushed = super::files::Checkpoint {
            segment_base: self.active().base(),
            position: self.active().size(),
            next_offset: self.next_offset(),
            max_timestamp: self.active().max_timestamp(),
        };
        self.write_checkpoint()
    }
}
