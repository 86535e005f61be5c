//! The request body a budget reads a call's messages through: each message's bytes
//! are passed on once its charge is granted (see `mod.rs`), and a produce message's
//! once its client's quota turn has come.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tonic::body::Body;

use super::{Charge, Pool, MESSAGE_DEADLINE, MESSAGE_IDLE};
use crate::grpc::quota::{Flow, Quota, SLICE};
use crate::grpc::request_limits::too_large;

/// What a call's request body may hold.
pub(super) struct Rules {
    /// The largest message passed on; a longer one is refused from its prefix.
    pub(super) max_message: usize,
    /// One message exactly (every call's but the client streams').
    pub(super) single: bool,
    /// The call, for the errors.
    pub(super) path: String,
}

/// Where a body keeps the charges it was granted.
pub(super) enum Keep {
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
pub(super) struct BudgetBody {
    pub(super) inner: Body,
    /// The budget charged, and its semaphore as the body polls it.
    pub(super) pool: Pool,
    pub(super) semaphore: PollSemaphore,
    pub(super) keep: Keep,
    pub(super) rules: Rules,
    /// Bytes of the gRPC prefix (flag, then big-endian length) read so far.
    pub(super) prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    pub(super) in_message: usize,
    /// Messages whose prefix has been read.
    pub(super) messages: usize,
    /// Bytes read from the client and not yet passed on.
    pub(super) pending: Option<Bytes>,
    /// The charge the message whose prefix was just passed on waits for.
    pub(super) waiting: Option<usize>,
    /// The client's produce quota (produce messages only). A message waits for its
    /// client's turn, and is charged to the quota then (`turned`), before it waits for
    /// the budget, so that a throttled client holds none of the budget; one given up
    /// before it is let in is given back.
    pub(super) quota: Option<Quota>,
    pub(super) throttle: Option<Pin<Box<Sleep>>>,
    /// When the message began to wait for its turn, if it had to, and how long it may:
    /// its bytes wait in the server's HTTP/2 windows meanwhile, so not for ever.
    pub(super) turn_began: Option<Instant>,
    pub(super) turn_allowed: Duration,
    pub(super) turned: bool,
    /// The length of the message whose prefix was read last.
    pub(super) announced: usize,
    /// The last byte of that prefix, passed on once the charge is granted: a reader
    /// that has not seen the whole prefix cannot take a message (an empty one, say)
    /// before its charge exists, and so take another message's charge.
    pub(super) held: Option<Bytes>,
    /// When the message being received fails: `allowed` after its grant, or `idle`
    /// after the last bytes came, whichever is first.
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    /// When the message being received was granted its charge, and when its bytes last
    /// came: the deadline is moved only when it fires (moving a timer at every frame
    /// takes the timer driver's lock each time).
    pub(super) granted_at: Instant,
    pub(super) last_bytes: Instant,
    pub(super) allowed: Duration,
    pub(super) idle: Duration,
}

impl BudgetBody {
    pub(super) fn new(inner: Body, pool: Pool, keep: Keep, rules: Rules) -> BudgetBody {
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
