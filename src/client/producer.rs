//! A producer: records are grouped per partition into batches (sent when a batch reaches
//! `batch_bytes` or has waited `linger`), sent pipelined over one `ProduceStream`, and
//! retried with backoff when the server is unavailable. One background task owns all
//! state; `send` hands it a record and returns a receiver for the acknowledgement.
//!
//! Partitioning is Kafka's: an explicit partition wins; a keyed record goes to
//! murmur2(key) mod the partition count; records without a key stick to one partition
//! per batch and move on to the next partition when that batch is sent.
//!
//! Delivery is at least once: after a broken stream, batches without an answer are sent
//! again, so a batch the server had already appended may be stored twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::Client;
use crate::broker::partitioner::partition_for_key;
use crate::grpc::pb::{self, produce_stream_response::Result as Reply};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// Send a batch once its records reach this many bytes.
    pub batch_bytes: usize,
    /// `Unspecified` uses the topic's default.
    pub durability: pb::Durability,
    /// Attempts after the first for a batch the server could not take (UNAVAILABLE).
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    /// Batches sent and not yet answered, at most.
    pub max_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            durability: pb::Durability::Unspecified,
            retries: 5,
            backoff: Duration::from_millis(100),
            max_in_flight: 32,
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

enum Command {
    Send {
        topic: String,
        partition: Option<u32>,
        record: pb::Record,
        ack: AckSender,
    },
    Flush(oneshot::Sender<()>),
}

pub struct Producer {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (commands, rx) = mpsc::channel(4096);
        let task = tokio::spawn(Worker::new(client, config).run(rx));
        Producer { commands, task }
    }

    /// Queues a record; the receiver resolves when the server acknowledges it.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: pb::Record,
    ) -> oneshot::Receiver<Result<Ack, Status>> {
        let (ack, rx) = oneshot::channel();
        let command = Command::Send {
            topic: topic.to_string(),
            partition,
            record,
            ack,
        };
        if let Err(mpsc::error::SendError(Command::Send { ack, .. })) =
            self.commands.send(command).await
        {
            let _ = ack.send(Err(Status::cancelled("producer is closed")));
        }
        rx
    }

    /// Sends every queued record now and waits until all have been answered.
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

/// A batch being filled, or sent and awaiting its answer.
struct Batch {
    topic: String,
    partition: u32,
    records: Vec<pb::Record>,
    acks: Vec<AckSender>,
    bytes: usize,
    deadline: Instant,
    attempts: u32,
}

struct Worker {
    client: Client,
    config: ProducerConfig,
    partition_counts: HashMap<String, u32>,
    /// Partition that keyless records of a topic currently stick to.
    sticky: HashMap<String, u32>,
    filling: BTreeMap<(String, u32), Batch>,
    in_flight: BTreeMap<u64, Batch>,
    retry_at: Vec<(Instant, Batch)>,
    next_id: u64,
    flush_waiters: Vec<oneshot::Sender<()>>,
    requests: Option<mpsc::Sender<pb::ProduceStreamRequest>>,
    replies: Option<tonic::Streaming<pb::ProduceStreamResponse>>,
}

fn record_bytes(r: &pb::Record) -> usize {
    r.value.len()
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
        + 24
}

fn retriable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

impl Worker {
    fn new(client: Client, config: ProducerConfig) -> Worker {
        Worker {
            client,
            config,
            partition_counts: HashMap::new(),
            sticky: HashMap::new(),
            filling: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            retry_at: Vec::new(),
            next_id: 0,
            flush_waiters: Vec::new(),
            requests: None,
            replies: None,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            let next_deadline = self
                .filling
                .values()
                .map(|b| b.deadline)
                .chain(self.retry_at.iter().map(|r| r.0))
                .min();
            let room = self.in_flight.len() < self.config.max_in_flight;
            tokio::select! {
                command = commands.recv(), if open && room => match command {
                    Some(Command::Send { topic, partition, record, ack }) => self.add(topic, partition, record, ack).await,
                    Some(Command::Flush(done)) => {
                        self.flush_waiters.push(done);
                        self.send_due(true).await;
                    }
                    None => {
                        open = false;
                        self.send_due(true).await;
                    }
                },
                reply = next_reply(&mut self.replies) => self.on_reply(reply).await,
                _ = sleep_until(next_deadline) => self.send_due(false).await,
            }
            if self.filling.is_empty() && self.in_flight.is_empty() && self.retry_at.is_empty() {
                for done in self.flush_waiters.drain(..) {
                    let _ = done.send(());
                }
                if !open {
                    return;
                }
            }
        }
    }

    async fn partitions_of(&mut self, topic: &str) -> Result<u32, Status> {
        if let Some(&n) = self.partition_counts.get(topic) {
            return Ok(n);
        }
        let n = self
            .client
            .admin()
            .describe_topic(topic)
            .await?
            .partitions
            .len() as u32;
        self.partition_counts.insert(topic.to_string(), n.max(1));
        Ok(n.max(1))
    }

