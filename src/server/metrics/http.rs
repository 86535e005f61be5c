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
//!   renders are kept alive by unfinished responses: past that, requests get the
//!   newest, however old. 64 unread scrapes of 45 MB each held 2.8 GB before.
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

use super::Metrics;

const MAX_CONNECTIONS: usize = 64;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a render answers later requests.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Renders that unfinished responses may keep alive.
const MAX_RENDERS_HELD: usize = 4;
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

/// Serves the endpoint on `listener` until `stop` turns true; the connections still
/// open then are closed.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let renders = Arc::new(Mutex::new(Renders::default()));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => stream,
            Ok(_) => continue, // dropped: closed at once
            Err(err) => {
                tracing::warn!(%err, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, renders) = (Arc::clone(&metrics), Arc::clone(&renders));
        let service = hyper::service::service_fn(move |request| {
            let (metrics, renders) = (Arc::clone(&metrics), Arc::clone(&renders));
            async move { Ok::<_, Infallible>(answer(request, &metrics, &renders).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        connections.spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    connections.shutdown().await;
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    metrics: &Arc<Metrics>,
    renders: &Mutex<Renders>,
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
    let text = rendered(renders, FRESH_FOR, || metrics.render()).await;
    let mut response = Response::new(Scrape::new(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The newest render if it is younger than `fresh`, or if unfinished responses hold as
/// many renders as may be; else a new one, from `render`.
async fn rendered<F: std::future::Future<Output = String>>(
    renders: &Mutex<Renders>,
    fresh: Duration,
    render: impl FnOnce() -> F,
) -> Arc<Bytes> {
    let mut renders = renders.lock().await; // one render at a time
    renders.held.retain(|held| held.strong_count() > 0);
    if let Some((at, text)) = &renders.newest {
        if at.elapsed() < fresh || renders.held.len() >= MAX_RENDERS_HELD {
            return Arc::clone(text);
        }
    }
    let text = Arc::new(Bytes::from(render().await));
    renders.held.push(Arc::downgrade(&text));
    renders.newest = Some((Instant::now(), Arc::clone(&text)));
    text
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
mod tests {
    use super::*;

    /// A render answers the requests of the next second; after that, a new one, unless
    /// unfinished responses hold `MAX_RENDERS_HELD` renders: then the newest, however
    /// old, so that scrapes nobody reads cannot pile up renders.
    #[tokio::test]
    async fn renders_are_shared_and_those_held_unread_are_bounded() {
        const FRESH: Duration = Duration::from_millis(100);
        let renders = Mutex::new(Renders::default());
        let mut made = 0;
        let mut render = async || {
            made += 1;
            rendered(&renders, FRESH, || async move { format!("render {made}") }).await
        };
        let first = render().await;
        assert_eq!(render().await, first, "fresh: shared");
        let mut held = vec![first];
        for _ in 1..MAX_RENDERS_HELD {
            tokio::time::sleep(FRESH).await;
            let next = render().await;
            assert!(!held.contains(&next), "stale: rendered again");
            held.push(next);
        }
        tokio::time::sleep(FRESH * 2).await;
        let newest = held.last().unwrap().clone();
        assert_eq!(
            render().await,
            newest,
            "every render held: the newest, though stale"
        );
        held.truncate(1); // those responses finished
        tokio::time::sleep(FRESH).await;
        assert!(!held.contains(&render().await), "room again: a new render");
    }

    /// A body hands its render over in copies of at most `CHUNK` bytes.
    #[tokio::test]
    async fn a_scrape_body_is_copied_out_in_chunks() {
        use http_body_util::BodyExt;
        let text = Arc::new(Bytes::from(vec![b'x'; CHUNK * 2 + 10]));
        let mut body = Scrape::new(Arc::clone(&text));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap().len());
        }
        drop(body);
        assert_eq!(frames, [CHUNK, CHUNK, 10]);
        assert_eq!(Arc::strong_count(&text), 1, "the body let its render go");
    }
}
