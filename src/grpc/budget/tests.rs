//! Tests of the budget: what a body passes on, when, and what it charges.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::ready;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};

use super::*;
use crate::grpc::quota::Flow;

/// A request body that yields the given DATA frames.
struct Frames(VecDeque<Bytes>);

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// The layer's budgets of `total` bytes each, with no size limits.
fn layer(total: usize) -> BudgetLayer {
    let none = RequestLimits {
        max_request_bytes: usize::MAX,
        groups: usize::MAX,
        queues: usize::MAX,
    };
    BudgetLayer::new(total, total, none)
}

/// Rules without a size limit: one message (`single`) or any number.
fn rules(single: bool) -> Rules {
    Rules {
        max_message: usize::MAX,
        single,
        path: "/test".into(),
    }
}

fn message(len: usize) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend(std::iter::repeat_n(7u8, len));
    m
}

fn body(total: usize, frames: Vec<Vec<u8>>) -> (BudgetBody, Arc<Semaphore>, Charge) {
    let pool = layer(total).produce;
    let charge = Charge::default();
    let inner = Body::new(Frames(frames.into_iter().map(Bytes::from).collect()));
    let semaphore = Arc::clone(&pool.semaphore);
    (
        BudgetBody::new(inner, pool, Keep::Each(charge.clone()), rules(false)),
        semaphore,
        charge,
    )
}

/// Polls until the body is pending or done; returns the bytes passed on.
fn drain(body: &mut BudgetBody) -> (Vec<u8>, bool) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => out.extend_from_slice(&frame.into_data().unwrap()),
            Poll::Ready(Some(Err(e))) => panic!("{e}"),
            Poll::Ready(None) => return (out, true),
            Poll::Pending => return (out, false),
        }
    }
}

#[tokio::test]
async fn each_message_is_charged_once_wherever_the_frames_split_it() {
    let mut wire = message(10);
    wire.extend(message(0));
    wire.extend(message(1000));
    let frames = wire.chunks(3).map(<[u8]>::to_vec).collect();
    let (mut b, semaphore, charge) = body(1 << 20, frames);
    let (passed, done) = drain(&mut b);
    assert!(done);
    assert_eq!(passed, wire, "every byte passed on, in order");
    assert_eq!(semaphore.available_permits(), (1 << 20) - 3031);
    let charges: Vec<usize> = std::iter::from_fn(|| charge.take_next())
        .map(|p| p.num_permits())
        .collect();
    assert_eq!(charges, [30, 1, 3000]);
}

#[tokio::test]
async fn the_tail_of_a_granted_message_is_never_held_behind_the_next_prefix() {
    // A (30 bytes, charged 90) is granted; the frame with A's tail also starts B
    // (charged 30), which does not fit until A is answered. A's tail must pass.
    let a = message(30);
    let b = message(10);
    let first = a[..25].to_vec();
    let mut second = a[25..].to_vec();
    second.extend(&b);
    let (mut body, semaphore, charge) = body(100, vec![first, second]);
    let (passed, done) = drain(&mut body);
    assert!(!done, "B waits for the budget");
    assert_eq!(
        passed,
        [&a[..], &b[..4]].concat(),
        "all of A, and B's prefix but its last byte"
    );
    drop(charge.take_next()); // A answered: its 90 go to B, which was waiting
    assert_eq!(semaphore.available_permits(), 70);
    let (rest, done) = drain(&mut body);
    assert!(done);
    assert_eq!(rest, b[4..]);
}

#[tokio::test]
async fn an_empty_message_is_not_seen_before_its_charge() {
    let mut wire = message(0);
    wire.extend(message(10));
    let (mut b, _semaphore, charge) = body(1 << 20, vec![wire.clone()]);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut seen = Vec::new();
    // Whenever the bytes passed on hold a whole message, its charge is there.
    let mut messages = 0;
    while let Poll::Ready(Some(frame)) = Pin::new(&mut b).poll_frame(&mut cx) {
        seen.extend_from_slice(&frame.unwrap().into_data().unwrap());
        let complete = match seen.len() {
            n if n >= 20 => 2,
            n if n >= 5 => 1,
            _ => 0,
        };
        while messages < complete {
            assert!(
                charge.take_next().is_some(),
                "message {messages} has its charge"
            );
            messages += 1;
        }
    }
    assert_eq!((seen, messages), (wire, 2));
}

