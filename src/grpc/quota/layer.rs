//! The tower layer that gives every gRPC call that produces or fetches its client's
//! `Quota`, and holds back the calls of a client over its request rate.

use std::future::Future;
use std::pin::Pin;
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

/// How long a call waits for its client's turn before it is refused: as long as a
/// produce message waits for the produce budget (`grpc/budget/`).
const MAX_TURN: Duration = crate::grpc::budget::MESSAGE_DEADLINE;

/// Gives the calls that produce or fetch their client's `Quota`, and makes a call of a
/// client over its request rate wait for its turn (at most `MAX_TURN`, then
/// RESOURCE_EXHAUSTED), when there is a quotas file. After the auth layer, which names
/// the caller.
#[derive(Clone)]
pub struct QuotaLayer {
    quotas: Option<Quotas>,
    /// The server's stop, which ends the calls' waits for their turn.
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

type Waiting<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for WithQuota<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Waiting<S::Response, S::Error>>;

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
        let quota = quotas
            .of(extensions.get::<Principal>(), address)
            .ends_at(self.layer.stop.clone());
        if limited {
            request.extensions_mut().insert(quota.clone());
        }
        if !counted || quota.try_take(Flow::Requests, 1).is_zero() {
            return Either::Left(self.inner.call(request));
        }
        // Over its request rate: the call waits for its client's turn. The service
        // made ready is the one called, later; this one takes a fresh clone's place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let turn = quota.take_turn(Flow::Requests, 1);
            let refused = match tokio::time::timeout(MAX_TURN, turn).await {
                Ok(true) => return inner.call(request).await,
                Ok(false) => tonic::Status::unavailable(
                    "the server is stopping: make the call again, to another server or once it is back",
                ),
                Err(_) => tonic::Status::resource_exhausted(format!(
                    "this client is over its request rate (quotas: requests=), and its turn did not come within {MAX_TURN:?}: make fewer calls a second"
                )),
            };
            Ok(refused.into_http())
        }))
    }
}
