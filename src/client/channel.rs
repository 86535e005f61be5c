//! The connection a `Client` makes: tonic's channel, over TLS if asked, with the
//! client's token added to every call's metadata.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::Endpoint;

/// How often an HTTP/2 PING asks whether the server is still there, and how long its
/// answer may take: a server that stops answering (stopped, or its machine gone without
/// a reset) fails every call on the connection with UNAVAILABLE within about their sum,
/// rather than holding it for good. Long polls and idle streams are not cut short: the
/// server answers PINGs while they wait. Not shorter: a server under heavy load must
/// not have its connections cut for a late answer (gRPC's own default timeout is 20 s).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long making the TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for a client's connection (`Client::connect_with`).
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM of the CA certificates that sign the server's; None trusts the system's
    /// roots (a server whose certificate a public CA signed).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of this client's certificate chain and of its private key, for a server
    /// that verifies clients (`tls_client_ca`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// How `Client::connect_with` connects.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// TLS, or None for plaintext.
    pub tls: Option<ClientTls>,
    /// A token for a server with `auth_tokens`, sent with every call as
    /// `authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Every call of a `Client` goes through this: tonic's channel, and the token.
#[derive(Clone)]
pub struct Channel {
    inner: tonic::transport::Channel,
    authorization: Option<http::HeaderValue>,
}

impl tower_service::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        self.inner.call(request)
    }
}

/// Why a client could not connect: tonic's transport error (its causes as `source`),
/// a deadline passed, or options that cannot be used.
#[derive(Debug)]
pub struct ConnectError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<tonic::transport::Error> for ConnectError {
    fn from(err: tonic::transport::Error) -> Self {
        ConnectError(Box::new(err))
    }
}

impl From<String> for ConnectError {
    fn from(reason: String) -> Self {
        ConnectError(reason.into())
    }
}

pub(super) async fn connect(
    address: &str,
    options: ConnectOptions,
) -> Result<Channel, ConnectError> {
    // tonic makes TLS only for https://: TLS asked for is never dropped for a scheme.
    let host = address.split_once("://").map_or(address, |(_, host)| host);
    let uri = match options.tls {
        Some(_) => format!("https://{host}"),
        None if address.contains("://") => address.to_string(),
        None => format!("http://{host}"),
    };
    let mut endpoint = Endpoint::from_shared(uri)?;
    if let Some(tls) = options.tls {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match tls.ca_pem {
            Some(ca) => config.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    let authorization = match options.token {
        None => None,
        Some(token) => {
            let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()));
            let printable = token
                .trim()
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ');
            let mut value = value.ok().filter(|_| printable).ok_or_else(|| {
                "the token has characters metadata cannot carry (a line break, a letter \
                 outside ASCII): give it as printable ASCII"
                    .to_string()
            })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    let inner = endpoint
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // Responses in frames of up to 1 MiB, not 16 KiB (see `MAX_FRAME_BYTES`).
        .max_frame_size(Some(crate::grpc::MAX_FRAME_BYTES));
    // `connect_timeout` bounds the TCP connect only: a server that accepted and never
    // answers the TLS handshake (stopped, or still recovering its logs) would hold
    // the connect for ever.
    let inner = tokio::time::timeout(CONNECT_TIMEOUT * 2, inner.connect())
        .await
        .map_err(|_| {
            format!(
                "no connection within {} s (no answer to the TCP or TLS handshake)",
                (CONNECT_TIMEOUT * 2).as_secs()
            )
        })??;
    Ok(Channel {
        inner,
        authorization,
    })
}

/// A channel that connects on first use, for tests of the client's own state.
#[cfg(test)]
pub(super) fn lazy(address: &str) -> Channel {
    let inner = Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid address")
        .connect_lazy();
    Channel {
        inner,
        authorization: None,
    }
}
