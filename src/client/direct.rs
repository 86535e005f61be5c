//! Fetch and Subscribe read straight from the HTTP/2 frames of their responses.
//!
//! tonic's client copies every DATA frame of a response into one receive buffer before
//! decoding it (21% of a consumer's CPU, BENCHMARKS.md). The server sends a response's
//! records in long frames, so these calls read the gRPC framing themselves
//! (`grpc::direct::Messages`) and keep each record a slice of the frame it arrived in;
//! only a record that a frame boundary cuts is copied.

use std::future::poll_fn;

use crate::client::Channel;
use bytes::{BufMut, BytesMut};
use http_body_util::Full;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::{Code, Status};
use tower_service::Service;

use super::{Client, MAX_MESSAGE};
use crate::grpc::direct::Messages;
use crate::grpc::pb;
use crate::grpc::records::{FetchResponse, SubscribeResponse};

/// The responses of a Subscribe, in order; an error ends it.
pub type Subscription = Messages<Body, SubscribeResponse>;

impl Client {
    /// One Fetch.
    pub async fn fetch(&self, request: pb::FetchRequest) -> Result<FetchResponse, Status> {
        let mut replies = call(&self.channel, "/strom.v1.Log/Fetch", &request).await?;
        let reply = match replies.next().await {
            Some(reply) => reply?,
            None => return Err(Status::internal("Missing response message.")),
        };
        // The status follows the message: an error there is the call's.
        match replies.next().await {
            None => Ok(reply),
            Some(Err(status)) => Err(status),
            Some(Ok(_)) => Err(Status::internal("a Fetch answered with two messages")),
        }
    }

    /// A Subscribe: its responses as they come.
    pub async fn subscribe(&self, request: pb::SubscribeRequest) -> Result<Subscription, Status> {
        call(&self.channel, "/strom.v1.Log/Subscribe", &request).await
    }
}

/// Sends a call of one request message and reads the response's messages.
async fn call<Q: Message, R: Message + Default>(
    channel: &Channel,
    path: &'static str,
    request: &Q,
) -> Result<Messages<Body, R>, Status> {
    let len = request.encoded_len();
    let mut message = BytesMut::with_capacity(5 + len);
    message.put_u8(0);
    message.put_u32(len as u32);
    request.encode(&mut message).expect("reserved above");
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(Full::new(message.freeze())))
        .expect("static headers are valid");
    let mut channel = channel.clone();
    let transport = |e: tonic::transport::Error| Status::from_error(Box::new(e));
    poll_fn(|cx| Service::poll_ready(&mut channel, cx))
        .await
        .map_err(transport)?;
    let response = channel.call(request).await.map_err(transport)?;
    // A call refused at once is answered with its status in the headers ("trailers
    // only"); a reply that is not gRPC at all by its HTTP status alone.
    let status = Status::from_header_map(response.headers());
    if let Some(status) = status.as_ref().filter(|s| s.code() != Code::Ok) {
        return Err(status.clone());
    }
    if response.status() != http::StatusCode::OK {
        return Err(http_status(response.status()));
    }
    Ok(Messages::response(
        response.into_body(),
        MAX_MESSAGE,
        status,
    ))
}

/// The gRPC status of an HTTP status without one, as gRPC's own mapping has it.
fn http_status(code: http::StatusCode) -> Status {
    let grpc = match code {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(grpc, format!("HTTP status {code} without a gRPC status"))
}
