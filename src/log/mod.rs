//! One partition's log, as a library over a directory: segments of record batches with
//! sparse offset and time indexes, crash recovery, retention and truncation. It knows
//! nothing of topics, gRPC or tasks.
//!
//! - `format`: the batch header layout; `record`: records and reading them back;
//!   `batch`: building a batch, whose large values are written without a copy.
//! - `naming`: file names; `files`: checkpoint, clean-shutdown marker, atomic writes.
//! - `index`: the `.index` and `.timeindex` files (mapped through `crate::sys`, which
//!   states what keeps a map sound).
//! - `segment`: one `.log` and its indexes (its read side in `segment/read.rs`, its
//!   vectored appends and disk reservations in `segment/write.rs`);
//!   `log`: the `Log` of many segments; `read`: reads planned under a lock and run
//!   without it; `cache`: the bounded set of open sealed segments; `flush`: making
//!   appends durable, and recovery checkpoints, in steps that keep fsyncs out of the
//!   caller's lock.
//! - `producers`: what each idempotent producer last wrote, to answer retries and refuse
//!   gaps, with its snapshots and its rebuild from batch headers at open.
//! - `recovery`: opening, and the scan after a crash; `lifecycle`: the `Log`'s
//!   open, reopen after a failed fsync, and close.
//! - `retention`: which segments have expired (from each sealed segment's `summary`),
//!   the log start offset, and deleting in steps that keep file work out of the
//!   caller's lock; `trim`: truncation; `compaction`: keeping the newest record of each key, and
//!   `swap`: replacing compacted segments so that a crash leaves old or new, never a mix.

pub mod batch;
pub mod cache;
mod compaction;
pub mod config;
pub mod files;
mod flush;
pub mod format;
pub mod index;
mod lifecycle;
#[allow(clippy::module_inception)]
mod log;
pub mod naming;
pub mod producers;
mod read;
pub mod record;
mod recovery;
mod retention;
mod segment;
mod summary;
mod swap;
mod trim;

pub use batch::{BatchBuilder, PendingBatch, BORROW_AT_LEAST};
pub use cache::SegmentCache;
pub use compaction::{Compacted, CompactionPlan, CompactionPolicy, CompactionStats};
pub use config::{FlushPolicy, LogConfig};
pub use flush::{CheckpointJob, FlushJob};
pub use format::{BatchHeader, ProducerInfo, HEADER_LEN, NO_PRODUCER};
pub use log::{AppendInfo, Log, ReadBatches};
pub use producers::rebuild::ProducerLoad;
pub use producers::{ProducerStates, Verdict};
pub use read::{first_timestamp_at, ReadPlan, TimestampPlan};
pub use record::{records, Header, Record, RecordView};
pub use recovery::OpenReport;
pub use retention::{DeleteJob, Expiry, RetentionPlan, RetentionPolicy, SegmentSummary};
pub use swap::SwapJob;
#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod producer_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
