//! strom: a partitioned commit-log server, Kafka's data model served over gRPC.
//!
//! # Layers
//!
//! Each layer uses only the ones below it.
//!
//! - [`cli`]: the `strom` command (serve, topic, produce, consume, offsets, group, queue,
//!   work, exchange, bench, token).
//! - [`client`]: the Rust client: `Admin`, a batching `Producer`, a partition `Consumer`,
//!   a consumer-group member `GroupConsumer`, a queue `Worker`, `Exchanges`.
//! - [`server`] and [`config`]: running the gRPC server, on the caller's runtime or each
//!   connection whole on a thread of its own (`server/threads.rs`); what the port
//!   answers while the server starts (`server/starting.rs`); its settings; the
//!   Prometheus endpoint (`server/metrics/`), which reads counters kept where the work
//!   is (`grpc::call_metrics`, `broker::PartitionStats`) and gathers the rest at a
//!   scrape.
//! - [`grpc`]: the generated code and thin service adapters: decode, call the broker,
//!   encode. `grpc::status` is the one mapping from [`Error`] to a gRPC status.
//!   `grpc::connection` accepts and watches the sockets, within `max_connections` and
//!   each address's share (`connection/admission.rs`, counting the Kafka listener's
//!   too), and makes TLS handshakes (`connection/tls.rs`) between the watched socket
//!   and HTTP/2; `grpc::auth` refuses
//!   calls without a token the server lists, and gives each call its `Access` (what
//!   the access control list, `auth/acl.rs`, grants its principal), which every
//!   handler checks before it looks anything up. `grpc::quota` keeps each client's
//!   bytes and requests a second (`quotas`): a produce message past its client's rate
//!   waits before the produce budget is charged, and is charged what it is stored in
//!   once appended; a fetch waits before it reads; a call past the request rate is
//!   refused.
//! - [`kafka`]: Kafka's wire protocol on a listener of its own, an adapter beside
//!   `grpc`: size-prefixed frames decoded by hand within their bounds (`kafka/wire.rs`),
//!   each produced Kafka record batch pushed record by record into the broker's
//!   `BatchWriter` as a gRPC Produce's records are, each stored batch turned into a
//!   Kafka batch for a Fetch (`kafka/records.rs`), responses encoded by
//!   `kafka-protocol` (a Fetch's by hand, its records written as chunks of their own:
//!   `kafka/fetch_frame.rs`), and strom's errors mapped to Kafka's codes
//!   (`kafka/errors.rs`).
//!   Kafka consumer groups' membership is a state machine without I/O or clock per
//!   group (`kafka/group/machine.rs`, model-tested); their committed offsets are
//!   `groups`' own. The server's TLS, tokens (over SASL/PLAIN or SCRAM, `kafka/session.rs`,
//!   `kafka/scram.rs`)
//!   and access control list (`kafka/authorize.rs`) hold there as over gRPC.
//! - [`groups`]: consumer groups. Membership, epochs and assignments are a state machine
//!   without I/O or clock (`groups::coordinator`, model-tested), saved at each change
//!   beside the offsets so that members carry on across a restart
//!   (`groups/members_file.rs`); committed offsets are a
//!   snapshot plus a group-committed journal per group, keyed by topic id. Share groups
//!   (`groups::share`, queues): each partition's locks, delivery counts and dead letters
//!   are a state machine without I/O or clock (`share/window/`, model-tested), kept in
//!   the same snapshot-and-journal files. Uses the broker for topics and their bounds.
//! - [`broker`]: the data directory (one server at a time), topics of partitions by id
//!   (partitions are added, never removed: `broker/add_partitions.rs`; a request takes
//!   a topic's list as it is and keeps it), topic metadata and configuration, the
//!   per-partition writer, group commit of
//!   fsyncs, long-poll wakeups, upkeep, the retention cleaner, the free-disk floor,
//!   producer ids, and exchanges (`broker/exchanges/`: bindings of topics, and which a
//!   routing key matches). Knows nothing of gRPC.
//! - [`log`]: one partition's append-only log as a library over one directory: segments
//!   of record batches with sparse offset and time indexes, idempotent producers'
//!   sequences (`log/producers`, a state machine without I/O), crash recovery, retention
//!   and truncation. Knows nothing of topics, gRPC or tasks. Byte layouts are in
//!   `storage-format.md`.
//! - [`error`]: the one error enum, whose variants carry path, offset and range.
//! - `sys`: the system calls no safe crate wraps, and the only `unsafe` code.
//!
//! # One Produce, from the wire to the disk
//!
//! 1. The call takes a place among the server's calls open at once (`grpc::call_limit`,
//!    held until its answer is sent). Before tonic decodes a Produce, `grpc::budget`
//!    charges it against the server's produce budget, read from the gRPC length prefix:
//!    when the budget is spent the body is not read and HTTP/2 flow control stops the
//!    client. `grpc::produce` decodes the
//!    request by hand, keeping each record as the bytes it arrived in (no struct per
//!    record). `grpc::LogService::produce` spawns the work, so a client that hangs up
//!    cannot cancel an append halfway. Produce calls bypass tonic's receive buffer
//!    (`grpc::direct`): each message is decoded from the HTTP/2 frames it arrived in,
//!    so its records are slices of those frames. A ProduceStream
//!    (`grpc/produce_stream.rs`) is a pipeline of two spawned tasks: one decodes,
//!    the other appends in the order sent; a request that finds the second idle is
//!    appended by the first if it is small, or large with nothing arrived after it
//!    (as at one request in flight), which saves a thread wake-up. What the first
//!    appends is a burst: their replies, and the wake-up of readers waiting for new
//!    records, go out when it ends (after 32 requests or 64 KiB, or when nothing more
//!    has arrived).
//! 2. `Broker::begin_produce` checks the topic, the partition and the request's limits,
//!    and an idempotent producer's id and epoch (`broker/producer_ids/`: handed out by
//!    InitProducer, not fenced);
//!    each record is parsed once, checked (size, headers, timestamp) and pushed by the
//!    `BatchWriter` into a [`log::BatchBuilder`], in the protobuf encoding a Fetch
//!    response will use; `finish` picks the partition (explicit, else Kafka's murmur2 of
//!    the key, else round robin). This is the only time a record is encoded; values of
//!    256 bytes or more are referenced in the request's buffer, not copied (keys are
//!    copied).
//! 3. `Partition::append` takes the partition's write lock (on the calling task for a
//!    batch up to 1 MiB if the lock is free, else in `spawn_blocking`) and calls
//!    [`log::Log::append`]: for an idempotent producer it first asks the partition's
//!    producer state (`log/producers`) whether the batch is new, a retry of one of the
//!    producer's last five (answered with that batch's offsets, nothing written) or out
//!    of sequence (refused); it rolls the segment if needed, writes the offsets and CRC into
//!    the batch in place, and writes it with one vectored `pwritev` at the segment's end,
//!    so a value goes from the socket's buffer to the page cache in the kernel's one copy
//!    (a full disk leaves the log unchanged). It then publishes the new high watermark,
//!    which wakes long-polling fetchers and subscribers (for a burst's appends, when the
//!    burst ends: `broker::Unannounced`).
//! 4. For an fsync produce, `Partition::sync_below` waits its turn on the partition's flush
//!    lock; whoever holds it syncs everything appended so far, so concurrent produces share
//!    one fsync (group commit). The response is sent only after its batch is on disk.
//!    A batch of 256 KiB or more that an fsync will follow was written in parts, each
//!    handed to the disk's writeback as soon as it was in the page cache, so the sync
//!    finds much of its work under way (`log/segment/write.rs`).
//!
//! A Publish to an exchange (`broker/exchanges/publish.rs`, decoded as a Produce by
//! `grpc/produce/publish.rs`) is the same path once per topic its bindings take it to:
//! `Broker::route` names the topics, every topic's batch is built and checked first
//! (its partition picked and asked whether it takes writes: a refused publish writes
//! nothing), then each is built again under the same configuration and appended, one
//! at a time.
//!
//! # One Fetch, from the disk to the wire
//!
//! 1. `Broker::fetch` asks the partition for a read plan under its read lock (no I/O: the
//!    segments to read, and for the active one its map and the position its in-memory
//!    index gives), then runs the plan without the lock, on a blocking thread if it
//!    touches a sealed (likely cold) segment. Sealed segments open read-only, once,
//!    through a cache bounded over the whole server (`log/cache.rs`); a walk over batch
//!    headers finds the batch holding the offset. Whole batches come back as `Bytes`
//!    slices of the segments' read-only maps, CRCs checked. If there is nothing yet and
//!    the client asked to wait, it sleeps on the high-watermark watch, not in a polling
//!    loop (and ends at once if the topic is deleted).
//! 2. `grpc::records::RecordSet` strips the batch headers (the records sections are
//!    already protobuf `repeated Record`), skips records below the requested offset, and
//!    cuts at a record boundary where `max_bytes` ends.
//! 3. The hand-written `FetchResponse` hands its message to HTTP/2 in pieces, bypassing
//!    tonic's send buffer (`grpc::direct`): runs of records of 32 KiB or more go as the
//!    slices of the map they are, so the kernel's copy into the socket is the only one;
//!    shorter runs and the other fields are copied together. Nothing is decoded or
//!    re-encoded. The Rust client reads the response from the frames it arrived in
//!    (`client::Client::fetch`), so each record it returns is a slice of its frame.
//!    Slices keep their segment's file on disk even once retention deletes it, so each
//!    connection has a watchdog (`grpc::connection`): a response its client has not
//!    read for `stalled_reader_timeout` closes the connection, and frees them.
//!
//! # One offset commit
//!
//! 1. `grpc::GroupsService::commit_offsets` hands the offsets to `Groups::commit`
//!    (`groups/ops.rs`), which checks each against its partition (between log start and
//!    high watermark) and turns topic names into topic ids, before touching the group.
//! 2. It locks the group (loading it from its snapshot and journal on first use), asks
//!    the coordinator whether this member, at this epoch, owns these partitions, and
//!    appends one journal record holding all the offsets (`groups/store.rs`).
//! 3. With the group unlocked, it waits for an fsync covering the record: one sync task
//!    runs at a time and wakes every waiter when it ends, so concurrent commits share
//!    fsyncs. Past 1 MiB of journal, the offsets go into a new snapshot and the journal
//!    starts again from its first byte.
//!
//! # Old data
//!
//! `broker/cleaner.rs` runs a retention pass every `retention_check_interval_ms`, and at
//! once when free space falls below `min_free_disk` (which also refuses produces). Each
//! partition decides from a summary of its sealed segments kept in memory (size, newest
//! timestamp: `log/retention.rs`), writes its new log start offset, renames the expired
//! segments' files under its lock, and unlinks them after it on a blocking thread.
//! Deletion by age stops at what a share group has not finished: the broker asks
//! through its `RetentionFloor` trait, which `groups::share` implements. A
//! compacted topic's partitions are rewritten by `log/compaction/` (newest record of
//! each key) into new segments that `log/swap.rs` swaps in behind a manifest.
//!
//! # Crashes
//!
//! The `.log` is the truth and indexes are caches. After a clean shutdown, open scans
//! nothing; after a crash, only what follows the recovery checkpoint is scanned, and a
//! torn tail is cut (`log/recovery.rs`); the broker opens and closes its partitions
//! side by side (`broker/parallel.rs`). A failed fsync is never forgotten: the log
//! refuses writes until the server has reopened it from disk. All `unsafe` code is in
//! `sys.rs`: the one `mmap` call, the one `sync_file_range` that starts a durable
//! batch's writeback early, and the `sched_setattr` that gives the server's threads
//! short time slices.
#![deny(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub(crate) mod every_second;
pub mod groups;
pub mod grpc;
pub mod kafka;
pub mod log;
pub mod server;
mod sys;

pub use error::{Error, Result};

/// The README's code examples are compiled as doc tests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
