//! strom: a partitioned commit-log server, Kafka's data model served over gRPC.
//!
//! # Layers
//!
//! The design (see `README.md`) stacks `cli` on `client` on `grpc` on `broker` and
//! `groups`, all standing on `log`. Today the crate holds the bottom layer:
//!
//! - [`log`]: one partition's append-only log, as a library over one directory. It knows
//!   nothing of topics, gRPC or tasks. A log is a run of *segments*, each a `.log` file of
//!   record batches with two sparse indexes (`.index`: offset -> position, `.timeindex`:
//!   timestamp -> offset). Every byte layout is in `storage-format.md`.
//! - [`error`]: the one error enum, whose variants carry path, offset and range.
//!
//! # One append, from the caller to the disk
//!
//! 1. The caller encodes records into a [`log::BatchBuilder`]. Records are stored in the
//!    protobuf encoding a Fetch response will use (`log/record.rs`), so they are encoded
//!    once, here, and never again.
//! 2. [`log::Log::append`] checks the batch's size, rolls to a new segment if the active
//!    one is full or old, writes the next offsets into the batch in place and seals it
//!    with a CRC-32 (`PendingBatch::assign`).
//! 3. The active segment writes it with one positioned write at its committed end
//!    (`log/segment.rs`); a failure (a full disk) cuts the file back and leaves the log
//!    as it was. Index entries go into memory, to be written at the next checkpoint.
//! 4. Under the `EveryAppend` policy the log fsyncs before returning. Callers that group
//!    many durable appends into one fsync take a [`log::FlushJob`] under their lock and
//!    run it outside (`Log::begin_flush`, `FlushJob::run`, `Log::finish_flush`).
//!
//! # One read, from the disk to the caller
//!
//! 1. [`log::Log::read`] finds the segment holding the offset (an ordered map by base
//!    offset; a sealed segment is opened and mapped on first use).
//! 2. The segment binary-searches its offset index for the last entry at or below the
//!    offset, then walks batch headers from that position to the batch holding it.
//! 3. It checks each batch's header and CRC and returns whole batches as `Bytes` slices
//!    of the read-only map: no record is decoded and nothing is copied. The slices keep
//!    the map alive, so they stay valid even if retention deletes the segment.
//!
//! # Crashes
//!
//! The `.log` is the truth and indexes are caches. After a clean close, open scans
//! nothing; after a crash, only what follows the recovery checkpoint is scanned, and a
//! torn tail is cut (`log/recovery.rs`). All `unsafe` code is the one `mmap` call in
//! `log/mmap.rs`.
#![deny(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod grpc;
pub mod log;
pub mod server;

pub use error::{Error, Result};

/// The README's code examples are compiled as doc tests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
