//! Kafka's wire protocol, on a listener of its own (`kafka_listen`), so that Kafka
//! clients (librdkafka and what wraps it, kafka-python) produce to and fetch from
//! strom's topics as they would from a one-node Kafka cluster.
//!
//! Answered: ApiVersions, Metadata, Produce, Fetch, ListOffsets, InitProducerId
//! (idempotent producers), the consumer groups' FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch (`group/`,
//! `groups.rs`; static members too) and their ListGroups, DescribeGroups and DeleteGroups
//! (`group_admin.rs`), CreateTopics and DeleteTopics (`admin.rs`), CreatePartitions
//! (`add_partitions.rs`), DeleteRecords (`delete_records.rs`), DescribeConfigs, AlterConfigs and IncrementalAlterConfigs
//! (`configs.rs`), and SaslHandshake and SaslAuthenticate (`session.rs`), in the
//! versions `requests::APIS` lists. Not answered: transactions.
//! Compressed batches are stored decompressed (`compression.rs`). A request for an
//! API strom does not answer closes the connection, as Kafka does; clients ask
//! ApiVersions first and do not send them.
//!
//! The layer is an adapter, as `grpc` is: requests are decoded by hand within their
//! frame's bounds (`wire.rs`, `requests.rs`), records go into the broker's
//! `BatchWriter` and come back out of its reads (`records.rs`), and responses are
//! encoded by `kafka-protocol`, but for Fetch's, whose records are written as chunks
//! of their own (`fetch_frame.rs`). Errors map to Kafka's codes in one place
//! (`errors.rs`).
//!
//! The server's security settings hold here as over gRPC: TLS (and client
//! certificates) with `tls_cert`, SASL/PLAIN with a token with `auth_tokens`
//! (`session.rs`), and the access control list on every request (`authorize.rs`).

mod add_partitions;
mod admin;
mod authorize;
mod carry;
mod compression;
mod configs;
mod connection;
mod delete_records;
mod dispatch;
pub mod errors;
mod fetch;
mod fetch_frame;
pub mod group;
mod group_admin;
mod groups;
mod listener;
mod metadata;
mod offset_delete;
mod offsets;
mod pool;
mod produce;
pub(crate) mod quiet;
pub mod records;
pub mod requests;
mod scram;
mod session;
pub mod wire;

pub use listener::serve;
pub use pool::BytesPool;
pub use session::Security;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicUsize;

use crate::broker::Broker;
use crate::grpc::budget::BudgetLayer;

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
    /// Kafka connections not yet authenticated (TLS handshake included), and how
    /// many there may be: strangers cannot take every connection's place.
    pub strangers: Arc<AtomicUsize>,
    pub max_strangers: usize,
    /// The log lines a flood of clients could multiply, each at most once a second.
    pub logs: quiet::Logs,
    /// Per-client quotas (`grpc/quota/`): a client over its quota gets its response,
    /// with `throttle_time_ms`, and its connection is read no more until it has waited
    /// that long (Kafka's KIP-219).
    pub quotas: Option<crate::grpc::quota::Quotas>,
}

/// A Kafka string of `s`, for responses.
fn text(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}
