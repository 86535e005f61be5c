//! Serving `GET /metrics` over HTTP/1.1 (hyper), apart from the gRPC port: scrapers
//! speak HTTP/1, and a port of its own can be left closed to clients, or firewalled
//! apart.
//!
//! Bounded against scrapers that misbehave (a hostile-client sweep measured each):
//! - One render at a time, and a render serves every request of the next `FRESH_FOR`:
//!   a loop of HEAD requests, or of GETs closed unread, rendered a large scrape each
//!   time and kept a core busy.
//! - A response is copied to hyper in `CHUNK`s, so a client that reads nothing pins
//!   its render (not hyper's buffer a whole copy), and at most `MAX_RENDERS_HELD`
//!   renders are kept alive, the newest among them: past that, requests get the
//!   newest while it is younger than `STALE_AFTER`, then 503 until responses finish.
//!   64 unread scrapes of 45 MB each held 2.8 GB before.
//! - At most `MAX_CONNECTIONS` open, each closed after `CONNECTION_LIFETIME`, a
//!   request's headers within `HEADER_TIMEOUT`. Clients that hold every connection keep
//!   others out: the port is for scrapers, not for the gRPC port's clients.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::guard::{Guard, Refused};
use super::Source;
use crate::every_second::EverySecond;
use crate::grpc::connection::common_name;

const MAX_CONNECTIONS: usize = 64;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// With `metrics_tls`, how long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a render answers later requests.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Renders kept alive, the newest and those of unfinished responses.
const MAX_RENDERS_HELD: usize = 4;
/// With `MAX_RENDERS_HELD` held, the newest is served until it is this old; then
/// scrapes fail (503) until responses finish.
const STALE_AFTER: Duration = Duration::from_secs(10);
/// The piece of a response handed to hyper at a time (a copy, see the module comment).
const CHUNK: usize = 64 << 10;
/// OpenMetrics 1.0, which Prometheus asks for and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The renders: the newest, and every one a response still holds.
#[derive(Default)]
struct Renders {
    newest: Option<(Instant, Arc<Bytes>)>,
    held: Vec<Weak<Bytes>>,
}

