//! A server that is starting (opening its partitions; after a crash, recovering them)
//! answers on its port: a health Check says NOT_SERVING, and every other call gets
//! UNAVAILABLE saying how far the start has got, so that a client is told at once
//! rather than left waiting on a connection nobody serves (a hostile sweep's 5,000
//! partitions kept clients waiting 7-20 s). Once the server is ready, the clients that
//! connected during the start are served on the same channel.
//!
//! The start is held for as long as a test needs: one partition's recovery checkpoint
//! is a FIFO, which the open cannot read until the test writes the checkpoint into it.
//! The real server, killed or stopped as a service manager would; bounded in time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::cli::{wait_within, Serve};
use strom::client::{Client, Producer, ProducerConfig};
use strom::grpc::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const LIMIT: Duration = Duration::from_secs(10);

/// Partition `partition`'s recovery checkpoint made a FIFO; returns its path and the
/// bytes it held, which release the open that waits on it once written.
fn hold_open(dir: &Path, topic: &str, partition: u32) -> (PathBuf, Vec<u8>) {
    let topics = dir.join("topics");
    let topic_dir = std::fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{topic}."))
        })
        .unwrap();
    let checkpoint = topic_dir
        .join(partition.to_string())
        .join("recovery-checkpoint");
    let held = std::fs::read(&checkpoint).unwrap();
    std::fs::remove_file(&checkpoint).unwrap();
    let made = Command::new("mkfifo").arg(&checkpoint).status().unwrap();
    assert!(made.success());
    (checkpoint, held)
}

/// Writes the checkpoint into its FIFO, on a thread: the write waits for the server
/// to open it for reading.
fn release(held: (PathBuf, Vec<u8>)) {
    std::thread::spawn(move || std::fs::write(&held.0, &held.1).unwrap());
}

fn stop(mut server: Serve) {
    let pid = rustix::process::Pid::from_raw(server.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(wait_within(&mut server.child, LIMIT).success());
}

async fn check(health: &mut HealthClient<strom::client::Channel>, service: &str) -> i32 {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let answer = tokio::time::timeout(LIMIT, health.check(request)).await;
    let answer = answer.expect("a health Check answered while starting");
    answer.unwrap().into_inner().status
}

#[test]
fn a_starting_server_says_so_and_then_serves_the_clients_that_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "3"], b"");
    server.ok(&["produce", "-t", "t", "-p", "2"], b"one\ntwo\n");
    stop(server);
    let held = hold_open(dir.path(), "t", 1);
    let server = Serve::start_answering(dir.path(), "127.0.0.1:0");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let address = format!("http://{}", server.addr);
        let client = Client::connect(&address).await.unwrap();
        let mut health = HealthClient::new(client.channel());
        for service in ["", "strom.v1.Log", "strom.v1.Admin", "strom.v1.Groups"] {
            let status = check(&mut health, service).await;
            assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
        }
        // A Watch would hold a place without a token: refused, as every other call.
        let watch = health.watch(HealthCheckRequest::default());
        let watch = tokio::time::timeout(LIMIT, watch).await.unwrap();
        assert_eq!(watch.unwrap_err().code(), Code::Unavailable);
        let mut admin = client.admin();
        // The other two partitions open; the held one does not.
        let said = refused_until(&mut admin, "strom is starting (2 of 3 partitions open)").await;
        assert!(said.contains("try again"), "{said}");
        // The command-line client says so too, at once.
        let listed = server.run(&["topic", "list"], b"");
        let said = String::from_utf8_lossy(&listed.stderr);
        assert!(
            !listed.status.success() && said.contains("strom is starting"),
            "{said}"
        );

        release(held);
        server.wait_logged("strom is ready", LIMIT);
        // The same channel, told to reconnect when the server took the port over.
        let described = tokio::time::timeout(LIMIT, admin.describe_topic("t"));
        let described = described.await.unwrap().unwrap();
        assert_eq!(described.partitions.len(), 3);
        let status = check(&mut health, "").await;
        assert_eq!(status, ServingStatus::Serving as i32);
    });
    let read = server.ok(&["consume", "-t", "t", "-p", "2"], b"");
    assert_eq!(read, b"one\ntwo\n");
}

