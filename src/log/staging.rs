//! Staged appends: a batch written past the log's end while its records still arrive.
//!
//! At one request in flight, a server that appends a large request only once all of it
//! has arrived makes the client's sending and its own copy into the page cache take
//! turns. Staging lets the caller write a batch in parts as they arrive: each part's
//! records go past the log's end with their offsets, and the header goes last, when the
//! batch is whole (BENCHMARKS.md, "A request's bytes appended as they arrive").
//!
//! Nothing staged is part of the log until `commit_staged`: the committed end (what
//! readers, flushes and checkpoints see) does not move, and the header's 56 bytes are
//! written as zeros with the first part, so a crash leaves a batch of length 0 at the
//! committed end, which recovery cuts as a torn tail (`check_header` refuses a length
//! below the header's). A staging holds no lock between its calls, so no client holds
//! a partition: any other write to the log (an append, a roll, a truncation, another
//! staging, `close`) ends it first and cuts its bytes off the file, and its next call
//! answers that it has ended. The caller then appends the whole batch the usual way. A
//! log has at most one staging at a time.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};

use super::batch::PendingBatch;
use super::config::FlushPolicy;
use super::format::{
    BatchHeader, ProducerInfo, ATTR_IDEMPOTENT, CRC_AT, FORMAT_VERSION, HEADER_LEN,
};
use super::log::{now_ms, AppendInfo, Log};
use super::producers::Verdict;
use crate::error::{Error, Result};

/// Stagings are numbered from one counter for the whole process, so a staging of one
/// log is never taken for another's, nor for one of the same log reopened.
static STAGINGS: AtomicU64 = AtomicU64::new(1);

/// The page size writeback is started in (as in `segment/write.rs`).
const PAGE: u64 = 4096;

/// A batch being staged: made by `Log::stage`, ended by `commit_staged` or
/// `abort_staged` (or by any other write to the log).
#[derive(Debug)]
pub struct Staging {
    id: u64,
    /// Where the batch's header goes: the committed end when the staging began.
    position: u64,
    base_offset: u64,
    /// Records, and bytes of records, written so far (after the header).
    records: u32,
    written: u64,
    /// CRC of the records written so far; the header's is combined with it at the end.
    crc: crc32fast::Hasher,
    first_timestamp: i64,
    max_timestamp: i64,
    /// Hand each part's whole pages to writeback as they land: an fsync will follow.
    writeback: bool,
    writeback_from: u64,
    /// `stage` sealed the active segment first (its files await a flush).
    rolled: bool,
}

impl Staging {
    /// The offset the batch's first record will have if it is committed.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Records staged so far.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The batch's size so far, header included.
    pub fn len_bytes(&self) -> u64 {
        HEADER_LEN as u64 + self.written
    }

    /// Beginning the staging sealed the active segment first: its files await a flush,
    /// whether or not the batch is committed.
    pub fn rolled(&self) -> bool {
        self.rolled
    }

    fn end(&self) -> u64 {
        self.position + self.len_bytes()
    }
}

impl Log {
    /// Begins staging a batch at the log's end, ending any staging under way. The
    /// segment rolls first if a batch of `expected_len` bytes would roll it, so that a
    /// batch of about that size rarely has to be appended again at the end. With
    /// `writeback`, for a batch an fsync will follow, each part's whole pages are handed
    /// to the disk's writeback as they land.
    pub fn stage(&mut self, expected_len: u64, writeback: bool) -> Result<Staging> {
        self.check_writable()?;
        self.end_staging();
        let rolled = self.maybe_roll(expected_len, 1, now_ms())?;
        let id = STAGINGS.fetch_add(1, Ordering::Relaxed);
        self.staging = Some(id);
        let position = self.active().size();
        Ok(Staging {
            id,
            position,
            base_offset: self.next_offset(),
            records: 0,
            written: 0,
            crc: crc32fast::Hasher::new(),
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            writeback,
            writeback_from: position & !(PAGE - 1),
            rolled,
        })
    }

    /// Whether `staging` is still under way: no other write to the log has ended it.
    pub fn is_staging(&self, staging: &Staging) -> bool {
        self.staging == Some(staging.id)
    }

    /// Writes `part`'s records after those staged so far, giving them the next offsets
    /// (its header is not written; its record count and timestamps count towards the
    /// batch's, its producer does not: the commit names the batch's). Returns false,
    /// with nothing written, if the staging has ended: the whole batch must then be
    /// appended the usual way. An error (the disk, the batch past `max_batch_bytes`)
    /// ends the staging.
    pub fn stage_records(
        &mut self,
        staging: &mut Staging,
        part: &mut PendingBatch,
    ) -> Result<bool> {
        if !self.is_staging(staging) {
            return Ok(false);
        }
        let written = self.write_part(staging, part);
        if written.is_err() {
            self.end_staging();
        }
        written.map(|()| true)
    }

