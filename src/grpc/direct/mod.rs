//! The `Log` service's hot calls served without tonic's buffers.
//!
//! tonic copies every HTTP/2 DATA frame of a request into one receive buffer, and
//! encodes every response message into one send buffer. For produce requests the first
//! copy was 8-9% of the server's CPU, for fetches the second 18% (BENCHMARKS.md). So
//! this service reads and writes the gRPC framing itself (a flag byte and a big-endian
//! length before each message): a request is decoded straight from the frame it arrived
//! in (`messages.rs`), so records stay slices of that frame until the kernel copies them
//! into the page cache; a Fetch or Subscribe response sends the records it read as
//! slices of the segment maps (`replies.rs`), so the kernel's copy into the socket is
//! the only one.
//!
//! Produce, ProduceStream, Fetch and Subscribe without compression take this path;
//! every other call, and a request that announces a `grpc-encoding`, goes to tonic's
//! generated service. The budgets (`budget/`) sit in front of both, the
//! answers come from the same functions of `log_service.rs`, `subscribe.rs` and `produce_stream.rs` as
//! tonic's path, and errors are the ones tonic gives for the same input, except that a
//! message over the size limit is RESOURCE_EXHAUSTED (`grpc::request_limits`), not
//! OUT_OF_RANGE, and a request without its message INVALID_ARGUMENT, not INTERNAL.

mod messages;
mod replies;
mod rope;

pub use messages::Messages;
pub use replies::Reply;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

use super::auth::Access;
use super::budget::Charge;
use super::connection::ConnectionInfo;
use super::pb::log_server::LogServer;
use super::request_limits::SMALL_REQUEST_BYTES;
use super::{log_service, produce_stream, subscribe, LogService};
use crate::broker::Broker;
use replies::respond;

const PRODUCE_STREAM: &str = "/strom.v1.Log/ProduceStream";
const PRODUCE: &str = "/strom.v1.Log/Produce";
const FETCH: &str = "/strom.v1.Log/Fetch";
const SUBSCRIBE: &str = "/strom.v1.Log/Subscribe";
/// A gRPC message's prefix: the compression flag and the length.
const PREFIX: usize = 5;

/// The `Log` service: the generated one, with its hot calls taken off its hands.
#[derive(Clone)]
pub struct DirectLog {
    inner: LogServer<LogService>,
    broker: Arc<Broker>,
    max_request: usize,
    max_response: usize,
}

impl DirectLog {
    /// `max_request`: the largest request message accepted; `max_response`: the largest
    /// response message sent. Both paths get the same limits.
    pub fn new(broker: Arc<Broker>, max_request: usize, max_response: usize) -> DirectLog {
        let inner = LogServer::new(LogService::new(Arc::clone(&broker)))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        DirectLog {
            inner,
            broker,
            max_request,
            max_response,
        }
    }
}

impl NamedService for DirectLog {
    const NAME: &'static str = <LogServer<LogService> as NamedService>::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl tower_service::Service<http::Request<Body>> for DirectLog {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if !identity(&request) || ![PRODUCE_STREAM, PRODUCE, FETCH, SUBSCRIBE].contains(&path) {
            return Box::pin(self.inner.call(request));
        }
        let broker = Arc::clone(&self.broker);
        let (max_request, max_response) = (self.max_request, self.max_response);
        // Present when the server accepted the socket itself (`connection::Watched`).
        let connection = request.extensions().get::<ConnectionInfo>().cloned();
        let access = Access::of(request.extensions());
        let quota = super::quota::of(request.extensions());
        match path {
            PRODUCE_STREAM => {
                let charge = charge(&request);
                let inbound = Messages::request(request.into_body(), max_request, PRODUCE_STREAM);
                let replies =
                    produce_stream::produce_stream(broker, inbound, charge, (access, quota));
                // Produce replies hold no segment maps: not watched.
                let response = respond(replies, max_response, None);
                Box::pin(std::future::ready(Ok(response)))
            }
            PRODUCE => {
                let charge = charge(&request);
                Box::pin(async move {
                    let reply = match single(request, max_request, PRODUCE).await {
                        // The budget layer charged the message as its body arrived:
                        // taken only now, and held until it is answered.
                        Ok(request) => {
                            let (charge, by) = (charge.take_next(), (access, quota));
                            log_service::produce_one(broker, request, charge, by).await
                        }
                        Err(status) => Err(status),
                    };
                    Ok(unary(reply, max_response, None))
                })
            }
            FETCH => Box::pin(async move {
                let reply = match single(request, SMALL_REQUEST_BYTES, FETCH).await {
                    Ok(request) => log_service::fetch_one(&broker, request, access, quota).await,
                    Err(status) => Err(status),
                };
                Ok(unary(reply, max_response, connection))
            }),
            _ => Box::pin(async move {
                let replies = match single(request, SMALL_REQUEST_BYTES, SUBSCRIBE).await {
                    Ok(request) => {
                        subscribe::subscribe_stream(&broker, request, access, quota).await
                    }
                    Err(status) => Err(status),
                };
                Ok(match replies {
                    Ok((replies, grant)) => {
                        let mut response = respond(replies, max_response, connection.as_ref());
                        // For the auth layer, to end the stream if the grant goes.
                        response.extensions_mut().insert(grant);
                        response
                    }
                    Err(status) => status.into_http(),
                })
            }),
        }
    }
}

/// Whether the request's messages are not compressed: only those are served here.
fn identity(request: &http::Request<Body>) -> bool {
    request
        .headers()
        .get("grpc-encoding")
        .is_none_or(|e| e == "identity")
}

/// Whether this service reads `request` itself, at most `SMALL_REQUEST_BYTES` of it (a
/// Fetch or Subscribe not compressed): the request budget (`budget/`) leaves it be.
pub(super) fn reads_small_requests(request: &http::Request<Body>) -> bool {
    [FETCH, SUBSCRIBE].contains(&request.uri().path()) && identity(request)
}

/// The request's share of the produce budget, charged by `budget/`.
fn charge(request: &http::Request<Body>) -> Charge {
    request
        .extensions()
        .get::<Charge>()
        .cloned()
        .unwrap_or_default()
}

/// The one message of a unary or server-streaming call to `call`, once the request has
/// ended: a second message is refused, as tonic's path refuses it (a Produce stored the
/// first and answered OK). Clients end a request with its message; the budget layer
/// bounds how long a charged one may take.
async fn single<M: Message + Default>(
    request: http::Request<Body>,
    max_request: usize,
    call: &'static str,
) -> Result<M, Status> {
    let mut inbound = Messages::<_, M>::request(request.into_body(), max_request, call);
    let count = |what| {
        Status::invalid_argument(format!(
            "a request to {call} carries one message, and this one has {what}"
        ))
    };
    let message = inbound.next().await.unwrap_or_else(|| Err(count("none")))?;
    match inbound.next().await {
        None => Ok(message),
        Some(Ok(_)) => Err(count("more")),
        Some(Err(status)) => Err(status),
    }
}

/// The response of a unary call: its reply, or its status alone (trailers only).
fn unary<M: Reply + Send + 'static>(
    reply: Result<M, Status>,
    max_response: usize,
    connection: Option<ConnectionInfo>,
) -> http::Response<Body> {
    match reply {
        Ok(reply) => respond(
            tokio_stream::once(Ok(reply)),
            max_response,
            connection.as_ref(),
        ),
        Err(status) => status.into_http(),
    }
}