#[tokio::test]
async fn a_message_larger_than_the_budget_is_charged_the_whole_budget() {
    let (mut b, semaphore, _charge) = body(100, vec![message(1000)]);
    let (passed, done) = drain(&mut b);
    assert!(done && passed.len() == 1005, "so it can still run, alone");
    assert_eq!(semaphore.available_permits(), 0);
}

/// A body that sends one frame, then nothing, for ever.
struct Stalled(Option<Bytes>);

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_message_announced_and_not_sent_gives_the_budget_back() {
    let budget = layer(1000).produce;
    let charge = Charge::default();
    // A prefix announcing 300 bytes, then nothing.
    let inner = Body::new(Stalled(Some(Bytes::from(message(300)[..5].to_vec()))));
    let keep = Keep::Each(charge.clone());
    let mut body = BudgetBody::new(inner, budget.clone(), keep, rules(false));
    body.allowed = Duration::from_millis(50);
    for _ in 0..2 {
        let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(
            polled.unwrap().is_ok(),
            "the prefix passes, its last byte once charged"
        );
    }
    let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert_eq!(
        budget.semaphore.available_permits(),
        100,
        "charged, then stalled"
    );
    let err = polled.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    drop((body, charge)); // the request fails and its charge goes
    assert_eq!(budget.semaphore.available_permits(), 1000);
}

/// Hostile-client finding: two announced 60 MB messages, nothing sent, held the produce
/// budget for the whole 30 s deadline. A message whose bytes stop now gives its charge
/// back after the idle limit.
#[tokio::test]
async fn a_message_whose_bytes_stop_gives_the_budget_back_after_the_idle_limit() {
    let budget = layer(1000).produce;
    let inner = Body::new(Stalled(Some(Bytes::from(message(300)[..5].to_vec()))));
    let keep = Keep::Each(Charge::default());
    let mut body = BudgetBody::new(inner, budget.clone(), keep, rules(false));
    (body.allowed, body.idle) = (Duration::from_secs(600), Duration::from_millis(50));
    let failed = async {
        loop {
            let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            if let Err(err) = polled.unwrap() {
                break err;
            }
        }
    };
    let err = tokio::time::timeout(Duration::from_secs(10), failed)
        .await
        .expect("failed at the idle limit, long before the deadline");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("bytes stopped"), "{}", err.message());
    drop(body);
    assert_eq!(budget.semaphore.available_permits(), 1000);
}

/// A body that yields its bytes one at a time, one every `every`.
struct Trickle {
    bytes: Bytes,
    tick: tokio::time::Interval,
}

impl HttpBody for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.bytes.is_empty() {
            return Poll::Ready(None);
        }
        ready!(self.tick.poll_tick(cx));
        let byte = self.bytes.split_to(1);
        Poll::Ready(Some(Ok(Frame::data(byte))))
    }
}

/// A slow client whose bytes keep coming is not cut off by the idle limit: only a
/// pause is, and the whole message still has the deadline.
#[tokio::test]
async fn a_message_trickling_in_is_not_cut_off_by_the_idle_limit() {
    let budget = layer(1000).produce;
    let every = Duration::from_millis(10);
    let inner = Body::new(Trickle {
        bytes: Bytes::from(message(40)),
        tick: tokio::time::interval(every),
    });
    let keep = Keep::Each(Charge::default());
    let mut body = BudgetBody::new(inner, budget, keep, rules(false));
    // 45 bytes at one per 10 ms take ~450 ms, nine times the idle limit.
    (body.allowed, body.idle) = (Duration::from_secs(600), Duration::from_millis(50));
    let mut passed = 0;
    while let Some(polled) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        passed += polled.unwrap().into_data().unwrap().len();
    }
    assert_eq!(passed, 45);
}

