//! The endpoint's port: bound and served once the server is ready, or, as `strom
//! serve` does, served from the moment it is bound with how far the start has got
//! (`source.rs`), and switched to the server's figures when it is ready.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{serve_metrics, unix_now, Guard, Metrics, Source};
use crate::broker::Opening;
use crate::error::Result;
use crate::server::ServeOptions;

/// The metrics port as the server is given it.
pub enum MetricsListener {
    Bound(TcpListener),
    Starting(StartingMetrics),
}

/// The endpoint answering while the server starts.
pub struct StartingMetrics {
    source: Arc<Source>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl From<TcpListener> for MetricsListener {
    fn from(listener: TcpListener) -> Self {
        MetricsListener::Bound(listener)
    }
}

impl MetricsListener {
    /// Serves `listener` from now on, to the scrapers `options` let in (`Guard`), with
    /// how far `opening` has got, until the server is ready and takes it over
    /// (`serve`). Fails on settings a guard cannot honour. The server must be given the
    /// same options: the guard made here is the one the endpoint keeps.
    pub fn answer_starting(
        listener: TcpListener,
        opening: Arc<Opening>,
        options: &ServeOptions,
    ) -> Result<Self> {
        let guard = Arc::new(Guard::of(options)?);
        log_address(&listener, &guard);
        let source = Source::starting(opening, unix_now());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve_metrics(listener, Arc::clone(&source), guard, stopped));
        Ok(MetricsListener::Starting(StartingMetrics {
            source,
            stop,
            task,
        }))
    }

    /// When the endpoint began to answer during the start (the server's start time in
    /// `process_start_time_seconds`), if it did.
    pub fn started(&self) -> Option<f64> {
        match self {
            MetricsListener::Bound(_) => None,
            MetricsListener::Starting(starting) => starting.source.started(),
        }
    }

    /// Serves the ready server's figures until `stopping` turns true; the task ends
    /// once the endpoint's connections are closed. A port bound but not yet served is
    /// served with `guard`; one answering since the start keeps the guard it has (made
    /// from the same settings) and its connections.
    pub fn serve(
        self,
        metrics: Metrics,
        guard: Arc<Guard>,
        mut stopping: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let metrics = Arc::new(metrics);
        match self {
            MetricsListener::Bound(listener) => {
                log_address(&listener, &guard);
                tokio::spawn(serve_metrics(
                    listener,
                    Source::ready(metrics),
                    guard,
                    stopping,
                ))
            }
            MetricsListener::Starting(starting) => {
                starting.source.set_ready(metrics);
                tokio::spawn(async move {
                    let _ = stopping.wait_for(|stopping| *stopping).await;
                    let _ = starting.stop.send(true);
                    let _ = starting.task.await;
                })
            }
        }
    }
}

fn log_address(listener: &TcpListener, guard: &Guard) {
    if let Ok(bound) = listener.local_addr() {
        let scheme = match guard.tls {
            Some(_) => "https",
            None => "http",
        };
        tracing::info!("serving metrics on {scheme}://{bound}/metrics");
    }
}
