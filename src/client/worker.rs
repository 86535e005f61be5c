//! A share-group member: a worker taking records of a topic one by one over
//! `ShareStream`, acknowledging each (accept, release or reject), with locks of records
//! it still holds renewed in the background so a long job keeps its record.
//!
//! Prefetch is a credit: the server never sends more unacknowledged records than
//! `prefetch`, and each acknowledgement gives one credit back. Acknowledgements made
//! within a millisecond of each other go out as one message (see `Outbox`). A record comes with its
//! delivery count, so work that must not run twice can tell a retry from a first try.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use super::Client;
use crate::groups::share::MAX_ACK_OFFSETS;
use crate::grpc::pb::{self, share_stream_request::Body, AckType};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub group: String,
    pub topic: String,
    /// Records the server may send ahead of their acknowledgements.
    pub prefetch: u32,
    /// How often locks of held records are renewed; keep it well under the group's
    /// lock.ms (30 s by default). `None`: never.
    pub renew_every: Option<Duration>,
    /// Empty: the server gives one.
    pub member_id: String,
}

impl WorkerConfig {
    pub fn new(group: &str, topic: &str) -> WorkerConfig {
        WorkerConfig {
            group: group.into(),
            topic: topic.into(),
            prefetch: 100,
            renew_every: Some(Duration::from_secs(10)),
            member_id: String::new(),
        }
    }
}

/// A record handed to this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub partition: u32,
    pub offset: u64,
    /// 1 the first time the record is handed out, then one more each time.
    pub delivery_count: u32,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

pub struct Worker {
    member_id: String,
    tx: mpsc::Sender<pb::ShareStreamRequest>,
    inbound: Streaming<pb::ShareStreamResponse>,
    ready: VecDeque<Job>,
    /// Records handed out and not yet acknowledged, for renewal.
    held: Arc<Mutex<HashSet<(u32, u64)>>>,
    outbox: Arc<Outbox>,
    _sender: JoinHandle<()>,
    refused: u64,
}

/// Acknowledgements not sent yet. The sender task sends what gathered within
/// `GATHER` of the first one as one message, with one credit each: a worker that
/// accepts records one by one costs the stream a message per batch, not per record,
/// and no acknowledgement waits more than about a millisecond.
#[derive(Default)]
struct Outbox {
    acks: Mutex<Vec<(u32, u64, AckType)>>,
    wake: tokio::sync::Notify,
}

const GATHER: Duration = Duration::from_millis(1);