#[tokio::test]
async fn an_empty_message_then_silence_is_not_a_stalled_message() {
    let budget = layer(1000).produce;
    let inner = Body::new(Stalled(Some(Bytes::from(message(0)))));
    let mut body = BudgetBody::new(inner, budget, Keep::Each(Charge::default()), rules(false));
    body.allowed = Duration::from_millis(20);
    for _ in 0..2 {
        let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(polled.unwrap().is_ok());
    }
    let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), next)
            .await
            .is_err(),
        "an idle stream after a complete message is left alone"
    );
}

/// A request body of the request budget: `total` bytes, `FREE_BELOW` uncharged.
fn request_body(total: usize, frames: Vec<Vec<u8>>) -> (BudgetBody, Arc<Semaphore>) {
    let pool = layer(total).requests;
    let semaphore = Arc::clone(&pool.semaphore);
    let inner = Body::new(Frames(frames.into_iter().map(Bytes::from).collect()));
    (
        BudgetBody::new(inner, pool, Keep::UntilEnd(None), rules(true)),
        semaphore,
    )
}

#[tokio::test]
async fn small_request_messages_pass_uncharged_in_the_frames_they_came_in() {
    let wire = message(FREE_BELOW - 1);
    let frames = vec![wire[..100].to_vec(), wire[100..].to_vec()];
    let (mut b, semaphore) = request_body(1000, frames);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for frame in [&wire[..100], &wire[100..]] {
        let passed = Pin::new(&mut b).poll_frame(&mut cx);
        let Poll::Ready(Some(Ok(passed))) = passed else {
            panic!("not passed")
        };
        assert_eq!(passed.into_data().unwrap(), frame, "whole, not split");
    }
    let (_, done) = drain(&mut b);
    assert!(done);
    assert_eq!(semaphore.available_permits(), 1000, "nothing taken");
}

/// Polls until exactly `n` more bytes have passed.
fn pass(body: &mut BudgetBody, n: usize) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut passed = 0;
    while passed < n {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => passed += frame.into_data().unwrap().len(),
            _ => panic!("{passed} of {n} bytes passed"),
        }
    }
    assert_eq!(passed, n);
}

/// A unary request's charge is held until its body ends, not only until its message is
/// whole: tonic waits for the end (with no deadline) holding the message.
#[tokio::test]
async fn a_large_request_is_charged_until_its_body_ends() {
    let total = 4 * FREE_BELOW;
    let whole = message(FREE_BELOW);
    let frames = vec![whole[..1000].to_vec(), whole[1000..].to_vec()];
    let (mut b, semaphore) = request_body(total, frames);
    pass(&mut b, 1000);
    assert_eq!(semaphore.available_permits(), total - FREE_BELOW);
    pass(&mut b, whole.len() - 1000);
    assert_eq!(
        semaphore.available_permits(),
        total - FREE_BELOW,
        "whole, not ended"
    );
    let (rest, done) = drain(&mut b);
    assert!(rest.is_empty() && done);
    assert_eq!(semaphore.available_permits(), total, "ended");
}

/// A client that sends a whole large message and never ends its request gives the
/// charge back after the deadline, with an error, though the body is not dropped.
#[tokio::test]
async fn a_large_request_never_ended_gives_its_charge_back_at_the_deadline() {
    let total = 4 * FREE_BELOW;
    let pool = layer(total).requests;
    let semaphore = Arc::clone(&pool.semaphore);
    let inner = Body::new(Stalled(Some(Bytes::from(message(FREE_BELOW)))));
    let mut body = BudgetBody::new(inner, pool, Keep::UntilEnd(None), rules(true));
    body.allowed = Duration::from_millis(50);
    let mut passed = 0;
    let err = loop {
        let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match polled.unwrap() {
            Ok(frame) => passed += frame.into_data().unwrap().len(),
            Err(err) => break err,
        }
    };
    assert_eq!(passed, FREE_BELOW + 5);
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(semaphore.available_permits(), total);
}

/// Review: a unary request's second message, announced larger than the whole budget,
/// waited for a charge it could never get (the first's was held), and took every
/// permit given back meanwhile. It is refused, and the charge goes.
#[tokio::test]
async fn a_second_message_in_a_unary_request_is_refused_and_its_charge_given_back() {
    let total = 4 * FREE_BELOW;
    let mut wire = message(FREE_BELOW);
    wire.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
    let (mut b, semaphore) = request_body(total, vec![wire]);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut charged = false;
    let err = loop {
        match Pin::new(&mut b).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => charged |= semaphore.available_permits() < total,
            Poll::Ready(Some(Err(err))) => break err,
            other => panic!("{:?}", other.map(|f| f.map(|f| f.map(|_| ())))),
        }
    };
    assert!(charged, "the first message was charged");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert_eq!(semaphore.available_permits(), total);
}

