//! The tower layer that gives every gRPC call that produces or fetches its client's
//! `Quota`, and refuses the calls of a client over its request rate.

use std::future::Ready;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::watch;
use tonic::body::Body;

use super::{Flow, Quotas};
use crate::grpc::auth::Principal;
use crate::grpc::connection::ConnectionInfo;

/// The calls a byte quota limits: the others (heartbeats, admin, health checks) do
/// not look their client up unless requests are limited.
const LIMITED: [&str; 7] = [
    "/strom.v1.Log/Produce",
    "/strom.v1.Log/ProduceStream",
    "/strom.v1.Exchanges/Publish",
    "/strom.v1.Log/Fetch",
    "/strom.v1.Log/Subscribe",
    "/strom.v1.Queues/ShareFetch",
    "/strom.v1.Queues/ShareStream",
];

/// Services whose calls are not requests a `requests=` rate counts: a probe held back
/// would see a live server as dead.
const NOT_COUNTED: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The trailer that tells a gRPC client when to retry (gRFC A6's server pushback, in
/// milliseconds), which clients with a retry policy follow.
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Gives the calls that produce or fetch their client's `Quota`, and refuses a call of
/// a client over its request rate (RESOURCE_EXHAUSTED, with when to try again), when
/// there is a quotas file. After the auth layer, which names the caller.
#[derive(Clone)]
pub struct QuotaLayer {
    quotas: Option<Quotas>,
    /// The server's stop, which a produce message's wait for its turn watches.
    stop: watch::Receiver<bool>,
}

impl QuotaLayer {
    pub fn new(quotas: Option<Quotas>, stop: watch::Receiver<bool>) -> QuotaLayer {
        QuotaLayer { quotas, stop }
    }
}

impl<S> tower_layer::Layer<S> for QuotaLayer {
    type Service = WithQuota<S>;
    fn layer(&self, inner: S) -> WithQuota<S> {
        WithQuota {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WithQuota<S> {
    inner: S,
    layer: QuotaLayer,
}

impl<S> tower_service::Service<http::Request<Body>> for WithQuota<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(quotas) = &self.layer.quotas else {
            return Either::Left(self.inner.call(request));
        };
        let path = request.uri().path();
        let limited = LIMITED.contains(&path);
        let counted = quotas.requests_limited() && !NOT_COUNTED.iter().any(|s| path.starts_with(s));
        if !limited && !counted {
            return Either::Left(self.inner.call(request));
        }
        let extensions = request.extensions();
        let address = extensions
            .get::<ConnectionInfo>()
            .and_then(ConnectionInfo::peer_ip);
        let quota = quotas.of(extensions.get::<Principal>(), address);
        let wait = match counted {
            true => quota.try_take(Flow::Requests, 1),
            false => Duration::ZERO,
        };
        if wait.is_zero() {
            if limited {
                // With the server's stop, which a produce message's turn watches.
                let quota = quota.ends_at(self.layer.stop.clone());
                request.extensions_mut().insert(quota);
            }
            return Either::Left(self.inner.call(request));
        }
        // Over its request rate: refused at once, before anything of it is read, with
        // when to try again. A call made to wait would hold a place of `max_calls`
        // and its bytes in HTTP/2's windows meanwhile: a client over its rate could
        // so take every place from the others.
        quota.note_wait(Flow::Requests, Duration::ZERO);
        // Rounded up: a client that waits this long finds its turn come.
        let millis = wait.as_nanos().div_ceil(1_000_000).max(1);
        let mut refused = tonic::Status::resource_exhausted(format!(
            "this client is over its request rate (quotas: requests=): try again in {millis} ms, or make fewer calls a second"
        ));
        let pushback = millis
            .to_string()
            .parse()
            .expect("digits are a header value");
        refused.metadata_mut().insert(PUSHBACK, pushback);
        Either::Right(std::future::ready(Ok(refused.into_http())))
    }
}
