//! Server-wide budgets of request bytes in flight, taken before a request is decoded.
//!
//! tonic reads and decodes a request body before the handler runs, so a budget taken in
//! the handler would come after the memory is spent. This layer sits in front: it reads
//! the 5-byte gRPC prefix of each message as the body streams in, and passes the
//! message's bytes on only once the budget has room for it. While the budget is spent,
//! bodies are not read, HTTP/2 flow control stops the clients, and the server's memory
//! stays where it is: the server pushes back instead of growing.
//!
//! Two budgets, so that one kind of request cannot starve the other:
//! - Produce, ProduceStream and Publish messages are charged to the produce budget, each
//!   `COST_FACTOR` times its wire size (its receive buffer, the records it copies while
//!   decoding, and the batch it becomes). The charge goes into the request's `Charge`,
//!   which the handler holds until the message is answered.
//! - A unary request of any other call whose message is `FREE_BELOW` or more is charged
//!   its wire size to the request budget, from its prefix until the request's body
//!   ends or fails (tonic has gathered and decoded it by then). Group commits, admin
//!   calls and the like may be megabytes, and clients that sent all but the last bytes
//!   of many had the server hold them all, for as long as they stayed connected (32
//!   commits of 16 MB: 541 MB; now 160 MB, the rest waiting in HTTP/2's windows of
//!   4 MiB a stream). Smaller requests (heartbeats, acknowledgements) pass uncharged,
//!   so that large ones waiting for the budget never hold them up; so do the streams
//!   of `STREAMS`, and Fetch and Subscribe on the Log service's own path (`direct`),
//!   which reads at most 64 KiB of them.
//!
//! A produce message whose client is over its quota (`quota/`) waits for its turn
//! before it waits for the budget, so that a throttled client holds none of it.
//!
//! A charge is clamped to the whole budget, so that one large message can still be
//! read, alone. A charged message, or a charged unary request's end, must arrive within
//! `MESSAGE_DEADLINE` of the grant, and its bytes must keep coming (no pause of
//! `MESSAGE_IDLE` or more), else the call fails with RESOURCE_EXHAUSTED and its charge
//! goes. Charges are granted first come first served from a length prefix, so a client
//! can hold what it announces without sending it; the idle limit keeps that to seconds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tonic::body::Body;

use super::quota::{Flow, Quota, SLICE};
use super::request_limits::{too_large, RequestLimits};

/// How many times its wire size a produce message is charged.
pub const COST_FACTOR: usize = 3;

/// Paths whose messages are charged to the produce budget.
const CHARGED: [&str; 3] = [
    "/strom.v1.Log/Produce",
    PRODUCE_STREAM,
    "/strom.v1.Exchanges/Publish",
];
const PRODUCE_STREAM: &str = "/strom.v1.Log/ProduceStream";

/// Messages of other requests smaller than this are not charged.
pub const FREE_BELOW: usize = 64 << 10;

