//! Kafka's wire protocol, on a listener of its own (`kafka_listen`), so that Kafka
//! clients (librdkafka and what wraps it, kafka-python) produce to and fetch from
//! strom's topics as they would from a one-node Kafka cluster.
//!
//! Answered: ApiVersions, Metadata, Produce, Fetch, ListOffsets, InitProducerId
//! (idempotent producers), the consumer groups' FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch (`group/`,
//! `groups.rs`), CreateTopics and DeleteTopics (`admin.rs`), and SaslHandshake and
//! SaslAuthenticate (`session.rs`), in the versions `requests::APIS` lists. Not
//! answered: transactions.
//! Compressed batches are stored decompressed (`compression.rs`). A request for an
//! API strom does not answer closes the connection, as Kafka does; clients ask
//! ApiVersions first and do not send them.
//!
//! The layer is an adapter, as `grpc` is: requests are decoded by hand within their
//! frame's bounds (`wire.rs`, `requests.rs`), records go into the broker's
//! `BatchWriter` and come back out of its reads (`records.rs`), and responses are
//! encoded by `kafka-protocol`. Errors map to Kafka's codes in one place
//! (`errors.rs`).
//!
//! The server's security settings hold here as over gRPC: TLS (and client
//! certificates) with `tls_cert`, SASL/PLAIN with a token with `auth_tokens`
//! (`session.rs`), and the access control list on every request (`authorize.rs`).

mod admin;
mod authorize;
mod compression;
mod connection;
mod dispatch;
pub mod errors;
mod fetch;
pub mod group;
mod groups;
mod metadata;
mod pool;
mod produce;
pub mod records;
pub mod requests;
mod session;
pub mod wire;

pub use pool::BytesPool;
pub use session::Security;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::grpc::budget::BudgetLayer;
use connection::Peer;
use session::Session;

/// What every Kafka connection shares.
pub struct Kafka {
    pub broker: Arc<Broker>,
    /// The server's produce budget, shared with gRPC.
    pub budget: BudgetLayer,
    /// Bytes of decompressed batches held until appended (`compression.rs`).
    pub inflated: BytesPool,
    /// Bytes of Fetch responses held until written (`fetch.rs`).
    pub responses: BytesPool,
    /// Kafka consumer groups' membership (`group/`).
    pub coordinator: Arc<group::Coordinator>,
    /// strom's consumer groups, which keep Kafka groups' committed offsets.
    pub groups: Arc<crate::groups::Groups>,
    pub max_request_bytes: usize,
    /// The host and port Metadata names; None: the address each client connected to.
    pub advertised: Option<(String, u16)>,
    pub stalled_reader_timeout: Duration,
    /// A connection without a request this long is closed (Kafka's
    /// `connections.max.idle.ms` is 10 minutes).
    pub idle_timeout: Duration,
    /// TLS, tokens and the access control list (`session.rs`).
    pub security: Security,
    pub handshake_failures: HandshakeFailures,
}

/// Failed TLS handshakes on the Kafka listener, logged at most once a second (with
/// how many were not), so that an operator sees plaintext clients at a TLS port and a
/// flood of them does not flood the log.
#[derive(Default)]
pub struct HandshakeFailures(std::sync::Mutex<(Option<Instant>, u64)>);

impl HandshakeFailures {
    fn note(&self, peer: Option<std::net::SocketAddr>, why: &str) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, held) = &mut *last;
        let now = Instant::now();
        if logged_at.is_some_and(|at| now - at < Duration::from_secs(1)) {
            *held += 1;
            return;
        }
        tracing::info!(
            ?peer,
            also_failed = *held,
            "kafka TLS handshake failed: {why}"
        );
        (*logged_at, *held) = (Some(now), 0);
    }
}

/// Accepts Kafka connections until `stopping` turns true. They count in `open`, the
/// gRPC listener's count of connections, so that the two together keep to
/// `max_connections` (which leaves the log its file descriptors); more are closed as
/// soon as they are accepted. Each connection ends after the request it is answering.
pub async fn serve(
    listener: TcpListener,
    kafka: Arc<Kafka>,
    open: Arc<AtomicUsize>,
    max_connections: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let coordinator = Arc::clone(&kafka.coordinator);
    let ticks = tokio::spawn(async move { coordinator.run().await });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
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
        if open.fetch_add(1, Ordering::AcqRel) >= max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                max_connections,
                "kafka connection refused: the server has max_connections open"
            );
            continue;
        }
        let place = Place(Arc::clone(&open));
        let _ = socket.set_nodelay(true);
        let kafka = Arc::clone(&kafka);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            open_connection(kafka, socket, stopping).await;
            drop(place);
        });
    }
    let _ = ticks.await; // it stops too
}

/// Serves one accepted socket: plain, or after its TLS handshake, which must end
/// within the authentication deadline (a client that never finishes one holds a
/// connection's place no longer than one that never speaks).
async fn open_connection(
    kafka: Arc<Kafka>,
    socket: TcpStream,
    mut stopping: watch::Receiver<bool>,
) {
    let at = Peer {
        peer: socket.peer_addr().ok(),
        local: socket.local_addr().ok(),
        authenticate_by: Instant::now() + kafka.security.handshake_timeout,
    };
    let Some(tls) = kafka.security.tls.clone() else {
        let session = Session::new(&kafka.security, None);
        return connection::serve_connection(kafka, socket, session, at, stopping).await;
    };
    let handshake = tokio::time::timeout_at(at.authenticate_by, tls.acceptor().accept(socket));
    let stream = tokio::select! {
        handshake = handshake => handshake,
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    let stream = match stream {
        Ok(Ok(stream)) => stream,
        failed => {
            tls.count_failure();
            let why = match failed {
                Ok(Err(err)) => err.to_string(),
                _ => "not finished in time".into(),
            };
            kafka.handshake_failures.note(at.peer, &why);
            return;
        }
    };
    let name = crate::grpc::connection::common_name(stream.get_ref().1.peer_certificates());
    let session = Session::new(&kafka.security, name);
    connection::serve_connection(kafka, stream, session, at, stopping).await;
}

/// A connection's place in the count, given back when it closes.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