    async fn add(
        &mut self,
        topic: String,
        partition: Option<u32>,
        record: pb::Record,
        ack: AckSender,
    ) {
        let partition = match (partition, &record.key) {
            (Some(p), _) => p,
            (None, key) => match self.partitions_of(&topic).await {
                Ok(n) => match key {
                    Some(key) => partition_for_key(key, n),
                    None => *self.sticky.entry(topic.clone()).or_insert(0) % n,
                },
                Err(status) => {
                    let _ = ack.send(Err(status));
                    return;
                }
            },
        };
        let linger = self.config.linger;
        let batch = self
            .filling
            .entry((topic.clone(), partition))
            .or_insert_with(|| Batch {
                topic,
                partition,
                records: Vec::new(),
                acks: Vec::new(),
                bytes: 0,
                deadline: Instant::now() + linger,
                attempts: 0,
            });
        batch.bytes += record_bytes(&record);
        batch.records.push(record);
        batch.acks.push(ack);
        if batch.bytes >= self.config.batch_bytes {
            let key = (batch.topic.clone(), partition);
            let batch = self.filling.remove(&key).expect("just filled");
            self.dispatch(batch).await;
        }
    }

    /// Sends batches whose linger has passed (all of them with `all`), and retries due.
    async fn send_due(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<_> = self
            .filling
            .iter()
            .filter(|(_, b)| all || b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let batch = self.filling.remove(&key).expect("listed above");
            self.dispatch(batch).await;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.retry_at.drain(..).partition(|(at, _)| *at <= now);
        self.retry_at = waiting;
        for (_, batch) in ready {
            self.dispatch(batch).await;
        }
    }

    async fn dispatch(&mut self, batch: Batch) {
        if batch.records.first().is_some_and(|r| r.key.is_none()) {
            // The sticky partition moves on once its batch is sent.
            if let Some(p) = self.sticky.get_mut(&batch.topic) {
                *p = p.wrapping_add(1);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let request = pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(pb::ProduceRequest {
                topic: batch.topic.clone(),
                partition: Some(batch.partition),
                records: batch.records.clone(),
                durability: self.config.durability as i32,
                ..Default::default()
            }),
        };
        self.in_flight.insert(id, batch);
        if self.requests.is_none() {
            self.connect().await;
        }
        let sent = match &self.requests {
            Some(requests) => requests.send(request).await.is_ok(),
            None => false,
        };
        if !sent {
            self.stream_broken(Status::unavailable("produce stream is down"))
                .await;
        }
    }

    async fn connect(&mut self) {
        let (tx, rx) = mpsc::channel(self.config.max_in_flight.max(1) * 2);
        match self
            .client
            .log()
            .produce_stream(ReceiverStream::new(rx))
            .await
        {
            Ok(response) => {
                self.requests = Some(tx);
                self.replies = Some(response.into_inner());
            }
            Err(status) => {
                self.requests = None;
                self.replies = None;
                tracing::warn!(%status, "cannot open produce stream");
            }
        }
    }

    async fn on_reply(&mut self, reply: Option<Result<pb::ProduceStreamResponse, Status>>) {
        match reply {
            Some(Ok(reply)) => {
                let Some(batch) = self.in_flight.remove(&reply.correlation_id) else {
                    return;
                };
                match reply.result {
                    Some(Reply::Response(ok)) => {
                        for (i, ack) in batch.acks.into_iter().enumerate() {
                            let _ = ack.send(Ok(Ack {
                                partition: ok.partition,
                                offset: ok.base_offset + i as u64,
                            }));
                        }
                    }
                    Some(Reply::Error(err)) => {
                        self.failed(batch, Status::new(Code::from(err.code), err.message))
                    }
                    None => self.failed(batch, Status::internal("empty produce reply")),
                }
            }
            Some(Err(status)) => self.stream_broken(status).await,
            None => {
                self.stream_broken(Status::unavailable("produce stream closed by the server"))
                    .await
            }
        }
    }

    /// The stream is gone: every unanswered batch is retried (or failed) on a new one.
    async fn stream_broken(&mut self, status: Status) {
        self.requests = None;
        self.replies = None;
        let pending = std::mem::take(&mut self.in_flight);
        for (_, batch) in pending {
            self.failed(batch, status.clone());
        }
    }

    fn failed(&mut self, mut batch: Batch, status: Status) {
        if retriable(&status) && batch.attempts < self.config.retries {
            let wait = self.config.backoff * 2u32.saturating_pow(batch.attempts);
            batch.attempts += 1;
            tracing::debug!(%status, attempt = batch.attempts, "retrying produce");
            self.retry_at.push((Instant::now() + wait, batch));
        } else {
            for ack in batch.acks {
                let _ = ack.send(Err(status.clone()));
            }
        }
    }
}

async fn next_reply(
    replies: &mut Option<tonic::Streaming<pb::ProduceStreamResponse>>,
) -> Option<Result<pb::ProduceStreamResponse, Status>> {
    match replies {
        Some(stream) => stream.message().await.transpose(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
