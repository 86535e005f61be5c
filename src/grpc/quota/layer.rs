//! The tower layer that gives every gRPC call its client's `Quota`.

use std::task::{Context, Poll};

use tonic::body::Body;

use super::Quotas;
use crate::grpc::auth::Principal;
use crate::grpc::connection::ConnectionInfo;

/// The calls a quota limits: the others (heartbeats, admin, health checks) do not
/// look their client up.
const LIMITED: [&str; 7] = [
    "/strom.v1.Log/Produce",
    "/strom.v1.Log/ProduceStream",
    "/strom.v1.Exchanges/Publish",
    "/strom.v1.Log/Fetch",
    "/strom.v1.Log/Subscribe",
    "/strom.v1.Queues/ShareFetch",
    "/strom.v1.Queues/ShareStream",
];

/// Gives the calls that produce or fetch their client's `Quota`, when there is a
/// quotas file. After the auth
/// layer, which names the caller.
#[derive(Clone)]
pub struct QuotaLayer {
    quotas: Option<Quotas>,
}

impl QuotaLayer {
    pub fn new(quotas: Option<Quotas>) -> QuotaLayer {
        QuotaLayer { quotas }
    }
}

impl<S> tower_layer::Layer<S> for QuotaLayer {
    type Service = WithQuota<S>;
    fn layer(&self, inner: S) -> WithQuota<S> {
        WithQuota {
            inner,
            quotas: self.quotas.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WithQuota<S> {
    inner: S,
    quotas: Option<Quotas>,
}

impl<S> tower_service::Service<http::Request<Body>> for WithQuota<S>
where
    S: tower_service::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> S::Future {
        let limited = LIMITED.contains(&request.uri().path());
        if let (Some(quotas), true) = (&self.quotas, limited) {
            let extensions = request.extensions();
            let address = extensions
                .get::<ConnectionInfo>()
                .and_then(ConnectionInfo::peer_ip);
            let quota = quotas.of(extensions.get::<Principal>(), address);
            request.extensions_mut().insert(quota);
        }
        self.inner.call(request)
    }
}