/// Paths whose requests are streams of messages, besides ProduceStream: not charged.
/// Each message is bounded by its service's limit (ShareStream's 1 MiB, reflection's
/// 64 KiB), and a stream holds about one at a time, as HTTP/2 holds up to a stream
/// window (4 MiB) of any stream; a charge held between a stream's messages would let
/// idle streams take the budget. `the_uncharged_streams_are_every_client_stream`
/// checks the list against the services' descriptors.
const STREAMS: [&str; 3] = [
    "/strom.v1.Queues/ShareStream",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The budget taken by one request's messages, in the order they arrived. The handler
/// takes one per message it has decoded and drops it once it has answered that message.
#[derive(Clone, Default)]
pub struct Charge(Arc<Mutex<VecDeque<OwnedSemaphorePermit>>>);

impl Charge {
    pub(super) fn push(&self, permit: OwnedSemaphorePermit) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(permit);
    }

    /// The charge of the next message decoded from this request.
    pub fn take_next(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

/// The layer, holding the server's two budgets and its request size limits.
#[derive(Clone)]
pub struct BudgetLayer {
    produce: Pool,
    requests: Pool,
    /// For streams, whose messages are only held to their limit.
    uncharged: Pool,
    limits: RequestLimits,
}

/// One budget.
#[derive(Clone)]
struct Pool {
    semaphore: Arc<Semaphore>,
    total: usize,
    /// Messages smaller than this are passed on uncharged.
    free_below: usize,
    /// How many times its wire size a message is charged.
    factor: usize,
    /// What its messages are, for the error of one that never arrives.
    what: &'static str,
}

impl Pool {
    fn in_use(&self) -> (usize, usize) {
        let free = self.semaphore.available_permits().min(self.total);
        (self.total - free, self.total)
    }

    /// A budget of `bytes` (at most `u32::MAX`, a semaphore's largest single charge).
    fn new(bytes: usize, free_below: usize, factor: usize, what: &'static str) -> Pool {
        let total = bytes.clamp(1, u32::MAX as usize);
        Pool {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
            free_below,
            factor,
            what,
        }
    }
}

impl BudgetLayer {
    /// The produce budget's bytes charged now, and its size.
    pub fn produce_in_use(&self) -> (usize, usize) {
        self.produce.in_use()
    }

    /// The request budget's bytes charged now, and its size.
    pub fn requests_in_use(&self) -> (usize, usize) {
        self.requests.in_use()
    }

    /// Charges a produce request read outside HTTP/2 (the Kafka listener's, `kafka/`)
    /// to the produce budget, `COST_FACTOR` times its `bytes` and clamped to the whole
    /// budget, as a Produce message is; waits for room. The charge lasts as long as the
    /// permit.
    pub async fn charge_produce(&self, bytes: usize) -> OwnedSemaphorePermit {
        let cost = bytes
            .saturating_mul(self.produce.factor)
            .min(self.produce.total);
        Arc::clone(&self.produce.semaphore)
            .acquire_many_owned(cost as u32)
            .await
            .expect("the budget's semaphore is never closed")
    }

    /// A produce budget of `produce_bytes` and a budget of `request_bytes` for the rest;
    /// messages over `limits` are refused.
    pub fn new(produce_bytes: usize, request_bytes: usize, limits: RequestLimits) -> BudgetLayer {
        BudgetLayer {
            produce: Pool::new(produce_bytes, 0, COST_FACTOR, "produce"),
            requests: Pool::new(request_bytes, FREE_BELOW, 1, "request"),
            uncharged: Pool::new(1, usize::MAX, 1, "stream"),
            limits,
        }
    }
}

impl<S> tower_layer::Layer<S> for BudgetLayer {
    type Service = Budget<S>;
    fn layer(&self, inner: S) -> Budget<S> {
        Budget {
            inner,
            budget: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Budget<S> {
    inner: S,
    budget: BudgetLayer,
}

impl<S> tower_service::Service<http::Request<Body>> for Budget<S>
where
    S: tower_service::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if super::direct::reads_small_requests(&request) {
            return self.inner.call(request); // it checks its own limit
        }
        let path = request.uri().path().to_string();
        let rules = Rules {
            max_message: self.budget.limits.of(&path),
            // Every call's request is one message but ProduceStream's and STREAMS'.
            single: path != PRODUCE_STREAM && !STREAMS.contains(&path.as_str()),
            path,
        };
        let path = rules.path.as_str();
        let mut quota = None;
        let (pool, keep) = if CHARGED.contains(&path) {
            let charge = Charge::default();
            request.extensions_mut().insert(charge.clone());
            quota = super::quota::of(request.extensions());
            (&self.budget.produce, Keep::Each(charge))
        } else if STREAMS.contains(&path) {
            (&self.budget.uncharged, Keep::Each(Charge::default()))
        } else {
            (&self.budget.requests, Keep::UntilEnd(None))
        };
        let pool = pool.clone();
        request = request.map(|body| {
            let mut body = BudgetBody::new(body, pool, keep, rules);
            body.quota = quota;
            Body::new(body)
        });
        self.inner.call(request)
    }
}

/// How long the rest of a message may take to arrive once its charge is granted.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);

/// The longest pause in a granted message's bytes: a client that announces a large
/// message and then sends nothing holds the budget for no longer than this, where it
/// held it for `MESSAGE_DEADLINE` (two announced 60 MB messages stopped every produce
/// for 30 s). A pause of this body's own reading (its handler busy) does not count: the
/// clock restarts at every read that brings bytes, and the client's bytes wait in the
/// stream's window meanwhile. A connection's window filled by other calls' unread
/// messages does: more than 16 produce calls waiting for the budget on one connection
/// can stop the granted message's bytes, which then fails after this pause (the README
/// says to spread large produces over connections).
pub const MESSAGE_IDLE: Duration = Duration::from_secs(5);

/// What a call's request body may hold.
struct Rules {
    /// The largest message passed on; a longer one is refused from its prefix.
    max_message: usize,
    /// One message exactly (every call's but the client streams').
    single: bool,
    /// The call, for the errors.
    path: String,
}

/// Where a body keeps the charges it was granted.
enum Keep {
    /// Each message's, for the handler to take (produce: held until answered).
    Each(Charge),
    /// The one message's, held until the body ends (or goes): tonic reads the end of a
    /// unary request after its message, with no deadline of its own, and holds the
    /// message until then.
    UntilEnd(Option<OwnedSemaphorePermit>),
}

impl Keep {
    fn granted(&mut self, permit: OwnedSemaphorePermit) {
        match self {
            Keep::Each(charge) => charge.push(permit),
            Keep::UntilEnd(held) => *held = Some(permit),
        }
    }

    /// The body has ended, or failed.
    fn ended(&mut self) {
        if let Keep::UntilEnd(held) = self {
            *held = None;
        }
    }
}

/// A request body that passes the bytes of each message on only once that message's
/// charge is granted. Bytes of messages already granted are never held back, so one
/// message waiting for the budget cannot keep an earlier one from being answered.
struct BudgetBody {
    inner: Body,
    /// The budget charged, and its semaphore as the body polls it.
    pool: Pool,
    semaphore: PollSemaphore,
    keep: Keep,
    rules: Rules,
    /// Bytes of the gRPC prefix (flag, then big-endian length) read so far.
    prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    in_message: usize,
    /// Messages whose prefix has been read.
    messages: usize,
    /// Bytes read from the client and not yet passed on.
    pending: Option<Bytes>,
    /// The charge the message whose prefix was just passed on waits for.
    waiting: Option<usize>,
    /// The client's produce quota (produce messages only). A message waits for its
    /// client's turn, and is charged to the quota then (`turned`), before it waits for
    /// the budget, so that a throttled client holds none of the budget; one given up
    /// before it is let in is given back.
    quota: Option<Quota>,
    throttle: Option<Pin<Box<Sleep>>>,
    /// When the message began to wait for its turn, if it had to, and how long it may:
    /// its bytes wait in the server's HTTP/2 windows meanwhile, so not for ever.
    turn_began: Option<Instant>,
    turn_allowed: Duration,
    turned: bool,
    /// The length of the message whose prefix was read last.
    announced: usize,
    /// The last byte of that prefix, passed on once the charge is granted: a reader
    /// that has not seen the whole prefix cannot take a message (an empty one, say)
    /// before its charge exists, and so take another message's charge.
    held: Option<Bytes>,
    /// When the message being received fails: `allowed` after its grant, or `idle`
    /// after the last bytes came, whichever is first.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When the message being received was granted its charge, and when its bytes last
    /// came: the deadline is moved only when it fires (moving a timer at every frame
    /// takes the timer driver's lock each time).
    granted_at: Instant,
    last_bytes: Instant,
    allowed: Duration,
    idle: Duration,
}

impl BudgetBody {
    fn new(inner: Body, pool: Pool, keep: Keep, rules: Rules) -> BudgetBody {
        BudgetBody {
            inner,
            semaphore: PollSemaphore::new(Arc::clone(&pool.semaphore)),
            pool,
            keep,
            rules,
            prefix: Vec::with_capacity(5),
            in_message: 0,
            messages: 0,
            pending: None,
            waiting: None,
            quota: None,
            throttle: None,
            turn_began: None,
            turn_allowed: MESSAGE_DEADLINE,
            turned: false,
            announced: 0,
            held: None,
            deadline: None,
            granted_at: Instant::now(),
            last_bytes: Instant::now(),
            allowed: MESSAGE_DEADLINE,
            idle: MESSAGE_IDLE,
        }
    }

    /// When the message being received fails: `idle` after its bytes last came, never
    /// later than `allowed` after its grant.
    fn due(&self) -> Instant {
        (self.last_bytes + self.idle).min(self.granted_at + self.allowed)
    }

    /// Waits until the client of a produce message owes nothing for produce, and
    /// charges it the message then (`Quota::try_take`; no wait without a quota), in
    /// sleeps of at most `SLICE`: its rate is read again after each, so that a reload
    /// applies. A turn that has not come within `turn_allowed` fails the call.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        let Some(quota) = &self.quota else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if let Some(throttle) = self.throttle.as_mut() {
                ready!(throttle.as_mut().poll(cx));
            }
            // A graceful stop does not wait for a throttled client's turn: seen within
            // a `SLICE`.
            if quota.stopping() {
                self.throttle = None;
                if let Some(began) = self.turn_began.take() {
                    quota.note_wait(Flow::Produce, began.elapsed());
                }
                return Poll::Ready(Err(tonic::Status::unavailable(
                    "the server is stopping: send the message again, to another server or once it is back",
                )));
            }
            let wait = quota.try_take(Flow::Produce, self.announced);
            if wait.is_zero() {
                self.throttle = None;
                if let Some(began) = self.turn_began.take() {
                    quota.note_wait(Flow::Produce, began.elapsed());
                }
                return Poll::Ready(Ok(()));
            }
            let began = *self.turn_began.get_or_insert_with(Instant::now);
            let left = self.turn_allowed.saturating_sub(began.elapsed());
            if left.is_zero() {
                self.throttle = None;
                if let Some(began) = self.turn_began.take() {
                    quota.note_wait(Flow::Produce, began.elapsed());
                }
                return Poll::Ready(Err(tonic::Status::resource_exhausted(format!(
                    "this client is over its produce quota (quotas), and its turn did not come within {:?}: send it again later",
                    self.turn_allowed
                ))));
            }
            self.throttle = Some(Box::pin(tokio::time::sleep(wait.min(SLICE).min(left))));
        }
    }

    /// The body ended or failed: a unary request's charge goes, and its deadline.
    fn end(&mut self) {
        self.keep.ended();
        self.deadline = None;
    }

    /// Follows the message framing through `data`: returns how many of its bytes may be
    /// passed on now, and the charge of the message whose prefix ends there, if one
    /// does (the bytes after it wait for that charge). A unary request's second message
    /// is refused: its charge would wait behind the first's, held, for ever.
    fn scan(&mut self, data: &[u8]) -> Result<(usize, Option<usize>), tonic::Status> {
        let mut at = 0;
        while at < data.len() {
            if self.in_message > 0 {
                let skip = self.in_message.min(data.len() - at);
                self.in_message -= skip;
                at += skip;
                // A stream's message is complete; a single message's request must
                // also end (its reader waits for the end, holding the charge).
                if self.in_message == 0 && !self.rules.single {
                    self.deadline = None;
                }
                continue;
            }
            let take = (5 - self.prefix.len()).min(data.len() - at);
            self.prefix.extend_from_slice(&data[at..at + take]);
            at += take;
            if self.prefix.len() == 5 {
                let len = (&self.prefix[1..5]).get_u32() as usize;
                self.prefix.clear();
                self.in_message = len;
                self.messages += 1;
                if self.messages > 1 && self.rules.single {
                    return Err(tonic::Status::invalid_argument(format!(
                        "a request to {} carries one message, and this one has more",
                        self.rules.path
                    )));
                }
                if len > self.rules.max_message {
                    return Err(too_large(len, self.rules.max_message, &self.rules.path));
                }
                if len < self.pool.free_below {
                    continue; // uncharged
                }
                self.announced = len;
                // At least one permit, so that every message has a charge to take; at
                // most the whole budget, so that it can be granted.
                let cost = len
                    .saturating_mul(self.pool.factor)
                    .clamp(1, self.pool.total);
                return Ok((at, Some(cost)));
            }
        }
        Ok((at, None))
    }
}

