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

use super::Metrics;

const MAX_CONNECTIONS: usize = 64;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
mod tests {
    use super::*;

    /// A render answers the requests of the next second; after that, a new one, unless
    /// `MAX_RENDERS_HELD` renders are alive (the newest and those of unfinished
    /// responses): then the newest while it is young enough, and then none (a 503), so
    /// that scrapes nobody reads cannot pile up renders.
    #[tokio::test]
    async fn renders_are_shared_and_those_held_unread_are_bounded() {
        const AGES: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(400));
        let renders = Arc::new(Mutex::new(Renders::default()));
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let render = || {
            let (renders, made) = (Arc::clone(&renders), Arc::clone(&made));
            async move {
                let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                rendered(renders, AGES, move || async move { format!("render {n}") }).await
            }
        };
        let first = render().await.unwrap();
        assert_eq!(render().await.unwrap(), first, "fresh: shared");
        let mut held = vec![first];
        for _ in 1..MAX_RENDERS_HELD {
            tokio::time::sleep(AGES.0).await;
            let next = render().await.unwrap();
            assert!(!held.contains(&next), "stale: rendered again");
            held.push(next);
        }
        tokio::time::sleep(AGES.0).await;
        let newest = held.last().unwrap().clone();
        assert_eq!(
            render().await.unwrap(),
            newest,
            "every render held: the newest"
        );
        tokio::time::sleep(AGES.1).await;
        assert_eq!(render().await, None, "the newest too old: none");
        held.truncate(1); // those responses finished
        let again = render().await.unwrap();
        assert!(!held.contains(&again), "room again: a new render");
    }

    /// A requester that hangs up while its render runs neither stops it nor lets a
    /// second start beside it: the next request gets the first render. (With the turn
    /// in the request's future, each hang-up started another: 3.1 GB, a review saw.)
    #[tokio::test]
    async fn a_request_that_hangs_up_leaves_its_render_to_the_next() {
        const AGES: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(60));
        let renders = Arc::new(Mutex::new(Renders::default()));
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let render = |made: Arc<std::sync::atomic::AtomicUsize>| async move {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            "slow".to_string()
        };
        let hung_up = tokio::time::timeout(
            Duration::from_millis(20),
            rendered(Arc::clone(&renders), AGES, {
                let made = Arc::clone(&made);
                move || render(made)
            }),
        )
        .await;
        assert!(hung_up.is_err(), "gone before its render ended");
        let next = rendered(Arc::clone(&renders), AGES, {
            let made = Arc::clone(&made);
            move || render(made)
        })
        .await
        .unwrap();
        assert_eq!(&next[..], b"slow");
        assert_eq!(
            made.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "one render"
        );
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
