//! Loading a partition's producer state at open, and keeping its snapshots in step with
//! rolls, truncation and retention.
//!
//! At open: the newest snapshot at or below the log's end that decodes (one above the
//! end is stale, from before a crash cut the tail, and is deleted), then the header of
//! every batch after it, in order; only batches an idempotent append checked
//! (`ATTR_IDEMPOTENT`) count. With no usable snapshot the walk starts at the log start,
//! but skips sealed segments sealed longer than `producer_expiration` ago: their
//! producers would be expired anyway (the first open after an upgrade reads only the
//! recent segments). A damaged snapshot or sealed segment is logged with its path and
//! skipped: the state of the producers it held is lost, and a lost producer's next
//! batch is taken with any sequence (`ProducerStates::check`), so damage costs
//! deduplication of a retry, never a refused producer. Snapshots are a cache: failing to
//! list, delete or write one is logged, never fatal.

use std::fs;

use tracing::warn;

use super::{snapshot, ProducerStates};
use crate::error::Result;
use crate::log::format::{BatchHeader, ATTR_COMPACTED, ATTR_IDEMPOTENT};
use crate::log::log::{now_ms, Log};
use crate::log::naming::snapshot_path;
use crate::log::segment::Segment;

/// What loading the producer state read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerLoad {
    /// Offset of the snapshot it started from, if any.
    pub snapshot: Option<u64>,
    /// Batch headers read after it.
    pub batches: u64,
    /// Sealed segments whose headers were read.
    pub sealed_segments: usize,
}

/// Walks the headers of `segment`'s batches from the one holding `from`, each checked
/// to begin where the one before ended (so a damaged header cannot pass for a batch).
fn walk(segment: &Segment, from: u64, f: &mut impl FnMut(&BatchHeader)) -> Result<u64> {
    let (mut pos, mut expected) = if from > segment.base() {
        (segment.position_of(from)?, None)
    } else {
        (0, Some(segment.base()))
    };
    let mut walked = 0;
    while pos < segment.size() {
        let header = segment.header_at(pos, expected)?;
        f(&header);
        walked += 1;
        pos += u64::from(header.length);
        expected = Some(header.next_offset());
    }
    Ok(walked)
}

impl Log {
    /// The idempotent producers this partition remembers.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Replaces the producer state with what the snapshots and the log hold (see the
    /// module comment).
    pub(in crate::log) fn load_producers(&mut self) -> Result<ProducerLoad> {
        let held = self.producers.len();
        // What the server's cap leaves (this log's own count is being replaced): the
        // producers a crash brought back, evicted since the last snapshot, stay within it.
        let room = self.cache.producers.room() + held;
        let loaded = self.read_producers(room);
        // Claimed again in one step: other logs opening beside this one took from the
        // same room meanwhile.
        let keep = self.cache.producers.rebuilt(held, self.producers.len());
        self.producers.keep_at_most(keep);
        loaded
    }

    fn read_producers(&mut self, room: usize) -> Result<ProducerLoad> {
        let (start, end) = (self.log_start_offset(), self.next_offset());
        let mut load = ProducerLoad::default();
        self.producers = ProducerStates::default();
        let listed = snapshot::list(&self.dir).unwrap_or_else(|err| {
            warn!(dir = %self.dir.display(), %err, "cannot list producer snapshots; reading batch headers instead");
            Vec::new()
        });
        for offset in listed.into_iter().rev() {
            let path = snapshot_path(&self.dir, offset);
            if offset > end || offset < start {
                if offset > end {
                    warn!(path = %path.display(), end, "producer snapshot is past the end of the log; deleting it");
                }
                if let Err(err) = snapshot::remove(&self.dir, offset) {
                    warn!(%err, "cannot delete a stale producer snapshot");
                }
                continue;
            }
            if load.snapshot.is_some() {
                continue;
            }
            let decoded = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| snapshot::decode(&bytes));
            match decoded {
                Ok((at, states)) if at == offset => {
                    self.producers = states;
                    load.snapshot = Some(offset);
                }
                Ok((at, _)) => {
                    warn!(path = %path.display(), at, "producer snapshot names another offset inside; ignoring it")
                }
                Err(reason) => {
                    warn!(path = %path.display(), %reason, "producer snapshot is damaged; ignoring it and reading batch headers instead")
                }
            }
        }
        let from = load.snapshot.unwrap_or(start);
        let now = now_ms();
        let max = self.config.max_producers.min(room.max(1));
        let mut producers = std::mem::take(&mut self.producers);
        // Batches that compaction rewrote carry the producer of their first record only:
        // they say nothing reliable of sequences.
        let apply = &mut |h: &BatchHeader| {
            if h.attributes & (ATTR_COMPACTED | ATTR_IDEMPOTENT) == ATTR_IDEMPOTENT {
                producers.record(&h.producer, h.record_count, h.base_offset, now, max);
            }
        };
        let opener = self.opener();
        let holder = self.sealed.range(..=from).next_back().map(|(&b, _)| b);
        let expired_before = now.saturating_sub(self.config.producer_expiration.as_millis() as i64);
        let sealed: Vec<(u64, u64)> = if from >= self.active.base() {
            Vec::new()
        } else {
            self.sealed
                .range(holder.unwrap_or(from)..)
                // Without a snapshot, segments sealed before the expiry horizon hold
                // only producers that have expired (or wrote again later, and newer
                // segments hold their last batches).
                .filter(|(_, s)| load.snapshot.is_some() || s.sealed_ms >= expired_before)
                .map(|(&b, _)| (b, self.sealed_end(b)))
                .collect()
        };
        load.sealed_segments = sealed.len();
        for (base, end) in sealed {
            let walked = opener
                .open(base, end)
                .and_then(|segment| walk(&segment, from, apply));
            match walked {
                Ok(n) => load.batches += n,
                Err(err) => {
                    warn!(dir = %self.dir.display(), base, %err, "cannot read the batch headers of a sealed segment; producers that wrote only there are forgotten")
                }
            }
        }
        load.batches += walk(&self.active, from, apply)?;
        // A snapshot from before retention or DeleteRecords moved the start still holds
        // the producers they forgot.
        producers.trim_below(start);
        // The snapshot may hold more than the cap leaves now.
        producers.keep_at_most(max);
        self.producers = producers;
        Ok(load)
    }

    /// Forgets producers idle longer than `producer_expiration`; returns how many.
    pub fn expire_producers(&mut self, now_ms: i64) -> usize {
        let after = self.config.producer_expiration.as_millis() as i64;
        let held = self.producers.len();
        let expired = self.producers.expire(now_ms, after);
        // The upkeep is also when a partition that no longer appends makes up for
        // producers others took past the server's cap.
        self.producers_changed(held);
        self.forget_for_the_cap();
        expired
    }

    /// The snapshot a roll owes, encoded under the lock and written by the next flush.
    pub(in crate::log) fn snapshot_at_roll(&mut self) {
        let offset = self.next_offset();
        self.pending_snapshot = Some((offset, snapshot::encode(offset, &self.producers)));
    }

    /// Writes a snapshot of the current state at the end of the log (at a clean close,
    /// and after an open that had to read sealed segments' headers). A failure is
    /// logged: the next open reads more headers, nothing else.
    pub(in crate::log) fn write_snapshot_now(&self) {
        let offset = self.next_offset();
        let written = snapshot::write(
            &self.dir,
            offset,
            &snapshot::encode(offset, &self.producers),
            self.log_start_offset(),
        );
        if let Err(err) = written {
            warn!(%err, "producer snapshot not written");
        }
    }
}
