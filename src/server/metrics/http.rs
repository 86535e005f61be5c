//! Serving `GET /metrics` over HTTP/1.1 (hyper), apart from the gRPC port: scrapers
//! speak HTTP/1, and a port of its own can be left closed to clients, or firewalled
//! apart. Bounded like the gRPC side: at most `MAX_CONNECTIONS` open, each closed after
//! `CONNECTION_LIFETIME` (scrapers reconnect), a request's headers within
//! `HEADER_TIMEOUT`, and one scrape gathered at a time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::Metrics;

const MAX_CONNECTIONS: usize = 64;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// OpenMetrics 1.0, which Prometheus asks for and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the endpoint on `listener` until `stop` turns true; the connections still
/// open then are closed.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let scrapes = Arc::new(Semaphore::new(1));
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
        let (metrics, scrapes) = (Arc::clone(&metrics), Arc::clone(&scrapes));
        let service = hyper::service::service_fn(move |request| {
            let (metrics, scrapes) = (Arc::clone(&metrics), Arc::clone(&scrapes));
            async move { Ok::<_, Infallible>(answer(request, &metrics, &scrapes).await) }
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
    metrics: &Metrics,
    scrapes: &Semaphore,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &str| {
        let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
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
    let text = {
        let _turn = scrapes.acquire().await.expect("never closed");
        metrics.render().await
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}
