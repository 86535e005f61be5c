//! A share-group member: a worker taking records of a topic one by one over
//! `ShareStream`, acknowledging each (accept, release or reject), with locks of records
//! it still holds renewed in the background so a long job keeps its record.
//!
//! Prefetch is a credit: the server never sends more unacknowledged records than
//! `prefetch`, and each acknowledgement gives one credit back. A record comes with its
//! delivery count, so work that must not run twice can tell a retry from a first try.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use super::Client;
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
    _renewer: Option<JoinHandle<()>>,
    refused: u64,
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
        // The renewer holds the stream's sender weakly: when the worker goes, the
        // stream closes (and the member leaves) without waiting for it.
        let renewer = config.renew_every.map(|every| {
            let (weak, held) = (tx.downgrade(), Arc::clone(&held));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(tx) = weak.upgrade() else { return };
                    let now: Vec<(u32, u64)> = held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .copied()
                        .collect();
                    for (partition, offset) in now {
                        let renew = ack_message(partition, vec![offset], AckType::Renew);
                        if tx.send(renew).await.is_err() {
                            return;
                        }
                    }
                }
            })
        });
        Ok(Worker {
            member_id: first.member_id,
            tx,
            inbound,
            ready: VecDeque::new(),
            held,
            _renewer: renewer,
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
        let closed = || Status::unavailable("the share stream closed");
        self.tx
            .send(ack_message(job.partition, vec![job.offset], kind))
            .await
            .map_err(|_| closed())?;
        let credit = pb::ShareStreamRequest {
            body: Some(Body::Credits(1)),
        };
        self.tx.send(credit).await.map_err(|_| closed())
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
