//! Answering while the server starts. The gRPC port is bound before the data directory
//! is opened (a port in use is found at once), and opening it may take seconds: every
//! partition not closed cleanly is recovered. Until the server is ready, this answers
//! on the port, so that a client is told at once rather than left waiting on a
//! connection nobody serves: a health Check says NOT_SERVING, for the server and for
//! each service, and every other call gets UNAVAILABLE with how far the start has got
//! (UNAVAILABLE is what clients retry: the Rust producer does, and so do gRPC's retry
//! policies). No token is needed to be told that.
//!
//! With `auth_tokens`, the answer says only that the server is starting: how many
//! partitions it has is not told to callers without a token.
//!
//! When the server is ready, [`Starting::end`] stops accepting here and hands the
//! listener to the server, which accepts from then on. The connections opened here
//! are sent GOAWAY (HTTP/2's "reconnect"): gRPC clients open a new connection for
//! their next call. A call that reaches one before the GOAWAY does is still answered
//! UNAVAILABLE; a connection still in its TLS handshake, or that has not spoken
//! HTTP/2 yet, is closed without a GOAWAY, and its client connects again. Any a client
//! keeps open are closed after `shutdown_timeout`.
//!
//! The handover needs tonic to drop its accepts as soon as it is told to stop, before
//! its connections close (tonic 0.14.7 on; `Cargo.toml` asks for it).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;
use tower_service::Service;

use super::{ServeOptions, HEALTH_SERVICES};
use crate::broker::Opening;
use crate::error::{Error, Result};
use crate::grpc::connection::{served, Admission, Hangup, Incoming, Timeouts};

/// The gRPC port answering while the server starts.
pub struct Starting {
    listener: Arc<TcpListener>,
    stop: oneshot::Sender<()>,
    /// Resolves (with an error: nothing is sent) once the server below has dropped its
    /// accepts, and with them its hold on `listener`.
    released: oneshot::Receiver<()>,
    hangup: Hangup,
    open: Arc<AtomicUsize>,
    admission: Arc<Admission>,
    grace: Duration,
}

/// What `Starting::end` hands to the server: the listener, and the connections taken
/// so far (counted in the server's `max_connections` and per-address places until
/// they close).
pub struct Handover {
    pub listener: TcpListener,
    pub open: Arc<AtomicUsize>,
    pub admission: Arc<Admission>,
}

impl Starting {
    /// Answers on `listener`, with the server's TLS and connection limits, saying how
    /// far `opening` has got, until `end`.
    pub async fn answer(
        listener: TcpListener,
        opening: Arc<Opening>,
        options: &ServeOptions,
    ) -> Starting {
        let listener = Arc::new(listener);
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in HEALTH_SERVICES {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let admission = Admission::new(options.max_connections_per_address);
        let timeouts = Timeouts {
            stall: options.stalled_reader_timeout,
            silent: options.silent_client_timeout,
        };
        let incoming = Incoming::new(
            Arc::clone(&listener),
            timeouts,
            options.max_connections,
            Arc::clone(&admission),
        );
        let hangup = incoming.hangup();
        let open = incoming.open_count();
        let (release, released) = oneshot::channel();
        let accepts = Releasing {
            inner: served(incoming, options.tls.clone()),
            _release: release,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let http2 = options.http2_server();
        let service = Answers {
            health: health_service,
            opening,
            progress_told: options.tokens.is_none(),
        };
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            let served = http2
                .serve_with_incoming_shutdown(service, accepts, stopped)
                .await;
            if let Err(err) = served {
                tracing::warn!(%err, "answering while starting failed");
            }
            drop(health); // kept until then: the Check answers come from it
        });
        if let Ok(bound) = listener.local_addr() {
            tracing::info!(
                "strom is starting: answering on {bound} with UNAVAILABLE until it is ready"
            );
        }
        Starting {
            listener,
            stop,
            released,
            hangup,
            open,
            admission,
            grace: options.shutdown_timeout,
        }
    }

    /// Stops answering, and hands the listener over. Connections still open here are
    /// closed after `shutdown_timeout`.
    pub async fn end(self) -> Result<Handover> {
        let _ = self.stop.send(());
        // Armed first: the accepts are dropped at once, but were they held until the
        // connections closed, one a client kept open would hold the start.
        self.hangup.after(
            self.grace,
            "they were opened while the server started, and were told to reconnect \
             shutdown_timeout ago",
        );
        let _ = self.released.await;
        let listener = Arc::try_unwrap(self.listener).map_err(|_| Error::Unavailable {
            what: "the gRPC listener".into(),
            reason: "still held by the answers given while starting".into(),
        })?;
        Ok(Handover {
            listener,
            open: self.open,
            admission: self.admission,
        })
    }
}

/// The accepted connections, telling `Starting::end` when they are dropped.
struct Releasing<S> {
    inner: S,
    _release: oneshot::Sender<()>,
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for Releasing<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The one path answered as it will be once the server is ready: load balancers and
/// orchestrators probe it without credentials.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Every call while starting: health Checks to the health service (NOT_SERVING),
/// the rest UNAVAILABLE.
struct Answers<H: Health> {
    health: HealthServer<H>,
    opening: Arc<Opening>,
    /// Whether the answer says how many partitions are open (not without a token).
    progress_told: bool,
}

// By hand: the derive would ask for `H: Clone`, which the health server (an `Arc`
// inside) does not need.
impl<H: Health> Clone for Answers<H> {
    fn clone(&self) -> Self {
        Answers {
            health: self.health.clone(),
            opening: Arc::clone(&self.opening),
            progress_told: self.progress_told,
        }
    }
}

impl<H: Health> Answers<H> {
    fn unavailable(&self) -> tonic::Status {
        let progress = match self.opening.partitions() {
            _ if !self.progress_told => String::new(),
            None => " (opening its data directory)".to_string(),
            Some((opened, all)) if opened < all => format!(" ({opened} of {all} partitions open)"),
            Some(_) => " (every partition is open, consumer groups are loading)".to_string(),
        };
        tonic::Status::unavailable(format!("strom is starting{progress}; try again shortly"))
    }
}

type Answer =
    Pin<Box<dyn Future<Output = std::result::Result<http::Response<Body>, Infallible>> + Send>>;

impl<H: Health> Service<http::Request<Body>> for Answers<H> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        if request.uri().path() == CHECK_PATH {
            return Box::pin(self.health.call(request));
        }
        let answer = self.unavailable().into_http();
        Box::pin(std::future::ready(Ok(answer)))
    }
}
