//! `strom serve`.

use std::io::IsTerminal;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::{Broker, DataDir, Opening};
use crate::config::{LogFormat, ServerConfig};
use crate::grpc::auth::Kind;
use crate::server::metrics::Guard;
use crate::server::{ask_for_time_slice, GrpcListener, MetricsListener, Starting};

mod args;

use args::configure;
pub use args::ServeArgs;

/// Runs the server until SIGINT or SIGTERM. Its configuration is read before the
/// runtime exists, because it sizes the runtime (`worker_threads`).
pub fn main(args: ServeArgs) -> Result<(), String> {
    let config = configure(args)?;
    init_tracing(&config)?;
    raise_open_file_limit();
    if !config.transparent_huge_pages {
        turn_off_transparent_huge_pages();
    }
    let slice = config.time_slice();
    // Pinned connections are served on threads of their own (`server/threads.rs`);
    // this thread's runtime then only accepts them and runs the upkeep.
    let mut runtime = match config.pin_connections {
        true => {
            let mut runtime = tokio::runtime::Builder::new_current_thread();
            // Named as the connection threads' pools are: no thread is a tokio worker.
            runtime.thread_name("strom-blocking");
            runtime
        }
        false => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(config.workers());
            runtime
        }
    };
    ask_for_time_slice(slice);
    let runtime = runtime
        // Every thread of the runtime, workers and blocking pool alike, as it starts.
        .on_thread_start(move || ask_for_time_slice(slice))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // Spawned, so that on tokio's work-stealing runtime the server runs on its workers
    // rather than on the main thread that `block_on` uses (pinned, there is only this one).
    runtime.block_on(async move {
        tokio::spawn(run(config))
            .await
            .unwrap_or_else(|e| Err(format!("the server failed: {e}")))
    })
}

async fn run(config: ServerConfig) -> Result<(), String> {
    // SIGHUP's default ends the process: taken over first, so that a certificate
    // renewal's HUP during a long recovery is not fatal.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // Before anything is bound or opened: a server asked for TLS never serves without it.
    let tls = config.tls().map_err(|e| e.to_string())?;
    config.check_metrics().map_err(|e| e.to_string())?;
    let tokens = config.tokens().map_err(|e| e.to_string())?;
    let acl = config.acl().map_err(|e| e.to_string())?;
    let quotas = config.quotas().map_err(|e| e.to_string())?;
    if tokens.is_some() && tls.is_none() {
        tracing::warn!("auth_tokens without TLS: tokens cross the network in the clear; give tls_cert and tls_key unless every client is on this host");
    }
    // The port first: a port in use is found before the data directory is touched (and
    // before its recovery, which may take a while, is run for nothing).
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics = match config.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot serve metrics on {address} (metrics_listen): {e}"))?,
        ),
        None => None,
    };
    let kafka_advertised = config.kafka_advertised().map_err(|e| e.to_string())?;
    let kafka = match config.kafka_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|e| {
            format!("cannot answer Kafka clients on {address} (kafka_listen): {e}")
        })?),
        None => None,
    };
    let mut options = config.serve_options();
    let mut reloads: Vec<Reload> = Vec::new();
    if let Some(tls) = tls.clone() {
        reloads.push(("TLS files", Box::new(move || tls.reload())));
    }
    // The list before the tokens: a grant taken away with its token goes first, and a
    // grant given with a new token is there when the token comes.
    if let Some(acl) = acl.clone() {
        reloads.push(("acl", Box::new(move || acl.reload())));
    }
    if let Some(tokens) = tokens.clone() {
        reloads.push(("tokens file", Box::new(move || tokens.reload())));
    }
    if let Some(quotas) = quotas.clone() {
        reloads.push(("quotas", Box::new(move || quotas.reload())));
    }
    tokio::spawn(reload_on_hangup(hangups, reloads));
    options.tls = tls;
    options.tokens = tokens;
    options.acl = acl;
    options.quotas = quotas;
    options.max_connections = connections_within_open_files(options.max_connections);
    options.kafka_advertised = kafka_advertised;
    // Checked before the data directory is touched: a metrics endpoint asked to be
    // guarded never serves unguarded.
    if metrics.is_some() {
        Guard::of(&options).map_err(|e| e.to_string())?;
    }
    warn_of_metrics(&config, &options);
    // Taken first: a second server on the directory exits before it answers anyone.
    let data_dir = DataDir::open(&config.data_dir).map_err(|e| e.to_string())?;
    // Clients are answered while the data directory opens (UNAVAILABLE, saying how far
    // it has got), rather than left on a connection nobody serves.
    let opening = Arc::new(Opening::default());
    let starting = Starting::answer(listener, Arc::clone(&opening), &options).await;
    // The metrics too, saying so (`strom_starting`), rather than time out scrapes.
    let metrics = match metrics {
        Some(listener) => Some(
            MetricsListener::answer_starting(listener, Arc::clone(&opening), &options)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let limits = config.limits().map_err(|e| e.to_string())?;
    let broker =
        tokio::task::spawn_blocking(move || Broker::open_taken(data_dir, limits, &opening))
            .await
            .map_err(|e| format!("opening the data directory failed: {e}"))?
            .map_err(|e| e.to_string())?;
    // `serve` says when it is ready, with the bound address (port 0 picks one), once
    // the consumer groups are listed too.
    let listeners = crate::server::Listeners {
        grpc: GrpcListener::Starting(starting),
        metrics,
        kafka,
    };
    crate::server::serve_listeners(listeners, broker, options, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Metrics settings that hold but are likely a mistake.
fn warn_of_metrics(config: &ServerConfig, options: &crate::server::ServeOptions) {
    let Some(address) = config.metrics_listen else {
        return;
    };
    if options.metrics_auth
        && options.tokens.is_some()
        && !options.metrics_tls
        && !address.ip().is_loopback()
    {
        tracing::warn!("metrics_auth without metrics_tls: scrapers' tokens cross the network in the clear; set metrics_tls");
    }
    let grants_metrics = options
        .acl
        .as_ref()
        .is_some_and(|acl| acl.names(Kind::Metrics));
    if grants_metrics && !options.metrics_auth {
        tracing::warn!("the acl grants read on metrics, but metrics_auth is off: anyone who reaches metrics_listen may scrape; set metrics_auth");
    }
}

/// `max_connections`, lowered to half the open-file limit if it is above it: the cap
/// is there to leave the log its descriptors, which a cap above the limit cannot do.
fn connections_within_open_files(max_connections: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit.map(|n| (n / 2).max(1) as usize) {
        Some(half) if max_connections > half => {
            tracing::warn!(
                max_connections,
                lowered_to = half,
                "max_connections is above half the open-file limit; lowered (raise the limit, ulimit -n or LimitNOFILE=, to allow more)"
            );
            half
        }
        _ => max_connections,
    }
}

/// Every partition keeps three files open (its active segment's log and two indexes),
/// so a soft limit of 1,024 open files, common by default, stops a server at about 340
/// partitions with EMFILE. The soft limit may be raised to the hard one without
/// privileges, as Go programs do at start-up; a limit set on purpose below the hard one
/// is lost, which is the price of working out of the box.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        ..limit
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit")
        }
        Err(err) => {
            tracing::warn!(%err, current = ?limit.current, "cannot raise the open-file limit")
        }
    }
}

