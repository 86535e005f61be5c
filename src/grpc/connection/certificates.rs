//! The server's TLS settings: certificate, key and the CAs of clients' certificates,
//! read from PEM files at start-up and again on `reload` (SIGHUP to `strom serve`), so
//! that a renewed certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// The server's TLS settings, loaded and checked: what each connection is accepted with.
#[derive(Clone)]
pub struct ServerTls {
    files: Arc<Files>,
    /// What handshakes are made with: replaced whole by a reload.
    acceptor: Arc<RwLock<Acceptors>>,
    /// Whether clients must show a certificate signed by `tls_client_ca`.
    pub clients_verified: bool,
    /// Handshakes that failed since the server started (for the metrics).
    failed: Arc<AtomicU64>,
}

/// The same settings for HTTP/2 (gRPC; Kafka clients, which ask for no protocol) and
/// for HTTP/1.1 (the metrics endpoint, `metrics_tls`): a client that offers only the
/// other protocol is refused in the handshake.
struct Acceptors {
    h2: TlsAcceptor,
    http1: TlsAcceptor,
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("clients_verified", &self.clients_verified)
            .finish()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key (PEM), and the CAs whose certificates clients
    /// must show, if any. Fails, naming the file and the setting, on anything unusable:
    /// a server started with TLS asked for must not serve without it.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls> {
        Ok(ServerTls {
            acceptor: Arc::new(RwLock::new(acceptor(cert, key, client_ca)?)),
            clients_verified: client_ca.is_some(),
            failed: Arc::new(AtomicU64::new(0)),
            files: Arc::new(Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                client_ca: client_ca.map(Path::to_path_buf),
            }),
        })
    }

    /// Reads the files again: connections accepted from now on are served with what
    /// they hold, those already open keep their session. On any error the files are
    /// left unused and the settings in use stay, whole.
    pub fn reload(&self) -> Result<()> {
        let files = &self.files;
        let fresh = acceptor(&files.cert, &files.key, files.client_ca.as_deref())?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Handshakes that failed so far: a plaintext client, a certificate refused, a
    /// client silent past the timeout.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn count_failure(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// What the next handshake is made with, for HTTP/2 (gRPC) or Kafka.
    pub fn acceptor(&self) -> TlsAcceptor {
        let acceptors = self.acceptor.read().unwrap_or_else(|e| e.into_inner());
        acceptors.h2.clone()
    }

    /// What the next handshake of the metrics endpoint is made with (HTTP/1.1).
    pub fn http1_acceptor(&self) -> TlsAcceptor {
        let acceptors = self.acceptor.read().unwrap_or_else(|e| e.into_inner());
        acceptors.http1.clone()
    }
}

/// The common name (CN) of the subject of the client's own certificate (the first it
/// showed): who the client is, when the server verified it (`tls_client_ca`). None
/// without a certificate, or with a subject of no common name, of more than one (which
/// one names the client is a guess: Go's crypto takes the last, others the first), or
/// of one that is not a non-empty string without `*`.
pub fn common_name(
    certificates: Option<&[rustls_pki_types::CertificateDer<'_>]>,
) -> Option<Arc<str>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, certificate) = X509Certificate::from_der(certificates?.first()?).ok()?;
    let mut names = certificate.subject().iter_common_name();
    let (Some(name), None) = (names.next(), names.next()) else {
        return None;
    };
    // A `*` would read as a wildcard on an acl line (`*` is anyone): such a name names
    // no one.
    name.as_str()
        .ok()
        .filter(|n| !n.is_empty() && !n.contains('*'))
        .map(Arc::from)
}

/// The files read and checked, as rustls takes them.
fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Acceptors> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |setting: &str, path: &Path, what: String| {
        Error::InvalidArgument(format!("{setting} {}: {what}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            bad(
                "tls_cert",
                cert,
                format!("{e}; give a PEM file of the server's certificate chain"),
            )
        })?;
    if chain.is_empty() {
        return Err(bad(
            "tls_cert",
            cert,
            "no CERTIFICATE block in it; give a PEM file of the server's certificate chain".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            "tls_key",
            key,
            format!(
                "{e}; give a PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1)"
            ),
        )
    })?;
    // ring, as tonic's `tls-ring` client uses: aws-lc-rs would add a large C build
    // for the one thing rustls deprecates ring for, post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<_> = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect())
                    .map_err(|e| bad("tls_client_ca", ca, format!("{e}; give a PEM file of the CA certificates that sign clients' certificates")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(
                    "tls_client_ca",
                    ca,
                    "no usable CA certificate in it".into(),
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad("tls_client_ca", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| {
        bad(
            "tls_key",
            key,
            format!("{e} (does it belong to the certificate in tls_cert?)"),
        )
    })?;
    // gRPC is HTTP/2, and its clients (grpcio among them) insist on agreeing so.
    let mut http1 = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Acceptors {
        h2: TlsAcceptor::from(Arc::new(config)),
        http1: TlsAcceptor::from(Arc::new(http1)),
    })
}
