//! `strom bench produce --through-producer`: every record goes through the Rust client's
//! `Producer`, one `send` call and one acknowledgement each, as an application's
//! records do; with `--send-many`, `--batch` records a `send_many` call and one
//! answer for them all. The plain bench builds whole requests itself; this one shows
//! what the client library adds on top of them (its CPU per GB beside the server's).
//!
//! Each producer has its own connection and `Producer`, whose batches close at
//! `--batch` records' bytes as the `Producer` counts them (a key makes a batch close a
//! record or so sooner), or after its 5 ms linger, with up to `--in-flight` of them
//! unanswered. A record's latency runs from its `send` (or `send_many`) call to its
//! acknowledgement (the call's answer), so it includes the time the record waited in
//! its batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::produce::Outcome;
use super::{histogram, record_latencies, Load, Progress};
use crate::cli::Connect;
use crate::client::{Ack, Producer, ProducerConfig, RECORD_OVERHEAD};
use crate::grpc::pb;

/// Calls (`send`s, or `send_many`s of `--batch` records) made and not yet answered that
/// a producer's acknowledgement task may be behind by; past it, the next call waits.
/// (The Producer itself holds at most `--in-flight` batches unanswered and
/// `buffer_bytes` of records waiting for them, and makes calls wait past that.)
const UNACKED: usize = 1 << 16;

/// Runs `load` through one `Producer` per producer, to the end; `many`: `--batch`
/// records a `send_many` call.
pub async fn run_load(
    connect: &Connect,
    load: &Load,
    many: bool,
    progress: &Arc<Progress>,
) -> Result<Outcome, String> {
    load.check_counts()?;
    let deadline = load.duration()?.map(|d| Instant::now() + d);
    let tickets = Arc::new(Tickets {
        next: AtomicU64::new(0),
        records: if deadline.is_some() {
            u64::MAX
        } else {
            load.records
        },
        deadline,
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..load.producers {
        let client = connect.client().await?;
        let (load, tickets, progress) = (load.clone(), Arc::clone(&tickets), Arc::clone(progress));
        tasks.push(tokio::spawn(async move {
            let config = ProducerConfig {
                batch_bytes: load.batch * (load.record_size + RECORD_OVERHEAD),
                durability: load.durability.proto(),
                idempotent: load.idempotent,
                max_in_flight: load.in_flight.max(1),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(client, config);
            producer_task(producer, load, many, id, tickets, progress).await
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        let (latency, records, bytes) = task.await.map_err(|e| e.to_string())??;
        outcome.add(&latency, &histogram(), records, bytes);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// Records handed out so far over all producers, and where they stop.
struct Tickets {
    next: AtomicU64,
    records: u64,
    deadline: Option<Instant>,
}

impl Tickets {
    /// Up to `n` more records to send (0: the run is over).
    fn take(&self, n: u64) -> u64 {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
        let first = self.next.fetch_add(n, Ordering::Relaxed);
        self.records.saturating_sub(first).min(n)
    }
}

/// What one call is answered on.
enum Answer {
    One(oneshot::Receiver<Result<Ack, tonic::Status>>),
    Many(oneshot::Receiver<Result<Vec<Ack>, tonic::Status>>),
}

impl Answer {
    async fn wait(self) -> Result<(), String> {
        let answer = match self {
            Answer::One(rx) => rx.await.map(|r| r.map(drop)),
            Answer::Many(rx) => rx.await.map(|r| r.map(drop)),
        };
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(super::describe(status)),
            Err(_) => Err("the producer dropped a record unanswered".into()),
        }
    }
}

/// A call's start, its records and their bytes, and its answer.
type Pending = (Instant, u64, u64, Answer);

/// One producer: sends its share of the records, then flushes and closes the Producer;
/// a second task awaits the acknowledgements in the order sent.
async fn producer_task(
    producer: Producer,
    load: Load,
    many: bool,
    id: u32,
    tickets: Arc<Tickets>,
    progress: Arc<Progress>,
) -> Result<(Histogram<u64>, u64, u64), String> {
    let (pending_tx, mut pending) = mpsc::channel::<Pending>(UNACKED);
    let acks = tokio::spawn(async move {
        let mut latency = histogram();
        let (mut records, mut bytes) = (0, 0);
        while let Some((sent, n, size, answer)) = pending.recv().await {
            answer.wait().await?;
            record_latencies(&mut latency, sent.elapsed(), n);
            records += n;
            bytes += size;
            progress.add(n, size);
        }
        Ok((latency, records, bytes))
    });
    let value = Bytes::from(vec![b'x'; load.record_size]);
    let mut seed = u64::from(id) + 1;
    let mut failed = false;
    let per_call = if many { load.batch.max(1) as u64 } else { 1 };
    loop {
        let n = tickets.take(per_call);
        if n == 0 {
            break;
        }
        let mut size = 0;
        let mut next = || {
            let key = load.keys.draw(&mut seed);
            size += (value.len() + key.as_ref().map_or(0, Bytes::len)) as u64;
            pb::Record {
                key,
                value: value.clone(),
                ..Default::default()
            }
        };
        // One record is sent as it is: a `Vec` for it would be an allocation a record
        // that an application's `send` does not make.
        let (sent, answer) = match many {
            true => {
                let records: Vec<_> = (0..n).map(|_| next()).collect();
                let sent = Instant::now();
                let answer = producer.send_many(&load.topic, None, records).await;
                (sent, Answer::Many(answer))
            }
            false => {
                let record = next();
                let sent = Instant::now();
                (
                    sent,
                    Answer::One(producer.send(&load.topic, None, record).await),
                )
            }
        };
        if pending_tx.send((sent, n, size, answer)).await.is_err() {
            failed = true; // the acknowledgement task stopped at a failure
            break;
        }
    }
    drop(pending_tx);
    if failed {
        // Its failure is the answer; closing would wait for every record still
        // queued, up to the delivery timeout against a server that is gone.
        drop(producer);
    } else {
        producer.close().await;
    }
    acks.await.map_err(|e| e.to_string())?
}