/// Sends gathered acknowledgements, and renews the locks of held records every
/// `renew_every`, until the worker is gone.
async fn send_loop(
    tx: mpsc::WeakSender<pb::ShareStreamRequest>,
    outbox: Arc<Outbox>,
    held: Arc<Mutex<HashSet<(u32, u64)>>>,
    renew_every: Option<Duration>,
) {
    // Never renewing: a renewal due in a year, pushed back each time.
    let renew_every = renew_every.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut next_renew = tokio::time::Instant::now() + renew_every;
    loop {
        tokio::select! {
            () = outbox.wake.notified() => {
                tokio::time::sleep(GATHER).await;
                let Some(tx) = tx.upgrade() else { return };
                if flush(&tx, &outbox).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(next_renew) => {
                next_renew += renew_every;
                let Some(tx) = tx.upgrade() else { return };
                let now: Vec<(u32, u64)> =
                    held.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
                for (partition, offset) in now {
                    let renew = ack_message(partition, vec![offset], AckType::Renew);
                    if tx.send(renew).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends the acknowledgements in `outbox` (as few messages as the server takes), and
/// their credits.
async fn flush(tx: &mpsc::Sender<pb::ShareStreamRequest>, outbox: &Outbox) -> Result<(), Status> {
    let unsent = std::mem::take(&mut *outbox.acks.lock().unwrap_or_else(|e| e.into_inner()));
    if unsent.is_empty() {
        return Ok(());
    }
    let credits = unsent.len() as u32;
    let closed = || Status::unavailable("the share stream closed");
    for acks in ack_messages(&unsent) {
        let acks = pb::ShareStreamRequest {
            body: Some(Body::Acks(pb::ShareStreamAcks { acks })),
        };
        tx.send(acks).await.map_err(|_| closed())?;
    }
    let credit = pb::ShareStreamRequest {
        body: Some(Body::Credits(credits)),
    };
    tx.send(credit).await.map_err(|_| closed())
}

/// Acknowledgements, in order, as messages of at most `MAX_ACK_OFFSETS` offsets (the
/// server ends a stream that sends more in one), runs of one partition and kind
/// sharing an entry.
fn ack_messages(unsent: &[(u32, u64, AckType)]) -> Vec<Vec<pb::Acknowledgement>> {
    unsent
        .chunks(MAX_ACK_OFFSETS)
        .map(|chunk| {
            let mut acks: Vec<pb::Acknowledgement> = Vec::new();
            for &(partition, offset, kind) in chunk {
                match acks.last_mut() {
                    Some(a) if a.partition == partition && a.r#type == kind as i32 => {
                        a.offsets.push(offset)
                    }
                    _ => acks.push(pb::Acknowledgement {
                        partition,
                        offsets: vec![offset],
                        r#type: kind as i32,
                    }),
                }
            }
            acks
        })
        .collect()
}

fn ack_message(partition: u32, offsets: Vec<u64>, kind: AckType) -> pb::ShareStreamRequest {
    pb::ShareStreamRequest {
        body: Some(Body::Acks(pb::ShareStreamAcks {
            acks: vec![pb::Acknowledgement {
                partition,
                offsets,
                r#type: kind as i32,
            }],
        })),
    }
}

impl Worker {
    /// Joins the share group and opens the stream.
    pub async fn connect(client: &Client, config: WorkerConfig) -> Result<Worker, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let closed = || Status::unavailable("the share stream closed");
        let open = pb::ShareStreamRequest {
            body: Some(Body::Open(pb::ShareStreamOpen {
                group: config.group.clone(),
                member_id: config.member_id.clone(),
                topic: config.topic.clone(),
            })),
        };
        tx.send(open).await.map_err(|_| closed())?;
        let credits = pb::ShareStreamRequest {
            body: Some(Body::Credits(config.prefetch.max(1))),
        };
        tx.send(credits).await.map_err(|_| closed())?;
        let mut inbound = client
            .queues()
            .share_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = inbound.message().await?.ok_or_else(closed)?;
        let held = Arc::new(Mutex::new(HashSet::new()));
        let outbox = Arc::new(Outbox::default());
        // The sender holds the stream's sender weakly: when the worker goes, the
        // stream closes (and the member leaves) without waiting for it.
        let sender = tokio::spawn(send_loop(
            tx.downgrade(),
            Arc::clone(&outbox),
            Arc::clone(&held),
            config.renew_every,
        ));
        Ok(Worker {
            member_id: first.member_id,
            tx,
            inbound,
            ready: VecDeque::new(),
            held,
            outbox,
            _sender: sender,
            refused: 0,
        })
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Acknowledgements the server refused so far (their locks had ended: the records
    /// went, or will go, to another worker).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The next record, waiting up to `wait`; `None` if none came.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Job>, Status> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(job) = self.ready.pop_front() {
                return Ok(Some(job));
            }
            let message = match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Err(_) => return Ok(None),
                Ok(message) => message?,
            };
            let Some(message) = message else {
                return Err(Status::unavailable("the server ended the share stream"));
            };
            for r in &message.refused {
                tracing::warn!(partition = r.partition, offset = r.offset, reason = %r.message, "acknowledgement refused");
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(r.partition, r.offset));
            }
            self.refused += message.refused.len() as u64;
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            for s in message.records {
                let Some(record) = s.record else { continue };
                held.insert((s.partition, record.offset));
                self.ready.push_back(Job {
                    partition: s.partition,
                    offset: record.offset,
                    delivery_count: s.delivery_count,
                    timestamp_ms: record.timestamp_ms,
                    key: record.key,
                    value: record.value,
                    headers: record
                        .headers
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                });
            }
        }
    }

    async fn finish(&self, job: &Job, kind: AckType) -> Result<(), Status> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(job.partition, job.offset));
        if self.tx.is_closed() {
            return Err(Status::unavailable("the share stream closed"));
        }
        let mut acks = self.outbox.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.push((job.partition, job.offset, kind));
        if acks.len() == 1 {
            self.outbox.wake.notify_one();
        }
        Ok(())
    }

    /// Done: the record is never delivered again.
    pub async fn accept(&self, job: &Job) -> Result<(), Status> {
        self.finish(job, AckType::Accept).await
    }

    /// Back to the queue, for any worker (after the group's redelivery backoff).
    pub async fn release(&self, job: &Job) -> Result<(), Status> {
        self.finish(job, AckType::Release).await
    }

    /// Never delivered again: dead-lettered.
    pub async fn reject(&self, job: &Job) -> Result<(), Status> {
        self.finish(job, AckType::Reject).await
    }

    /// Leaves the group: acknowledgements sent so far are applied, and records still
    /// held (and any prefetched) go back to the queue at once.
    pub async fn close(self) {
        let _ = flush(&self.tx, &self.outbox).await;
        let Worker {
            tx, mut inbound, ..
        } = self;
        drop(tx);
        // The server ends the stream once it has applied the acknowledgements.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_go_in_messages_the_server_takes() {
        let unsent: Vec<(u32, u64, AckType)> = (0..25_000u64)
            .map(|o| ((o / 7_000) as u32, o, AckType::Accept))
            .collect();
        let messages = ack_messages(&unsent);
        let counts: Vec<usize> = messages
            .iter()
            .map(|m| m.iter().map(|a| a.offsets.len()).sum())
            .collect();
        assert_eq!(counts, [10_000, 10_000, 5_000]);
        let sent: Vec<(u32, u64)> = messages
            .iter()
            .flatten()
            .flat_map(|a| a.offsets.iter().map(move |&o| (a.partition, o)))
            .collect();
        let expected: Vec<(u32, u64)> = unsent.iter().map(|&(p, o, _)| (p, o)).collect();
        assert_eq!(sent, expected, "all of them, in order");
    }
}
