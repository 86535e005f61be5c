//! ProduceStream: a pipeline of produce requests on one stream, appended in the order
//! they were sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::budget::Charge;
use super::code;
use super::produce::prepare;
use super::{pb, produce_response, BoxStream};
use crate::broker::{self, Broker, Unannounced};
use crate::error::Error;

/// Requests of one ProduceStream read and not yet answered to the client, at most.
pub const MAX_UNANSWERED: usize = 256;

/// What a ProduceStream request holds until its response is taken: its turn among the
/// stream's unanswered requests, and its share of the server's produce budget.
type Held = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

fn stream_reply(
    correlation_id: u64,
    result: Result<broker::Produced, Error>,
) -> pb::ProduceStreamResponse {
    let result = match result {
        Ok(p) => pb::produce_stream_response::Result::Response(produce_response(p)),
        Err(e) => pb::produce_stream_response::Result::Error(pb::Error {
            code: code(&e) as i32,
            message: e.to_string(),
        }),
    };
    pb::ProduceStreamResponse {
        correlation_id,
        result: Some(result),
    }
}

/// Answers a ProduceStream: its requests in, its responses out (see `Log::produce_stream`).
pub(super) fn produce_stream<S>(
    broker: Arc<Broker>,
    mut inbound: S,
    charge: Charge,
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
    let (tx, rx) =
        mpsc::channel::<Result<(pb::ProduceStreamResponse, Held), Status>>(MAX_UNANSWERED);
    // Two stages, so that two cores work on one stream: this task decodes and checks
    // each request and encodes its batch; the appender appends them one after another
    // in the order sent (small requests may skip it: below); the waits for fsync run
    // concurrently, so a pipeline of durable requests shares fsyncs.
    let (prepared_tx, mut prepared_rx) =
        mpsc::channel::<Result<(u64, Result<broker::Prepared, Error>, Held), Status>>(4);
    // Requests handed to the appender and not yet through it. A small request that
    // finds none is appended by the reading task itself: order is kept (nothing sent
    // before it is still to be appended), and a record saves the hand-off to the
    // appender's task, a thread wake-up when the appender sleeps on another worker.
    let queued = Arc::new(AtomicUsize::new(0));
    let appender_queued = Arc::clone(&queued);
    let inline_tx = tx.clone();
    tokio::spawn(async move {
        let mut burst = Burst::default();
        loop {
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
            // Nothing is held while this task waits: a burst ends before any wait.
            let turn = match Arc::clone(&unanswered).try_acquire_owned() {
                Ok(turn) => turn,
                Err(_) => {
                    burst.end(&inline_tx).await;
                    match Arc::clone(&unanswered).acquire_owned().await {
                        Ok(turn) => turn,
                        Err(_) => break,
                    }
                }
            };
            let next = match inbound.next().now_or_never() {
                Some(next) if !burst.full() => next,
                next => {
                    burst.end(&inline_tx).await;
                    match next {
                        Some(next) => next,
                        None => inbound.next().await,
                    }
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                // A message that does not decode ends the stream with its status
                // (INVALID_ARGUMENT), rather than with a silent OK.
                Some(Err(status)) => {
                    burst.end(&inline_tx).await;
                    let _ = prepared_tx.send(Err(status)).await;
                    break;
                }
                None => break,
            };
            let held = (turn, charge.take_next());
            let prepared = match message.request {
                Some(request) => prepare(&broker, request),
                None => Err(Error::InvalidArgument(
                    "ProduceStreamRequest.request is missing".into(),
                )),
            };
            let small = prepared
                .as_ref()
                .is_ok_and(|p| p.len_bytes() < APPEND_IN_READER_BYTES);
            if small && queued.load(Ordering::Acquire) == 0 {
                burst
                    .append(message.correlation_id, prepared, held, &inline_tx)
                    .await;
                continue;
            }
            // Replies held in the burst go first: they answer earlier requests.
            burst.end(&inline_tx).await;
            queued.fetch_add(1, Ordering::AcqRel);
            if prepared_tx
                .send(Ok((message.correlation_id, prepared, held)))
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
        while let Some(item) = prepared_rx.recv().await {
            let (id, prepared, held) = match item {
                Ok(item) => item,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            one.append(id, prepared, held, &tx).await;
            one.end(&tx).await;
            // Only now, with the reply queued: the reading task may then append and
            // answer a later request itself, after this one in both the log and the
            // replies.
            appender_queued.fetch_sub(1, Ordering::AcqRel);
        }
    });
    // A response's turn and budget are given back when tonic takes it to send.
    let replies = ReceiverStream::new(rx).map(|item| item.map(|(reply, _held)| reply));
    Box::pin(replies)
}

/// Below this size, a ProduceStream request that finds the appender idle is appended
/// by the task that read it. Measured (BENCHMARKS.md, "a small ProduceStream request"):
/// at one to ten records a request this saves 7-18% of the server's CPU; at 50 KB of
/// 100-byte records, 8 in flight, the stream lost 14% of its throughput, the decoding
/// of the next request no longer overlapping the append. Not to be confused with the
/// partition's `INLINE_APPEND_BYTES` (appends on the worker rather than a blocking
/// thread).
const APPEND_IN_READER_BYTES: usize = 16 << 10;

/// A burst is the small requests this stream's reading task finds already received,
/// one after another, and appends itself. Their replies, and the wake-up of the
/// partitions' subscriptions, wait for the burst's end: the next request not yet
/// received, a request for the appender, or the limits below. So a subscription is
/// woken once and reads the burst's records together, and the replies go out
/// together, instead of two tasks woken (often on the other worker) for every request.
#[derive(Default)]
struct Burst {
    replies: Vec<(pb::ProduceStreamResponse, Held)>,
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
        prepared: Result<broker::Prepared, Error>,
        held: Held,
        tx: &mpsc::Sender<Result<(pb::ProduceStreamResponse, Held), Status>>,
    ) {
        self.requests += 1;
        let appended = match prepared {
            Ok(prepared) => {
                self.bytes += prepared.len_bytes();
                prepared.append_unannounced(&mut self.unannounced).await
            }
            Err(err) => Err(err),
        };
        match appended {
            // Its reply comes after the fsync, on a task of its own, and so after the
            // replies held for earlier requests: they go first.
            Ok(appended) if appended.needs_sync() => {
                self.send_replies(tx).await;
                reply_when_durable(id, appended, held, tx);
            }
            Ok(appended) => {
                let reply = stream_reply(id, appended.durable().await);
                self.replies.push((reply, held));
            }
            Err(err) => self.replies.push((stream_reply(id, Err(err)), held)),
        }
    }

    /// Sends the replies held and wakes the subscriptions.
    async fn end(&mut self, tx: &mpsc::Sender<Result<(pb::ProduceStreamResponse, Held), Status>>) {
        self.send_replies(tx).await;
        self.unannounced.announce();
        self.requests = 0;
        self.bytes = 0;
    }

    /// A send never waits: the channel has room for every unanswered request.
    async fn send_replies(
        &mut self,
        tx: &mpsc::Sender<Result<(pb::ProduceStreamResponse, Held), Status>>,
    ) {
        for reply in self.replies.drain(..) {
            let _ = tx.send(Ok(reply)).await;
        }
    }
}

/// Queues a durable request's reply once its batch is on disk. The wait runs on a task
/// of its own (at most MAX_UNANSWERED of them), so that later requests are appended
/// meanwhile and share the next fsync.
fn reply_when_durable(
    id: u64,
    appended: broker::Appended,
    held: Held,
    tx: &mpsc::Sender<Result<(pb::ProduceStreamResponse, Held), Status>>,
) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let reply = stream_reply(id, appended.durable().await);
        let _ = tx.send(Ok((reply, held))).await;
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::broker::Limits;

    /// Both ways a request is appended (by the reading task, and by the appender for
    /// larger ones) stop reading once MAX_UNANSWERED replies wait for the client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_produce_stream_whose_replies_are_not_taken_stops_reading_requests() {
        for size in [1, APPEND_IN_READER_BYTES + 1] {
            let dir = tempfile::tempdir().unwrap();
            let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
            let config = [("durability".to_string(), "fsync".to_string())].into();
            broker.create_topic("t", 1, &config).await.unwrap();
            // An endless client, counting the requests the server has pulled.
            let pulled = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&pulled);
            let value = Bytes::from(vec![b'x'; size]);
            let requests = tokio_stream::iter(0u64..).map(move |id| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(pb::ProduceStreamRequest {
                    correlation_id: id,
                    request: Some(pb::ProduceRequest::decode_from(
                        "t",
                        &pb::Record {
                            value: value.clone(),
                            ..Default::default()
                        },
                    )),
                })
            });
            // The replies are never taken.
            let replies = produce_stream(broker, Box::pin(requests), Charge::default());
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let taken = pulled.load(Ordering::Relaxed);
            assert!(
                taken <= MAX_UNANSWERED as u64 + 2,
                "{size}-byte values: {taken} requests pulled while no reply was taken"
            );
            drop(replies);
        }
    }

    /// A durable request in a burst is answered after the requests sent before it, even
    /// when its fsync ends while the burst would still hold their replies: here the
    /// stream's poll for the next request blocks for 300 ms and then returns it, so the
    /// reading task never sees Pending and the burst goes on meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_request_in_a_burst_is_answered_after_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let config = [("durability".to_string(), "page_cache".to_string())].into();
        broker.create_topic("t", 1, &config).await.unwrap();
        let requests = tokio_stream::iter(0u64..8).map(|id| {
            if id == 4 {
                // Blocks the reading task in its poll, so the burst goes on; the
                // worker's queue, where the fsync's reply task waits, moves to another
                // thread meanwhile.
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(300)));
            }
            let mut request = pb::ProduceRequest::decode_from(
                "t",
                &pb::Record {
                    value: Bytes::from(vec![b'x'; 10]),
                    ..Default::default()
                },
            );
            if id == 3 {
                request.durability = pb::Durability::Fsync as i32;
            }
            Ok(pb::ProduceStreamRequest {
                correlation_id: id,
                request: Some(request),
            })
        });
        let replies = produce_stream(broker, Box::pin(requests), Charge::default());
        let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(10), replies.collect())
            .await
            .expect("every request answered");
        let order: Vec<u64> = replies
            .into_iter()
            .map(|reply| reply.unwrap().correlation_id)
            .collect();
        let durable = order.iter().position(|&id| id == 3).unwrap();
        let mut earlier = order[..durable].to_vec();
        earlier.sort_unstable();
        assert_eq!(earlier, [0, 1, 2], "replies in the order {order:?}");
    }

    /// A client that sends without pause, to a stream whose replies nobody takes (they
    /// are dropped, so every turn comes back at once): the reading task must still let
    /// the other tasks of its thread run. On a one-thread runtime, a sleep of the test
    /// itself ends only if it does; the test runs on a thread of its own so that a
    /// task that never yields fails it rather than hanging it.
    #[test]
    fn a_stream_that_never_waits_still_yields_its_thread() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
                let config = [("durability".to_string(), "page_cache".to_string())].into();
                broker.create_topic("t", 1, &config).await.unwrap();
                let request = pb::ProduceRequest::decode_from(
                    "t",
                    &pb::Record {
                        value: Bytes::from_static(b"endless"),
                        ..Default::default()
                    },
                );
                let requests = tokio_stream::iter(0u64..).map(move |id| {
                    Ok(pb::ProduceStreamRequest {
                        correlation_id: id,
                        request: Some(request.clone()),
                    })
                });
                drop(produce_stream(
                    broker,
                    Box::pin(requests),
                    Charge::default(),
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            });
            drop(runtime);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(20))
            .expect("the test's sleep ended and the runtime shut down");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_message_that_does_not_decode_ends_the_stream_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let requests = tokio_stream::iter(vec![Err(Status::invalid_argument("not protobuf"))]);
        let mut replies = produce_stream(broker, Box::pin(requests), Charge::default());
        let ended = replies.next().await.expect("a final item");
        assert_eq!(ended.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
