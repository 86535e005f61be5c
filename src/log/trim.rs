//! Removing everything from an offset on (truncation, for a replica that must match its
//! leader). Retention, which removes whole segments from the start, is in `retention.rs`.
//!
//! Both are safe while readers hold slices: files are unlinked or replaced by rename,
//! never shrunk in place (see sys.rs), so a slice handed out before keeps its bytes.

use super::files::sync_dir;
use super::log::Log;
use super::recovery::remove_segment_files;
use super::segment::Segment;
use crate::error::{Error, Result};

impl Log {
    /// Drops a sealed segment from the log: readers that hold it keep their maps.
    pub(super) fn forget_sealed(&mut self, base: u64) {
        self.sealed.remove(&base);
        self.cache.forget(self.id, base);
        self.unsynced.retain(|(b, _, _)| *b != base);
    }

    /// Removes every record at `offset` and above. `offset` must be a batch boundary
    /// within `[log start, next offset]`; the new end is synced and checkpointed before
    /// this returns.
    pub fn truncate(&mut self, offset: u64) -> Result<()> {
        self.check_writable()?;
        let (start, end) = (self.log_start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        if offset == end {
            return Ok(());
        }
        let limits = Self::limits(&self.config, true);
        let base = if offset >= self.active.base() {
            self.active.base()
        } else {
            *self
                .sealed
                .range(..=offset)
                .next_back()
                .expect("offset >= log start")
                .0
        };
        // The segment holding `offset`, opened on its own (not through the cache: it is
        // about to be replaced).
        let holder = if base == self.active.base() {
            None
        } else {
            Some(Segment::open_sealed(
                &self.dir,
                base,
                self.sealed_end(base),
                limits,
            )?)
        };
        let position = if offset == base {
            None
        } else {
            let segment = holder.as_ref().unwrap_or(&self.active);
            let position = segment.position_of(offset)?;
            let header = segment.header_at(position, None)?;
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
            .sealed
            .range(base..)
            .map(|(&b, _)| b)
            .filter(|&b| b > base || position.is_none())
            .collect();
        for &b in &doomed {
            self.forget_sealed(b);
            remove_segment_files(&self.dir, b)?;
        }
        let old_active = self.active.base();
        let new_active = match position {
            Some(position) => {
                self.forget_sealed(base);
                holder
                    .as_ref()
                    .unwrap_or(&self.active)
                    .rewrite_prefix(&self.dir, position)?
            }
            None => Segment::create(&self.dir, offset, limits)?,
        };
        if old_active != new_active.base() {
            remove_segment_files(&self.dir, old_active)?;
        }
        self.active = new_active;
        self.unsynced.clear();
        sync_dir(&self.dir)?;
        self.generation = super::log::next_generation();
        self.mapped_upto = self.mapped_upto.min(offset);
        if self.cleaned_upto > offset {
            self.cleaned_upto = offset;
            super::swap::write_cleaner_offset(&self.dir, offset)?;
        }
        let job = self.begin_flush();
        job.run()?;
        self.flushed = super::files::Checkpoint {
            segment_base: self.active().base(),
            position: self.active().size(),
            next_offset: self.next_offset(),
            max_timestamp: self.active().max_timestamp(),
        };
        self.write_checkpoint()?;
        // The producers' batches above `offset` are gone: their state is read again from
        // a snapshot at or below it (those above are deleted) and the headers after it.
        self.pending_snapshot = None;
        self.load_producers()?;
        Ok(())
    }
}
