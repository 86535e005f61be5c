//! A client in another language needs nothing but the protos: Python's grpcio, with
//! stubs generated from `proto/` at test time, runs `examples/python/strom_client.py`
//! against the real server. `scripts/test.sh` installs grpcio into `target/pyenv` and
//! points STROM_PYTHON at it.

mod common;

use std::process::Command;

use common::server::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_client_produces_and_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    run_example(server.addr.to_string(), Vec::new()).await;
    server.stop().await.unwrap();
}

/// The same over TLS, with a client certificate the server verifies and a token it
/// checks (grpcio's own TLS and call credentials, from the same example with
/// `--tls-ca`, its client certificate and `--token-file`).
#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_client_over_mutual_tls_with_a_token() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = common::tls::Certs::make(certs_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let token_file = certs_dir.path().join("token");
    std::fs::write(&token_file, "py-secret\n").unwrap();
    // sha256("py-secret"), as `printf %s py-secret | sha256sum` prints it.
    let tokens = certs_dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "python 55edef901d87d7a9a609284c79c62a2175458bdf70d19b28f49dae8bd5dbc445\n",
    )
    .unwrap();
    // An access control list that grants what the example does, and no more.
    let acl = certs_dir.path().join("acl");
    std::fs::write(
        &acl,
        "python all topic:python-demo topic:no-such-topic producer:*\n",
    )
    .unwrap();
    let options = strom::server::ServeOptions {
        tls: Some(certs.server(true)),
        tokens: Some(strom::server::Tokens::load(&tokens).unwrap()),
        acl: Some(strom::server::Acl::load(&acl).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(dir.path(), strom::broker::Limits::default(), options).await;
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let tls = vec![
        "--tls-ca".to_string(),
        path(&certs.ca),
        "--tls-client-cert".into(),
        path(&certs.client_cert),
        "--tls-client-key".into(),
        path(&certs.client_key),
        "--token-file".into(),
        path(&token_file),
    ];
    let address = format!("localhost:{}", server.addr.port());
    run_example(address.clone(), tls.clone()).await;
    // What the list does not grant: grpcio sees PERMISSION_DENIED and the line that
    // would grant it.
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
import argparse, grpc
from strom_client import open_channel
from strom_stubs import load_stubs
parser = argparse.ArgumentParser()
for flag in ["--server", "--tls-ca", "--tls-client-cert", "--tls-client-key", "--token-file"]:
    parser.add_argument(flag)
args = parser.parse_args(sys.argv[2:])
pb, rpc = load_stubs()
with open_channel(args) as channel:
    try:
        rpc.AdminStub(channel).CreateTopic(pb.CreateTopicRequest(name="secret", partitions=1))
        print("created")
    except grpc.RpcError as err:
        print(err.code().name, err.details())
"#;
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-c", script, examples, "--server", &address])
            .args(tls)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PERMISSION_DENIED") && stdout.contains("`python admin topic:secret`"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await.unwrap();
}

/// Runs `examples/python/strom_client.py` against `addr` and checks all it printed.
async fn run_example(addr: String, extra: Vec<String>) {
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/strom_client.py"
    );
    // Its own temporary directory, to see that the stubs leave nothing behind.
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([script, "--server", &addr])
            .args(extra)
            .env("TMPDIR", tmpdir)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("cannot run python ({e}); run ./scripts/test.sh, which installs grpcio")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed (./scripts/test.sh installs grpcio):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("produced offsets 0..1 to partition 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("offset=0")
            && stdout.contains("key=b'user-1'")
            && stdout.contains("[('source', b'web')]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("offset=1") && stdout.contains("key=None"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fetch past the end: OUT_OF_RANGE") && stdout.contains("[0, 2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("idempotent produce at 2, its retry answered with 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sequence gap: FAILED_PRECONDITION")
            && stdout.contains("expected sequence 1, got 5"),
        "{stdout}"
    );
    // ProduceStream from grpcio: read from the HTTP/2 frames by `grpc/direct`.
    assert!(stdout.contains("stream 1: offsets 3..3"), "{stdout}");
    assert!(
        stdout.contains("stream 2: code 5: ") && stdout.contains("no-such-topic"),
        "{stdout}"
    );
    assert!(stdout.contains("stream 3: offsets 4..3003"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "the example left {left:?} behind");
    assert!(
        stdout.contains("stream record 3003: b'\\xee\\xee\\xee', 1000 bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("partitions now 3"), "{stdout}");
    assert!(
        stdout.contains("fewer partitions: FAILED_PRECONDITION"),
        "{stdout}"
    );
}

/// `examples/python/exchange_publish.py`: a topic exchange from grpcio, its publishes
/// routed to the topics bound, an unroutable one refused.
#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_client_publishes_through_an_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/exchange_publish.py"
    );
    let addr = server.addr.to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&python).args([script, &addr]).output())
            .await
            .unwrap()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "published eu.created: all-orders@0, eu-orders@0\n\
         published us.created: all-orders@1\n\
         refused: FAILED_PRECONDITION\n\
         eu-orders ['order 1']\n\
         all-orders ['order 1', 'order 2']\n"
    );
    server.stop().await.unwrap();
}