/// With tokens, a caller without one is told only that the server is starting, not
/// how many partitions it has.
#[test]
fn a_starting_server_tells_callers_without_a_token_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "2"], b"");
    stop(server);
    let held = hold_open(dir.path(), "t", 1);
    let tokens = dir.path().join("tokens");
    let line = strom::grpc::auth::file_line("ops", "secret").unwrap();
    std::fs::write(&tokens, line + "\n").unwrap();
    let tokens = tokens.to_str().unwrap();
    let server = Serve::start_answering_with(dir.path(), &["--auth-tokens", tokens]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::connect(&format!("http://{}", server.addr))
            .await
            .unwrap();
        let mut health = HealthClient::new(client.channel());
        let status = check(&mut health, "").await;
        assert_eq!(status, ServingStatus::NotServing as i32);
        let mut admin = client.admin();
        let refused = tokio::time::timeout(LIMIT, admin.describe_topic("t"));
        let refused = refused.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.message(), "strom is starting; try again shortly");
    });
    release(held);
    server.wait_logged("strom is ready", LIMIT);
}

/// Asks for the topic until the refusal says `expected` (the partitions not held open
/// at once after the start's first line); returns what it said.
async fn refused_until(admin: &mut strom::client::Admin, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let refused = tokio::time::timeout(LIMIT, admin.describe_topic("t"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let said = refused.message().to_string();
        if said.contains(expected) || tokio::time::Instant::now() >= deadline {
            assert!(said.contains(expected), "{said}");
            return said;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A producer sending while its server is killed and starts again keeps its records:
/// those refused while the server starts are sent again once it is ready, every one
/// acknowledged and stored once.
#[test]
fn a_producer_rides_through_a_restart_and_a_slow_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "1"], b"");
    let addr = server.addr.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let producer = runtime.block_on(async {
        let client = Client::connect(&format!("http://{addr}")).await.unwrap();
        let config = ProducerConfig {
            idempotent: true,
            max_backoff: Duration::from_millis(200),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client, config);
        for i in 0..10 {
            let sent = producer.send("t", None, record(i)).await;
            tokio::time::timeout(LIMIT, sent)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        producer
    });
    drop(server); // SIGKILL
    let held = hold_open(dir.path(), "t", 0);
    let server = Serve::start_answering(dir.path(), &addr);
    runtime.block_on(async {
        let mut acks = Vec::new();
        for i in 10..20 {
            acks.push(producer.send("t", None, record(i)).await);
        }
        // Long enough for the first tries to be refused and tried again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        release(held);
        server.wait_logged("strom is ready", LIMIT);
        for ack in acks {
            tokio::time::timeout(LIMIT, ack)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        producer.close().await;
    });
    let read = server.ok(&["consume", "-t", "t"], b"");
    let expected: String = (0..20).map(|i| format!("record {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&read), expected);
}

fn record(i: u32) -> pb::Record {
    pb::Record {
        value: format!("record {i}").into_bytes().into(),
        ..Default::default()
    }
}

/// A second server on a directory another holds exits, saying so, before it answers
/// anyone on its port: it would otherwise say "starting" to clients for a moment.
#[test]
fn a_second_server_on_a_held_directory_exits_without_answering() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Serve::start(dir.path());
    let mut second = Command::new(common::cli::STROM);
    second
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("STROM_CONFIG");
    let out = common::process::run_within(&mut second, b"", LIMIT);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("in use by another strom process"), "{said}");
    assert!(!said.contains("answering on"), "{said}");
}

type SendRequest = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// GET /metrics on a kept-open HTTP/1.1 connection: the body of a 200.
async fn scrape(send: &mut SendRequest) -> String {
    let (status, body) = scrape_with(send, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// GET /metrics with `token`, if any: the status and the body.
async fn scrape_with(send: &mut SendRequest, token: Option<&str>) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut request = hyper::Request::get("/metrics").header("host", "localhost");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::new()).unwrap();
    // Ready first: the connection may still be winding up the previous response.
    let ready = tokio::time::timeout(LIMIT, send.ready()).await;
    ready.unwrap().unwrap();
    let response = tokio::time::timeout(LIMIT, send.send_request(request));
    let response = response.await.expect("a scrape answered in time").unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The address `strom serve` logged it serves metrics on.
fn metrics_address(server: &Serve) -> String {
    server.wait_logged("serving metrics on http://", LIMIT);
    let lines = server.stderr.lock().unwrap();
    let address = lines.iter().find_map(|line| {
        let rest = line.split("serving metrics on http://").nth(1)?;
        rest.split("/metrics").next().map(str::to_string)
    });
    address.unwrap()
}

/// An HTTP/1.1 connection to `address`.
async fn connect(address: &str) -> SendRequest {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (send, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    send
}

/// The value of the sample `name` (without labels) in a scrape.
fn sample<'a>(text: &'a str, name: &str) -> &'a str {
    let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
    let line = line.unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split(' ').nth(1).unwrap()
}

/// The metrics port answers during the start too: `strom_starting 1` and how many
/// partitions are open, rather than a scrape that waits until it times out (the
/// target would read as down through a long recovery). Once the server is ready, the
/// same connection gets its figures, with `strom_starting 0`, and the same start time.
#[test]
fn the_metrics_say_a_server_is_starting_and_then_give_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "3"], b"");
    server.ok(&["produce", "-t", "t", "-p", "2"], b"one\ntwo\n");
    stop(server);
    let held = hold_open(dir.path(), "t", 1);
    let args = ["--metrics-listen", "127.0.0.1:0"];
    let server = Serve::start_answering_with(dir.path(), &args);
    let address = metrics_address(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut send = connect(&address).await;
        let deadline = std::time::Instant::now() + LIMIT;
        let starting = loop {
            let text = scrape(&mut send).await;
            if text.contains("strom_starting_partitions_opened 2") {
                break text;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for line in [
            "strom_starting 1",
            "strom_starting_partitions 3",
            "strom_build_info{",
        ] {
            assert!(starting.contains(line), "{line} in {starting}");
        }
        assert!(starting.ends_with("# EOF\n"), "{starting}");
        release(held);
        server.wait_logged("strom is ready", LIMIT);
        // Past the second for which a render answers every request.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let ready = scrape(&mut send).await;
        for line in [
            "strom_starting 0",
            "strom_partition_high_watermark{topic=\"t\",partition=\"2\"} 2",
        ] {
            assert!(ready.contains(line), "{line} in {ready}");
        }
        assert!(!ready.contains("strom_starting_partitions"), "{ready}");
        let started = "process_start_time_seconds";
        assert_eq!(sample(&starting, started), sample(&ready, started));
    });
    stop(server);
}

/// With `metrics_auth`, the start's answers are guarded as the ready server's are: a
/// scrape without a token is refused, one with a listed token told of the start.
#[test]
fn the_metrics_of_a_starting_server_are_guarded_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "-p", "2"], b"");
    stop(server);
    let tokens = dir.path().join("tokens");
    let line = strom::grpc::auth::file_line("prom", "prom-token").unwrap();
    std::fs::write(&tokens, line + "\n").unwrap();
    let held = hold_open(dir.path(), "t", 1);
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-auth",
        "true",
        "--auth-tokens",
        tokens.to_str().unwrap(),
    ];
    let server = Serve::start_answering_with(dir.path(), &args);
    let address = metrics_address(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, body) = scrape_with(&mut connect(&address).await, None).await;
        assert_eq!(status, 401, "{body}");
        let mut send = connect(&address).await;
        let (status, body) = scrape_with(&mut send, Some("prom-token")).await;
        assert_eq!(
            (status, sample(&body, "strom_starting")),
            (200, "1"),
            "{body}"
        );
    });
    release(held);
    server.wait_logged("strom is ready", LIMIT);
    stop(server);
}
