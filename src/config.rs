//! The server's configuration: defaults, then a TOML file, then environment variables,
//! then flags; each later source overrides the earlier ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod serving;

use crate::broker::{DiskFloor, Limits, TopicConfig};
use crate::error::{Error, IoContext, Result};
use crate::server::ServeOptions;

/// Where `strom serve` listens when told nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Where it keeps data when told nothing (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "strom-data";
/// The most runtime worker threads `worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;
/// The time slice, in µs, the server's threads ask the kernel for when told nothing:
/// the shortest Linux allows. See `time_slice`.
pub const DEFAULT_TIME_SLICE_US: u64 = 100;
/// The range Linux clamps a slice to, in µs; a `time_slice_us` outside it, other than
/// 0, is refused as a likely mistake rather than silently clamped.
pub const TIME_SLICE_RANGE_US: std::ops::RangeInclusive<u64> = 100..=100_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of `strom serve`; the TOML file uses these names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where to serve Prometheus metrics (`GET /metrics`, HTTP/1.1); none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the metrics endpoint over TLS (HTTPS) with `tls_cert` and `tls_key`,
    /// renewed with them; with `tls_client_ca`, scrapers must show a certificate too.
    /// Off by default: plain HTTP.
    pub metrics_tls: bool,
    /// A scrape must name a caller the server knows (`server/metrics/guard.rs`): a token
    /// of `auth_tokens` (`Authorization: Bearer TOKEN`), or without tokens the
    /// certificate `metrics_tls` with `tls_client_ca` verified; with `acl`, a line must
    /// grant it `read` on `metrics`. Off by default: anyone who reaches the port.
    pub metrics_auth: bool,
    /// Where to answer Kafka clients (Kafka's wire protocol, `kafka/`); none by default.
    /// The security settings below hold there too: TLS with `tls_cert`, SASL/PLAIN
    /// or SCRAM with a token with `auth_tokens`, and `acl` on every request.
    pub kafka_listen: Option<SocketAddr>,
    /// The `host:port` Kafka clients are told to connect to (Metadata's broker); by
    /// default the address each client reached the listener on.
    pub kafka_advertised_address: Option<String>,
    /// How long a Kafka consumer group's first rebalance waits for more members
    /// (Kafka's `group.initial.rebalance.delay.ms`); 0 waits none.
    pub kafka_group_initial_rebalance_delay_ms: u64,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `strom=debug,info`.
    pub log_level: String,
    pub max_partitions: u32,
    pub max_request_bytes: usize,
    pub max_fetch_bytes: usize,
    pub max_wait_ms: u64,
    pub upkeep_interval_ms: u64,
    pub max_open_segments: usize,
    pub max_records_per_request: usize,
    pub max_headers_per_record: usize,
    pub produce_budget_bytes: usize,
    /// Bytes of other requests' large messages (64 KiB or more) gathered at once.
    pub request_budget_bytes: usize,
    /// The longest interval between a group member's heartbeats.
    pub group_heartbeat_interval_ms: u64,
    /// A consumer group with no members and no commits for this long is deleted, with
    /// its committed offsets.
    pub group_offsets_retention_ms: u64,
    /// How often the cleaner looks for expired segments.
    pub retention_check_interval_ms: u64,
    /// Produce is refused while the data directory's file system has less free space
    /// than this: bytes (`1073741824`, `"1GiB"`, `"500MB"`), a share of the file system
    /// (`"5%"`), or 0 for no floor. The default is 1 GiB or 5%, whichever is smaller.
    pub min_free_disk: Option<DiskSize>,
    /// Configuration of topics for the keys a topic does not set, with the keys of
    /// CreateTopic: `[topic_defaults]` then `"retention.ms" = 86400000`.
    pub topic_defaults: BTreeMap<String, toml::Value>,
    /// Memory one compaction pass may use for its map of keys (32 bytes a key).
    pub compaction_map_bytes: usize,
    /// A producer name with no InitProducer and no produce with its id for this long is
    /// forgotten: its id is fenced, and the name's next InitProducer gets a new id.
    pub producer_name_expiry_ms: u64,
    /// Idempotent producers remembered over every partition (a partition remembers at
    /// most 20,000 itself); past it, a partition forgets its idlest producer for a new one.
    pub max_idempotent_producers: usize,
    /// A connection is closed when one of its responses has waited this long for the
    /// client to read it.
    pub stalled_reader_timeout_ms: u64,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv6 /64), gRPC and Kafka
    /// together; more are closed as soon as they are accepted. 0: no limit.
    pub max_connections_per_address: usize,
    /// Calls open at once over the whole server (streams until they close, long polls
    /// until they answer); past it a call is refused with RESOURCE_EXHAUSTED.
    pub max_calls: usize,
    /// Records held in share groups' windows over the whole server (24 bytes each);
    /// past it, fetches hand out no record their window does not hold already.
    pub max_share_window_records: usize,
    /// How long a graceful stop lets requests in flight finish before it closes the
    /// connections still open.
    pub shutdown_timeout_ms: u64,
    /// A connection whose client has not sent HTTP/2's greeting (nor, with TLS,
    /// finished its handshake) this long after it was accepted is closed.
    pub silent_client_timeout_ms: u64,
    /// How often HTTP/2 pings a connection, and how long its answer may take before the
    /// connection is closed (a client gone without closing, or one that never answers).
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// True: do not turn transparent huge pages off for the server's process (the
    /// system's setting then applies). False by default: the server turns them off for
    /// itself, because a fault on a fresh huge page zeroes 2 MiB on the worker that
    /// touched it, in the middle of requests (BENCHMARKS.md, "Transparent huge pages").
    pub transparent_huge_pages: bool,
    /// Threads that serve requests: the async runtime's workers, or with
    /// `pin_connections` the connection threads (durable writes, fsyncs and file opens
    /// run on separate blocking pools); 0, the default, is one per core. See `workers`.
    pub worker_threads: usize,
    /// True: each connection is served whole on one of the `worker_threads`, which
    /// are dealt connections in turn, rather than by tokio's work-stealing runtime,
    /// which moves a connection's tasks between threads. See `server/threads.rs`.
    pub pin_connections: bool,
    /// The CPU time slice, in µs, that the server's threads ask the kernel for (Linux
    /// 6.12 or later; older kernels ignore it): 100 by default, 0 to leave the slice the
    /// threads start with, normally the kernel's default (about 0.7-3 ms, growing with
    /// the number of CPUs). See `time_slice`.
    pub time_slice_us: u64,
    /// PEM file of the server's certificate chain: with `tls_key`, every connection is
    /// TLS (HTTP/2 over TLS 1.2 or 1.3) and plaintext clients are refused. None by
    /// default: plaintext, for a server reached only from trusted hosts.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of `tls_cert`'s private key.
    pub tls_key: Option<PathBuf>,
    /// PEM file of CA certificates: with it, a client must show a certificate one of
    /// them signed (mutual TLS), or its handshake fails. Needs `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// File of `NAME SHA256` lines (then SCRAM keys for Kafka clients, as `strom token
    /// new` writes them): with it, every call but a health Check must carry
    /// `authorization: Bearer TOKEN` with a token whose SHA-256 the file lists. None by
    /// default: no token asked for.
    pub auth_tokens: Option<PathBuf>,
    /// The access control list: lines of `PRINCIPAL OPERATIONS RESOURCE...` (see
    /// `grpc/auth/acl.rs`). With it, a call is refused unless a line grants it. Needs
    /// a way to tell callers apart: `auth_tokens`, or `tls_client_ca` (the principal is
    /// then the client certificate's common name). None by default: any caller let in
    /// may do anything.
    pub acl: Option<PathBuf>,
    /// Per-client quotas: lines of `PRINCIPAL produce=RATE fetch=RATE requests=N` (see
    /// `grpc/quota/file.rs`), bytes a second each client may produce and fetch, and
    /// requests a second it may make. None by default: no client is limited.
    pub quotas: Option<PathBuf>,
}

