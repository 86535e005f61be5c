//! A producer: records are grouped per partition into batches (sent when a batch reaches
//! `batch_bytes` or has waited `linger`), sent pipelined over one `ProduceStream`, and
//! retried with backoff until `delivery_timeout`. One background task owns all state;
//! `send` hands it a record and returns a receiver for the acknowledgement;
//! `send_many` hands it many records and returns one receiver for all of their
//! acknowledgements, which costs the caller and the task far less a record.
//!
//! Partitioning is Kafka's: an explicit partition wins; a keyed record goes to
//! murmur2(key) mod the partition count; records without a key stick to one partition
//! per batch and move on to the next partition when that batch is sent.
//!
//! Delivery is exactly once per partition by default (`idempotent`): the producer takes
//! an id from InitProducer, numbers each partition's records, keeps at most five
//! batches of a partition unanswered, and resends failed batches in their order
//! (`queue.rs`); the server writes a resent batch it already has only once and refuses
//! one that would overtake another, so neither a retry nor a reconnect duplicates or
//! reorders records. A batch that fails for good (not retriable, or past
//! `delivery_timeout`) fails its records and every batch queued behind it for that
//! partition, and the producer takes a new identity, since the server may or may not
//! have that batch. Without `idempotent`, delivery is at least once: a batch resent
//! after a broken stream may be stored twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore, SemaphorePermit, TryAcquireError};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::Client;
use crate::grpc::pb;

mod acks;
mod batches;
mod filling;
mod identity;
mod queue;
mod replies;
mod worker;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// Send a batch once its records reach this many bytes.
    pub batch_bytes: usize,
    /// ... or this many records: a server refuses a request of more than its
    /// `--max-records-per-request` (100,000 unless set), and every record in it with
    /// the request. Set it to match a server that takes fewer.
    pub batch_records: usize,
    /// `Unspecified` uses the topic's default.
    pub durability: pb::Durability,
    /// Exactly once per partition (see the module comment); off: at least once.
    pub idempotent: bool,
    /// With `idempotent`: the name given to InitProducer, so that this producer keeps
    /// its id across restarts and a new instance fences the old one. None: a new id.
    pub name: Option<String>,
    /// A batch not acknowledged this long after it was ready fails.
    pub delivery_timeout: Duration,
    /// Wait before the first retry; doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Batches waiting for an answer, over all partitions, at most (at most five of
    /// one partition are unanswered at once when idempotent).
    pub max_in_flight: usize,
    /// Bytes of records handed to `send` and `send_many` that the background task has
    /// not taken into batches yet, at most (counted as for `batch_bytes`; up to 4 GiB):
    /// past it, those calls wait, so a caller faster than the server is slowed down
    /// rather than buffered without bound. (Kafka's `buffer.memory` counts records
    /// until they are acknowledged; here the batches filling and in flight, bounded by
    /// `batch_bytes` and `max_in_flight`, come on top.) A call larger than this waits
    /// until the task has taken every call before it, then goes in whole.
    pub buffer_bytes: usize,
    /// How long a topic's partition count, which places keyed and keyless records, is
    /// used before it is asked for again (Kafka's `metadata.max.age.ms`). A topic
    /// deleted and created again with other partitions is seen after at most this
    /// long, or at once when a batch is refused with NOT_FOUND.
    pub metadata_max_age: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            batch_records: 100_000,
            durability: pb::Durability::Unspecified,
            idempotent: true,
            name: None,
            delivery_timeout: Duration::from_secs(120),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_in_flight: 32,
            buffer_bytes: 32 << 20,
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    pub offset: u64,
}

type AckSender = oneshot::Sender<Result<Ack, Status>>;

/// Records' share of `buffer_bytes`, in bytes: the caller takes it from `room`, the task
/// gives it back once it has put the records into batches (`Worker::room_taken`).
type Room = u32;

enum Command {
    Send {
        topic: String,
        partition: Option<u32>,
        record: pb::Record,
        ack: AckSender,
        room: Room,
    },
    SendMany {
        topic: String,
        partition: Option<u32>,
        records: Vec<pb::Record>,
        ack: acks::ManySender,
        room: Room,
    },
    Flush(oneshot::Sender<()>),
}

/// What a call gets once the producer's task is gone.
fn closed() -> Status {
    Status::cancelled("producer is closed")
}

impl Command {
    /// Answers a command the task will never see: the producer is closed.
    fn refuse(self) {
        match self {
            Command::Send { ack, .. } => drop(ack.send(Err(closed()))),
            Command::SendMany { ack, .. } => drop(ack.send(Err(closed()))),
            Command::Flush(_) => {}
        }
    }
}

