//! The metrics endpoint with `metrics_tls` and `metrics_auth`, against a real server:
//! scrapes over TLS with a token (and a grant, with an access control list), scrapers
//! named by their certificates, a revoked token refused on a connection kept open, and
//! the Python `prometheus_client` parser reading a scrape made with `urllib` over HTTPS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::server::TestServer;
use common::tls::Certs;
use http_body_util::{BodyExt, Empty};
use strom::grpc::auth::{file_line, Acl, Tokens};
use strom::server::ServeOptions;
use tokio_rustls::rustls;

const LIMIT: Duration = Duration::from_secs(20);

/// A scraper's TLS connection: trusting the test CA, with a client certificate if
/// given, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    certs: &Certs,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    connect_trusting(addr, &certs.ca, identity, alpn).await
}

/// `connect`, trusting the CA in `ca`.
async fn connect_trusting(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .expect("the handshake ends in time")?;
    // TLS 1.3 sends the server's verdict on a client certificate after the client's
    // Finished: a refused one shows at the first read, which a request then makes.
    Ok(tls)
}

/// An HTTP/1.1 connection over `io`, and the task that drives it.
async fn http1(
    io: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    send
}

/// GET /metrics on `send`, with `token` as a bearer token: the status, the
/// WWW-Authenticate header and the body; Err if the connection failed.
async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    token: Option<&str>,
) -> Result<(u16, String, String), String> {
    request(send, hyper::Method::GET, "/metrics", token).await
}

/// `get` with another method or path.
async fn request(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String, String), String> {
    // Ready first: a request sent while the previous one's response is still being
    // wound up is refused by the client itself ("operation was canceled").
    tokio::time::timeout(LIMIT, send.ready())
        .await
        .expect("ready in time")
        .map_err(|e| e.to_string())?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(
        LIMIT,
        send.send_request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("answered in time")
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, challenge, String::from_utf8(body.to_vec()).unwrap()))
}

/// One request on a new connection.
async fn get_once(
    addr: SocketAddr,
    certs: &Certs,
    identity: Option<(&Path, &Path)>,
    token: Option<&str>,
) -> Result<(u16, String, String), String> {
    let io = connect(addr, certs, identity, &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    get(&mut http1(io).await, token).await
}

/// A server with a metrics endpoint, its data in `dir/data`.
async fn serve(dir: &Path, options: ServeOptions) -> TestServer {
    let data = dir.join("data");
    let limits = strom::broker::Limits::default();
    TestServer::start_with_options_and_metrics(&data, limits, options).await
}

const ACL: &str = "prom read metrics\napp all topic:* group:*\n";

/// A tokens file of `prom` (may scrape) and `app` (may not), and an acl saying so.
fn tokens_and_acl(dir: &Path) -> (PathBuf, Tokens, Acl) {
    let tokens = dir.join("tokens");
    let lines = [
        file_line("prom", "prom-token").unwrap(),
        file_line("app", "app-token").unwrap(),
    ];
    std::fs::write(&tokens, lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("acl"), ACL).unwrap();
    let acl = Acl::load(&dir.join("acl")).unwrap();
    (tokens.clone(), Tokens::load(&tokens).unwrap(), acl)
}

/// Over TLS with tokens and a list: a scrape needs a token (401 without one or with an
/// unknown one, saying how to send it), a grant (403 for `app`, naming the acl line to
/// add) and HTTPS (a plaintext request gets no scrape). `prom` scrapes; a client that
/// offers only HTTP/2 fails its handshake. A token revoked meanwhile is refused at the
/// next request of a connection kept open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_needs_tls_a_known_token_and_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let (tokens_path, tokens, acl) = tokens_and_acl(dir.path());
    let options = ServeOptions {
        tls: Some(certs.server(false)),
        tokens: Some(tokens.clone()),
        acl: Some(acl.clone()),
        metrics_tls: true,
        metrics_auth: true,
        ..Default::default()
    };
    let server = serve(dir.path(), options).await;
    let addr = server.metrics.unwrap();

    let (status, challenge, body) = get_once(addr, &certs, None, None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(body.contains("Authorization: Bearer TOKEN"), "{body}");
    let (status, _, body) = get_once(addr, &certs, None, Some("nobody's"))
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get_once(addr, &certs, None, Some("app-token"))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`app read metrics`"), "{body}");
    // Other paths and methods are refused before they are looked at.
    for (method, path) in [
        (hyper::Method::HEAD, "/metrics"),
        (hyper::Method::GET, "/other"),
    ] {
        let io = connect(addr, &certs, None, &[b"http/1.1"]).await.unwrap();
        let answer = request(&mut http1(io).await, method.clone(), path, None).await;
        assert_eq!(answer.unwrap().0, 401, "{method} {path}");
    }

    // A refusal closes its connection: a refused client keeps no place. Two requests
    // sent at once get one answer, then the end of the stream.
    let mut io = connect(addr, &certs, None, &[b"http/1.1"]).await.unwrap();
    let two = "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n".repeat(2);
    tokio::io::AsyncWriteExt::write_all(&mut io, two.as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut io, &mut answers);
    let _ = tokio::time::timeout(LIMIT, read)
        .await
        .expect("closed in time");
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 401").count(), 1, "{answers}");
    // Two Authorization headers name no one scraper, even both prom's: refused.
    let mut io = connect(addr, &certs, None, &[b"http/1.1"]).await.unwrap();
    let twice = "authorization: Bearer prom-token\r\n".repeat(2);
    let asked = format!("GET /metrics HTTP/1.1\r\nhost: x\r\n{twice}\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut io, asked.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut io, &mut answer);
    let _ = tokio::time::timeout(LIMIT, read)
        .await
        .expect("closed in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.contains("more than one Authorization header"),
        "{answer}"
    );

    // prom scrapes on a connection kept open, until its grant is taken away.
    let kept_open = || async {
        let io = connect(addr, &certs, None, &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut kept = http1(io).await;
        let (status, _, body) = get(&mut kept, Some("prom-token")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("strom_build_info") && body.ends_with("# EOF\n"),
            "{body}"
        );
        kept
    };
    let mut kept = kept_open().await;
    std::fs::write(dir.path().join("acl"), "app all topic:*\n").unwrap();
    acl.reload().unwrap();
    let (status, _, body) = get(&mut kept, Some("prom-token")).await.unwrap();
    assert_eq!(
        status, 403,
        "grant taken away, on the same connection: {body}"
    );
    std::fs::write(dir.path().join("acl"), ACL).unwrap();
    acl.reload().unwrap();
    // And until its token is revoked.
    let mut kept = kept_open().await;
    std::fs::write(&tokens_path, file_line("app", "app-token").unwrap() + "\n").unwrap();
    tokens.reload().unwrap();
    let (status, _, body) = get(&mut kept, Some("prom-token")).await.unwrap();
    assert_eq!(status, 401, "revoked, on the same connection: {body}");

    // Only HTTP/1.1 is offered: a client that insists on HTTP/2 fails its handshake.
    let h2_only = connect(addr, &certs, None, &[b"h2"]).await;
    assert!(h2_only.is_err(), "an h2-only handshake must fail");

    // Plain HTTP gets no HTTP answer, even with a token granted a scrape (prom's is
    // revoked by now; app is granted for this): the bytes are not a TLS ClientHello.
    std::fs::write(dir.path().join("acl"), "app read metrics\n").unwrap();
    acl.reload().unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let plain = b"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer app-token\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut socket, plain)
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer),
    )
    .await
    .expect("closed in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.starts_with("HTTP/"),
        "no HTTP over plain TCP: {answer}"
    );
    server.stop().await.unwrap();
}

/// With mutual TLS and no tokens, a scraper's certificate names it: `reader`, which the
/// list grants `read metrics`, scrapes; `client` gets 403; a scraper without a
/// certificate fails its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_is_named_by_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    std::fs::write(
        dir.path().join("acl"),
        "reader read metrics\nclient all topic:*\n",
    )
    .unwrap();
    let options = ServeOptions {
        tls: Some(certs.server(true)),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        metrics_tls: true,
        metrics_auth: true,
        ..Default::default()
    };
    let server = serve(dir.path(), options).await;
    let addr = server.metrics.unwrap();
    let reader = Some((certs.reader_cert.as_path(), certs.reader_key.as_path()));
    let (status, _, body) = get_once(addr, &certs, reader, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let client = Some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let (status, _, body) = get_once(addr, &certs, client, None).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`client read metrics`"), "{body}");
    let refused = get_once(addr, &certs, None, None).await;
    assert!(refused.is_err(), "no certificate: {refused:?}");
    server.stop().await.unwrap();
}