/// Serves the endpoint on `listener` to the scrapers `guard` lets in, until `stop`
/// turns true; the connections still open then are closed.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Source>,
    guard: Arc<Guard>,
    mut stop: watch::Receiver<bool>,
) {
    let renders = Arc::new(Mutex::new(Renders::default()));
    let handshakes = Arc::new(EverySecond::default());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok((stream, peer)) if connections.len() < MAX_CONNECTIONS => (stream, peer),
            Ok(_) => continue, // dropped: closed at once
            Err(err) => {
                tracing::warn!(%err, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, renders, guard) = (
            Arc::clone(&metrics),
            Arc::clone(&renders),
            Arc::clone(&guard),
        );
        let handshakes = Arc::clone(&handshakes);
        connections.spawn(async move {
            let served = async move {
                let Some(tls) = guard.tls.clone() else {
                    return serve_connection(stream, None, guard, metrics, renders).await;
                };
                // A client that connects and never finishes its handshake holds a
                // place no longer than this.
                let handshake = tls.http1_acceptor().accept(stream);
                let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(io)) => {
                        let name = common_name(io.get_ref().1.peer_certificates());
                        return serve_connection(io, name, guard, metrics, renders).await;
                    }
                    // A TCP probe (a load balancer's, a kubelet's) that hangs up
                    // without a word is no scraper's failure.
                    Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tls.count_failure();
                        tracing::debug!(%peer, "metrics endpoint: TLS handshake failed: {err}");
                        return;
                    }
                    Ok(Err(err)) => err.to_string(),
                    Err(_) => "not finished in time".to_string(),
                };
                // A scraper with the wrong CA or no certificate is told nothing it can
                // show: the log says why, once a second at most.
                tls.count_failure();
                if let Some(also) = handshakes.allow() {
                    tracing::info!(
                        %peer,
                        also_failed = also,
                        "metrics endpoint: TLS handshake failed: {why}"
                    );
                }
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
    connections.shutdown().await;
}

/// Serves one connection's requests (plain, or TLS whose verified certificate has the
/// common name `certificate`).
async fn serve_connection<I>(
    io: I,
    certificate: Option<Arc<str>>,
    guard: Arc<Guard>,
    metrics: Arc<Source>,
    renders: Arc<Mutex<Renders>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let (metrics, renders, guard) = (
            Arc::clone(&metrics),
            Arc::clone(&renders),
            Arc::clone(&guard),
        );
        let certificate = certificate.clone();
        async move {
            let checked = guard.check(request.headers(), certificate.as_ref());
            Ok::<_, Infallible>(match checked {
                Ok(()) => answer(request, &metrics, &renders).await,
                Err(refused) => refusal(refused),
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// The answer to a scrape `Guard` refused; a 401 says how to authenticate. The
/// connection closes after it, so that a refused client does not keep one of the
/// endpoint's places with more requests.
fn refusal(refused: Refused) -> Response<Scrape> {
    let text = Arc::new(Bytes::from(format!("{}\n", refused.why)));
    let mut response = Response::new(Scrape::new(text));
    *response.status_mut() = refused.status;
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    if refused.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"strom metrics\""),
        );
    }
    response
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    metrics: &Arc<Source>,
    renders: &Arc<Mutex<Renders>>,
) -> Response<Scrape> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut response =
            Response::new(Scrape::new(Arc::new(Bytes::from_static(text.as_bytes()))));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let metrics = Arc::clone(metrics);
    let render = move || async move { metrics.render().await };
    let ages = (FRESH_FOR, STALE_AFTER);
    let Some(text) = rendered(Arc::clone(renders), ages, render).await else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes not yet read: try again when they are\n",
        );
    };
    let mut response = Response::new(Scrape::new(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The newest render if it is younger than `fresh`, or if unfinished responses hold as
/// many renders as may be (None if it is then older than `STALE_AFTER`: a scrape that
/// fails says more than one that repeats old figures); else a new one, from `render`.
///
/// The work runs in a task of its own, which holds the turn until its render is
/// stored: a requester that hangs up does not cancel it, nor free the turn for a
/// second render beside it. (Holding the turn in the request's future, clients that
/// sent GET and hung up at once had a render started for each: 3.1 GB and 267
/// threads, a review measured.)
async fn rendered<F>(
    renders: Arc<Mutex<Renders>>,
    (fresh, stale_after): (Duration, Duration),
    render: impl FnOnce() -> F + Send + 'static,
) -> Option<Arc<Bytes>>
where
    F: std::future::Future<Output = String> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut renders = renders.lock_owned().await; // one render at a time
        renders.held.retain(|held| held.strong_count() > 0);
        if let Some((at, text)) = &renders.newest {
            if at.elapsed() < fresh {
                return Some(Arc::clone(text));
            }
            if renders.held.len() >= MAX_RENDERS_HELD {
                return (at.elapsed() < stale_after).then(|| Arc::clone(text));
            }
        }
        let text = Arc::new(Bytes::from(render().await));
        renders.held.push(Arc::downgrade(&text));
        renders.newest = Some((Instant::now(), Arc::clone(&text)));
        Some(text)
    });
    task.await.expect("a render does not panic")
}

/// A response body: its render, copied out a `CHUNK` at a time as hyper asks. The
/// copies, not slices: a slice would keep the whole render alive in hyper's buffer
/// after this body is gone, out of `MAX_RENDERS_HELD`'s sight.
pub struct Scrape {
    text: Arc<Bytes>,
    sent: usize,
}

impl Scrape {
    fn new(text: Arc<Bytes>) -> Scrape {
        Scrape { text, sent: 0 }
    }
}

impl Body for Scrape {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let (from, len) = (self.sent, self.text.len());
        if from >= len {
            return Poll::Ready(None);
        }
        let to = len.min(from + CHUNK);
        let chunk = Bytes::copy_from_slice(&self.text[from..to]);
        self.sent = to;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.text.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.text.len() - self.sent) as u64)
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
