//! ProduceStream: a pipeline of produce requests on one stream, appended in the order
//! they were sent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::auth::{Access, Kind, Operation};
use super::budget::Charge;
use super::produce::prepare;
use super::quota::{Owed, Quota};
use super::{pb, produce_response, BoxStream};
use crate::broker::{self, Broker, Unannounced};
use crate::error::Error;

/// Requests of one ProduceStream read and not yet answered to the client, at most.
pub const MAX_UNANSWERED: usize = 256;

/// What a ProduceStream request holds until it is answered: its turn among the
/// stream's unanswered requests, and its share of the server's produce budget.
type Held = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

/// What an answered request's reply holds until the client takes it: only its turn.
/// The budget share goes back as the reply is made (the request's memory is gone by
/// then), not when the client takes it: a client that never reads its replies would
/// otherwise hold the server-wide budget, and stop every producer on the server.
type Turn = OwnedSemaphorePermit;

/// A reply, with the turn it holds until the client takes it.
type Reply = (pb::ProduceStreamResponse, Turn);

fn answered(reply: pb::ProduceStreamResponse, (turn, _budget): Held) -> Reply {
    (reply, turn)
}

fn stream_reply(
    correlation_id: u64,
    result: Result<broker::Produced, Error>,
) -> pb::ProduceStreamResponse {
    let result = match result {
        Ok(p) => pb::produce_stream_response::Result::Response(produce_response(p)),
        Err(e) => pb::produce_stream_response::Result::Error(super::stream_error(e)),
    };
    pb::ProduceStreamResponse {
        correlation_id,
        result: Some(result),
    }
}

