//! TLS: the server with `tls_cert` and `tls_key` serves only TLS clients that trust its
//! CA, and with `tls_client_ca` only those that show a certificate that CA signed. The
//! connection watching of plaintext servers (silent clients, the greeting) still holds.

mod common;

use std::time::{Duration, Instant};

use common::requests::{produce, record};
use common::server::TestServer;
use common::tls::Certs;
use strom::broker::Limits;
use strom::client::{Client, ClientTls, ConnectOptions};
use strom::grpc::pb;
use strom::server::ServeOptions;

async fn tls_server(
    dir: &std::path::Path,
    certs: &Certs,
    verify: bool,
    threads: usize,
) -> TestServer {
    let options = ServeOptions {
        tls: Some(certs.server(verify)),
        connection_threads: threads,
        ..Default::default()
    };
    TestServer::start_with_options(dir, Limits::default(), options).await
}

fn over(tls: Option<ClientTls>) -> ConnectOptions {
    ConnectOptions { tls, token: None }
}

/// Connects and makes one call: Ok only if the server served it.
async fn serves(addr: &str, tls: Option<ClientTls>) -> Result<(), String> {
    let attempt = async {
        let client = Client::connect_with(addr, over(tls))
            .await
            .map_err(|e| format!("{e:?}"))?;
        client
            .admin()
            .list_topics()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Produce and fetch over TLS (on tokio's workers, and on connection threads), with
/// the server's name as an IP address and as a DNS name; a plaintext client is
/// refused, and so is one that does not trust the server's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_serves_clients_that_trust_its_ca_and_no_other() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    for threads in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let server = tls_server(dir.path(), &certs, false, threads).await;
        let port = server.addr.port();
        for host in ["127.0.0.1", "localhost"] {
            let address = format!("{host}:{port}");
            let client = Client::connect_with(&address, over(Some(certs.client(&certs.ca, None))))
                .await
                .unwrap();
            let topic = format!("t-{host}");
            client
                .admin()
                .create_topic(&topic, 1, Default::default())
                .await
                .unwrap();
            // 2.7 MB: many TLS records and HTTP/2 frames each way.
            let values: Vec<String> = ["a", "b", "c"].iter().map(|v| v.repeat(900_000)).collect();
            let records = values.iter().map(|v| record(v)).collect();
            let ack = client
                .log()
                .produce(produce(&topic, Some(0), records))
                .await
                .unwrap()
                .into_inner();
            assert_eq!((ack.base_offset, ack.last_offset), (0, 2));
            let fetched = common::fetch_all(&client, &topic, 0).await;
            let expected: Vec<(u64, String)> = (0..).zip(values).collect();
            assert_eq!(fetched, expected);
        }
        let address = server.addr.to_string();
        let plain = serves(&address, None).await;
        assert!(
            plain.is_err(),
            "a plaintext client was served by a TLS server"
        );
        let untrusting = serves(&address, Some(certs.client(&certs.other_ca, None))).await;
        assert!(
            untrusting.is_err(),
            "a client trusting another CA was served"
        );
        server.stop().await.unwrap();
    }
}

/// With `tls_client_ca`, a client without a certificate, or with one another CA
/// signed, is refused; one with a certificate the CA signed is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_whose_certificate_it_signed_are_served() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), &certs, true, 0).await;
    let address = server.addr.to_string();
    let anonymous = serves(&address, Some(certs.client(&certs.ca, None))).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served"
    );
    let stranger = certs.client(
        &certs.ca,
        Some((&certs.other_client_cert, &certs.other_client_key)),
    );
    let stranger = serves(&address, Some(stranger)).await;
    assert!(
        stranger.is_err(),
        "a certificate another CA signed was accepted"
    );
    let known = certs.client(&certs.ca, Some((&certs.client_cert, &certs.client_key)));
    serves(&address, Some(known)).await.unwrap();
    server.stop().await.unwrap();
}

/// The silent-client timeout reads the client's HTTP/2 greeting above TLS: a client
/// that connects and never finishes its handshake is closed after it, and one that
/// greeted is not, however little it sends (the greeting read from the encrypted bytes
/// took three bytes of the handshake for a frame length, and closed such a client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_silent_timeout_covers_the_handshake_and_spares_clients_that_greeted() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    for threads in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let options = ServeOptions {
            tls: Some(certs.server(false)),
            silent_client_timeout: Duration::from_millis(300),
            connection_threads: threads,
            ..Default::default()
        };
        let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
        let addr = server.addr;
        // A TLS record header and part of a ClientHello, then nothing.
        let stalled = tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut socket, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                .unwrap();
            common::closed_within(&mut socket, Duration::from_secs(20))
        });
        let client =
            Client::connect_with(&addr.to_string(), over(Some(certs.client(&certs.ca, None))))
                .await
                .unwrap();
        client
            .admin()
            .create_topic("t", 1, Default::default())
            .await
            .unwrap();
        // A long poll three timeouts long, on the connection that greeted: it is
        // answered when its wait ends, not cut off.
        let started = Instant::now();
        let waited = client
            .log()
            .fetch(pb::FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 1000,
                ..Default::default()
            })
            .await
            .expect("a long poll on a TLS connection that greeted is answered");
        assert!(waited.into_inner().records.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert!(
            stalled.await.unwrap(),
            "a client stalled in its handshake stayed connected"
        );
        // The handshake finished, and then nothing: no HTTP/2 greeting.
        let mut mute = handshake_only(addr, &certs).await;
        let closed = tokio::time::timeout(Duration::from_secs(20), async move {
            let mut buf = [0u8; 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut mute, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // the server's SETTINGS
                }
            }
        });
        closed
            .await
            .expect("a client that finished its handshake and said nothing stayed connected");
        server.stop().await.unwrap();
    }
}

