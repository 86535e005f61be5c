//! Kafka's wire protocol, on a listener of its own (`kafka_listen`), so that Kafka
//! clients (librdkafka and what wraps it, kafka-python) produce to and fetch from
//! strom's topics as they would from a one-node Kafka cluster.
//!
//! Answered: ApiVersions, Metadata, Produce, Fetch, ListOffsets and InitProducerId
//! (idempotent producers), in the versions `requests::APIS` lists. Not answered yet:
//! consumer groups' calls (a Kafka consumer reads with `assign`, not `subscribe`),
//! topic administration (topics are made with `strom topic create`), transactions.
//! Compressed batches are stored decompressed (`compression.rs`). A request for an
//! API strom does not answer closes the connection, as Kafka does; clients ask
//! ApiVersions first and do not send them.
//!
//! The layer is an adapter, as `grpc` is: requests are decoded by hand within their
//! frame's bounds (`wire.rs`, `requests.rs`), records go into the broker's
//! `BatchWriter` and come back out of its reads (`records.rs`), and responses are
//! encoded by `kafka-protocol`. Errors map to Kafka's codes in one place
//! (`errors.rs`). No authentication: the server refuses to start a Kafka listener
//! when it asks gRPC callers for tokens, client certificates or TLS.

mod compression;
mod connection;
pub mod errors;
mod fetch;
mod metadata;
mod produce;
pub mod records;
pub mod requests;
pub mod wire;

pub use compression::Inflated;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::broker::Broker;
use crate::grpc::budget::BudgetLayer;

/// What every Kafka connection shares.
pub struct Kafka {
    pub broker: Arc<Broker>,
    /// The server's produce budget, shared with gRPC.
    pub budget: BudgetLayer,
    /// Bytes of decompressed batches held at once (`compression.rs`).
    pub inflated: compression::Inflated,
    pub max_request_bytes: usize,
    /// The host and port Metadata names; None: the address each client connected to.
    pub advertised: Option<(String, u16)>,
    pub stalled_reader_timeout: Duration,
    /// A connection without a request this long is closed (Kafka's
    /// `connections.max.idle.ms` is 10 minutes).
    pub idle_timeout: Duration,
}

/// Accepts Kafka connections until `stopping` turns true, at most `max_connections`
/// open at once (more are closed as soon as they are accepted). Each connection ends
/// after the request it is answering.
pub async fn serve(
    listener: TcpListener,
    kafka: Arc<Kafka>,
    max_connections: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(err) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(%err, "kafka listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(max_connections, "kafka connection refused: too many open");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let kafka = Arc::clone(&kafka);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            connection::serve_connection(kafka, socket, stopping).await;
            drop(permit);
        });
    }
}