/// Every path whose requests are a stream of messages is either charged to the produce
/// budget or listed as a stream: a new client stream must choose.
#[test]
fn the_uncharged_streams_are_every_client_stream() {
    use prost::Message;
    let sets = [
        crate::grpc::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut streams = std::collections::BTreeSet::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for file in &set.file {
            for service in &file.service {
                for method in service.method.iter().filter(|m| m.client_streaming()) {
                    streams.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    let listed: std::collections::BTreeSet<String> = STREAMS
        .iter()
        .chain(&["/strom.v1.Log/ProduceStream"])
        .map(|p| p.to_string())
        .collect();
    assert_eq!(streams, listed);
}

#[tokio::test]
async fn a_request_body_gives_its_charge_back_when_dropped() {
    let total = 4 * FREE_BELOW;
    let whole = message(FREE_BELOW);
    let (mut b, semaphore) = request_body(total, vec![whole[..1000].to_vec()]);
    pass(&mut b, 1000);
    assert_eq!(semaphore.available_permits(), total - FREE_BELOW);
    drop(b);
    assert_eq!(semaphore.available_permits(), total);
}

/// A Produce (charged each message, one message) whose request never ends after its
/// message fails at the deadline, so that its charge goes with it: its reader waits for
/// the end (review: it held the produce budget for ever).
#[tokio::test]
async fn a_single_produce_never_ended_fails_at_the_deadline() {
    let budget = layer(1000).produce;
    let semaphore = Arc::clone(&budget.semaphore);
    let inner = Body::new(Stalled(Some(Bytes::from(message(10)))));
    let charge = Charge::default();
    let keep = Keep::Each(charge.clone());
    let mut body = BudgetBody::new(inner, budget, keep, rules(true));
    body.allowed = Duration::from_millis(50);
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            if let Err(err) = polled.unwrap() {
                return err;
            }
        }
    });
    let err = failed.await.expect("failed at the deadline");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("did not end"), "{}", err.message());
    drop((body, charge)); // the request fails and its charge goes
    assert_eq!(semaphore.available_permits(), 1000);
}

/// A produce message whose client is over its quota waits for its turn before it is
/// charged to the budget, and fails if the turn does not come in time (its bytes sit in
/// the server's HTTP/2 windows meanwhile); nothing is charged to either.
#[tokio::test]
async fn a_message_whose_turn_does_not_come_in_time_fails_holding_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quotas"), "* produce=1KiB\n").unwrap();
    let quotas = crate::grpc::quota::Quotas::load(&dir.path().join("quotas")).unwrap();
    let quota = quotas.of(None, None);
    quota.charge(Flow::Produce, 100 << 10); // about 99 s of debt
    let (mut body, semaphore, charge) = body(1000, vec![message(300)]);
    body.quota = Some(quota.clone());
    body.turn_allowed = Duration::from_millis(100);
    // Only the prefix's first bytes pass: the message waits for its turn.
    assert_eq!(drain(&mut body).0.len(), 4);
    assert_eq!(
        semaphore.available_permits(),
        1000,
        "the budget is not charged"
    );
    let failed = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
    let err = tokio::time::timeout(Duration::from_secs(10), failed)
        .await
        .expect("failed when its time ran out")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("produce quota"), "{}", err.message());
    let [(_, waits, seconds), _, _] = quotas.waits();
    assert_eq!(waits, 1, "a wait cut off is counted");
    assert!(seconds >= 0.1, "{seconds}");
    assert!(charge.take_next().is_none());
    drop(body);
    assert_eq!(semaphore.available_permits(), 1000);
    // Not charged to the quota either: the debt is what it was.
    let owed = quota.wait(Flow::Produce, 0);
    assert!(owed > Duration::from_secs(90), "{owed:?}");
}
