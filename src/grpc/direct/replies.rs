//! Response bodies written as DATA frames without tonic's send buffer.
//!
//! tonic encodes each response message into one buffer, so a Fetch copied every record
//! it returned out of the segment's map (18% of the server's samples while a consumer
//! read, BENCHMARKS.md). A [`Reply`] instead hands its message over as pieces: a
//! `FetchResponse` or `SubscribeResponse` sends its long runs of stored records as the
//! slices of the map they are, and HTTP/2 writes each with the frame header in one
//! vectored write, so the kernel's copy into the socket is the only one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::Status;

use crate::grpc::connection::{ConnectionInfo, Progress};
use crate::grpc::pb;

/// The most one data frame of the body holds. HTTP/2 takes a body's next frame only
/// once the last has nearly gone out, and the connection's watchdog counts the wait
/// between the two; a run of records of up to 16 MiB in one frame made a client
/// reading 55 KB/s look stalled for five minutes. A slice of the same map: no copy.
const MAX_PIECE: usize = crate::grpc::MAX_FRAME_BYTES as usize;

/// A response message, written as the pieces of its gRPC message.
pub trait Reply: Message + Sized {
    /// Appends the message's bytes to `head` (which holds its prefix) and pushes them
    /// to `out` as pieces to send in order. By default it is encoded whole, as tonic does.
    fn write_pieces(self, mut head: BytesMut, out: &mut VecDeque<Bytes>) {
        head.reserve(self.encoded_len());
        self.encode(&mut head).expect("reserved above");
        out.push_back(head.freeze());
    }
}

impl Reply for pb::ProduceResponse {}
impl Reply for pb::ProduceStreamResponse {}

/// A gRPC response of `replies`, then their status as trailers. A reply longer than
/// `max_message` ends the response with OUT_OF_RANGE, as tonic's encoder does. With
/// its `connection`, the connection's watchdog sees how long it waits for its client.
pub fn respond<S, M>(
    replies: S,
    max_message: usize,
    connection: Option<&ConnectionInfo>,
) -> http::Response<Body>
where
    S: Stream<Item = Result<M, Status>> + Unpin + Send + 'static,
    M: Reply + 'static,
{
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(Replies {
            replies,
            pending: VecDeque::new(),
            // The length prefix has 32 bits.
            max_message: max_message.min(u32::MAX as usize),
            done: false,
            progress: connection.map(ConnectionInfo::watch),
        }))
        .expect("static headers are valid")
}

/// The response body: each reply as one gRPC message, then the status as trailers.
struct Replies<S> {
    replies: S,
    /// The pieces of the reply being sent.
    pending: VecDeque<Bytes>,
    max_message: usize,
    done: bool,
    progress: Option<Arc<Progress>>,
}

impl<S, M> HttpBody for Replies<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Reply,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        // Polled: HTTP/2 took what was handed out (it polls only when it may send).
        if let Some(progress) = &self.progress {
            progress.polled();
        }
        let frame = ready!(self.as_mut().next_frame(cx));
        if let (Some(progress), Some(Ok(data))) = (&self.progress, &frame) {
            if data.is_data() {
                progress.handed_out();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

impl<S, M> Replies<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Reply,
{
    /// The next piece, at most `MAX_PIECE` of it (the rest stays first in line).
    fn next_piece(&mut self) -> Option<Bytes> {
        let mut piece = self.pending.pop_front()?;
        if piece.len() > MAX_PIECE {
            self.pending.push_front(piece.split_off(MAX_PIECE));
        }
        Some(piece)
    }

    fn next_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(piece) = self.next_piece() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut self.replies).poll_next(cx)) {
            Some(Ok(reply)) => {
                let len = reply.encoded_len();
                if len <= self.max_message {
                    let mut head = BytesMut::with_capacity(64);
                    head.put_u8(0);
                    head.put_u32(len as u32);
                    reply.write_pieces(head, &mut self.pending);
                    let first = self.next_piece().expect("at least the prefix");
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                // Not tonic's OUT_OF_RANGE: a consumer would take it for its offset.
                Status::resource_exhausted(format!(
                    "the answer's message is {len} bytes, over the {} bytes this server \
                     sends: ask for fewer bytes",
                    self.max_message
                ))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's frames until it ends: the data sent, then the trailers.
    fn drain(mut body: Body) -> (Vec<u8>, http::HeaderMap) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut data = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(piece) => data.extend_from_slice(&piece),
                    Err(frame) => return (data, frame.into_trailers().unwrap()),
                },
                other => panic!("the body ended without trailers: {other:?}"),
            }
        }
    }

    fn reply(id: u64) -> pb::ProduceStreamResponse {
        pb::ProduceStreamResponse {
            correlation_id: id,
            result: None,
        }
    }

    #[test]
    fn replies_are_framed_then_the_status_ends_the_body() {
        let replies = tokio_stream::iter([Ok(reply(1)), Ok(reply(300))]);
        let (data, trailers) = drain(respond(replies, 100, None).into_body());
        let mut expected = Vec::new();
        for id in [1, 300] {
            let m = reply(id).encode_to_vec();
            expected.push(0);
            expected.extend_from_slice(&(m.len() as u32).to_be_bytes());
            expected.extend_from_slice(&m);
        }
        assert_eq!(data, expected);
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Big {
        #[prost(bytes = "bytes", tag = "1")]
        data: Bytes,
    }
    impl Reply for Big {}

    /// A piece of several MiB goes out as frames of at most `MAX_PIECE`, which the
    /// connection's watchdog times one by one.
    #[test]
    fn long_pieces_go_out_in_frames_of_at_most_a_mebibyte() {
        let big = Big {
            data: Bytes::from(vec![3u8; 3 * MAX_PIECE + 5]),
        };
        let expected = big.encode_to_vec();
        let mut body = respond(tokio_stream::once(Ok(big)), 64 << 20, None).into_body();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut data = Vec::new();
        let mut frames = 0;
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            if let Ok(piece) = frame.into_data() {
                assert!(piece.len() <= MAX_PIECE, "a frame of {} bytes", piece.len());
                data.extend_from_slice(&piece);
                frames += 1;
            }
        }
        assert_eq!(&data[5..], &expected[..]);
        assert!(frames >= 4, "{frames} frames");
    }

    #[test]
    fn a_reply_over_the_limit_ends_the_response_resource_exhausted() {
        let replies = tokio_stream::iter([Ok(reply(1)), Ok(reply(u64::MAX))]);
        let (data, trailers) = drain(respond(replies, 3, None).into_body());
        assert_eq!(data.len(), 5 + 2, "only the first reply, of two bytes");
        assert_eq!(trailers["grpc-status"], "8");
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(message.contains("fewer%20bytes"), "{message}");
    }
}