/// Turns transparent huge pages off for this process (and only it: the system's
/// setting stays). With them on, the first touch of memory the allocator takes from the
/// kernel can fault in a whole 2 MiB page, zeroed on the spot by the worker that
/// touched it, with requests queued behind it. On the test VM, over 15 s of 10,000
/// one-record requests a second, the system counted 25-31 huge-page faults with the
/// server's on and 13-17 (the bench client's) with them off; the end-to-end p99.9
/// median fell from 8.0 to 5.2 ms over eight runs each, and produce throughput did
/// not change (BENCHMARKS.md, "Transparent huge pages"). Redis turns them off for the
/// same reason. Memory then comes in 4 KiB pages, whose faults are many but short. It
/// covers the process's memory from here on, not what was touched before.
fn turn_off_transparent_huge_pages() {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => tracing::debug!("transparent huge pages off for this process"),
        Err(err) => tracing::warn!(%err, "cannot turn off transparent huge pages"),
    }
}

fn init_tracing(config: &ServerConfig) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("log level {:?}: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// A file SIGHUP reads again: what to call it, and how.
type Reload = (
    &'static str,
    Box<dyn Fn() -> crate::Result<()> + Send + Sync>,
);

/// SIGHUP reads the TLS files, the tokens file, the acl and the quotas again (a renewed
/// certificate, a revoked token, a grant taken away), as nginx and HAProxy do, rather
/// than ending the server as it would by default. A file that cannot be used leaves
/// what was read before in use.
async fn reload_on_hangup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    reloads: Vec<Reload>,
) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(err) => {
            return tracing::warn!(%err, "cannot handle SIGHUP: TLS, token, acl and quotas files reload only at a restart")
        }
    };
    let reloads = std::sync::Arc::new(reloads);
    while hangups.recv().await.is_some() {
        if reloads.is_empty() {
            tracing::info!("SIGHUP: nothing to reload (no TLS, token, acl or quotas files)");
            continue;
        }
        let files = std::sync::Arc::clone(&reloads);
        let reloaded = tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|(what, reload)| (*what, reload()))
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(reloaded) = reloaded else {
            tracing::error!("SIGHUP: the reload failed");
            continue;
        };
        for (what, result) in reloaded {
            match result {
                Ok(()) => tracing::info!("SIGHUP: {what} reloaded"),
                Err(err) => {
                    tracing::error!(%err, "SIGHUP: {what} not reloaded; what was read before stays in use")
                }
            }
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
