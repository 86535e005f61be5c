//! Certificates for TLS tests, made with rcgen into a directory: a CA, a server
//! certificate it signs for `localhost` and `127.0.0.1`, a client certificate it signs,
//! and a second CA with a client certificate of its own (one the server must refuse)
//! and a server certificate of its own (a renewal).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second client certificate the CA signed, for the common name "reader".
    pub reader_cert: PathBuf,
    pub reader_key: PathBuf,
    /// A CA the server does not know, and a client certificate it signed.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    /// A server certificate the other CA signed (a renewal from another CA).
    pub other_server_cert: PathBuf,
    pub other_server_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate `issuer` signs for `names`, written as `<stem>.pem` and `<stem>.key`.
fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let (authority, other) = (ca("strom test CA"), ca("another CA"));
        let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
        std::fs::write(&ca_path, authority.pem()).unwrap();
        std::fs::write(&other_path, other.pem()).unwrap();
        let (server_cert, server_key) =
            leaf(dir, "server", &["localhost", "127.0.0.1"], &authority);
        let (client_cert, client_key) = leaf(dir, "client", &["client"], &authority);
        let (reader_cert, reader_key) = leaf(dir, "reader", &["reader"], &authority);
        let (other_client_cert, other_client_key) = leaf(dir, "other-client", &["client"], &other);
        let (other_server_cert, other_server_key) =
            leaf(dir, "other-server", &["localhost", "127.0.0.1"], &other);
        Certs {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            reader_cert,
            reader_key,
            other_ca: other_path,
            other_client_cert,
            other_client_key,
            other_server_cert,
            other_server_key,
        }
    }

    /// A copy of the server's certificate and key in `dir`, as `live.pem` and
    /// `live.key`: files a test can renew.
    pub fn live_copy(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("live.pem"), dir.join("live.key"));
        std::fs::copy(&self.server_cert, &cert).unwrap();
        std::fs::copy(&self.server_key, &key).unwrap();
        (cert, key)
    }

    /// Replaces the live copy with the certificate the other CA signed.
    pub fn renew(&self, cert: &Path, key: &Path) {
        std::fs::copy(&self.other_server_cert, cert).unwrap();
        std::fs::copy(&self.other_server_key, key).unwrap();
    }

    /// The server's settings, verifying clients against the CA or not.
    pub fn server(&self, verify_clients: bool) -> strom::server::ServerTls {
        let client_ca = verify_clients.then_some(self.ca.as_path());
        strom::server::ServerTls::load(&self.server_cert, &self.server_key, client_ca).unwrap()
    }

    /// A client's settings: trusting `ca`, with the certificate and key given, if any.
    pub fn client(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> strom::client::ClientTls {
        strom::client::ClientTls {
            ca_pem: Some(std::fs::read(ca).unwrap()),
            identity: identity
                .map(|(cert, key)| (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())),
        }
    }
}