/// `min_free_disk` as the file gives it: a number of bytes or a string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DiskSize {
    Bytes(u64),
    Text(String),
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = Limits::default();
        let options = ServeOptions::default();
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            metrics_listen: None,
            metrics_tls: false,
            metrics_auth: false,
            kafka_listen: None,
            kafka_advertised_address: None,
            kafka_group_initial_rebalance_delay_ms: options.kafka_group_initial_delay.as_millis()
                as u64,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            max_partitions: limits.max_partitions,
            max_request_bytes: options.max_request_bytes,
            max_fetch_bytes: limits.max_fetch_bytes,
            max_wait_ms: limits.max_wait.as_millis() as u64,
            upkeep_interval_ms: options.upkeep_interval.as_millis() as u64,
            max_open_segments: limits.max_open_segments,
            max_records_per_request: limits.max_records_per_request,
            max_headers_per_record: limits.max_headers_per_record,
            produce_budget_bytes: options.produce_budget_bytes,
            request_budget_bytes: options.request_budget_bytes,
            group_heartbeat_interval_ms: options.groups.heartbeat_interval.as_millis() as u64,
            group_offsets_retention_ms: options.groups.offsets_retention.as_millis() as u64,
            retention_check_interval_ms: options.retention_check_interval.as_millis() as u64,
            min_free_disk: None,
            topic_defaults: BTreeMap::new(),
            compaction_map_bytes: limits.compaction_map_bytes,
            producer_name_expiry_ms: limits.producer_names.expiry.as_millis() as u64,
            max_idempotent_producers: limits.max_idempotent_producers,
            stalled_reader_timeout_ms: options.stalled_reader_timeout.as_millis() as u64,
            max_connections: options.max_connections,
            max_connections_per_address: options.max_connections_per_address,
            max_calls: options.max_calls,
            max_share_window_records: options.max_share_window_records,
            shutdown_timeout_ms: options.shutdown_timeout.as_millis() as u64,
            silent_client_timeout_ms: options.silent_client_timeout.as_millis() as u64,
            keepalive_interval_ms: options.keepalive_interval.as_millis() as u64,
            keepalive_timeout_ms: options.keepalive_timeout.as_millis() as u64,
            transparent_huge_pages: false,
            worker_threads: 0,
            pin_connections: false,
            time_slice_us: DEFAULT_TIME_SLICE_US,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_tokens: None,
            acl: None,
            quotas: None,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file; settings it does not name keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServerConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        toml::from_str(&text)
            .map_err(|e| Error::InvalidArgument(format!("config file {}: {e}", path.display())))
    }

    /// The broker's settings; fails, naming the setting, on a bad topic default or
    /// `min_free_disk`.
    pub fn limits(&self) -> Result<Limits> {
        let mut topic_defaults = TopicConfig::default();
        let as_text: BTreeMap<String, String> = self
            .topic_defaults
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok((k.clone(), s.clone())),
                // `retention.ms = 1` unquoted is TOML for a table `retention` with a
                // key `ms`.
                toml::Value::Table(t) => Err(Error::InvalidArgument(format!(
                    "topic_defaults: quote keys with dots, as \"{k}.{}\" = ...",
                    t.keys().next().map_or("", String::as_str)
                ))),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect::<Result<_>>()?;
        topic_defaults
            .apply(&as_text)
            .map_err(|e| Error::InvalidArgument(format!("topic_defaults: {e}")))?;
        let min_free_disk = match &self.min_free_disk {
            None => DiskFloor::default(),
            Some(DiskSize::Bytes(n)) => DiskFloor::bytes(*n),
            Some(DiskSize::Text(text)) => DiskFloor::parse(text)
                .map_err(|e| Error::InvalidArgument(format!("min_free_disk: {e}")))?,
        };
        Ok(Limits {
            max_partitions: self.max_partitions,
            max_fetch_bytes: self.max_fetch_bytes,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_open_segments: self.max_open_segments,
            max_records_per_request: self.max_records_per_request,
            max_headers_per_record: self.max_headers_per_record,
            topic_defaults,
            min_free_disk,
            compaction_map_bytes: self.compaction_map_bytes.max(1 << 20),
            producer_names: crate::broker::producer_ids::NameLimits {
                expiry: Duration::from_millis(self.producer_name_expiry_ms.max(1)),
                ..Default::default()
            },
            max_idempotent_producers: self.max_idempotent_producers,
        })
    }

    /// The threads that serve requests (tokio's workers, or with `pin_connections` the
    /// connection threads): `worker_threads`, or one per core for 0. Fewer
    /// workers than cores hand less work between them and leave a core to the kernel's
    /// side of each request and to clients on the same machine, which is worth it
    /// there for most loads. On a 2-vCPU VM with the bench client beside the server
    /// and 100 µs slices, one worker rather than two was as fast or faster for one
    /// producer, four producers on 16 partitions and a consumer, on half the server
    /// CPU at 10,000 one-record requests a second, and slower for one record a request
    /// (p50 0.137 against 0.100 ms; BENCHMARKS.md, "One worker against two, with the
    /// short slices"). A server with remote clients was not measured, and there one
    /// worker would leave cores idle, so the default stays tokio's.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The time slice the server's threads ask for, or None to leave the kernel's. A
    /// thread woken for a request when every CPU is busy waits for the scheduler to
    /// pick it; Linux's EEVDF scheduler picks the eligible thread with the earliest
    /// deadline, and a thread's deadline is its slice away. A shorter slice therefore
    /// lets the server's threads preempt other programs' (a client on the same machine,
    /// a batch job) sooner, and they themselves run in shorter turns; their share of the
    /// CPU is unchanged. See BENCHMARKS.md, "Short time slices", for what it measured.
    pub fn time_slice(&self) -> Option<Duration> {
        (self.time_slice_us > 0).then(|| Duration::from_micros(self.time_slice_us))
    }

    /// Refuses a `worker_threads` past `MAX_WORKER_THREADS` (a typo should be an error,
    /// not thousands of threads) and a `time_slice_us` the kernel would not take as it is.
    pub fn check_runtime(&self) -> Result<()> {
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Error::InvalidArgument(format!(
                "worker_threads {} is more than {MAX_WORKER_THREADS}; use 0 for one per core",
                self.worker_threads
            )));
        }
        if self.time_slice_us != 0 && !TIME_SLICE_RANGE_US.contains(&self.time_slice_us) {
            return Err(Error::InvalidArgument(format!(
                "time_slice_us {} is outside {}-{} µs, the range Linux keeps a slice within; use 0 for the kernel's default",
                self.time_slice_us,
                TIME_SLICE_RANGE_US.start(),
                TIME_SLICE_RANGE_US.end()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