/// Answers a ProduceStream: its requests in, its responses out (see `Log::produce_stream`).
/// Each request is checked against `access` as it is read: a grant taken away (a new
/// acl read on SIGHUP) refuses the requests read after it, each with PERMISSION_DENIED.
pub(super) fn produce_stream<S>(
    broker: Arc<Broker>,
    mut inbound: S,
    charge: Charge,
    (access, quota): (Access, Option<Quota>),
) -> BoxStream<pb::ProduceStreamResponse>
where
    S: Stream<Item = Result<pb::ProduceStreamRequest, Status>> + Send + Unpin + 'static,
{
    // Push back: a request is read only while fewer than MAX_UNANSWERED of this
    // stream's requests are unanswered (being appended, waiting for an fsync, or
    // answered but not yet taken by the client). A client that stops reading its
    // responses stops the server reading its requests, instead of making it hold
    // every request it sends.
    let unanswered = Arc::new(Semaphore::new(MAX_UNANSWERED));
    // Room for every unanswered request's reply: a send never waits, so neither the
    // reading task's own appends nor the appender stall on a client slow to read.
    let (tx, rx) = mpsc::channel::<Reply>(MAX_UNANSWERED);
    // Two stages, so that two cores work on one stream: this task decodes and checks
    // each request and encodes its batch; the appender appends them one after another
    // in the order sent (small requests may skip it: below); the waits for fsync run
    // concurrently, so a pipeline of durable requests shares fsyncs.
    let (prepared_tx, mut prepared_rx) =
        mpsc::channel::<(u64, (Result<broker::Prepared, Error>, Owed), Held)>(4);
    // Requests handed to the appender and not yet through it. A request that finds
    // none is appended by the reading task itself if it is small, or if it is large and
    // no request has arrived after it (`alone`): order is kept (nothing sent before it
    // is still to be appended), and it saves the hand-off to the appender's task, a
    // thread wake-up when the appender sleeps on another worker, where a large
    // request's bytes would then be read again from the other core's cache.
    let queued = Arc::new(AtomicUsize::new(0));
    let appender_queued = Arc::clone(&queued);
    let inline_tx = tx.clone();
    // A stopping server reads no more of the stream: the requests read are answered,
    // then the stream ends with UNAVAILABLE (`stopped`), so that a client that keeps
    // its side open does not hold up the stop.
    let mut stopping = broker.shutting_down();
    let stopped = Arc::new(AtomicBool::new(false));
    let reader_stopped = Arc::clone(&stopped);
    // The status a message that did not decode ends the stream with: sent after every
    // reply, as the stop's is, since requests read before it are still appended (and
    // a durable one's reply comes when its fsync ends: sent at once, the status ended
    // the stream before those replies, and a client not idempotent would send their
    // stored records again).
    let ending = Arc::new(std::sync::Mutex::new(None::<Status>));
    let reader_ending = Arc::clone(&ending);
    tokio::spawn(async move {
        let mut burst = Burst::default();
        // A request read ahead, with its turn, to learn whether one had arrived (below).
        let mut ahead = None;
        loop {
            // A request read ahead is handled first: every request read is answered
            // (once the stop has begun, with UNAVAILABLE by `prepare`).
            if ahead.is_none() && *stopping.borrow() {
                reader_stopped.store(true, Ordering::Release);
                break;
            }
            // This loop may find every request already received and every append inline:
            // nothing in it need return Pending (`now_or_never` even hides the request
            // stream's own yields). So it spends tokio's cooperative budget itself, and
            // yields when that is gone, as any task must, or it would keep its worker
            // from every other task, and the runtime from shutting down, for as long as
            // a client sends. A burst ends before the yield.
            if !tokio::task::coop::has_budget_remaining() {
                burst.end(&inline_tx).await;
            }
            tokio::task::coop::consume_budget().await;
            let (turn, next) = match ahead.take() {
                Some(ahead) => ahead,
                None => match next_request(
                    &unanswered,
                    &mut inbound,
                    &mut burst,
                    &inline_tx,
                    &mut stopping,
                )
                .await
                {
                    Some(next) => next,
                    None => {
                        reader_stopped.store(true, Ordering::Release);
                        break;
                    }
                },
            };
            let message = match next {
                Some(Ok(message)) => message,
                // A message that does not decode ends the stream with its status
                // (INVALID_ARGUMENT), rather than with a silent OK.
                Some(Err(status)) => {
                    *reader_ending.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    break;
                }
                None => break,
            };
            let held = (turn, charge.take_next());
            let wire = quota
                .as_ref()
                .map(|_| prost::Message::encoded_len(&message));
            let prepared = match message.request {
                Some(request) => access
                    .check(Operation::Write, Kind::Topic, &request.topic)
                    .and_then(|()| prepare(&broker, request)),
                None => Err(Error::InvalidArgument(
                    "ProduceStreamRequest.request is missing".into(),
                )),
            };
            let owed = match &prepared {
                Ok(prepared) => Owed::of(quota.as_ref().zip(wire), prepared),
                Err(_) => Owed::default(),
            };
            let len = prepared.as_ref().map_or(0, |p| p.len_bytes());
            let small = prepared.is_ok() && len < APPEND_IN_READER_BYTES;
            let large = len >= ALONE_AT_LEAST_BYTES;
            if queued.load(Ordering::Acquire) == 0
                && (small || (large && alone(&unanswered, &mut inbound, &mut ahead)))
            {
                let prepared = (prepared, owed);
                burst
                    .append(message.correlation_id, prepared, held, &inline_tx)
                    .await;
                continue;
            }
            // Replies held in the burst go first: they answer earlier requests.
            burst.end(&inline_tx).await;
            queued.fetch_add(1, Ordering::AcqRel);
            if prepared_tx
                .send((message.correlation_id, (prepared, owed), held))
                .await
                .is_err()
            {
                break;
            }
        }
        // The client closed its side or went away: requests already read are still
        // appended and answered if the client is listening.
        burst.end(&inline_tx).await;
    });
    tokio::spawn(async move {
        // The appender's requests are each a burst of one, ended at once.
        let mut one = Burst::default();
        while let Some((id, prepared, held)) = prepared_rx.recv().await {
            one.append(id, prepared, held, &tx).await;
            one.end(&tx).await;
            // Only now, with the reply queued: the reading task may then append and
            // answer a later request itself, after this one in both the log and the
            // replies.
            appender_queued.fetch_sub(1, Ordering::AcqRel);
        }
    });
    // A reply's turn is given back when HTTP/2 takes it to send (its budget share went
    // back when it was made, `answered`). The channel ends once every reply is sent
    // (every sender gone): then the status of a stop, if the server stopped reading, or
    // of a message that did not decode.
    let replies = ReceiverStream::new(rx).map(|(reply, _turn)| Ok(reply));
    let status = futures_util::stream::once(async move {
        if stopped.load(Ordering::Acquire) {
            return Some(Err(Status::unavailable(
                "server shutting down: requests not answered on this stream were not \
                 appended; send them again after reconnecting",
            )));
        }
        let ending = ending.lock().unwrap_or_else(|e| e.into_inner()).take();
        ending.map(Err)
    })
    .filter_map(|status| status);
    Box::pin(replies.chain(status))
}

