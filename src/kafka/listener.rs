//! The Kafka listener: accepts connections within the server's connection limit, its
//! limit per address and the strangers' share of it, makes the TLS handshake, and
//! hands each connection to `connection.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::connection::{self, Peer};
use super::session::Session;
use super::Kafka;
use crate::grpc::connection::{Admission, Refused};

/// Accepts Kafka connections until `stopping` turns true. They count in `open`, the
/// gRPC listener's count of connections, so that the two together keep to
/// `max_connections` (which leaves the log its file descriptors); more are closed as
/// soon as they are accepted. So are connections past `max_connections_per_address`
/// from one address (counted with its gRPC connections), and past `max_strangers` not
/// yet authenticated: clients that only connect cannot take every place from those that
/// have credentials (gRPC's among them). Each connection ends after the request it is
/// answering.
pub async fn serve(
    listener: TcpListener,
    kafka: Arc<Kafka>,
    open: Arc<AtomicUsize>,
    (max_connections, admission): (usize, Arc<Admission>),
    mut stopping: watch::Receiver<bool>,
) {
    let coordinator = Arc::clone(&kafka.coordinator);
    let ticks = tokio::spawn(async move { coordinator.run().await });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(%err, "kafka listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = Place::take(&open, max_connections) else {
            admission.refuse(Refused::MaxConnections);
            if let Some(also) = kafka.logs.refused.allow() {
                tracing::warn!(
                    max_connections,
                    also_refused = also,
                    "kafka connection refused: the server has max_connections open"
                );
            }
            continue;
        };
        let Some(address) = admission.take(Some(peer.ip())) else {
            if let Some(also) = kafka.logs.refused.allow() {
                tracing::warn!(
                    %peer,
                    max_connections_per_address = admission.max_per_address(),
                    also_refused = also,
                    "kafka connection refused: its address has max_connections_per_address open"
                );
            }
            continue;
        };
        let Some(stranger) = Place::take(&kafka.strangers, kafka.max_strangers) else {
            admission.refuse(Refused::Unauthenticated);
            if let Some(also) = kafka.logs.refused.allow() {
                tracing::warn!(
                    max_strangers = kafka.max_strangers,
                    also_refused = also,
                    "kafka connection refused: as many connections as a quarter of max_connections have not authenticated yet"
                );
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let kafka = Arc::clone(&kafka);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            open_connection(kafka, socket, stranger, stopping).await;
            drop((place, address));
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
    stranger: Place,
    mut stopping: watch::Receiver<bool>,
) {
    let at = Peer {
        peer: socket.peer_addr().ok(),
        local: socket.local_addr().ok(),
        authenticate_by: Instant::now() + kafka.security.handshake_timeout,
    };
    let Some(tls) = kafka.security.tls.clone() else {
        let session = Session::new(&kafka.security, None);
        let stranger = Some(stranger);
        return connection::serve_connection(kafka, socket, session, at, stranger, stopping).await;
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
            if let Some(also) = kafka.logs.handshakes.allow() {
                let peer = at.peer;
                tracing::info!(
                    ?peer,
                    also_failed = also,
                    "kafka TLS handshake failed: {why}"
                );
            }
            return;
        }
    };
    let name = crate::grpc::connection::common_name(stream.get_ref().1.peer_certificates());
    let session = Session::new(&kafka.security, name);
    connection::serve_connection(kafka, stream, session, at, Some(stranger), stopping).await;
}

/// A connection's place in a count, given back when it is dropped.
pub struct Place(Arc<AtomicUsize>);

impl Place {
    /// A place, if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Place> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Place(Arc::clone(count)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
