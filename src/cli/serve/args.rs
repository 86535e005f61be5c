//! `strom serve`'s flags, and the configuration they make with the file and the
//! environment (`config.rs`): defaults, then the file, then environment variables and
//! flags.

use std::path::PathBuf;

use crate::config::{LogFormat, ServerConfig};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "STROM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7400].
    #[arg(long, env = "STROM_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Address to serve Prometheus metrics on, at /metrics (HTTP), e.g. 127.0.0.1:7401
    /// [default: none].
    #[arg(long, env = "STROM_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the metrics over TLS (HTTPS), with --tls-cert and --tls-key (and, with
    /// --tls-client-ca, scrapers' certificates verified) [default: false].
    #[arg(long, env = "STROM_METRICS_TLS")]
    metrics_tls: Option<bool>,
    /// Scrapes must carry a token of --auth-tokens (`Authorization: Bearer TOKEN`), or
    /// without tokens a verified client certificate; with --acl, one granted `read
    /// metrics` [default: false].
    #[arg(long, env = "STROM_METRICS_AUTH")]
    metrics_auth: Option<bool>,
    /// Address to answer Kafka clients on (Kafka's wire protocol), e.g. 127.0.0.1:9092
    /// [default: none].
    #[arg(long, env = "STROM_KAFKA_LISTEN")]
    kafka_listen: Option<std::net::SocketAddr>,
    /// HOST:PORT Kafka clients are told to connect to [default: the address each
    /// client reached --kafka-listen on].
    #[arg(long, env = "STROM_KAFKA_ADVERTISED_ADDRESS")]
    kafka_advertised_address: Option<String>,
    /// Directory for topics and their data [default: ./strom-data].
    #[arg(long, env = "STROM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log lines as human-readable text or JSON [default: text].
    #[arg(long, env = "STROM_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `strom=debug` [default: info].
    #[arg(long, env = "STROM_LOG_LEVEL")]
    log_level: Option<String>,
    /// How often the cleaner deletes expired segments, in ms [default: 300000].
    #[arg(long, env = "STROM_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Refuse produce below this much free disk: bytes, a size (1GiB, 500MB), a share
    /// of the disk (5%), or 0 for none [default: 1GiB or 5%, whichever is smaller].
    #[arg(long, env = "STROM_MIN_FREE_DISK")]
    min_free_disk: Option<String>,
    /// Threads that serve requests, tokio's workers or the connection threads of
    /// --pin-connections (durable writes and file opens run on a separate pool); 0 is
    /// one per core [default: 0].
    #[arg(long, env = "STROM_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Serve each connection whole on one thread (true), or let tokio move its tasks
    /// between threads (false) [default: false].
    #[arg(long, env = "STROM_PIN_CONNECTIONS")]
    pin_connections: Option<bool>,
    /// CPU time slice the server's threads ask the kernel for, in µs (100-100000;
    /// Linux 6.12 or later); 0 is the kernel's default [default: 100].
    #[arg(long, env = "STROM_TIME_SLICE_US")]
    time_slice_us: Option<u64>,
    /// PEM file of the server's certificate chain; with --tls-key, serve TLS only
    /// [default: none, plaintext].
    #[arg(long, env = "STROM_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM file of --tls-cert's private key.
    #[arg(long, env = "STROM_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM file of CA certificates; clients must show a certificate one of them
    /// signed (mutual TLS) [default: none].
    #[arg(long, env = "STROM_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// File of `NAME SHA256` lines, the hex SHA-256 of each token calls may carry
    /// (`authorization: Bearer TOKEN`), then SCRAM keys for Kafka clients if any (`strom
    /// token new` writes them) [default: none, no token asked for].
    #[arg(long, env = "STROM_AUTH_TOKENS", value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// Access control list: `PRINCIPAL OPERATIONS RESOURCE...` lines; a call no line
    /// grants is refused. Needs --auth-tokens or --tls-client-ca [default: none, any
    /// caller may do anything].
    #[arg(long, env = "STROM_ACL", value_name = "FILE")]
    acl: Option<PathBuf>,
    /// Per-client quotas: `PRINCIPAL produce=RATE fetch=RATE requests=N` lines, bytes
    /// and requests a second (`*`: every other client) [default: none, no client is
    /// limited].
    #[arg(long, env = "STROM_QUOTAS", value_name = "FILE")]
    quotas: Option<PathBuf>,
}

/// The defaults, then the file, then environment variables and flags.
pub(super) fn configure(args: ServeArgs) -> Result<ServerConfig, String> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path).map_err(|e| e.to_string())?,
        None => ServerConfig::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    if let Some(v) = args.metrics_tls {
        config.metrics_tls = v;
    }
    if let Some(v) = args.metrics_auth {
        config.metrics_auth = v;
    }
    if let Some(v) = args.kafka_listen {
        config.kafka_listen = Some(v);
    }
    if let Some(v) = args.kafka_advertised_address {
        config.kafka_advertised_address = Some(v);
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    if let Some(v) = args.log_level {
        config.log_level = v;
    }
    if let Some(v) = args.retention_check_interval_ms {
        config.retention_check_interval_ms = v;
    }
    if let Some(v) = args.min_free_disk {
        config.min_free_disk = Some(crate::config::DiskSize::Text(v));
    }
    if let Some(v) = args.worker_threads {
        config.worker_threads = v;
    }
    if let Some(v) = args.pin_connections {
        config.pin_connections = v;
    }
    if let Some(v) = args.time_slice_us {
        config.time_slice_us = v;
    }
    if let Some(v) = args.tls_cert {
        config.tls_cert = Some(v);
    }
    if let Some(v) = args.tls_key {
        config.tls_key = Some(v);
    }
    if let Some(v) = args.tls_client_ca {
        config.tls_client_ca = Some(v);
    }
    if let Some(v) = args.auth_tokens {
        config.auth_tokens = Some(v);
    }
    if let Some(v) = args.acl {
        config.acl = Some(v);
    }
    if let Some(v) = args.quotas {
        config.quotas = Some(v);
    }
    config.check_runtime().map_err(|e| e.to_string())?;
    Ok(config)
}
