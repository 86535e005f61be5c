//! One producer of `strom bench produce` and `e2e` (`produce.rs`): its sender, and the
//! handling of its acknowledgements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt;

use super::requests::Requests;
use super::slow::SlowLog;
use super::{describe, histogram, record_latency, Load, Progress};
use crate::client::Client;
use crate::grpc::pb;

/// How long the producers wait for the last acknowledgements before giving up.
const DRAIN: Duration = Duration::from_secs(60);

/// The schedule all producers share.
pub(super) struct Plan {
    /// Request tickets handed out so far, over all producers.
    pub(super) next: AtomicU64,
    pub(super) requests: u64,
    pub(super) deadline: Option<Instant>,
    /// Time between two requests of one producer, when paced.
    pub(super) interval: Option<Duration>,
    /// Stamp each record's value with the nanoseconds from `base` to its due time.
    pub(super) stamp: Option<Instant>,
    /// Where acknowledgements slower than its threshold are written (`e2e --slow-log`).
    pub(super) slow: Option<Arc<SlowLog>>,
}

/// State of one producer that its sender and its acknowledgement handling share.
struct Shared {
    latency: Mutex<Histogram<u64>>,
    permits: Semaphore,
    failure: Mutex<Option<String>>,
    records: AtomicU64,
    bytes: AtomicU64,
    slow: Option<Arc<SlowLog>>,
}

impl Shared {
    /// Request `id`, due at `due`, is acknowledged.
    fn acked(&self, due: Instant, id: u64, records: u64, bytes: u64, progress: &Progress) {
        let now = Instant::now();
        record_latency(
            &mut self.latency.lock().expect("not poisoned"),
            now.saturating_duration_since(due),
        );
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        progress.add(records, bytes);
        self.permits.add_permits(1);
        // After the permit: the next request is not held up by the log's write.
        if let Some(slow) = &self.slow {
            slow.note("ack", due, now, id);
        }
    }

    fn fail(&self, message: String) {
        self.failure
            .lock()
            .expect("not poisoned")
            .get_or_insert(message);
        self.permits.close(); // stops the sender
    }
}

/// One producer: sends until the plan runs out, then waits for every acknowledgement.
pub(super) async fn producer(
    client: Client,
    load: Load,
    id: u32,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
) -> Result<(Histogram<u64>, Histogram<u64>, u64, u64), String> {
    let in_flight = load.in_flight.max(1);
    let shared = Arc::new(Shared {
        latency: Mutex::new(histogram()),
        permits: Semaphore::new(in_flight),
        failure: Mutex::new(None),
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        slow: plan.slow.clone(),
    });
    let mut log = client.log();
    let producer = if load.idempotent {
        let answer = log
            .init_producer(pb::InitProducerRequest::default())
            .await
            .map_err(describe)?
            .into_inner();
        Some((answer.producer_id, answer.producer_epoch))
    } else {
        None
    };
    let mut requests = Requests::new(load.clone(), id, producer);
    // Stream mode: requests go into `tx`; a task reads the acknowledgements.
    let due_at = Arc::new(Mutex::new(HashMap::<u64, (Instant, u64)>::new()));
    let (tx, acks) = if load.unary {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel(in_flight);
        let mut replies = log
            .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(describe)?
            .into_inner();
        let (shared, due_at, progress) = (
            Arc::clone(&shared),
            Arc::clone(&due_at),
            Arc::clone(&progress),
        );
        let batch = load.batch as u64;
        let acks = tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(status) => return shared.fail(describe(status)),
                };
                if let Some(pb::produce_stream_response::Result::Error(e)) = reply.result {
                    return shared.fail(format!("produce failed: {}", e.message));
                }
                let Some((due, bytes)) = due_at
                    .lock()
                    .expect("not poisoned")
                    .remove(&reply.correlation_id)
                else {
                    return shared.fail("reply with an unknown correlation id".into());
                };
                shared.acked(due, reply.correlation_id, batch, bytes, &progress);
            }
            // Only we end the stream, after the last acknowledgement; an end before that
            // is the server's.
            shared.fail("the server ended the produce stream early".into());
        });
        (Some(tx), Some(acks))
    };
    // With --exchange: where unary calls publish instead.
    let exchanges = load
        .exchange
        .clone()
        .map(|exchange| (client.exchanges(), exchange, load.routing_key.clone()));
    let started = Instant::now();
    let mut woke = started;
    let mut timer_lateness = histogram();
    for k in 0u64.. {
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.requests {
            break;
        }
        // Paced, the clock starts at the produce call: when the request is due, or when
        // the timer woke us to send it if that was later. tokio's timer has millisecond
        // slots, so at 10,000 requests a second one wake-up sends ten requests, up to a
        // millisecond or two late; that is this client's lateness, not the server's, and
        // it is reported apart (`timer_lateness`). Time the server costs us afterwards
        // (waiting for an in-flight slot, here or for an earlier request, so that we fall
        // behind and do not sleep) counts from the schedule: no coordinated omission.
        // Unpaced, the clock starts when the request is sent.
        let paced = match plan.interval {
            Some(interval) => {
                let scheduled = started + interval.mul_f64(k as f64);
                if scheduled > Instant::now() {
                    tokio::time::sleep_until(scheduled.into()).await;
                    woke = Instant::now();
                    record_latency(&mut timer_lateness, woke - scheduled);
                }
                Some(scheduled.max(woke))
            }
            None => None,
        };
        let Ok(permit) = shared.permits.acquire().await else {
            break; // a failure closed the semaphore
        };
        permit.forget(); // given back when the request is acknowledged
        let due = paced.unwrap_or_else(Instant::now);
        let request = requests.next(n, due, plan.stamp);
        let bytes = requests.payload_bytes(&request);
        match &tx {
            Some(tx) => {
                due_at.lock().expect("not poisoned").insert(n, (due, bytes));
                let message = pb::ProduceStreamRequest {
                    correlation_id: n,
                    request: Some(request),
                };
                if tx.send(message).await.is_err() {
                    shared.fail("the server closed the produce stream".into());
                    break;
                }
            }
            None => {
                let (mut log, shared, progress) =
                    (log.clone(), Arc::clone(&shared), Arc::clone(&progress));
                let publish = exchanges.clone();
                let records = request.records.len() as u64;
                tokio::spawn(async move {
                    let answered = match publish {
                        None => log.produce(request).await.map(drop),
                        Some((mut exchanges, exchange, routing_key)) => exchanges
                            .publish_request(pb::PublishRequest {
                                exchange,
                                routing_key,
                                records: request.records,
                                durability: request.durability,
                                ..Default::default()
                            })
                            .await
                            .map(drop),
                    };
                    match answered {
                        Ok(()) => shared.acked(due, n, records, bytes, &progress),
                        Err(status) => shared.fail(describe(status)),
                    }
                });
            }
        }
    }
    // Every permit back means every request was answered (or a failure closed them).
    let drained = tokio::time::timeout(DRAIN, shared.permits.acquire_many(in_flight as u32)).await;
    if drained.is_err() {
        shared.fail(format!(
            "{} requests still unanswered {} s after the last was sent",
            in_flight - shared.permits.available_permits(),
            DRAIN.as_secs()
        ));
    }
    let failure = shared.failure.lock().expect("not poisoned").take();
    drop(tx);
    if let Some(acks) = acks {
        acks.abort();
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let latency = std::mem::replace(
        &mut *shared.latency.lock().expect("not poisoned"),
        histogram(),
    );
    Ok((
        latency,
        timer_lateness,
        shared.records.load(Ordering::Relaxed),
        shared.bytes.load(Ordering::Relaxed),
    ))
}
