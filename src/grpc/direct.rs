//! `Produce` and `ProduceStream` served without tonic's receive buffer.
//!
//! tonic copies every HTTP/2 DATA frame of a request into one receive buffer and decodes
//! messages from there; for produce requests that copy was 8-9% of the server's CPU
//! (BENCHMARKS.md, "Produce messages sliced from the frames they arrived in"). HTTP/2
//! hands the server each DATA frame as a slice of its read buffer, and with 1 MiB frames
//! (`MAX_FRAME_BYTES`) a produce message usually arrives whole in one of them. So this
//! service reads the gRPC framing itself (a flag byte and a big-endian length before
//! each message) and decodes a message straight from the frame that holds it; a message
//! split over frames is gathered into a buffer of its exact size, one copy, as tonic
//! would. Records then stay slices of that frame until the kernel copies them into the
//! page cache.
//!
//! Only the two produce calls without compression take this path; every other call, and
//! a produce that announces a `grpc-encoding`, goes to tonic's generated service. The
//! produce budget (`budget.rs`) sits in front of both, the answers come from the same
//! `produce_one` and `produce_stream` as tonic's path, and errors are the ones tonic
//! gives for the same input: a message over the size limit is OUT_OF_RANGE, a
//! compressed flag INTERNAL, a message that does not decode INVALID_ARGUMENT.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::budget::Charge;
use super::{log_service, pb};
use crate::broker::Broker;

const STREAM: &str = "/strom.v1.Log/ProduceStream";
const UNARY: &str = "/strom.v1.Log/Produce";
const PREFIX: usize = 5;

/// Wraps the generated `Log` service; takes `Produce` and `ProduceStream` calls off its
/// hands.
#[derive(Clone)]
pub struct DirectProduce<S> {
    inner: S,
    broker: Arc<Broker>,
    max_message: usize,
}

impl<S> DirectProduce<S> {
    /// `max_message`: the largest message accepted, as `max_decoding_message_size`.
    pub fn new(inner: S, broker: Arc<Broker>, max_message: usize) -> DirectProduce<S> {
        DirectProduce {
            inner,
            broker,
            max_message,
        }
    }
}

impl<S: NamedService> NamedService for DirectProduce<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for DirectProduce<S>
where
    S: tower_service::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let identity = request
            .headers()
            .get("grpc-encoding")
            .is_none_or(|e| e == "identity");
        let path = request.uri().path();
        if !identity || (path != STREAM && path != UNARY) {
            return Box::pin(self.inner.call(request));
        }
        let unary = path == UNARY;
        let charge = request
            .extensions()
            .get::<Charge>()
            .cloned()
            .unwrap_or_default();
        let broker = Arc::clone(&self.broker);
        let max = self.max_message;
        if unary {
            return Box::pin(async move {
                let mut inbound = Messages::<_, pb::ProduceRequest>::new(request.into_body(), max);
                let reply = match inbound.next().await {
                    Some(Ok(message)) => {
                        log_service::produce_one(broker, message, charge.take_next()).await
                    }
                    Some(Err(status)) => Err(status),
                    None => Err(Status::internal("Missing request message.")),
                };
                Ok(match reply {
                    Ok(reply) => respond(tokio_stream::once(Ok(reply))),
                    Err(status) => status.into_http(),
                })
            });
        }
        let inbound = Messages::new(request.into_body(), max);
        let replies = log_service::produce_stream(broker, inbound, charge);
        Box::pin(std::future::ready(Ok(respond(replies))))
    }
}

/// A gRPC response of `replies`, then their status as trailers.
fn respond<S, M>(replies: S) -> http::Response<Body>
where
    S: Stream<Item = Result<M, Status>> + Unpin + Send + 'static,
    M: Message + 'static,
{
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(Replies {
            replies,
            done: false,
        }))
        .expect("static headers are valid")
}

