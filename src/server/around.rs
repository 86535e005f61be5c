//! What runs around the gRPC server: the Kafka listener beside it, the line that says
//! it is ready, and the close of the broker once it has stopped.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::threads::ConnectionThreads;
use super::{ServeOptions, KAFKA_IDLE_TIMEOUT};
use crate::broker::Broker;
use crate::groups::Groups;
use crate::grpc::budget::BudgetLayer;
use crate::grpc::connection::Admission;

/// Serves Kafka's protocol on `listener` (`kafka/`) until the stop begins, counting its
/// connections in `open` and `admission` with the gRPC listener's.
pub(super) fn spawn_kafka(
    listener: TcpListener,
    broker: &Arc<Broker>,
    groups: &Arc<Groups>,
    budget: BudgetLayer,
    options: &ServeOptions,
    open: Arc<AtomicUsize>,
    admission: Arc<Admission>,
) -> JoinHandle<()> {
    if let Ok(bound) = listener.local_addr() {
        tracing::info!("serving Kafka's protocol on {bound}");
    }
    let coordinator = Arc::new(crate::kafka::group::Coordinator::new(
        broker.shutting_down(),
        options.kafka_group_initial_delay,
    ));
    let foreign: std::sync::Weak<dyn crate::groups::ForeignMembers> =
        Arc::downgrade(&coordinator) as _;
    groups.set_foreign_members(foreign);
    let kafka = Arc::new(crate::kafka::Kafka {
        broker: Arc::clone(broker),
        budget,
        // As much again as the produce budget for decompressed batches, and as
        // much for Fetch responses, which Kafka's record format makes copies.
        inflated: crate::kafka::BytesPool::new(options.produce_budget_bytes),
        responses: crate::kafka::BytesPool::new(options.produce_budget_bytes),
        coordinator: Arc::clone(&coordinator),
        groups: Arc::clone(groups),
        max_request_bytes: options.max_request_bytes,
        advertised: options.kafka_advertised.clone(),
        // A response holds pool bytes until written; a Kafka client gives up on a
        // request after its request.timeout.ms (30 s by default) anyway.
        stalled_reader_timeout: options
            .stalled_reader_timeout
            .min(crate::grpc::budget::MESSAGE_DEADLINE),
        idle_timeout: KAFKA_IDLE_TIMEOUT,
        security: crate::kafka::Security {
            tls: options.tls.clone(),
            tokens: options.tokens.clone(),
            acl: options.acl.clone(),
            handshake_timeout: options.silent_client_timeout,
        },
        strangers: Default::default(),
        // A quarter of the places: clients that connect and never authenticate
        // cannot keep the rest from those that do.
        max_strangers: (options.max_connections / 4).max(1),
        logs: Default::default(),
        quotas: options.quotas.clone(),
    });
    tokio::spawn(crate::kafka::serve(
        listener,
        kafka,
        open,
        (options.max_connections, admission),
        broker.shutting_down(),
    ))
}

/// Logs the line a person (or a script) waits for: `strom is ready: serving gRPC on ...`.
pub(super) fn log_ready(
    bound: std::net::SocketAddr,
    broker: &Broker,
    options: &ServeOptions,
    threads: Option<&ConnectionThreads>,
) {
    let serving = match threads {
        Some(threads) => match threads.len() {
            1 => "1 connection thread".to_string(),
            n => format!("{n} connection threads"),
        },
        None => match tokio::runtime::Handle::current().metrics().num_workers() {
            1 => "1 worker thread".to_string(),
            n => format!("{n} worker threads"),
        },
    };
    let mut security: Vec<&str> = Vec::new();
    match &options.tls {
        None => {}
        Some(tls) if tls.clients_verified => {
            security.extend(["TLS", "client certificates required"])
        }
        Some(_) => security.push("TLS"),
    }
    if options.tokens.is_some() {
        security.push("tokens required");
    }
    if options.acl.is_some() {
        security.push("acl enforced");
    }
    if options.quotas.is_some() {
        security.push("quotas enforced");
    }
    let security = match security.is_empty() {
        true => String::new(),
        false => format!(" ({})", security.join(", ")),
    };
    // Plainly, in the message itself: what a person (or a script) looks for.
    tracing::info!(
        "strom is ready: serving gRPC on {bound}{security}, data in {}, {serving}",
        broker.data_dir().root().display(),
    );
}

/// Closes the broker once every hold on it is gone: every partition synced and marked
/// clean.
pub(super) async fn close(
    broker: Arc<Broker>,
    threads: Option<ConnectionThreads>,
) -> crate::error::Result<()> {
    // Tasks a handler spawned (a produce stream's reader and appender, an append the
    // client stopped waiting for) can outlive their connection by a moment, each holding
    // the broker: wait for them, bounded, before closing every log.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&broker) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Their runtimes go with them, and any task left on one (and its hold on the broker).
    // Joining them may wait for a blocking task: not on this runtime's thread.
    if let Some(threads) = threads {
        let _ = tokio::task::spawn_blocking(move || drop(threads)).await;
    }
    let broker = Arc::try_unwrap(broker).map_err(|_| {
        crate::error::Error::InvalidArgument("broker still in use after the server stopped".into())
    })?;
    broker.close()?;
    Ok(())
}