/// A message read from a ProduceStream with its turn among the unanswered requests;
/// `None` for the message: the client ended the stream.
type Next = (
    OwnedSemaphorePermit,
    Option<Result<pb::ProduceStreamRequest, Status>>,
);

/// Waits for a turn and the next message; None once the server is stopping (or the
/// stream's turns are closed, which they never are). Nothing is held while it waits:
/// the burst ends before any wait.
async fn next_request<S>(
    unanswered: &Arc<Semaphore>,
    inbound: &mut S,
    burst: &mut Burst,
    tx: &mpsc::Sender<Reply>,
    stopping: &mut watch::Receiver<bool>,
) -> Option<Next>
where
    S: Stream<Item = Result<pb::ProduceStreamRequest, Status>> + Unpin,
{
    let turn = match Arc::clone(unanswered).try_acquire_owned() {
        Ok(turn) => turn,
        Err(_) => {
            burst.end(tx).await;
            tokio::select! {
                turn = Arc::clone(unanswered).acquire_owned() => turn.ok()?,
                _ = stopping.wait_for(|stopping| *stopping) => return None,
            }
        }
    };
    let next = match inbound.next().now_or_never() {
        Some(next) if !burst.full() => next,
        next => {
            burst.end(tx).await;
            match next {
                Some(next) => next,
                None => tokio::select! {
                    next = inbound.next() => next,
                    _ = stopping.wait_for(|stopping| *stopping) => return None,
                },
            }
        }
    };
    Some((turn, next))
}

/// Whether no request has arrived after the one in hand, so that handing it to the
/// appender would gain no overlap: nothing is there to decode meanwhile (at one
/// request in flight, never). A request that has arrived is read, with a turn of its
/// own, into `ahead`, and is the next one handled. With no turn left, nothing more
/// would be read before a reply is taken either: true.
fn alone<S>(unanswered: &Arc<Semaphore>, inbound: &mut S, ahead: &mut Option<Next>) -> bool
where
    S: Stream<Item = Result<pb::ProduceStreamRequest, Status>> + Unpin,
{
    let Ok(turn) = Arc::clone(unanswered).try_acquire_owned() else {
        return true;
    };
    match inbound.next().now_or_never() {
        None => true,
        Some(next) => {
            let ended = next.is_none();
            *ahead = Some((turn, next));
            ended
        }
    }
}

/// Below this size, a ProduceStream request that finds the appender idle is appended
/// by the task that read it. Measured (BENCHMARKS.md, "a small ProduceStream request"):
/// at one to ten records a request this saves 7-18% of the server's CPU; at 50 KB of
/// 100-byte records, 8 in flight, the stream lost 14% of its throughput, the decoding
/// of the next request no longer overlapping the append. Not to be confused with the
/// partition's `INLINE_APPEND_BYTES` (appends on the worker rather than a blocking
/// thread).
const APPEND_IN_READER_BYTES: usize = 16 << 10;

