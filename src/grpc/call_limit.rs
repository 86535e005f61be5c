//! A cap on the calls open at once over the whole server. HTTP/2 bounds the calls of
//! one connection (`ServeOptions::max_concurrent_streams`) and the server bounds its
//! connections, but their product is no bound: one client opened 100,000 Subscribe
//! streams on ten connections and grew the server by 331 MB (hostile-client finding),
//! and the limits allow ten thousand times that. Past the cap a call is answered at once
//! with RESOURCE_EXHAUSTED, before it is read; a call holds its place until its response
//! ends (a stream until it closes). Health checks (`Check`, not `Watch`) are not
//! counted: a server at its cap is busy, not dead, and a probe that failed would have
//! it restarted.
//!
//! Since it sees every call from its start to its response's end, it also counts them
//! (`call_metrics`): by method and status, and the time each unary call took.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::call_metrics::{Call, CallMetrics};

/// The one call not counted: a health check (a Watch is a stream like any other).
const UNCOUNTED: &str = "/grpc.health.v1.Health/Check";

#[derive(Clone)]
pub struct CallLimitLayer {
    open: Arc<Semaphore>,
    max: usize,
    metrics: Arc<CallMetrics>,
}

impl CallLimitLayer {
    pub fn new(max_calls: usize, metrics: Arc<CallMetrics>) -> CallLimitLayer {
        let max = max_calls.clamp(1, Semaphore::MAX_PERMITS);
        CallLimitLayer {
            open: Arc::new(Semaphore::new(max)),
            max,
            metrics,
        }
    }

    /// Calls open now (health checks aside).
    pub fn open_calls(&self) -> usize {
        self.max - self.open.available_permits()
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
        let mut call = Call::start(Arc::clone(&self.limit.metrics), request.uri().path());
        let place = if request.uri().path() == UNCOUNTED {
            None
        } else {
            let Ok(place) = Arc::clone(&self.limit.open).try_acquire_owned() else {
                let refused = tonic::Status::resource_exhausted(format!(
                    "this server has {} calls open, its max_calls: try again later, or close \
                     calls (streams, long polls) this client does not need",
                    self.limit.max
                ))
                .into_http();
                call.saw(refused.headers());
                return Box::pin(std::future::ready(Ok(refused)));
            };
            Some(place)
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(err) => {
                    call.ended(); // no response, so no status: UNKNOWN
                    return Err(err);
                }
            };
            // A status in the headers: the response is trailers-only (an error).
            call.saw(response.headers());
            Ok(response.map(|body| {
                Body::new(Placed {
                    body,
                    call,
                    _place: place,
                })
            }))
        })
    }
}

/// A response body holding its call's place until it ends or goes, and counting the
/// call when it goes.
struct Placed {
    body: Body,
    call: Call,
    _place: Option<OwnedSemaphorePermit>,
}

impl HttpBody for Placed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.call.saw(trailers);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.call.ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
