//! Running the gRPC server: `serve(listener, broker, shutdown)` in the style of
//! mini-redis, so tests start it on `127.0.0.1:0` and stop it with a future. Requests
//! are served on the caller's runtime, or with `connection_threads` on threads of their
//! own, each connection on one of them (`threads.rs`). With a second listener, it serves
//! Prometheus metrics there (`metrics/`). `strom serve` answers on the gRPC port while
//! the data directory opens (`starting.rs`), and the server takes the port over.

mod around;
pub mod metrics;
mod options;
mod starting;
mod threads;

pub use crate::grpc::auth::{Acl, Tokens};
pub use crate::grpc::connection::ServerTls;
pub use crate::grpc::quota::Quotas;
pub use metrics::MetricsListener;
pub use options::ServeOptions;
pub use starting::Starting;
pub use threads::ask_for_time_slice;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::groups::share::ShareGroups;
use crate::groups::Groups;
use crate::grpc::auth::{Access, AuthLayer, Principal};
use crate::grpc::budget::BudgetLayer;
use crate::grpc::call_limit::CallLimitLayer;
use crate::grpc::connection::{served, Admission, Incoming, Timeouts};
use crate::grpc::direct::DirectLog;
use crate::grpc::pb::admin_server::AdminServer;
use crate::grpc::pb::exchanges_server::ExchangesServer;
use crate::grpc::pb::groups_server::GroupsServer;
use crate::grpc::pb::log_server::LogServer;
use crate::grpc::pb::queues_server::QueuesServer;
use crate::grpc::quota::QuotaLayer;
use crate::grpc::request_limits::RequestLimits;
use crate::grpc::{
    AdminService, ExchangesService, GroupsService, LogService, QueuesService, FILE_DESCRIPTOR_SET,
};
use threads::ConnectionThreads;

/// The services whose health is reported, "" being the server as a whole.
pub(crate) const HEALTH_SERVICES: [&str; 6] = [
    "",
    <LogServer<LogService> as NamedService>::NAME,
    <AdminServer<AdminService> as NamedService>::NAME,
    <GroupsServer<GroupsService> as NamedService>::NAME,
    <QueuesServer<QueuesService> as NamedService>::NAME,
    <ExchangesServer<ExchangesService> as NamedService>::NAME,
];

/// A Kafka connection without a request this long is closed: Kafka's own
/// `connections.max.idle.ms`.
pub(super) const KAFKA_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Ends the warning of a stop that closes connections still open.
const STOP_WAITED: &str = "the stop has waited shutdown_timeout for their requests to end";

/// The largest request message of the Queues service.
pub const QUEUE_REQUEST_BYTES: usize = 1 << 20;

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight
/// finish (long polls and subscriptions are told to end; connections still open after
/// `shutdown_timeout` are closed), and closes the broker: every partition synced and
/// marked clean.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_with_metrics(listener, None, broker, options, shutdown).await
}

/// As `serve`, and with `metrics` serves `GET /metrics` on that listener too, until
/// the stop begins.
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    broker: Broker,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let listeners = Listeners {
        grpc: listener.into(),
        metrics: metrics.map(Into::into),
        kafka: None,
    };
    serve_listeners(listeners, broker, options, shutdown).await
}

/// The sockets a server answers on.
pub struct Listeners {
    pub grpc: GrpcListener,
    /// `GET /metrics`, until the stop begins.
    pub metrics: Option<MetricsListener>,
    /// Kafka's wire protocol (`kafka/`), until the stop begins.
    pub kafka: Option<TcpListener>,
}

/// The gRPC port: bound, or already answering while the server starts
/// (`starting.rs`), in which case the server takes it over once it is ready.
pub enum GrpcListener {
    Bound(TcpListener),
    Starting(Starting),
}

impl From<TcpListener> for GrpcListener {
    fn from(listener: TcpListener) -> Self {
        GrpcListener::Bound(listener)
    }
}