/// From this size, a request that finds the appender idle is appended by the reading
/// task when no request has arrived after it (`alone`): there is no decoding to
/// overlap, and handing it over would have another core read its bytes again.
/// Measured (BENCHMARKS.md, "A large request with nothing after it"): 1 MB requests
/// one in flight went a quarter faster; 50 KB requests of 100-byte records, 8 in
/// flight, lost 7-8% when the rule applied to them, the next request's decoding
/// (which `alone` does to find it) delaying the hand-off of the one in hand. Sizes
/// between were not measured.
const ALONE_AT_LEAST_BYTES: usize = 256 << 10;

/// A burst is the requests this stream's reading task appends itself, one after
/// another: small ones it finds already received, and a large one with nothing
/// after it (which fills a burst at once, so its reply goes out before the task waits
/// for the next request). Their replies, and the wake-up of the
/// partitions' subscriptions, wait for the burst's end: the next request not yet
/// received, a request for the appender, or the limits below. So a subscription is
/// woken once and reads the burst's records together, and the replies go out
/// together, instead of two tasks woken (often on the other worker) for every request.
#[derive(Default)]
struct Burst {
    replies: Vec<Reply>,
    unannounced: Unannounced,
    requests: usize,
    bytes: usize,
}

/// A burst ends once it has this many requests or bytes, whichever comes first, so
/// that its first reply waits for at most about this much appending.
const BURST_REQUESTS: usize = 32;
const BURST_BYTES: usize = 64 << 10;

impl Burst {
    fn full(&self) -> bool {
        self.requests >= BURST_REQUESTS || self.bytes >= BURST_BYTES
    }

    async fn append(
        &mut self,
        id: u64,
        (prepared, owed): (Result<broker::Prepared, Error>, Owed),
        held: Held,
        tx: &mpsc::Sender<Reply>,
    ) {
        self.requests += 1;
        let appended = match prepared {
            Ok(prepared) => {
                self.bytes += prepared.len_bytes();
                prepared.append_unannounced(&mut self.unannounced).await
            }
            Err(err) => Err(err),
        };
        if let Ok(appended) = &appended {
            owed.pay(appended);
        }
        match appended {
            // Its reply comes after the fsync, on a task of its own, and so after the
            // replies held for earlier requests: they go first.
            Ok(appended) if appended.needs_sync() => {
                self.send_replies(tx).await;
                reply_when_durable(id, appended, held, tx);
            }
            Ok(appended) => {
                let reply = stream_reply(id, appended.durable().await);
                self.replies.push(answered(reply, held));
            }
            Err(err) => self
                .replies
                .push(answered(stream_reply(id, Err(err)), held)),
        }
    }

    /// Sends the replies held and wakes the subscriptions.
    async fn end(&mut self, tx: &mpsc::Sender<Reply>) {
        self.send_replies(tx).await;
        self.unannounced.announce();
        self.requests = 0;
        self.bytes = 0;
    }

    /// A send never waits: the channel has room for every unanswered request.
    async fn send_replies(&mut self, tx: &mpsc::Sender<Reply>) {
        for reply in self.replies.drain(..) {
            let _ = tx.send(reply).await;
        }
    }
}

/// Queues a durable request's reply once its batch is on disk. The wait runs on a task
/// of its own (at most MAX_UNANSWERED of them), so that later requests are appended
/// meanwhile and share the next fsync.
fn reply_when_durable(id: u64, appended: broker::Appended, held: Held, tx: &mpsc::Sender<Reply>) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let reply = stream_reply(id, appended.durable().await);
        let _ = tx.send(answered(reply, held)).await;
    });
}

#[cfg(test)]
#[path = "produce_stream_tests.rs"]
mod tests;