pub struct Producer {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
    /// `buffer_bytes`, as permits of one byte each; closed when the task ends.
    room: Arc<Semaphore>,
    buffer: u32,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        // None in flight would take no command at all: every send and flush would wait
        // for ever.
        let config = ProducerConfig {
            max_in_flight: config.max_in_flight.max(1),
            ..config
        };
        let (commands, rx) = mpsc::channel(4096);
        let buffer = config.buffer_bytes.clamp(1, u32::MAX as usize) as u32;
        let room = Arc::new(Semaphore::new(buffer as usize));
        let worker = worker::Worker::new(client, config, Arc::clone(&room));
        let task = tokio::spawn(worker.run(rx));
        Producer {
            commands,
            task,
            room,
            buffer,
        }
    }

    /// `bytes` of the buffer (all of it, for a call larger than the buffer), once free;
    /// None once the producer is closed. The permit is held until the command is on
    /// the channel, so that a caller that goes away meanwhile gives the room back, and
    /// then forgotten: the task gives the room back (`Worker::room_taken`).
    async fn room_for(&self, bytes: usize) -> Option<SemaphorePermit<'_>> {
        let n = bytes.clamp(1, self.buffer as usize) as u32;
        // Taken without waiting when it is free: a wait, even one that ends at once,
        // charges tokio's cooperative budget, which made a caller sharing a thread with
        // the task yield to it twice as often (fewer commands a turn, more CPU a
        // record: BENCHMARKS.md).
        match self.room.try_acquire_many(n) {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::Closed) => None,
            Err(TryAcquireError::NoPermits) => self.room.acquire_many(n).await.ok(),
        }
    }

    /// Queues a record; the receiver resolves when the server acknowledges it.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: pb::Record,
    ) -> oneshot::Receiver<Result<Ack, Status>> {
        let (ack, rx) = oneshot::channel();
        // The command is built only once there is room for it: a future that held it
        // while waiting moved it about, which cost the caller 3% of its CPU.
        let Some(room) = self.room_for(record_bytes(&record)).await else {
            let _ = ack.send(Err(closed()));
            return rx;
        };
        let command = Command::Send {
            topic: topic.to_string(),
            partition,
            record,
            ack,
            room: room.num_permits() as u32,
        };
        match self.commands.send(command).await {
            Ok(()) => room.forget(),
            Err(mpsc::error::SendError(command)) => command.refuse(),
        }
        rx
    }

    /// Queues many records at once, each partitioned as `send` would; the receiver
    /// resolves when all of them are acknowledged, with their acknowledgements in the
    /// order given, or with the first failure of any of them (the others may then have
    /// been stored or not, each as a `send` of it would report). One call of a thousand
    /// records costs a fraction of a thousand `send`s: one message to the producer's
    /// task and one wake-up, not one of each per record.
    pub async fn send_many(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<pb::Record>,
    ) -> oneshot::Receiver<Result<Vec<Ack>, Status>> {
        let (ack, rx) = oneshot::channel();
        let Some(room) = self.room_for(records.iter().map(record_bytes).sum()).await else {
            let _ = ack.send(Err(closed()));
            return rx;
        };
        let command = Command::SendMany {
            topic: topic.to_string(),
            partition,
            records,
            ack,
            room: room.num_permits() as u32,
        };
        match self.commands.send(command).await {
            Ok(()) => room.forget(),
            Err(mpsc::error::SendError(command)) => command.refuse(),
        }
        rx
    }

    /// Sends every queued record now and waits until all have been answered: the
    /// records sent before this call, not those other tasks send meanwhile.
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the background task.
    pub async fn close(self) {
        self.flush().await;
        drop(self.commands);
        let _ = self.task.await;
    }
}

/// A batch being filled, or waiting for its answer.
struct Batch {
    /// The order batches were started in, over all partitions (see `flush`).
    seq: u64,
    topic: String,
    partition: u32,
    records: Vec<pb::Record>,
    acks: acks::Waiters,
    bytes: usize,
    deadline: Instant,
}

impl Batch {
    /// Whether a record of `bytes` may join it: a batch passes `limit` only by its one
    /// record (`Worker::push`).
    fn has_room(&self, bytes: usize, limit: usize) -> bool {
        self.records.is_empty() || self.bytes + bytes <= limit
    }

    fn fail(self, status: &Status) {
        self.acks.fail(status);
    }
}

/// Bytes a record counts for in `batch_bytes` beside its key, value and headers.
pub const RECORD_OVERHEAD: usize = 24;

fn record_bytes(r: &pb::Record) -> usize {
    r.value.len()
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
        + RECORD_OVERHEAD
}

/// Failures that may pass: the server restarting or shutting down, a broken
/// connection, a partition reopening after a failed fsync. (A full disk is
/// RESOURCE_EXHAUSTED, as is a record over the size limit: not retried, so the caller
/// decides.)
pub fn retriable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

/// Each topic's partition count, and when it was learnt.
type Partitions = HashMap<String, (u32, tokio::time::Instant)>;
