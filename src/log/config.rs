//! How a log is shaped and when it reaches the disk.

use std::time::Duration;

use crate::error::{Error, Result};

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before `append` returns: an acknowledged batch survives power loss.
    EveryAppend,
    /// fsync from `append` once this long has passed since the last flush; a caller can
    /// also call `flush` on a timer so an idle log is synced too.
    Interval(Duration),
    /// Never fsync on append; the OS writes pages back when it likes. `flush` still works,
    /// and callers that batch durable appends (group commit) call it themselves.
    Os,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls when an append would take it past this many bytes.
    pub segment_bytes: u64,
    /// A segment rolls when its first append (wall clock) is older than this.
    pub segment_age: Duration,
    /// Maximum size of each index file; a full index rolls the segment.
    pub index_max_bytes: u64,
    /// Bytes of log between two index entries.
    pub index_interval_bytes: u64,
    /// Largest batch `append` accepts, header included.
    pub max_batch_bytes: u64,
    pub flush: FlushPolicy,
    /// Least time between two recovery checkpoints (each costs a few fsyncs); one is
    /// written after it if `checkpoint_bytes` were appended since the last, after 30
    /// times it in any case, and whenever a segment was sealed (`flush.rs`). After a
    /// crash, recovery scans what was appended since the last one.
    pub checkpoint_interval: Duration,
    pub checkpoint_bytes: u64,
    /// An idempotent producer that has not appended for this long is forgotten (Kafka's
    /// `producer.id.expiration.ms`): its next batch is taken with any sequence.
    pub producer_expiration: Duration,
    /// Idempotent producers one partition remembers at most; a new one past this makes
    /// it forget the one that appended least recently. Bounds the state's memory (about
    /// 200 bytes each).
    pub max_producers: usize,
}

/// Default of `LogConfig::max_producers`: 20,000 producers, about 4 MB a partition.
pub const DEFAULT_MAX_PRODUCERS: usize = 20_000;

/// Positions in an index entry are 32-bit, so a segment must stay below 4 GiB; 2 GiB
/// leaves room for one maximal batch past the limit.
pub const MAX_SEGMENT_BYTES: u64 = 2 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            index_max_bytes: 10 << 20,
            index_interval_bytes: 4096,
            max_batch_bytes: 16 << 20,
            flush: FlushPolicy::EveryAppend,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 64 << 20,
            producer_expiration: Duration::from_secs(24 * 3600),
            max_producers: DEFAULT_MAX_PRODUCERS,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.segment_bytes < 1024 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes {} must be between 1024 and {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes < 128 || self.max_batch_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "max_batch_bytes {} must be between 128 and {MAX_SEGMENT_BYTES}",
                self.max_batch_bytes
            ));
        }
        if self.index_max_bytes < 64 {
            return bad(format!(
                "index_max_bytes {} must be at least 64",
                self.index_max_bytes
            ));
        }
        if self.segment_age.is_zero() {
            return bad("segment_age must be positive".into());
        }
        Ok(())
    }
}
