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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::request_limits::RequestLimits;
use body::{BudgetBody, Keep, Rules};

mod body;

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

#[cfg(test)]
mod tests;
