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
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    fn push(&self, permit: OwnedSemaphorePermit) {
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
            request = request.map(|body| {
                Body::new(BudgetBody {
                    inner: body,
                    semaphore: PollSemaphore::new(budget.semaphore),
                    total: budget.total,
                    charge,
                    prefix: Vec::with_capacity(5),
                    in_message: 0,
                    held: None,
                    owed: Vec::new(),
                })
            });
        }
        self.inner.call(request)
    }
}

/// A request body that holds back each frame starting a message until that message's
/// charge is granted.
struct BudgetBody {
    inner: Body,
    semaphore: PollSemaphore,
    total: usize,
    charge: Charge,
    /// Bytes of the gRPC prefix (flag, then big-endian length) read so far.
    prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    in_message: usize,
    /// A frame waiting for its charge, and the charges of the messages starting in it.
    held: Option<Frame<Bytes>>,
    owed: Vec<usize>,
}

impl BudgetBody {
    /// Follows the message framing through `data`, noting in `owed` the charge of every
    /// message whose prefix completes in it.
    fn charge_for(&mut self, data: &Bytes) {
        let mut rest = &data[..];
        while !rest.is_empty() {
            if self.in_message > 0 {
                let skip = self.in_message.min(rest.len());
                self.in_message -= skip;
                rest = &rest[skip..];
                continue;
            }
            let need = 5 - self.prefix.len();
            let take = need.min(rest.len());
            self.prefix.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.prefix.len() == 5 {
                let len = (&self.prefix[1..5]).get_u32() as usize;
                self.prefix.clear();
                self.in_message = len;
                // Each at least one permit, so that every message has a charge to take;
                // all together at most the whole budget, so that they can be granted.
                let granted: usize = self.owed.iter().sum();
                let cost = len.saturating_mul(COST_FACTOR).max(1);
                self.owed
                    .push(cost.min(self.total.saturating_sub(granted)).max(1));
            }
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
        if me.held.is_none() {
            let frame = match ready!(Pin::new(&mut me.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return Poll::Ready(other),
            };
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                me.charge_for(&data);
            }
            if me.owed.is_empty() {
                return Poll::Ready(Some(Ok(frame)));
            }
            me.held = Some(frame);
        }
        let sum: usize = me.owed.iter().sum::<usize>().min(me.total);
        let permits = u32::try_from(sum).unwrap_or(u32::MAX);
        let Some(mut permit) = ready!(me.semaphore.poll_acquire_many(cx, permits)) else {
            return Poll::Ready(Some(Err(tonic::Status::unavailable("shutting down"))));
        };
        // One permit per message, in order, so each is released when its message is
        // answered.
        let last = me.owed.len() - 1;
        for (i, cost) in std::mem::take(&mut me.owed).into_iter().enumerate() {
            if i == last {
                me.charge.push(permit);
                break;
            }
            if let Some(part) = permit.split(cost) {
                me.charge.push(part);
            }
        }
        Poll::Ready(me.held.take().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(total: usize) -> BudgetBody {
        BudgetBody {
            inner: Body::empty(),
            semaphore: PollSemaphore::new(Arc::new(Semaphore::new(total))),
            total,
            charge: Charge::default(),
            prefix: Vec::new(),
            in_message: 0,
            held: None,
            owed: Vec::new(),
        }
    }

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    #[test]
    fn each_message_is_charged_once_wherever_the_frames_split_it() {
        let mut wire = message(10);
        wire.extend(message(0));
        wire.extend(message(1000));
        let mut b = body(1 << 20);
        // Frames of 3 bytes: prefixes and bodies split everywhere.
        let mut charged = Vec::new();
        for frame in wire.chunks(3) {
            b.charge_for(&Bytes::copy_from_slice(frame));
            charged.append(&mut b.owed);
        }
        assert_eq!(charged, [30, 1, 3000]);
        // All in one frame: the same charges.
        let mut b = body(1 << 20);
        b.charge_for(&Bytes::from(wire));
        assert_eq!(b.owed, [30, 1, 3000]);
    }

    #[test]
    fn a_message_larger_than_the_budget_is_charged_the_whole_budget() {
        let mut b = body(100);
        b.charge_for(&Bytes::from(message(1000)));
        assert_eq!(b.owed, [100], "so it can still run, alone");
    }
}
