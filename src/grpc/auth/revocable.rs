//! A call's bodies, checked against the tokens file and the access control list at
//! each message after either is read again (one or two atomic loads a message until
//! then): a revoked token ends the streams it opened, and a grant taken away ends the
//! streams that delivered what it granted.
//!
//! - A request body (every call's, with tokens) fails with UNAUTHENTICATED at its next
//!   DATA frame, so a ProduceStream's next request is not read. Messages already read,
//!   or read in the same frame before the reload, are still appended and answered:
//!   their answers are never dropped, so a client never sees a failure for a write that
//!   happened. (A ProduceStream checks each request's grant itself, as it reads it.)
//! - The response of a stream that delivers records (Subscribe, ShareStream) ends in
//!   place of its next message, with UNAUTHENTICATED in its trailers if its token went,
//!   or PERMISSION_DENIED if the grant its handler left on it (`Grant`) went, so
//!   nothing more is delivered; never in the middle of a message. One with nothing to
//!   send is woken by the reload and ends then.
//! - Unary calls in flight at the reload finish as they would have.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::SelectAll;
use http_body::Frame;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;
use tonic::body::Body;

use super::access::Grant;
use super::acl::Acl;
use super::{revoked, Digest, Principal, Tokens};

/// A call's token, to look up again after the tokens file is read again.
#[derive(Clone)]
pub(super) struct TokenWatch {
    pub(super) tokens: Tokens,
    pub(super) digest: Digest,
    /// Whose it was: a token moved to another name no longer stands for the call,
    /// whose grants were that name's.
    pub(super) principal: Principal,
    /// The file's reading the token was last checked against.
    pub(super) generation: u64,
}

/// A stream's grant, to check again after the list is read again.
#[derive(Clone)]
pub(super) struct GrantWatch {
    pub(super) acl: Acl,
    /// None: the handler left none (it refused the call, or delivers nothing).
    pub(super) grant: Option<Grant>,
    /// The list's reading the grant was last checked against.
    pub(super) generation: u64,
}

/// What a call's bodies check.
#[derive(Clone)]
pub(super) struct Watch {
    pub(super) token: Option<TokenWatch>,
    pub(super) grant: Option<GrantWatch>,
}

impl From<TokenWatch> for Watch {
    fn from(token: TokenWatch) -> Watch {
        Watch {
            token: Some(token),
            grant: None,
        }
    }
}

impl Watch {
    /// Ok while the token and the grant stand: each looked up again only when its file
    /// was read again since the last look; else the status the body ends with.
    fn stands(&mut self) -> Result<(), tonic::Status> {
        if let Some(token) = &mut self.token {
            let now = token.tokens.generation();
            if now != token.generation {
                token.generation = now;
                if token.tokens.known(&token.digest).as_ref() != Some(&token.principal) {
                    return Err(revoked());
                }
            }
        }
        if let Some(grant) = &mut self.grant {
            let now = grant.acl.generation();
            if now != grant.generation {
                grant.generation = now;
                if let Some(held) = &grant.grant {
                    held.check().map_err(crate::grpc::status)?;
                }
            }
        }
        Ok(())
    }

    /// Its wake-ups: one at each reload of the files it checks.
    fn reloads(&self) -> SelectAll<WatchStream<()>> {
        let mut reloads = SelectAll::new();
        if let Some(token) = &self.token {
            reloads.push(WatchStream::from_changes(token.tokens.reloads()));
        }
        if let Some(grant) = &self.grant {
            reloads.push(WatchStream::from_changes(grant.acl.reloads()));
        }
        reloads
    }
}

pub(super) struct Revocable {
    body: Body,
    watch: Watch,
    /// A response's: None for a request.
    delivery: Option<Delivery>,
}

/// What a response that delivers records keeps to end it between messages.
struct Delivery {
    /// Where it is in its gRPC framing.
    framing: Framing,
    /// Its wake-up at each reload, while it has nothing to send.
    reloads: SelectAll<WatchStream<()>>,
}

impl Revocable {
    pub(super) fn request(body: Body, watch: Watch) -> Body {
        Body::new(Revocable {
            body,
            watch,
            delivery: None,
        })
    }

    pub(super) fn response(body: Body, watch: Watch) -> Body {
        let reloads = watch.reloads();
        Body::new(Revocable {
            body,
            watch,
            delivery: Some(Delivery {
                framing: Framing::default(),
                reloads,
            }),
        })
    }

    /// Ends the body with `status`: a request's reader gets it as an error, a
    /// response's client in the trailers.
    fn end(&mut self, status: tonic::Status) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.body = Body::empty();
        if self.delivery.take().is_none() {
            return Poll::Ready(Some(Err(status)));
        }
        let mut trailers = http::HeaderMap::new();
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl http_body::Body for Revocable {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            // Nothing to send: a reload wakes it, to end it if its token went.
            Poll::Pending => {
                let Some(delivery) = &mut this.delivery else {
                    return Poll::Pending;
                };
                while let Poll::Ready(Some(())) = Pin::new(&mut delivery.reloads).poll_next(cx) {
                    if delivery.framing.at_boundary() {
                        if let Err(status) = this.watch.stands() {
                            return this.end(status);
                        }
                    }
                }
                return Poll::Pending;
            }
        };
        let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) else {
            return Poll::Ready(frame); // trailers, an error, or the end
        };
        // A request's next frame, or a frame that starts a response's next message.
        let boundary = this
            .delivery
            .as_ref()
            .is_none_or(|d| d.framing.at_boundary());
        if boundary {
            if let Err(status) = this.watch.stands() {
                return this.end(status);
            }
        }
        if let Some(delivery) = &mut this.delivery {
            delivery.framing.advance(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Where a response is in gRPC's framing (a flag byte and a 4-byte big-endian length
/// before each message), so that it is ended between messages, never inside one.
#[derive(Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_seen: usize,
    message_left: u64,
}

impl Framing {
    fn at_boundary(&self) -> bool {
        self.prefix_seen == 0 && self.message_left == 0
    }

    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = (self.message_left as usize).min(data.len());
                self.message_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_seen).min(data.len());
            self.prefix[self.prefix_seen..self.prefix_seen + n].copy_from_slice(&data[..n]);
            self.prefix_seen += n;
            data = &data[n..];
            if self.prefix_seen == 5 {
                let [_, a, b, c, d] = self.prefix;
                self.message_left = u32::from_be_bytes([a, b, c, d]) as u64;
                self.prefix_seen = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn framing_finds_the_ends_of_messages_however_frames_cut_them() {
        // Messages of 3, 0 and 2 bytes.
        let stream = [0u8, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 7, 8];
        let ends = [8usize, 13, 20];
        for cut in 1..stream.len() {
            let mut framing = Framing::default();
            let mut at = 0;
            for piece in stream.chunks(cut) {
                framing.advance(piece);
                at += piece.len();
                let end = ends.contains(&at);
                assert_eq!(framing.at_boundary(), end || at == 0, "cut {cut}, at {at}");
            }
        }
    }
}
