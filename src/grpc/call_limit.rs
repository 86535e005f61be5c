//! A cap on the calls open at once over the whole server. HTTP/2 bounds the calls of
//! one connection (`ServeOptions::max_concurrent_streams`) and the server bounds its
//! connections, but their product is no bound: one client opened 100,000 Subscribe
//! streams on ten connections and grew the server by 331 MB (hostile-client finding),
//! and the limits allow ten thousand times that. Past the cap a call is answered at once
//! with RESOURCE_EXHAUSTED, before it is read; a call holds its place until its response
//! ends (a stream until it closes). Health checks (`Check`, not `Watch`) are not
//! counted: a server at its cap is busy, not dead, and a probe that failed would have
//! it restarted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

/// The one call not counted: a health check (a Watch is a stream like any other).
const UNCOUNTED: &str = "/grpc.health.v1.Health/Check";

#[derive(Clone)]
pub struct CallLimitLayer {
    open: Arc<Semaphore>,
    max: usize,
}

impl CallLimitLayer {
    pub fn new(max_calls: usize) -> CallLimitLayer {
        let max = max_calls.clamp(1, Semaphore::MAX_PERMITS);
        CallLimitLayer {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl<S> tower_layer::Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;
    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            limit: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLimit<S> {
    inner: S,
    limit: CallLimitLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for CallLimit<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == UNCOUNTED {
            return Box::pin(self.inner.call(request));
        }
        let Ok(place) = Arc::clone(&self.limit.open).try_acquire_owned() else {
            let refused = tonic::Status::resource_exhausted(format!(
                "this server has {} calls open, its max_calls: try again later, or close calls \
                 (streams, long polls) this client does not need",
                self.limit.max
            ));
            return Box::pin(std::future::ready(Ok(refused.into_http())));
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(Placed {
                    body,
                    _place: place,
                })
            }))
        })
    }
}

/// A response body holding its call's place until it ends or goes.
struct Placed {
    body: Body,
    _place: OwnedSemaphorePermit,
}

impl HttpBody for Placed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