/// The request messages of one stream, decoded from the request body's DATA frames.
pub struct Messages<B, M> {
    body: B,
    message: PhantomData<fn() -> M>,
    max_message: usize,
    /// What is left of the last DATA frame received.
    frame: Bytes,
    /// The part received so far of a prefix or a message that spans frames, gathered
    /// here as it arrives (at most one message, so at most `max_message` bytes, however
    /// small the frames).
    partial: BytesMut,
    /// The length of the message whose prefix has been read.
    next_len: Option<usize>,
    ended: bool,
}

impl<B, M> Messages<B, M> {
    pub fn new(body: B, max_message: usize) -> Messages<B, M> {
        Messages {
            body,
            message: PhantomData,
            max_message,
            frame: Bytes::new(),
            partial: BytesMut::new(),
            next_len: None,
            ended: false,
        }
    }

    /// The next `n` bytes if they have arrived: a slice of the frame when it holds them
    /// all (no copy), else gathered in `partial`, taking what the frame has.
    fn take(&mut self, n: usize) -> Option<Bytes> {
        if self.partial.is_empty() && self.frame.len() >= n {
            return Some(self.frame.split_to(n));
        }
        let k = (n - self.partial.len()).min(self.frame.len());
        self.partial.reserve(n - self.partial.len());
        self.partial.extend_from_slice(&self.frame.split_to(k));
        (self.partial.len() == n).then(|| self.partial.split().freeze())
    }

    /// The next complete message, if it has arrived.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.next_len.is_none() {
            let Some(mut prefix) = self.take(PREFIX) else {
                return Ok(None);
            };
            match prefix.get_u8() {
                0 => {}
                1 => {
                    return Err(Status::internal(
                        "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                    ))
                }
                flag => {
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
                    )))
                }
            }
            let len = prefix.get_u32() as usize;
            if len > self.max_message {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                    self.max_message
                )));
            }
            self.next_len = Some(len);
        }
        let len = self.next_len.expect("set above");
        let message = self.take(len);
        if message.is_some() {
            self.next_len = None;
        }
        Ok(message)
    }
}

