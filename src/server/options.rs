//! The server's transport settings, as `serve` takes them (`config.rs` fills them in
//! from the file, the environment and the flags).

use std::time::Duration;

use crate::groups::GroupsConfig;
use crate::grpc::auth::{Acl, Tokens};
use crate::grpc::connection::ServerTls;

/// Transport settings of the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest request accepted (a produce of this many bytes, encoded).
    pub max_request_bytes: usize,
    /// How often partitions are synced and idle segments rolled.
    pub upkeep_interval: Duration,
    /// How often the cleaner deletes expired segments.
    pub retention_check_interval: Duration,
    /// Produce bytes in flight, over all requests (see `grpc::budget`): past it, the
    /// server stops reading produce requests until earlier ones are answered.
    pub produce_budget_bytes: usize,
    /// Bytes of other requests' messages of 64 KiB or more being gathered at once, over
    /// all requests (see `grpc::budget`).
    pub request_budget_bytes: usize,
    /// Consumer groups' heartbeat interval and offset retention.
    pub groups: GroupsConfig,
    /// A connection is closed when one of its responses has waited this long for the
    /// client to read it (see `grpc::connection`).
    pub stalled_reader_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv6 /64), over the gRPC and
    /// Kafka listeners together; more are closed as soon as they are accepted. 0: no
    /// limit (`grpc/connection/admission.rs`).
    pub max_connections_per_address: usize,
    /// Calls open at once on one connection (HTTP/2's MAX_CONCURRENT_STREAMS); a client
    /// waits to open more. Above a `GroupConsumer`'s partitions: it polls each on a
    /// call of its own, all on one connection.
    pub max_concurrent_streams: u32,
    /// Calls open at once over the whole server (see `grpc/call_limit.rs`).
    pub max_calls: usize,
    /// Records held in share groups' windows over the server (see
    /// `groups/share/tally.rs`).
    pub max_share_window_records: usize,
    /// How long a graceful stop lets connections finish their requests; then those
    /// still open are closed, and the stop goes on.
    pub shutdown_timeout: Duration,
    /// A connection whose client sends nothing this long after connecting is closed.
    pub silent_client_timeout: Duration,
    /// How often HTTP/2 pings an open connection; one not answered within
    /// `keepalive_timeout` closes it (a client that vanished without a FIN).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Threads that serve connections, each a connection whole (`threads.rs`); 0 serves
    /// them on the caller's runtime, where tokio moves tasks between its workers.
    pub connection_threads: usize,
    /// The CPU time slice the connection threads ask for (see `ServerConfig::time_slice`).
    pub time_slice: Option<Duration>,
    /// TLS for every connection (`grpc/connection/tls.rs`); None serves plaintext.
    pub tls: Option<ServerTls>,
    /// Tokens calls must carry (`grpc/auth.rs`); None serves calls without one.
    pub tokens: Option<Tokens>,
    /// Who may do what (`grpc/auth/acl.rs`); None lets every caller do anything.
    pub acl: Option<Acl>,
    /// The metrics endpoint over TLS, with `tls` (`metrics_tls`).
    pub metrics_tls: bool,
    /// Scrapes must name a known caller, granted `read metrics` by `acl` if there is
    /// one (`metrics_auth`; `metrics/guard.rs`).
    pub metrics_auth: bool,
    /// How many bytes a second each client may produce and fetch (`grpc/quota/`);
    /// None limits no client.
    pub quotas: Option<crate::grpc::quota::Quotas>,
    /// The host and port the Kafka listener's Metadata names (`kafka/`); None: the
    /// address each client connected to.
    pub kafka_advertised: Option<(String, u16)>,
    /// How long a Kafka group's first rebalance waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    pub kafka_group_initial_delay: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_request_bytes: 64 << 20,
            upkeep_interval: Duration::from_secs(5),
            retention_check_interval: Duration::from_secs(300),
            produce_budget_bytes: 256 << 20,
            request_budget_bytes: 32 << 20,
            groups: GroupsConfig::default(),
            stalled_reader_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_concurrent_streams: 10_000,
            max_calls: 50_000,
            max_share_window_records: crate::groups::share::MAX_WINDOW_RECORDS,
            shutdown_timeout: Duration::from_secs(15),
            silent_client_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            connection_threads: 0,
            time_slice: None,
            tls: None,
            tokens: None,
            acl: None,
            metrics_tls: false,
            metrics_auth: false,
            quotas: None,
            kafka_advertised: None,
            kafka_group_initial_delay: Duration::from_secs(3),
        }
    }
}

impl ServeOptions {
    /// A gRPC server with these options' HTTP/2 settings: its limits on what one
    /// connection may hold, and its windows. The server that answers while strom
    /// starts has the same limits.
    pub(crate) fn http2_server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            // Larger HTTP/2 windows than the defaults: on this class of machine they double
            // the throughput of 64 KiB to 1 MiB messages (see machine-limits.md). The
            // connection's window is sixteen streams' worth: a stream the produce budget holds
            // back keeps its window's bytes unread, and with a connection window of four
            // streams, four held streams starved an admitted one on the same connection
            // (scripts/hostile.py, sixteen 15 MB produces on one grpcio channel).
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(64 << 20))
            // Frames of up to 1 MiB, not 16 KiB (see `MAX_FRAME_BYTES`).
            .max_frame_size(Some(crate::grpc::MAX_FRAME_BYTES))
            // A client gone without closing its connection (its host lost, a NAT that
            // forgot it) would otherwise hold its place, and its streams, for ever.
            // Without a cap, one connection opened 100,000 Subscribe streams (+331 MB).
            .max_concurrent_streams(Some(self.max_concurrent_streams))
            // Calls a client cancels before the server took them up: HTTP/2 closes the
            // connection past 20 by default (a defence against floods of resets), and a
            // GroupConsumer giving back hundreds of partitions, each with a long poll
            // just sent, cancels that many at once (hostile-client finding: it failed).
            // As many as a connection may carry at once; the call caps bound the rest.
            .http2_max_pending_accept_reset_streams(Some(self.max_concurrent_streams as usize))
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
    }
}