/// A TLS connection to `addr` trusting the test CA, its handshake made, nothing sent.
async fn handshake_only(
    addr: std::net::SocketAddr,
    certs: &Certs,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring, as the server uses
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, socket).await.unwrap()
}

/// With TLS asked for, an address that names `http://` is still reached over TLS: a
/// plaintext server is not served to a client that asked for TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_asked_for_is_never_dropped_for_an_http_scheme() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let (tls_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let secure = tls_server(tls_dir.path(), &certs, false, 0).await;
    let plain = TestServer::start(plain_dir.path()).await;
    let tls = || Some(certs.client(&certs.ca, None));
    serves(&format!("http://{}", secure.addr), tls())
        .await
        .unwrap();
    let downgraded = serves(&format!("http://{}", plain.addr), tls()).await;
    assert!(
        downgraded.is_err(),
        "a client that asked for TLS was served in plaintext"
    );
    secure.stop().await.unwrap();
    plain.stop().await.unwrap();
}

/// Settings that cannot work are refused when the server starts, naming the setting.
#[test]
fn unusable_tls_settings_are_refused_naming_the_setting() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let load = |cert: &std::path::Path, key: &std::path::Path, ca: Option<&std::path::Path>| {
        strom::server::ServerTls::load(cert, key, ca)
            .unwrap_err()
            .to_string()
    };
    let missing = certs_dir.path().join("missing.pem");
    assert!(load(&missing, &certs.server_key, None).contains("tls_cert"));
    assert!(load(&certs.server_key, &certs.server_key, None).contains("no CERTIFICATE"));
    assert!(load(&certs.server_cert, &certs.server_cert, None).contains("tls_key"));
    // A key that is not the certificate's.
    let wrong_key = load(&certs.server_cert, &certs.client_key, None);
    assert!(wrong_key.contains("tls_key"), "{wrong_key}");
    assert!(load(&certs.server_cert, &certs.server_key, Some(&missing)).contains("tls_client_ca"));
    let config = |text: &str| {
        let path = certs_dir.path().join("strom.toml");
        std::fs::write(&path, text).unwrap();
        strom::config::ServerConfig::from_file(&path).unwrap().tls()
    };
    let cert = certs.server_cert.display();
    let key = certs.server_key.display();
    assert!(config("").unwrap().is_none());
    assert!(
        config(&format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"))
            .unwrap()
            .is_some()
    );
    let alone = config(&format!("tls_cert = \"{cert}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(alone.contains("tls_cert needs tls_key"), "{alone}");
    let ca_alone = config(&format!("tls_client_ca = \"{cert}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        ca_alone.contains("tls_client_ca needs tls_cert"),
        "{ca_alone}"
    );
}

/// `strom serve --tls-cert --tls-key --tls-client-ca` as a process, and the CLI's client
/// commands over it with `--tls-ca` and a client certificate; without them, or with a
/// certificate and no key, the commands fail saying what to give.
#[test]
fn strom_serve_over_tls_and_the_cli_commands_through_it() {
    use common::cli::{Serve, STROM};
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (
        path(&certs.server_cert),
        path(&certs.server_key),
        path(&certs.ca),
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_args(
        dir.path(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let ready = serve.stderr.lock().unwrap().join("\n");
    assert!(
        ready.contains("(TLS, client certificates required)"),
        "{ready}"
    );
    let (client_cert, client_key) = (path(&certs.client_cert), path(&certs.client_key));
    let tls = [
        "--tls-ca",
        &ca,
        "--tls-client-cert",
        &client_cert,
        "--tls-client-key",
        &client_key,
    ];
    let with_tls = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(tls.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let args = with_tls(&["topic", "create", "t"]);
    serve.ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    let args = with_tls(&["produce", "-t", "t"]);
    serve.ok(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        b"one\ntwo\n",
    );
    let args = with_tls(&["consume", "-t", "t", "--from", "earliest"]);
    let out = serve.ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert_eq!(String::from_utf8_lossy(&out), "one\ntwo\n");
    let refused = |args: &[&str], says: &str| {
        let out = serve.run(args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "strom {args:?} succeeded");
        assert!(stderr.contains(says), "strom {args:?}: {stderr}");
    };
    refused(
        &["topic", "list"],
        "it may serve TLS only (give --tls-ca FILE",
    );
    refused(
        &["topic", "list", "--tls-ca", &ca],
        "it may require a client certificate (give --tls-client-cert",
    );
    refused(
        &[
            "topic",
            "list",
            "--tls-ca",
            &ca,
            "--tls-client-cert",
            &client_cert,
        ],
        "go together",
    );
    let (other_cert, other_key) = (
        path(&certs.other_client_cert),
        path(&certs.other_client_key),
    );
    refused(
        &[
            "topic",
            "list",
            "--tls-ca",
            &ca,
            "--tls-client-cert",
            &other_cert,
            "--tls-client-key",
            &other_key,
        ],
        "may not accept this client certificate",
    );
    // A server told half of what TLS needs does not start.
    let out = common::process::run_within(
        std::process::Command::new(STROM)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--data-dir",
            ])
            .arg(dir.path().join("other")),
        b"",
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls_cert needs tls_key"), "{stderr}");
}

/// `ServerTls::reload` (SIGHUP to `strom serve`): connections made after it get the
/// new certificate, one already open keeps its session, and files that cannot be used
/// leave the certificate in use as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_to_new_connections_and_keeps_the_old_on_failure() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let (live_cert, live_key) = certs.live_copy(certs_dir.path());
    let tls = strom::server::ServerTls::load(&live_cert, &live_key, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        tls: Some(tls.clone()),
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let address = server.addr.to_string();
    let before = Client::connect_with(&address, over(Some(certs.client(&certs.ca, None))))
        .await
        .unwrap();
    before.admin().list_topics().await.unwrap();
    // Renewed by another CA.
    certs.renew(&live_cert, &live_key);
    tls.reload().unwrap();
    let old_trust = serves(&address, Some(certs.client(&certs.ca, None))).await;
    assert!(
        old_trust.is_err(),
        "a new connection got the old certificate"
    );
    serves(&address, Some(certs.client(&certs.other_ca, None)))
        .await
        .unwrap();
    before
        .admin()
        .list_topics()
        .await
        .expect("an open connection keeps its session");
    // A key cut short: refused, and the renewed certificate stays in use.
    std::fs::write(&live_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
    let refused = tls.reload().unwrap_err().to_string();
    assert!(refused.contains("tls_key"), "{refused}");
    serves(&address, Some(certs.client(&certs.other_ca, None)))
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// SIGHUP to `strom serve` reloads its TLS files and does not end it; a plaintext
/// server takes SIGHUP and goes on too.
#[test]
fn sighup_reloads_the_tls_files_of_strom_serve() {
    use common::cli::Serve;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let (live_cert, live_key) = certs.live_copy(certs_dir.path());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_args(
        dir.path(),
        &[
            "--tls-cert",
            &path(&live_cert),
            "--tls-key",
            &path(&live_key),
        ],
    );
    let other_ca = path(&certs.other_ca);
    let refused = serve.run(&["topic", "list", "--tls-ca", &other_ca], b"");
    assert!(
        !refused.status.success(),
        "served with a certificate not yet loaded"
    );
    certs.renew(&live_cert, &live_key);
    serve.hang_up_until_logged("TLS files reloaded");
    serve.ok(&["topic", "list", "--tls-ca", &other_ca], b"");
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Serve::start(plain_dir.path());
    plain.hang_up_until_logged("nothing to reload");
    plain.ok(&["topic", "list"], b"");
}

/// A server that accepts and never answers the TLS handshake (stopped, or still
/// recovering its logs) fails the connect within its deadline: `connect_timeout`
/// bounds the TCP connect only, and the handshake used to wait for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_server_that_never_answers_its_handshake_fails_in_time() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket); // held open, never read
        }
    });
    let started = Instant::now();
    let options = over(Some(certs.client(&certs.ca, None)));
    let connected = tokio::time::timeout(
        Duration::from_secs(60),
        Client::connect_with(&addr.to_string(), options),
    )
    .await
    .expect("the connect ended by itself");
    let err = connected
        .err()
        .expect("a server that never answers was connected to");
    assert!(err.to_string().contains("no connection within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    held.abort();
}

/// Failed handshakes are logged at most once a second, and those held back are logged
/// when their second is up even if no other failure follows.
#[test]
fn failed_handshakes_are_logged_and_none_is_held_back_for_ever() {
    use common::cli::Serve;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_args(
        dir.path(),
        &[
            "--tls-cert",
            &path(&certs.server_cert),
            "--tls-key",
            &path(&certs.server_key),
        ],
    );
    // Three plaintext clients at once: the first is logged at once, the other two held.
    for _ in 0..3 {
        let mut socket = std::net::TcpStream::connect(&serve.addr).unwrap();
        std::io::Write::write_all(&mut socket, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(common::closed_within(&mut socket, Duration::from_secs(10)));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = |count: &str| {
        serve.stderr.lock().unwrap().iter().any(|line| {
            line.contains("TLS handshakes failed") && line.contains(&format!("failed={count}"))
        })
    };
    while !(logged("1") && logged("2")) {
        assert!(
            Instant::now() < deadline,
            "failures not logged: {:?}",
            serve.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
