//! A server-wide budget of produce bytes in flight, taken before a request is decoded.
//!
//! tonic reads and decodes a request body before the handler runs, so a budget taken in
//! the handler would come after the memory is spent. This layer sits in front: it reads
//! the 5-byte gRPC prefix of each Produce or ProduceStream message as the body streams
//! in, and passes the message's bytes on only once the budget has room for it. While
//! the budget is spent, bodies are not read, HTTP/2 flow control stops the clients, and
//! the server's memory stays where it is: the server pushes back instead of growing.
//!
//! A message is charged its wire size times `COST_FACTOR` (its receive buffer, the
//! records it copies while decoding, and the batch it becomes), clamped to the whole
//! budget so that one large request can still run alone. The charge goes into the
//! request's `Charge`, which the handler holds until the message is answered.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::PollSemaphore;
use tonic::body::Body;

/// How many times its wire size a produce message is charged.
pub const COST_FACTOR: usize = 3;

/// Paths whose messages are charged.
const CHARGED: [&str; 2] = ["/strom.v1.Log/Produce", "/strom.v1.Log/ProduceStream"];

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

/// The layer, holding the server's budget.
#[derive(Clone)]
pub struct ProduceBudgetLayer {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl ProduceBudgetLayer {
    /// A budget of `bytes` (at most `u32::MAX`, a semaphore's largest single charge).
    pub fn new(bytes: usize) -> ProduceBudgetLayer {
        let total = bytes.clamp(1, u32::MAX as usize);
        ProduceBudgetLayer {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        }
    }
}

impl<S> tower_layer::Layer<S> for ProduceBudgetLayer {
    type Service = ProduceBudget<S>;
    fn layer(&self, inner: S) -> ProduceBudget<S> {
        ProduceBudget {
            inner,
            budget: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ProduceBudget<S> {
    inner: S,
    budget: ProduceBudgetLayer,
}

impl<S> tower_service::Service<http::Request<Body>> for ProduceBudget<S>
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
        if CHARGED.contains(&request.uri().path()) {
            let charge = Charge::default();
            request.extensions_mut().insert(charge.clone());
            let budget = self.budget.clone();
            request = request.map(|body| Body::new(BudgetBody::new(body, &budget, charge)));
        }
        self.inner.call(request)
    }
}

/// How long the rest of a message may take to arrive once its charge is granted: a
/// client that announces a large message and then sends nothing holds the budget for
/// no longer than this.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);

/// A request body that passes the bytes of each message on only once that message's
/// charge is granted. Bytes of messages already granted are never held back, so one
/// message waiting for the budget cannot keep an earlier one from being answered.
struct BudgetBody {
    inner: Body,
    semaphore: PollSemaphore,
    total: usize,
    charge: Charge,
    /// Bytes of the gRPC prefix (flag, then big-endian length) read so far.
    prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    in_message: usize,
    /// Bytes read from the client and not yet passed on.
    pending: Option<Bytes>,
    /// The charge the message whose prefix was just passed on waits for.
    waiting: Option<usize>,
    /// The last byte of that prefix, passed on once the charge is granted: a reader
    /// that has not seen the whole prefix cannot take a message (an empty one, say)
    /// before its charge exists, and so take another message's charge.
    held: Option<Bytes>,
    /// When the message being received must be complete, and how long it may take.
    deadline: Option<Pin<Box<Sleep>>>,
    allowed: Duration,
}

impl BudgetBody {
    fn new(inner: Body, budget: &ProduceBudgetLayer, charge: Charge) -> BudgetBody {
        BudgetBody {
            inner,
            semaphore: PollSemaphore::new(Arc::clone(&budget.semaphore)),
            total: budget.total,
            charge,
            prefix: Vec::with_capacity(5),
            in_message: 0,
            pending: None,
            waiting: None,
            held: None,
            deadline: None,
            allowed: MESSAGE_DEADLINE,
        }
    }

    /// Follows the message framing through `data`: returns how many of its bytes may be
    /// passed on now, and the charge of the message whose prefix ends there, if one
    /// does (the bytes after it wait for that charge).
    fn scan(&mut self, data: &[u8]) -> (usize, Option<usize>) {
        let mut at = 0;
        while at < data.len() {
            if self.in_message > 0 {
                let skip = self.in_message.min(data.len() - at);
                self.in_message -= skip;
                at += skip;
                if self.in_message == 0 {
                    self.deadline = None; // the message is complete
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
                // At least one permit, so that every message has a charge to take; at
                // most the whole budget, so that it can be granted.
                let cost = len.saturating_mul(COST_FACTOR).clamp(1, self.total);
                return (at, Some(cost));
            }
        }
        (at, None)
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
                let permits = u32::try_from(cost).unwrap_or(u32::MAX);
                let Some(permit) = ready!(me.semaphore.poll_acquire_many(cx, permits)) else {
                    return Poll::Ready(Some(Err(tonic::Status::unavailable("shutting down"))));
                };
                me.charge.push(permit);
                me.waiting = None;
                // An empty message is complete with its prefix: nothing to wait for.
                if me.in_message > 0 {
                    me.deadline = Some(Box::pin(tokio::time::sleep(me.allowed)));
                }
                if let Some(last) = me.held.take() {
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
            }
            if let Some(mut data) = me.pending.take() {
                let (passable, cost) = me.scan(&data);
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
                    Ok(data) => me.pending = Some(data),
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => {
                    if let Some(deadline) = me.deadline.as_mut() {
                        ready!(deadline.as_mut().poll(cx));
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "a produce message was announced but not sent within {:?}; it held the server's produce budget",
                            me.allowed
                        )))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
