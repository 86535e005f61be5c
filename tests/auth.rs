//! Tokens: with `auth_tokens`, a call without a token the file lists is refused
//! UNAUTHENTICATED before it is read, on every path (tonic's services and the Log
//! service's own HTTP/2 path alike); health checks need none; a reload revokes.

mod common;

use std::time::Duration;

use common::requests::{produce, record};
use common::server::TestServer;
use strom::broker::Limits;
use strom::client::{Client, ConnectOptions};
use strom::grpc::pb;
use strom::server::{ServeOptions, Tokens};
use tokio_stream::StreamExt;
use tonic::Code;

/// The hex SHA-256 of `token`, as the tokens file lists it (`sha256sum` computes it).
fn digest_hex(token: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

async fn connect(server: &TestServer, token: Option<&str>) -> Client {
    let options = ConnectOptions {
        tls: None,
        token: token.map(str::to_string),
    };
    Client::connect_with(&server.addr.to_string(), options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_token_the_file_lists_and_health_checks_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!(
            "# who\nalice {}\nbob {}\n",
            digest_hex("alpha secret"),
            digest_hex("b0b")
        ),
    )
    .unwrap();
    let tokens = Tokens::load(&file).unwrap();
    let options = ServeOptions {
        tokens: Some(tokens.clone()),
        ..Default::default()
    };
    let data = dir.path().join("data");
    let server = TestServer::start_with_options(&data, Limits::default(), options).await;
    let alice = connect(&server, Some("alpha secret")).await;
    alice
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    alice
        .log()
        .produce(produce("t", Some(0), vec![record("a")]))
        .await
        .unwrap();
    let fetch = pb::FetchRequest {
        topic: "t".into(),
        ..Default::default()
    };
    alice.fetch(fetch.clone()).await.unwrap();
    for (token, says) in [
        (None, "requires a token"),
        (Some("alpha"), "not one this server accepts"),
    ] {
        let stranger = connect(&server, token).await;
        stranger.check().await.expect("health checks need no token");
        let watch = tonic_health::pb::health_client::HealthClient::new(stranger.channel())
            .watch(tonic_health::pb::HealthCheckRequest::default())
            .await;
        let refused = [
            // A health Watch, unlike a Check, would hold a call's place: it needs one.
            watch.map(drop).unwrap_err(),
            stranger.admin().list_topics().await.map(drop).unwrap_err(),
            // The Log service's own path (`grpc/direct`), unary and streaming.
            stranger
                .log()
                .produce(produce("t", Some(0), vec![record("b")]))
                .await
                .map(drop)
                .unwrap_err(),
            stranger.fetch(fetch.clone()).await.map(drop).unwrap_err(),
            stranger
                .subscribe(pb::SubscribeRequest {
                    topic: "t".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
                .unwrap_err(),
            stranger
                .groups()
                .list_groups(pb::ListGroupsRequest::default())
                .await
                .map(drop)
                .unwrap_err(),
        ];
        for status in refused {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
    }
    // Two tokens on one call name no one caller: refused, even with Alice's first
    // (a proxy's header added beside a client's own, say; the first used to count).
    let stranger = connect(&server, None).await;
    for tokens in [["alpha secret", "b0b"], ["alpha secret", "alpha secret"]] {
        let mut request = tonic::Request::new(pb::ListTopicsRequest::default());
        for token in tokens {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().append("authorization", value);
        }
        let mut admin = pb::admin_client::AdminClient::new(stranger.channel());
        let refused = admin.list_topics(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains("more than one"), "{refused:?}");
    }
    // A token no metadata can carry is refused by the client, saying why.
    let options = ConnectOptions {
        tls: None,
        token: Some("line\nbreak".into()),
    };
    let err = Client::connect_with(&server.addr.to_string(), options)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("metadata cannot carry"), "{err}");
    // Nothing refused was stored.
    assert_eq!(common::fetch_all(&alice, "t", 0).await.len(), 1);
    // Streams Alice has open when her token is revoked: a ProduceStream, a Subscribe.
    let (requests, queued) = tokio::sync::mpsc::channel(4);
    let mut replies = alice
        .log()
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    let streamed = |id: u64, value: &str| pb::ProduceStreamRequest {
        correlation_id: id,
        request: Some(produce("t", Some(0), vec![record(value)])),
    };
    requests.send(streamed(1, "before")).await.unwrap();
    let first = replies.message().await.unwrap().unwrap();
    assert!(matches!(
        first.result,
        Some(pb::produce_stream_response::Result::Response(_))
    ));
    let subscribe = pb::SubscribeRequest {
        topic: "t".into(),
        start: Some(pb::subscribe_request::Start::Offset(2)),
        ..Default::default()
    };
    let mut subscription = alice.subscribe(subscribe).await.unwrap();
    // Alice's token revoked.
    std::fs::write(&file, format!("bob {}\n", digest_hex("b0b"))).unwrap();
    tokens.reload().unwrap();
    let revoked = alice.admin().list_topics().await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    requests.send(streamed(2, "after")).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the stream ended");
    let status = ended
        .map(|_| ())
        .expect_err("a revoked token's stream went on");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // The subscription has nothing to deliver: the reload itself ends it.
    let delivered = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a quiet subscription outlived the revocation of its token");
    let status = delivered
        .unwrap()
        .map(drop)
        .expect_err("a revoked token's Subscribe went on");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let bob = connect(&server, Some("b0b")).await;
    bob.log()
        .produce(produce("t", Some(0), vec![record("bob's")]))
        .await
        .unwrap();
    // Stored: Alice's "a" and "before", then Bob's; not her "after".
    let stored: Vec<String> = common::fetch_all(&bob, "t", 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stored, ["a", "before", "bob's"]);
    server.stop().await.unwrap();
}

/// `strom serve --auth-tokens` as a process, the CLI with STROM_TOKEN and
/// --token-file, and SIGHUP revoking a token.
#[test]
fn strom_serve_with_tokens_and_the_cli_with_them() {
    use common::cli::Serve;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    // `strom token new` makes each token and appends its line (the file made 0600).
    let new_token = |name: &str| {
        let mut command = std::process::Command::new(common::cli::STROM);
        command.args(["token", "new", name, "--file"]).arg(&file);
        let out = common::process::run_within(&mut command, b"", Duration::from_secs(20));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ops, ci) = (new_token("ops"), new_token("ci"));
    assert_eq!((ops.len(), ci.len()), (64, 64));
    let lines = std::fs::read_to_string(&file).unwrap();
    let expected = [("ops", &ops), ("ci", &ci)]
        .map(|(name, token)| strom::grpc::auth::file_line_with_scram(name, token).unwrap() + "\n");
    assert_eq!(lines, expected.concat());
    assert!(lines.starts_with(&format!("ops {} SCRAM-SHA-256=", digest_hex(&ops))));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token_file = dir.path().join("ci.token");
    std::fs::write(&token_file, format!("{ci}\n")).unwrap();
    let serve = Serve::start_with_args(
        &dir.path().join("data"),
        &["--auth-tokens", file.to_str().unwrap()],
    );
    let logged = serve.stderr.lock().unwrap().join("\n");
    assert!(logged.contains("(tokens required)"), "{logged}");
    assert!(
        logged.contains("tokens cross the network in the clear"),
        "{logged}"
    );
    serve.ok(&["topic", "create", "t", "--token", &ops], b"");
    serve.ok(
        &[
            "produce",
            "-t",
            "t",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        b"x\n",
    );
    let refused = serve.run(&["topic", "list"], b"");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("requires a token") && stderr.contains("Unauthenticated"),
        "{stderr}"
    );
    // ops revoked by SIGHUP.
    std::fs::write(&file, format!("ci {}\n", digest_hex(&ci))).unwrap();
    serve.hang_up_until_logged("tokens file reloaded");
    let revoked = serve.run(&["topic", "list", "--token", &ops], b"");
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("not one this server accepts"));
    // A flag wins over the environment; an empty token is refused before it is sent.
    let mut command = std::process::Command::new(common::cli::STROM);
    command
        .args(["topic", "list", "--server", &serve.addr, "--token-file"])
        .arg(&token_file)
        .env("STROM_TOKEN", "wrong");
    let out = common::process::run_within(&mut command, b"", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = serve.run(&["topic", "list", "--token", " "], b"");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("--token gives an empty token"));
    let out = serve.ok(
        &[
            "consume",
            "-t",
            "t",
            "--from",
            "earliest",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out, b"x\n");
}
