//! What the server is built from its configuration: TLS, the tokens file, the access
//! list, the quotas, the Kafka listener's advertised address and `ServeOptions`, each
//! loaded and checked before anything is bound or opened.

use std::time::Duration;

use super::ServerConfig;
use crate::error::{Error, Result};
use crate::groups::GroupsConfig;
use crate::grpc::auth::{Acl, Tokens};
use crate::grpc::connection::ServerTls;
use crate::grpc::quota::Quotas;
use crate::server::ServeOptions;

impl ServerConfig {
    /// The TLS settings loaded, or None for plaintext. Fails on a setting given
    /// without the ones it needs, and on a file that cannot be used.
    pub fn tls(&self) -> Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                ServerTls::load(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (None, None) => Err(Error::InvalidArgument(
                "tls_client_ca needs tls_cert and tls_key: clients are verified only over TLS"
                    .into(),
            )),
            (Some(_), None) => Err(Error::InvalidArgument(
                "tls_cert needs tls_key, the PEM file of its private key".into(),
            )),
            (None, Some(_)) => Err(Error::InvalidArgument(
                "tls_key needs tls_cert, the PEM file of the server's certificate chain".into(),
            )),
        }
    }

    /// Refuses metrics_tls or metrics_auth without metrics_listen: set for nothing.
    /// (What they need besides is checked by `server::metrics::Guard::of`.)
    pub fn check_metrics(&self) -> Result<()> {
        if (self.metrics_tls || self.metrics_auth) && self.metrics_listen.is_none() {
            return Err(Error::InvalidArgument(
                "metrics_tls and metrics_auth need metrics_listen, the address the metrics are served on".into(),
            ));
        }
        Ok(())
    }

    /// The tokens file read and checked, or None when calls need no token.
    pub fn tokens(&self) -> Result<Option<Tokens>> {
        self.auth_tokens.as_deref().map(Tokens::load).transpose()
    }

    /// The access control list read and checked, or None when there is none.
    pub fn acl(&self) -> Result<Option<Acl>> {
        if self.acl.is_some() && self.auth_tokens.is_none() && self.tls_client_ca.is_none() {
            return Err(Error::InvalidArgument(
                "acl needs auth_tokens or tls_client_ca: without either, every caller is a stranger and the list could grant nothing".into(),
            ));
        }
        self.acl.as_deref().map(Acl::load).transpose()
    }

    /// The quotas file read and checked, or None when no client is limited.
    pub fn quotas(&self) -> Result<Option<Quotas>> {
        self.quotas.as_deref().map(Quotas::load).transpose()
    }

    /// `kafka_advertised_address` as a host and a port.
    pub fn kafka_advertised(&self) -> Result<Option<(String, u16)>> {
        let Some(address) = &self.kafka_advertised_address else {
            return Ok(None);
        };
        let bad = || {
            Error::InvalidArgument(format!(
                "kafka_advertised_address {address:?} is not HOST:PORT (e.g. broker.example.com:9092)"
            ))
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Some((host.to_string(), port)))
    }

    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            max_request_bytes: self.max_request_bytes,
            upkeep_interval: Duration::from_millis(self.upkeep_interval_ms.max(10)),
            retention_check_interval: Duration::from_millis(
                self.retention_check_interval_ms.max(10),
            ),
            produce_budget_bytes: self.produce_budget_bytes,
            request_budget_bytes: self.request_budget_bytes,
            groups: GroupsConfig::new(
                Duration::from_millis(self.group_heartbeat_interval_ms.max(10)),
                Duration::from_millis(self.group_offsets_retention_ms),
            ),
            stalled_reader_timeout: Duration::from_millis(self.stalled_reader_timeout_ms.max(10)),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address,
            kafka_group_initial_delay: Duration::from_millis(
                self.kafka_group_initial_rebalance_delay_ms,
            ),
            max_calls: self.max_calls.max(1),
            max_share_window_records: self.max_share_window_records.max(1),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            silent_client_timeout: Duration::from_millis(self.silent_client_timeout_ms.max(10)),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms.max(10)),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms.max(10)),
            connection_threads: match self.pin_connections {
                true => self.workers(),
                false => 0,
            },
            time_slice: self.time_slice(),
            metrics_tls: self.metrics_tls,
            metrics_auth: self.metrics_auth,
            ..ServeOptions::default()
        }
    }
}
