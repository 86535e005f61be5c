//! gRPC messages read from the HTTP/2 DATA frames they arrived in: a server's requests,
//! and the Rust client's Fetch and Subscribe responses.
//!
//! A gRPC message is a flag byte and a big-endian length, then the protobuf bytes.
//! HTTP/2 hands each DATA frame over as a slice of its read buffer, and with 1 MiB
//! frames (`MAX_FRAME_BYTES`) a message usually arrives whole in one of them: it is
//! decoded straight from that frame, so `Bytes` fields of the message are slices of it.
//! A message split over frames is gathered as a rope (`rope.rs`): long frames held as
//! they are, short ones copied together, and a field cut by a boundary copied when it
//! is decoded. Errors are the ones tonic gives for the same input (a compressed flag
//! INTERNAL, a message that does not decode INVALID_ARGUMENT, a response that ends
//! without a status UNKNOWN), but for a message over the size limit: RESOURCE_EXHAUSTED,
//! not tonic's OUT_OF_RANGE, which strom's API keeps for offsets.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Body as HttpBody;
use prost::Message;
use tokio_stream::Stream;
use tonic::{Code, Status};

use super::rope::{Gathering, Rope};
use super::PREFIX;
use crate::grpc::request_limits::too_large;

/// The messages of one request or response body, decoded from its DATA frames.
pub struct Messages<B, M> {
    body: B,
    message: PhantomData<fn() -> M>,
    max_message: usize,
    /// What is left of the last DATA frame received.
    frame: Bytes,
    /// The part received so far of a prefix or a message that spans frames: long frames
    /// held, short ones copied as they arrive (at most one message, so about
    /// `max_message` bytes at most, however small the frames).
    partial: Gathering,
    /// The length of the message whose prefix has been read.
    next_len: Option<usize>,
    /// Whether the body is a response, which must end with its status as trailers.
    response: bool,
    /// The call a request is for, named in its errors.
    call: &'static str,
    /// A response's status, once its trailers have arrived.
    status: Option<Status>,
    ended: bool,
}

impl<B, M> Messages<B, M> {
    /// The messages of a request body.
    pub fn new(body: B, max_message: usize) -> Messages<B, M> {
        Messages {
            body,
            message: PhantomData,
            max_message,
            frame: Bytes::new(),
            partial: Gathering::default(),
            next_len: None,
            response: false,
            call: "this call",
            status: None,
            ended: false,
        }
    }

    /// The messages of a request body for `call` (its path, named in errors).
    pub fn request(body: B, max_message: usize, call: &'static str) -> Messages<B, M> {
        Messages {
            call,
            ..Messages::new(body, max_message)
        }
    }

    /// The messages of a response body, then an error if its status is not OK.
    /// `status`: the one its headers carried, if any (an OK status there, as in a
    /// trailers-only response, ends the messages without trailers).
    pub fn response(body: B, max_message: usize, status: Option<Status>) -> Messages<B, M> {
        Messages {
            response: true,
            status,
            ..Messages::new(body, max_message)
        }
    }

    /// The next `n` bytes if they have arrived: a slice of the frame when it holds them
    /// all (no copy), else gathered in `partial`, taking what the frame has.
    fn take(&mut self, n: usize) -> Option<Rope> {
        if self.partial.is_empty() && self.frame.len() >= n {
            return Some(Rope::from(self.frame.split_to(n)));
        }
        let k = (n - self.partial.len()).min(self.frame.len());
        self.partial.push(self.frame.split_to(k));
        (self.partial.len() == n).then(|| std::mem::take(&mut self.partial).finish())
    }

    /// The next complete message, if it has arrived.
    fn next_message(&mut self) -> Result<Option<Rope>, Status> {
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
                    let side = if self.response {
                        "receiving response"
                    } else {
                        "sending request"
                    };
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while {side}"
                    )));
                }
            }
            let len = prefix.get_u32() as usize;
            if len > self.max_message {
                // Not tonic's OUT_OF_RANGE, which strom's API keeps for offsets.
                return Err(match self.response {
                    true => Status::resource_exhausted(format!(
                        "the answer's message is {len} bytes, over the {} bytes this client accepts",
                        self.max_message
                    )),
                    false => too_large(len, self.max_message, self.call),
                });
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
                    let decoded = M::decode(message).map_err(crate::grpc::codec::not_protobuf);
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
                    // The last frame is used up: `next_message` takes or gathers all it
                    // can. A request's trailers carry nothing a call needs.
                    match frame.into_data() {
                        Ok(data) => me.frame = data,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                me.status = Status::from_header_map(&trailers);
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    me.ended = true;
                    let status = match error.into().downcast::<Status>() {
                        Ok(status) => *status,
                        Err(error) => Status::from_error(error),
                    };
                    // A client that cancels its stream has ended it, as in tonic.
                    if status.code() == Code::Cancelled && !me.response {
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
                    if !me.response {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(match me.status.take() {
                        Some(status) if status.code() == Code::Ok => None,
                        Some(status) => Some(Err(status)),
                        // As tonic: hyper ends a body reset with NO_ERROR or CANCEL (a
                        // proxy's timeout, say) as if it were whole.
                        None => Some(Err(Status::unknown(
                            "protocol error: the response ended without a grpc-status",
                        ))),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