    fn write_part(&mut self, staging: &mut Staging, part: &mut PendingBatch) -> Result<()> {
        self.check_writable()?;
        let header = *part.header();
        let first = staging.records == 0;
        let records = staging
            .records
            .checked_add(header.record_count)
            .ok_or_else(|| Error::InvalidArgument("a batch holds at most 2^32-1 records".into()))?;
        let part_len = (part.len_bytes() - HEADER_LEN) as u64;
        let len = staging.len_bytes() + part_len;
        if len > self.config.max_batch_bytes {
            return Err(Error::TooLarge {
                what: "batch",
                size: len,
                limit: self.config.max_batch_bytes,
            });
        }
        let offset = staging.base_offset + u64::from(staging.records);
        let header_slot = [0u8; HEADER_LEN];
        let mut pieces = Vec::new();
        if first {
            // Zeros where the header goes: a crash before the commit leaves a batch of
            // length 0, not whatever bytes lay past the end.
            pieces.push(IoSlice::new(&header_slot));
        }
        let mut crc = staging.crc.clone();
        pieces.extend(part.assign_records(offset, &mut crc));
        let at = if first {
            staging.position
        } else {
            staging.end()
        };
        self.active_mut().write_past_end(at, &mut pieces, false)?;
        staging.crc = crc;
        staging.records = records;
        staging.written += part_len;
        staging.max_timestamp = staging.max_timestamp.max(header.max_timestamp);
        if first {
            staging.first_timestamp = header.first_timestamp;
        }
        if staging.writeback {
            let upto = staging.end() & !(PAGE - 1);
            self.active().start_writeback(staging.writeback_from, upto);
            staging.writeback_from = staging.writeback_from.max(upto);
        }
        Ok(())
    }

    /// Ends the staging by committing its batch from `producer` (`NO_PRODUCER` for
    /// none): the header is written, and the batch becomes part of the log as if `append` had written it (offsets, indexes, an
    /// idempotent producer's sequence, the flush policy). Returns `None`, with nothing
    /// appended, if the staging has ended, or if the batch as a whole would have rolled
    /// the segment (it grew past the expected length, or the segment aged meanwhile):
    /// the caller appends it the usual way. A retry of a batch an idempotent producer
    /// already appended is cut off and answered with the first attempt's offsets, as
    /// `append` answers it.
    pub fn commit_staged(
        &mut self,
        staging: Staging,
        producer: ProducerInfo,
    ) -> Result<Option<AppendInfo>> {
        if !self.is_staging(&staging) {
            return Ok(None);
        }
        let committed = self.commit(&staging, producer);
        if !matches!(committed, Ok(Some(ref info)) if !info.duplicate) {
            self.end_staging();
        }
        self.staging = None;
        let info = committed?;
        if info.is_some_and(|info| !info.duplicate) {
            match self.config.flush {
                FlushPolicy::EveryAppend => self.flush()?,
                FlushPolicy::Interval(every) if self.last_flush.elapsed() >= every => {
                    self.flush()?
                }
                FlushPolicy::Interval(_) | FlushPolicy::Os => {}
            }
        }
        Ok(info)
    }

    fn commit(&mut self, staging: &Staging, producer: ProducerInfo) -> Result<Option<AppendInfo>> {
        self.check_writable()?;
        if staging.records == 0 {
            return Err(Error::InvalidArgument(
                "a batch needs at least one record".into(),
            ));
        }
        let records = staging.records;
        if let Verdict::Duplicate(first) = self.producers.check(&producer, records)? {
            return Ok(Some(AppendInfo {
                base_offset: first.first_offset,
                last_offset: first.last_offset,
                max_timestamp: staging.max_timestamp,
                rolled: staging.rolled,
                duplicate: true,
            }));
        }
        let now = now_ms();
        if self.needs_roll(staging.len_bytes(), records, now) {
            return Ok(None);
        }
        let mut header = BatchHeader {
            base_offset: staging.base_offset,
            length: u32::try_from(staging.len_bytes()).map_err(|_| Error::TooLarge {
                what: "batch",
                size: staging.len_bytes(),
                limit: u64::from(u32::MAX),
            })?,
            crc: 0,
            version: FORMAT_VERSION,
            attributes: if producer.id >= 0 { ATTR_IDEMPOTENT } else { 0 },
            record_count: records,
            first_timestamp: staging.first_timestamp,
            max_timestamp: staging.max_timestamp,
            producer,
        };
        let mut bytes = [0u8; HEADER_LEN];
        header.write(&mut bytes);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..CRC_AT]);
        crc.update(&bytes[CRC_AT + 4..]);
        crc.combine(&staging.crc);
        header.crc = crc.finalize();
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&header.crc.to_le_bytes());
        let active = self.active_mut();
        active.write_past_end(staging.position, &mut [IoSlice::new(&bytes)], false)?;
        active.commit_written(&header, now)?;
        self.producers.record(
            &producer,
            records,
            header.base_offset,
            now,
            self.config.max_producers,
        );
        Ok(Some(AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            rolled: staging.rolled,
            duplicate: false,
        }))
    }

    /// Ends the staging, if it is still under way, and cuts its bytes off the file.
    pub fn abort_staged(&mut self, staging: Staging) {
        if self.is_staging(&staging) {
            self.end_staging();
        }
    }

    /// Ends any staging under way and cuts its bytes off the file: every other write
    /// to the log calls this first, so that what it writes at the end is not mixed with
    /// a staged batch's bytes.
    pub(super) fn end_staging(&mut self) {
        if self.staging.take().is_some() {
            if let Err(err) = self.active_mut().cut_to_committed() {
                // The next append overwrites them; recovery would cut them (the header
                // slot holds zeros until a commit).
                tracing::warn!(dir = %self.dir.display(), %err, "could not cut a staged batch off the log");
            }
        }
    }
}
