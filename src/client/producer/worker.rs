//! The producer's background task: takes commands, has `filling.rs` put their records
//! into batches, sends the batches in each partition's order (`queue.rs`), reads the
//! answers and retries.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tonic::Status;

use super::batches::{Filling, Key, Queues};
use super::queue::Identity;
use super::replies::next_reply;
use super::{retriable, Command, Partitions, ProducerConfig};
use crate::client::Client;
use crate::grpc::pb;

/// Unanswered batches of one partition at most, when idempotent: the server remembers
/// the last five of a producer, so a retry of any unanswered batch is recognised.
pub(super) const PER_PARTITION: usize = 5;

/// Commands taken in one turn of the worker's loop, at most, after the one it woke for.
const TAKE_AT_ONCE: usize = 256;

pub(super) struct Worker {
    pub(super) client: Client,
    pub(super) config: ProducerConfig,
    pub(super) partition_counts: Partitions,
    /// Partition that keyless records of a topic currently stick to.
    pub(super) sticky: HashMap<String, u32>,
    pub(super) filling: Filling,
    pub(super) queues: Queues,
    /// Batches sent and not answered, by correlation id.
    pub(super) in_flight: HashMap<u64, Key>,
    pub(super) identity: Option<Identity>,
    /// The identity must be replaced before anything more is numbered.
    pub(super) identity_stale: bool,
    /// A newer instance of this producer's name fenced this one: every batch from now
    /// on fails with this status, and no InitProducer takes the name back (which would
    /// fence the newer instance in turn, and the two would take turns writing).
    pub(super) fenced: Option<Status>,
    pub(super) generations: u64,
    pub(super) next_id: u64,
    /// Flushes waiting, each for the batches started up to a count of `batches_started`.
    pub(super) flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Batches started so far (`Batch::seq` of the latest).
    pub(super) batches_started: u64,
    /// A command of this turn called the server (see `run`).
    pub(super) asked_server: bool,
    /// The producer's `buffer_bytes`, and the bytes of it taken by the commands handled
    /// this turn: given back once a turn, not once a record (each release of a tokio
    /// semaphore locks its list of waiters).
    pub(super) room: Arc<Semaphore>,
    pub(super) room_taken: usize,
    pub(super) requests: Option<mpsc::Sender<pb::ProduceStreamRequest>>,
    pub(super) replies: Option<tonic::Streaming<pb::ProduceStreamResponse>>,
}

