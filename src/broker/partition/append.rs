//! Appending to a partition: on the calling task or a blocking thread, and the wake-up
//! of the readers waiting for new records.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};

use super::{Partition, Slot};
use crate::error::Result;
use crate::log::{AppendInfo, PendingBatch};

/// Batches up to this size are appended on the calling task (see `Partition::append`).
/// The same bound as inline reads: one copy of at most 1 MiB into the page cache holds
/// up the worker's other tasks for 0.2-1 ms on this class of machine, about what the
/// hand-off to a blocking thread and back costs a 1 MB request in throughput (measured
/// in BENCHMARKS.md, "Appends of up to 1 MiB on the calling task").
const INLINE_APPEND_BYTES: usize = 1 << 20;
impl Partition {
    /// Appends a batch to the page cache; `sync_below` makes it durable. Returns where it
    /// went and the epoch of the log it went to (see `epoch`).
    ///
    /// A batch of up to 1 MiB is appended right here: handing it to a blocking thread and
    /// back costs two context switches, which at 10,000 one-record requests a second on
    /// two cores queued requests for tens of milliseconds, and cost 1 MB requests 15% of
    /// their throughput with one request in flight. A larger one goes to a blocking
    /// thread, so that a copy of many megabytes into the page cache does not stall the
    /// other requests this worker serves. Either way the append is one uninterruptible
    /// call: a caller that goes away cannot leave half a batch. The inline path takes the
    /// lock only if it is free at once, so a worker thread never waits for it.
    pub async fn append(self: &Arc<Self>, batch: PendingBatch) -> Result<(AppendInfo, u64)> {
        self.append_then(batch, true).await
    }

    /// As `append`, but readers waiting for new records (subscriptions, long polls) are
    /// not woken: the caller owes them `wake_readers`, which `broker::Unannounced`
    /// keeps for it. The records are readable at once either way. An append that goes
    /// to a blocking thread wakes them itself: a caller that goes away while it runs
    /// could not.
    pub(crate) async fn append_unannounced(
        self: &Arc<Self>,
        batch: PendingBatch,
    ) -> Result<(AppendInfo, u64)> {
        self.append_then(batch, false).await
    }

    /// Wakes the readers waiting for new records.
    pub(crate) fn wake_readers(&self) {
        self.high_watermark.send_modify(|_| {});
    }

    async fn append_then(
        self: &Arc<Self>,
        mut batch: PendingBatch,
        wake: bool,
    ) -> Result<(AppendInfo, u64)> {
        let mut appended = None;
        if batch.len_bytes() <= INLINE_APPEND_BYTES {
            let free = match self.log.try_write() {
                Ok(slot) => Some(slot),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut slot) = free {
                appended = Some(self.append_locked(&mut slot, &mut batch, wake));
            }
        }
        let (info, epoch) = match appended {
            Some(result) => result?,
            None => {
                let me = Arc::clone(self);
                tokio::task::spawn_blocking(move || {
                    me.append_locked(&mut me.write_slot(), &mut batch, true)
                })
                .await
                .expect("append task does not panic")?
            }
        };
        if info.rolled {
            self.sync_sealed_soon();
        }
        Ok((info, epoch))
    }

    fn append_locked(
        &self,
        slot: &mut Slot,
        batch: &mut PendingBatch,
        wake: bool,
    ) -> Result<(AppendInfo, u64)> {
        // Read under the lock that a reopen holds while it bumps the epoch.
        let epoch = self.epoch.load(Ordering::Acquire);
        self.on_slot(slot, |log| {
            let info = log.append(batch)?;
            if info.duplicate {
                self.stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
            } else {
                let records = info.last_offset + 1 - info.base_offset;
                self.stats.appended(records, batch.len_bytes() as u64);
            }
            let next = log.next_offset();
            self.high_watermark.send_if_modified(|watermark| {
                *watermark = next;
                wake
            });
            Ok((info, epoch))
        })
    }

    /// The current log's epoch, for syncs not tied to one append.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}