impl Drop for BudgetBody {
    fn drop(&mut self) {
        // A message charged to its client's quota and never let in (its call cancelled
        // while it waited for the budget): its bytes never came.
        if let (true, Some(quota)) = (self.turned, &self.quota) {
            quota.refund(Flow::Produce, self.announced);
        }
        // A wait for its turn cut off (its call went) is counted too.
        if let (Some(began), Some(quota)) = (self.turn_began, &self.quota) {
            quota.note_wait(Flow::Produce, began.elapsed());
        }
    }
}

impl HttpBody for BudgetBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = &mut *self;
        loop {
            if let Some(cost) = me.waiting {
                // The client's turn first: once the semaphore is asked, permits freed
                // are handed to this message even while it would sleep.
                if !me.turned {
                    if let Err(refused) = ready!(me.poll_turn(cx)) {
                        me.end();
                        return Poll::Ready(Some(Err(refused)));
                    }
                    me.turned = true;
                }
                let permits = u32::try_from(cost).unwrap_or(u32::MAX);
                let Some(permit) = ready!(me.semaphore.poll_acquire_many(cx, permits)) else {
                    return Poll::Ready(Some(Err(tonic::Status::unavailable("shutting down"))));
                };
                me.keep.granted(permit);
                me.waiting = None;
                me.turned = false;
                // An empty message of a stream is complete with its prefix: nothing to
                // wait for; a single message's request must still end.
                if me.in_message > 0 || me.rules.single {
                    (me.granted_at, me.last_bytes) = (Instant::now(), Instant::now());
                    me.deadline = Some(Box::pin(tokio::time::sleep_until(me.due())));
                }
                if let Some(last) = me.held.take() {
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
            }
            if let Some(mut data) = me.pending.take() {
                let (passable, cost) = match me.scan(&data) {
                    Ok(scanned) => scanned,
                    Err(refused) => {
                        me.end();
                        return Poll::Ready(Some(Err(refused)));
                    }
                };
                me.waiting = cost;
                let mut pass = data.split_to(passable);
                if cost.is_some() {
                    // The prefix ends in `pass`: its last byte waits for the charge.
                    me.held = Some(pass.split_off(pass.len() - 1));
                }
                if !data.is_empty() {
                    me.pending = Some(data);
                }
                if !pass.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(pass))));
                }
                continue;
            }
            match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if me.deadline.is_some() {
                            me.last_bytes = Instant::now();
                        }
                        me.pending = Some(data);
                    }
                    Err(trailers) => {
                        me.end();
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Poll::Ready(None) if me.rules.single && me.messages == 0 => {
                    me.end();
                    return Poll::Ready(Some(Err(tonic::Status::invalid_argument(format!(
                        "a request to {} carries one message, and this one has none",
                        me.rules.path
                    )))));
                }
                Poll::Ready(other) => {
                    me.end();
                    return Poll::Ready(other);
                }
                Poll::Pending => {
                    let due = me.due();
                    if let Some(deadline) = me.deadline.as_mut() {
                        ready!(deadline.as_mut().poll(cx));
                        if due > Instant::now() {
                            // Bytes came since it was set: wait on.
                            deadline.as_mut().reset(due);
                            continue;
                        }
                        me.end();
                        let what = me.pool.what;
                        let (allowed, idle) = (me.allowed, me.idle);
                        let late = match (me.in_message, me.granted_at.elapsed() < allowed) {
                            (0, false) => {
                                format!("arrived, but its request did not end within {allowed:?}")
                            }
                            (0, true) => {
                                format!("arrived, but its request did not end for {idle:?}")
                            }
                            (_, false) => format!("was announced but not sent within {allowed:?}"),
                            (_, true) => {
                                format!("was announced but its bytes stopped for {idle:?}")
                            }
                        };
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "a {what} message {late}; it held the server's {what} budget"
                        )))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A request that should hold a message and holds none ends with an error.
        let missing = self.rules.single && self.messages == 0;
        self.pending.is_none() && self.held.is_none() && self.inner.is_end_stream() && !missing
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