impl Worker {
    pub(super) fn new(client: Client, config: ProducerConfig, room: Arc<Semaphore>) -> Worker {
        Worker {
            client,
            config,
            partition_counts: HashMap::new(),
            sticky: HashMap::new(),
            filling: Filling::default(),
            queues: Queues::default(),
            in_flight: HashMap::new(),
            identity: None,
            identity_stale: false,
            fenced: None,
            generations: 0,
            next_id: 0,
            flush_waiters: Vec::new(),
            batches_started: 0,
            asked_server: false,
            room,
            room_taken: 0,
            requests: None,
            replies: None,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // However the task ends (a panic too), callers waiting for room are told the
        // producer is closed rather than left waiting for room nobody gives back.
        let _closing = CloseOnDrop(Arc::clone(&self.room));
        let mut open = true;
        loop {
            // Wake-ups: a batch's linger, a pause ending, a delivery timeout. (A pause
            // already over is no wake-up: it would wake this loop at once, forever.)
            let now = Instant::now();
            let next_deadline = self
                .filling
                .oldest()
                .map(|b| b.deadline)
                .into_iter()
                .chain(
                    self.queues
                        .busy()
                        .filter_map(|(_, q)| q.paused_until)
                        .filter(|&t| t > now),
                )
                .chain(
                    self.queues
                        .busy()
                        .flat_map(|(_, q)| q.batches.front())
                        .map(|q| q.enqueued + self.config.delivery_timeout),
                )
                .min();
            let queued = self.queued();
            let pushed = self.queues.pushed();
            let room = queued < self.config.max_in_flight;
            tokio::select! {
                command = commands.recv(), if open && room => {
                    self.asked_server = false;
                    let mut go_on = !matches!(command, Some(Command::Flush(_)));
                    open = self.handle(command).await;
                    // The commands already waiting are taken now, a bounded number, so
                    // that the work of each turn of this loop (deadlines, a timer, the
                    // queues' walk) is paid once for many records, not for each one
                    // (it was most of the client's CPU at 1,000 records a batch). The
                    // run ends where that work cannot wait: a flush to answer, the
                    // batches in flight at their limit, or a command that had to ask
                    // the server (a DescribeTopic may take CALL_TIMEOUT; a run of them
                    // would hold up delivery timeouts and replies for as many times).
                    for _ in 0..TAKE_AT_ONCE {
                        // A run only adds batches: counted without a walk of the queues.
                        let queued = queued + (self.queues.pushed() - pushed) as usize;
                        if !go_on
                            || !open
                            || self.asked_server
                            || queued >= self.config.max_in_flight
                        {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(command) => {
                                go_on = !matches!(command, Command::Flush(_));
                                open = self.handle(Some(command)).await;
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => open = self.handle(None).await,
                        }
                    }
                }
                reply = next_reply(&mut self.replies) => self.on_reply(reply),
                _ = sleep_until(next_deadline) => self.seal_due(false),
            }
            if self.room_taken > 0 {
                self.room.add_permits(std::mem::take(&mut self.room_taken));
            }
            self.expire();
            self.pump().await;
            self.answer_flushes();
            if !open && self.filling.is_empty() && self.queued() == 0 {
                self.end_stream().await;
                return;
            }
        }
    }

    /// Acts on one command (`None`: the producer was dropped or closed); false once no
    /// more will come.
    async fn handle(&mut self, command: Option<Command>) -> bool {
        match command {
            Some(Command::Send {
                topic,
                partition,
                record,
                ack,
                room,
            }) => {
                self.add(topic, partition, record, ack).await;
                self.room_taken += room as usize;
            }
            Some(Command::SendMany {
                topic,
                partition,
                records,
                ack,
                room,
            }) => {
                self.add_many(topic, partition, records, ack).await;
                self.room_taken += room as usize;
            }
            Some(Command::Flush(done)) => {
                self.seal_due(true);
                self.flush_waiters.push((self.batches_started, done));
            }
            None => {
                self.seal_due(true);
                return false;
            }
        }
        true
    }

    /// Answers the flushes whose batches have all left: the oldest batch still filling
    /// or queued was started after them. Records other tasks send meanwhile go to later
    /// batches, so they cannot hold a flush up however fast they come.
    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        // Each partition's queue is in the order its batches were started.
        let oldest = self
            .filling
            .oldest()
            .map(|b| b.seq)
            .into_iter()
            .chain(
                self.queues
                    .busy()
                    .filter_map(|(_, q)| q.batches.front())
                    .map(|q| q.batch.seq),
            )
            .min()
            .unwrap_or(u64::MAX);
        for (upto, done) in std::mem::take(&mut self.flush_waiters) {
            if upto < oldest {
                let _ = done.send(());
            } else {
                self.flush_waiters.push((upto, done));
            }
        }
    }

    /// Batches in the queues: waiting, unanswered, or answered and holding a place.
    pub(super) fn queued(&self) -> usize {
        self.queues.batches()
    }

    /// Sends what each partition's queue allows.
    async fn pump(&mut self) {
        let now = Instant::now();
        // The keys of the partitions with a batch to send now are copied for the sends
        // below, as many at a time as requests are free (copying every queue's key each
        // turn was a tenth of the client's CPU with 1,000 partitions), and the next
        // ones after them while requests are left: a partition that could not take an
        // identity sends nothing, and must not keep those after it waiting.
        let mut after: Option<Key> = None;
        loop {
            let free = self
                .config
                .max_in_flight
                .saturating_sub(self.in_flight.len());
            let generation = self.generation_next();
            let keys: Vec<Key> = self
                .queues
                .busy_after(after.as_ref())
                .filter(|(_, q)| {
                    q.next_to_send(now, self.window(q, generation), generation)
                        .is_some()
                })
                .map(|(key, _)| key.clone())
                .take(free)
                .collect();
            let Some(last) = keys.last().cloned() else {
                return;
            };
            if !self.send_from(keys, now).await {
                return;
            }
            after = Some(last);
        }
    }

    /// Sends what the queues of `keys` allow; false once no request is free or the
    /// stream is down.
    async fn send_from(&mut self, keys: Vec<Key>, now: Instant) -> bool {
        for key in keys {
            loop {
                if self.in_flight.len() >= self.config.max_in_flight {
                    return false;
                }
                let generation = self.generation_next();
                let window = match self.queues.get(&key) {
                    Some(queue) => self.window(queue, generation),
                    None => break,
                };
                let queue = self.queues.get_mut(&key).expect("found above");
                if queue.paused_until.is_some_and(|t| t <= now) {
                    queue.paused_until = None;
                }
                let Some(i) = queue.next_to_send(now, window, generation) else {
                    break;
                };
                if self.config.idempotent && queue.batches[i].numbered.is_none() {
                    if let Err(status) = self.ensure_identity().await {
                        if retriable(&status) {
                            let q = self.queues.get_mut(&key).expect("listed");
                            // From now, not from the start of this pump: the call may
                            // have taken longer than the backoff.
                            q.paused_until = Some(Instant::now() + self.config.backoff);
                            q.batches[i].last_error = Some(status);
                        } else {
                            self.fail_partition(&key, i, &status);
                        }
                        break;
                    }
                }
                if !self.send(&key, i).await {
                    return false;
                }
            }
        }
        true
    }

    /// Sends batch `i` of `key`'s queue; false if the stream is down (its batches are
    /// then back to waiting).
    async fn send(&mut self, key: &Key, i: usize) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        let identity = self
            .identity
            .filter(|_| self.config.idempotent && !self.identity_stale);
        let queue = self.queues.get_mut(key).expect("queue of a listed key");
        let numbered = queue.send(i, id, identity);
        let batch = &queue.batches[i].batch;
        let request = pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(pb::ProduceRequest {
                topic: batch.topic.clone(),
                partition: Some(batch.partition),
                records: batch.records.clone(),
                durability: self.config.durability as i32,
                producer_id: numbered.map(|(who, _)| who.id),
                producer_epoch: numbered.map(|(who, _)| i32::from(who.epoch)),
                base_sequence: numbered.map(|(_, seq)| seq),
                ..Default::default()
            }),
        };
        self.in_flight.insert(id, key.clone());
        if self.requests.is_none() {
            self.connect().await;
        }
        let sent = match &self.requests {
            Some(requests) => requests.send(request).await.is_ok(),
            None => false,
        };
        if !sent {
            self.stream_broken(Status::unavailable("produce stream is down"));
        }
        sent
    }
}

/// How long the task waits for one call of its own (opening the stream, InitProducer,
/// DescribeTopic): it runs the replies and timeouts of every batch, so a server that
/// accepts a connection and never answers must not stop it.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "{what} got no answer in {CALL_TIMEOUT:?}"
            )))
        })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