/// As `serve`, on every listener given.
pub async fn serve_listeners(
    listeners: Listeners,
    broker: Broker,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let Listeners {
        grpc: listener,
        metrics,
        kafka,
    } = listeners;
    let started = metrics
        .as_ref()
        .and_then(MetricsListener::started)
        .unwrap_or_else(metrics::unix_now);
    // Checked before anything starts: a metrics endpoint asked to be guarded never
    // serves unguarded.
    let metrics = match metrics {
        Some(listener) => Some((listener, Arc::new(metrics::Guard::of(&options)?))),
        None => None,
    };
    // The connection threads first: if they cannot start, nothing else has been started.
    let threads = match options.connection_threads {
        0 => None,
        n => Some(
            ConnectionThreads::start(n, options.time_slice).map_err(|err| Error::Unavailable {
                what: "the connection threads".into(),
                reason: err.to_string(),
            })?,
        ),
    };
    let broker = Arc::new(broker);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LogServer<LogService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<GroupsServer<GroupsService>>().await;
    health
        .set_serving::<ExchangesServer<ExchangesService>>()
        .await;
    health.set_serving::<QueuesServer<QueuesService>>().await;
    // On this thread: a start answers meanwhile on another worker (`starting.rs`), and on
    // the blocking pool they would add a thread to every server's start.
    let groups = Groups::open(Arc::clone(&broker), options.groups.clone())?;
    if let Some(acl) = options.acl.clone() {
        // A saved member's scoped pattern matches what its principal may read now.
        groups.set_scopes(Box::new(move |who| {
            let who = (!who.is_empty()).then(|| Principal(who.into()));
            Access::of_principal(Some(&acl), who).read_scope()
        }));
    }
    let queues = ShareGroups::open(Arc::clone(&broker), options.max_share_window_records)?;
    let (groups, queues) = (Arc::new(groups), Arc::new(queues));
    let expiry = tokio::spawn(Arc::clone(&groups).run());
    // Taken over before the ready line: a client that reads it is answered by the server.
    let handover = match listener {
        GrpcListener::Bound(listener) => starting::Handover {
            listener,
            open: Default::default(),
            admission: Admission::new(options.max_connections_per_address),
        },
        GrpcListener::Starting(starting) => starting.end().await?,
    };
    groups.serving();
    let local = handover.listener.local_addr().ok();
    let floor: std::sync::Weak<dyn crate::broker::RetentionFloor> = Arc::downgrade(&queues) as _;
    broker.set_retention_floor(floor);
    let sweeper = tokio::spawn(Arc::clone(&queues).run_sweeper());
    if let Some(bound) = local {
        around::log_ready(bound, &broker, &options, threads.as_ref());
    }
    // Both reflection versions: grpcurl releases before 1.9 speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // A reflection request names a symbol or a file: 64 KiB is plenty, and bounds
    // what a reflection stream (not charged to the request budget) makes the server
    // hold.
    let small = crate::grpc::request_limits::SMALL_REQUEST_BYTES;
    let reflection_v1 = reflection()
        .build_v1()
        .expect("descriptor sets built by build.rs are valid")
        .max_decoding_message_size(small);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("descriptor sets built by build.rs are valid")
        .max_decoding_message_size(small);
    let max = options.max_request_bytes;
    // Group requests are small: 16 MiB holds a commit of 100,000 offsets with room to
    // spare, and bounds what one heartbeat can make the server read. Queue requests
    // are small too: 1 MiB holds an acknowledgement of 10,000 offsets several times
    // over, and bounds what one message can make the server decode (an empty entry is
    // 2 bytes sent and 32 held). The budget layer refuses a message over its limit
    // before tonic sees it (`grpc::request_limits`); tonic's limits stay as a backstop.
    let limits = RequestLimits {
        max_request_bytes: max,
        groups: max.min(16 << 20),
        queues: max.min(QUEUE_REQUEST_BYTES),
    };
    // Fetch responses are bounded by the broker's max_fetch_bytes, but one record alone
    // may be larger (a consumer must always make progress) and can be as large as a
    // batch the log accepts: with a lowered max_fetch_bytes, a record between the two
    // could be stored and never read back. Leave headroom for the framing.
    let largest_record = crate::log::LogConfig::default().max_batch_bytes as usize;
    let max_response = broker.limits().max_fetch_bytes.max(largest_record) + (1 << 20);
    let upkeep = tokio::spawn(Arc::clone(&broker).run_upkeep(options.upkeep_interval));
    let cleaner = tokio::spawn(Arc::clone(&broker).run_cleaner(options.retention_check_interval));
    tracing::info!(address = ?local, "serving");
    let timeouts = Timeouts {
        stall: options.stalled_reader_timeout,
        silent: options.silent_client_timeout,
    };
    // Connections per address, counted over the gRPC and Kafka listeners together.
    let admission = handover.admission;
    let incoming = Incoming::new(
        handover.listener,
        timeouts,
        options.max_connections,
        Arc::clone(&admission),
    )
    .counting_in(handover.open);
    // A response whose client reads nothing never ends, and a graceful stop waits for
    // them all: past `shutdown_timeout`, the connections still open are closed. Armed
    // as the stop begins, however it begins.
    let hangup = incoming.hangup();
    let shutdown_timeout = options.shutdown_timeout;
    let stopping = {
        let broker = Arc::clone(&broker);
        let mut health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            broker.begin_shutdown();
            // Clients watching health (gRPC's client-side health checking, load
            // balancers) are told, and their streams end, as long polls do: a watch
            // left open would hold the stop until `shutdown_timeout`.
            for service in HEALTH_SERVICES {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
                health.clear_service_status(service).await;
            }
        }
    };
    // The budgets are one for the whole server, however many servers share them.
    let budget = BudgetLayer::new(
        options.produce_budget_bytes,
        options.request_budget_bytes,
        limits,
    );
    let auth = AuthLayer::new(options.tokens.clone(), options.acl.clone());
    let quotas = QuotaLayer::new(options.quotas.clone(), broker.shutting_down());
    let call_metrics = Arc::new(crate::grpc::call_metrics::CallMetrics::new());
    let calls = CallLimitLayer::new(options.max_calls, Arc::clone(&call_metrics));
    let metrics_task = metrics.map(|(listener, metrics_guard)| {
        let metrics = metrics::Metrics {
            calls: call_metrics,
            call_limit: calls.clone(),
            connections: incoming.open_count(),
            admission: Arc::clone(&admission),
            tls: options.tls.clone(),
            budget: budget.clone(),
            quotas: options.quotas.clone(),
            broker: Arc::clone(&broker),
            groups: Arc::clone(&groups),
            queues: Arc::clone(&queues),
            started,
        };
        listener.serve(metrics, metrics_guard, broker.shutting_down())
    });
    let kafka_task = kafka.map(|listener| {
        around::spawn_kafka(
            listener,
            &broker,
            &groups,
            budget.clone(),
            &options,
            incoming.open_count(),
            Arc::clone(&admission),
        )
    });
    let router = || {
        options
            .http2_server()
            .layer(calls.clone())
            // Before the budgets: a call without a token is charged nothing.
            .layer(auth.clone())
            // After the auth layer, which names the caller; before the budgets, so
            // that a throttled produce waits before it is charged.
            .layer(quotas.clone())
            .layer(budget.clone())
            .add_service(health_service.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(
                AdminServer::new(AdminService::new(Arc::clone(&broker)))
                    .max_decoding_message_size(max),
            )
            .add_service(
                ExchangesServer::new(ExchangesService::new(Arc::clone(&broker)))
                    .max_decoding_message_size(max),
            )
            .add_service(
                GroupsServer::new(GroupsService::new(Arc::clone(&groups)))
                    .max_decoding_message_size(limits.groups),
            )
            .add_service(
                QueuesServer::new(QueuesService::new(Arc::clone(&queues)))
                    .max_decoding_message_size(limits.queues)
                    .max_encoding_message_size(max_response),
            )
            // The Log service's hot calls read and write HTTP/2 frames themselves
            // (`grpc/direct`), with the same limits as tonic's path for the others.
            .add_service(DirectLog::new(Arc::clone(&broker), max, max_response))
    };
    // Accepted by `Incoming` (TCP_NODELAY set, connections counted and watched).
    let served = match &threads {
        None => {
            let stopping = async move {
                stopping.await;
                hangup.after(shutdown_timeout, STOP_WAITED);
            };
            router()
                .serve_with_incoming_shutdown(served(incoming, options.tls.clone()), stopping)
                .await
        }
        Some(threads) => {
            let serve_one =
                |connections, stop| router().serve_with_incoming_shutdown(connections, stop);
            // Also when a thread's server ended first and `stopping` never resolved.
            let begin_stop = || {
                broker.begin_shutdown();
                hangup.after(shutdown_timeout, STOP_WAITED);
            };
            threads
                .serve(
                    incoming,
                    options.tls.clone(),
                    serve_one,
                    stopping,
                    begin_stop,
                )
                .await
        }
    };
    broker.begin_shutdown();
    if let Some(task) = metrics_task {
        let _ = task.await; // it ends as the stop begins, and holds the broker
    }
    if let Some(task) = kafka_task {
        let _ = task.await; // so does the Kafka listener
    }
    let _ = upkeep.await;
    let _ = cleaner.await;
    let _ = expiry.await;
    let _ = sweeper.await;
    drop(groups); // it holds the broker
    drop(queues);
    if let Err(err) = served {
        tracing::error!(%err, "server stopped with an error");
    }
    around::close(broker, threads).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