impl<B, M> Stream for Messages<B, M>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Message + Default,
{
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        loop {
            if me.ended {
                return Poll::Ready(None);
            }
            match me.next_message() {
                Ok(Some(message)) => {
                    let decoded = M::decode(message).map_err(super::codec::not_protobuf);
                    me.ended = decoded.is_err();
                    return Poll::Ready(Some(decoded));
                }
                Ok(None) => {}
                Err(status) => {
                    me.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            match ready!(Pin::new(&mut me.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers from a client carry nothing a produce needs. The last
                    // frame is used up: `next_message` takes or gathers all it can.
                    if let Ok(data) = frame.into_data() {
                        me.frame = data;
                    }
                }
                Some(Err(error)) => {
                    me.ended = true;
                    let status = match error.into().downcast::<Status>() {
                        Ok(status) => *status,
                        Err(error) => Status::from_error(error),
                    };
                    // A client that cancels its stream has ended it, as in tonic.
                    if status.code() == Code::Cancelled {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    me.ended = true;
                    if !me.partial.is_empty() || me.next_len.is_some() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "Unexpected EOF decoding stream.",
                        ))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// The response body: each reply as one gRPC message, then the status as trailers.
struct Replies<S> {
    replies: S,
    done: bool,
}

impl<S, M> HttpBody for Replies<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Message,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut self.replies).poll_next(cx)) {
            Some(Ok(reply)) => {
                let len = reply.encoded_len();
                let mut buf = BytesMut::with_capacity(PREFIX + len);
                buf.put_u8(0);
                buf.put_u32(len as u32);
                reply.encode(&mut buf).expect("the buffer has room");
                return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(status) = status.add_header(&mut trailers) {
            // A message that cannot be a header value: say so without it.
            let _ = Status::new(status.code(), "").add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A request body that yields the given DATA frames, then ends.
    struct Frames(VecDeque<Bytes>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn request(id: u64, value_len: usize) -> pb::ProduceStreamRequest {
        pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(crate::grpc::produce::ProduceRequest {
                topic: "t".into(),
                records: vec![pb::Record {
                    value: Bytes::from(vec![7u8; value_len]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn wire(messages: &[pb::ProduceStreamRequest]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
            m.encode(&mut out).unwrap();
        }
        out
    }

    fn decode_all(frames: Vec<Bytes>, max: usize) -> Vec<Result<u64, Code>> {
        let mut messages = Messages::<_, pb::ProduceStreamRequest>::new(Frames(frames.into()), max);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = Pin::new(&mut messages).poll_next(&mut cx) {
            out.push(item.map(|m| m.correlation_id).map_err(|s| s.code()));
        }
        out
    }

    #[test]
    fn messages_decode_wherever_the_frames_split_them() {
        let messages = [request(1, 300), request(2, 5), request(3, 2000)];
        let wire = wire(&messages);
        // Every split point, and every pair of split points, of the three messages.
        for a in 0..=wire.len() {
            for b in (a..=wire.len()).step_by(97) {
                let frames = vec![
                    Bytes::copy_from_slice(&wire[..a]),
                    Bytes::copy_from_slice(&wire[a..b]),
                    Bytes::copy_from_slice(&wire[b..]),
                ];
                assert_eq!(decode_all(frames, 1 << 20), vec![Ok(1), Ok(2), Ok(3)]);
            }
        }
    }

    #[test]
    fn messages_of_one_byte_frames_are_gathered_into_one_buffer() {
        let wire = wire(&[request(1, 3000), request(2, 0)]);
        let frames = wire.iter().map(|&b| Bytes::from(vec![b])).collect();
        let mut messages = Messages::<_, pb::ProduceStreamRequest>::new(Frames(frames), 1 << 20);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(m))) = Pin::new(&mut messages).poll_next(&mut cx) else {
            panic!("one message");
        };
        assert_eq!(m.correlation_id, 1);
        // The frames were let go: what is held is the gathered message, not 3,000 frames.
        assert!(messages.partial.capacity() < 64 && messages.frame.is_empty());
        let next = Pin::new(&mut messages).poll_next(&mut cx);
        assert!(matches!(next, Poll::Ready(Some(Ok(ref m))) if m.correlation_id == 2));
    }

    #[test]
    fn a_message_whole_in_one_frame_is_decoded_from_that_frame_without_a_copy() {
        let wire = Bytes::from(wire(&[request(1, 4096)]));
        let frame_range = wire.as_ptr_range();
        let mut messages = Messages::<_, pb::ProduceStreamRequest>::new(
            Frames(vec![wire.clone()].into()),
            1 << 20,
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(m))) = Pin::new(&mut messages).poll_next(&mut cx) else {
            panic!("one message");
        };
        let request = m.request.unwrap();
        let record = &request.received.shared()[0];
        assert!(
            frame_range.contains(&record.as_ptr()),
            "the record was copied"
        );
    }

    #[test]
    fn bad_framing_is_the_error_tonic_gives() {
        let ok = wire(&[request(1, 10)]);
        let mut compressed = ok.clone();
        compressed[0] = 1;
        assert_eq!(
            decode_all(vec![compressed.into()], 1 << 20),
            vec![Err(Code::Internal)]
        );
        assert_eq!(
            decode_all(vec![ok.clone().into()], 4),
            vec![Err(Code::OutOfRange)]
        );
        let cut = Bytes::copy_from_slice(&ok[..ok.len() - 1]);
        assert_eq!(decode_all(vec![cut], 1 << 20), vec![Err(Code::Internal)]);
        // An empty message, the last bytes of its frame: a request without `request`.
        let empty = vec![0, 0, 0, 0, 0];
        assert_eq!(decode_all(vec![empty.into()], 1 << 20), vec![Ok(0)]);
        let garbage = vec![0, 0, 0, 0, 2, 0xff, 0xff];
        assert_eq!(
            decode_all(vec![garbage.into()], 1 << 20),
            vec![Err(Code::InvalidArgument)]
        );
    }
}
