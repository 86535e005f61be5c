//! Counts of what a partition did, for the metrics endpoint (`server::metrics`), which
//! sums them per topic. Each is a relaxed atomic add on the path it counts: the append
//! and read paths hold the partition already, so counting costs no lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Records and stored bytes (batch headers included) of appended batches.
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    /// Batches an idempotent producer sent again, answered without being written.
    pub duplicate_batches: AtomicU64,
    /// Bytes of batches read for Fetch, Subscribe and ShareFetch (whole batches: a read
    /// from an offset inside a batch counts the batch).
    pub read_bytes: AtomicU64,
    /// fsyncs of the group commit that make produces durable, and their time.
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
}

impl PartitionStats {
    pub(super) fn appended(&self, records: u64, bytes: u64) {
        self.appended_records.fetch_add(records, Ordering::Relaxed);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn synced(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A partition's extent, from memory (no I/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub log_start: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: u64,
}

impl super::Partition {
    /// The partition's extent now; an error if its log is not open.
    pub fn extent(&self) -> crate::error::Result<Extent> {
        self.with_log(|log| {
            Ok(Extent {
                log_start: log.log_start_offset(),
                high_watermark: log.next_offset(),
                size_bytes: log.size_bytes(),
                segments: log.segment_count() as u64,
            })
        })
    }
}