/// Python's `urllib` scrapes over HTTPS with a bearer token, as a scraper written in
/// Python would, and the official `prometheus_client` parser reads the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_scrapes_over_https_with_a_token() {
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let (_, tokens, acl) = tokens_and_acl(dir.path());
    let options = ServeOptions {
        tls: Some(certs.server(false)),
        tokens: Some(tokens),
        acl: Some(acl),
        metrics_tls: true,
        metrics_auth: true,
        ..Default::default()
    };
    let server = serve(dir.path(), options).await;
    let url = format!(
        "https://localhost:{}/metrics",
        server.metrics.unwrap().port()
    );
    let script = r#"
import ssl, sys, urllib.error, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
url, ca = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca)
def scrape(token):
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    return urllib.request.urlopen(request, timeout=20, context=context).read().decode()
try:
    scrape("app-token")
    print("app scraped")
except urllib.error.HTTPError as e:
    print("app refused", e.code)
for family in text_string_to_metric_families(scrape("prom-token")):
    if family.name.startswith("strom_build"):
        print("build info", len(family.samples))
"#;
    let ca = certs.ca.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", script, &url, &ca])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python ({e}); run ./scripts/test.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("app refused 403"), "{stdout}");
    assert!(stdout.contains("build info 1"), "{stdout}\n{stderr}");
    server.stop().await.unwrap();
}

/// With `metrics_tls` alone, anyone who reaches the port scrapes, over TLS; a SIGHUP's
/// renewal of the certificate serves the new one to the next scraper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alone_serves_anyone_and_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let (cert, key) = certs.live_copy(dir.path());
    let tls = strom::server::ServerTls::load(&cert, &key, None).unwrap();
    let options = ServeOptions {
        tls: Some(tls.clone()),
        metrics_tls: true,
        ..Default::default()
    };
    let server = serve(dir.path(), options).await;
    let addr = server.metrics.unwrap();
    let (status, _, body) = get_once(addr, &certs, None, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let other = connect_trusting(addr, &certs.other_ca, None, &[b"http/1.1"]).await;
    assert!(other.is_err(), "the other CA's trust before the renewal");
    certs.renew(&cert, &key);
    tls.reload().unwrap();
    let io = connect_trusting(addr, &certs.other_ca, None, &[b"http/1.1"])
        .await
        .unwrap();
    let (status, _, body) = get(&mut http1(io).await, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    server.stop().await.unwrap();
}
