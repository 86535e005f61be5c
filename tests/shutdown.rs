//! A graceful stop (SIGTERM) is not held up by streams a client keeps open: an idle
//! ProduceStream and an idle ShareStream each end with UNAVAILABLE once their work in
//! hand is answered, and the server stops. Without this, a `tail -F log | strom
//! produce` kept a stopping server waiting for as long as it ran, until a service
//! manager killed it (and the next start scanned the logs). A client that reads
//! nothing cannot hold the stop past `shutdown_timeout` either: its connection is
//! closed then. Bounded in time.

mod common;

use std::time::Duration;

use common::requests::{produce, record};
use common::server::TestServer;
use strom::broker::Limits;
use strom::grpc::pb::{self, share_stream_request::Body};
use strom::server::ServeOptions;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(10);

type Replies = tonic::Streaming<pb::ProduceStreamResponse>;

/// A ProduceStream on `client` fed by the returned sender: open while it lives.
async fn open_stream(
    client: &strom::client::Client,
    room: usize,
) -> (tokio::sync::mpsc::Sender<pb::ProduceStreamRequest>, Replies) {
    let (tx, rx) = tokio::sync::mpsc::channel(room);
    let replies = client
        .log()
        .produce_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, replies)
}

/// How a stream ended: with UNAVAILABLE, not silently; returns the status.
fn unavailable<T: std::fmt::Debug>(ended: Result<Option<T>, tonic::Status>) -> tonic::Status {
    let err = ended.expect_err("with a status, not silently");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    err
}

/// The log of partition 0 of "t" after a restart of a server on `dir`: offset to value.
async fn log_after_restart(dir: &std::path::Path) -> std::collections::BTreeMap<u64, String> {
    let server = TestServer::start(dir).await;
    let all = common::fetch_all(&server.client().await, "t", 0).await;
    server.stop().await.unwrap();
    all.into_iter().collect()
}

/// Stops a server whose `shutdown_timeout` is 1 s, held up by a client: it stops
/// cleanly (`serve` returns Ok) within the limit, and not before the timeout (else the
/// client did not hold it, and the test showed nothing).
async fn stopped_by_the_hangup(server: TestServer) {
    let began = std::time::Instant::now();
    stopped_within_limit(tokio::spawn(server.stop())).await;
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(900), "stopped in {took:?}");
}

/// The server's stop, checked to end within the limit.
async fn stopped_within_limit(stop: tokio::task::JoinHandle<strom::Result<()>>) {
    tokio::time::timeout(LIMIT, stop)
        .await
        .expect("the server stops within the limit")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_produce_stream_ends_with_unavailable_and_lets_the_server_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let (tx, mut replies) = open_stream(&client, 4).await;
    tx.send(pb::ProduceStreamRequest {
        correlation_id: 7,
        request: Some(produce("t", Some(0), vec![record("acked")])),
    })
    .await
    .unwrap();
    let reply = tokio::time::timeout(LIMIT, replies.message())
        .await
        .expect("answered")
        .unwrap()
        .unwrap();
    assert_eq!(reply.correlation_id, 7);
    // The client keeps its side open (`tx` lives) and sends nothing more.
    let stopped = tokio::spawn(server.stop());
    let ended = tokio::time::timeout(LIMIT, replies.message())
        .await
        .expect("the stream ends within the limit");
    let err = unavailable(ended);
    assert!(err.message().contains("again"), "{err:?}");
    stopped_within_limit(stopped).await;
    drop(tx);
    // The acknowledged record is there after a restart.
    let all = log_after_restart(dir.path()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[&0], "acked");
}

/// A stop with requests in hand: each is answered before the stream's UNAVAILABLE
/// status, appended if and only if it was answered with offsets, and the rest (not yet
/// read) are not in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_the_requests_read_and_stores_only_those_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let (tx, mut replies) = open_stream(&client, 1000).await;
    for id in 0..1000u64 {
        let mut request = produce("t", Some(0), vec![record(&format!("r{id}"))]);
        request.durability = pb::Durability::Fsync as i32;
        tx.send(pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(request),
        })
        .await
        .unwrap();
    }
    let mut stored = std::collections::BTreeMap::new();
    let mut answered = std::collections::BTreeSet::new();
    let mut server = Some(server);
    let mut stopped = None;
    let ended = loop {
        // The stop begins once the first answer is in: the rest are in hand or unread.
        if !answered.is_empty() && stopped.is_none() {
            stopped = Some(tokio::spawn(server.take().unwrap().stop()));
        }
        match tokio::time::timeout(LIMIT, replies.message())
            .await
            .expect("the stream ends within the limit")
        {
            Ok(Some(reply)) => {
                assert!(answered.insert(reply.correlation_id), "answered twice");
                if let Some(pb::produce_stream_response::Result::Response(r)) = reply.result {
                    stored.insert(r.base_offset, format!("r{}", reply.correlation_id));
                }
            }
            other => break other,
        }
    };
    unavailable(ended);
    stopped_within_limit(stopped.expect("answered before the stop")).await;
    drop(tx);
    assert_eq!(
        log_after_restart(dir.path()).await,
        stored,
        "the log holds exactly the requests answered with offsets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_share_stream_ends_with_unavailable_and_lets_the_server_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for body in [
        Body::Open(pb::ShareStreamOpen {
            group: "g".into(),
            member_id: String::new(),
            topic: "t".into(),
        }),
        Body::Credits(10),
    ] {
        tx.send(pb::ShareStreamRequest { body: Some(body) })
            .await
            .unwrap();
    }
    let mut inbound = client
        .queues()
        .share_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(LIMIT, inbound.message())
        .await
        .expect("joined")
        .unwrap()
        .unwrap();
    assert!(!first.member_id.is_empty());
    // Waiting for records, with credits, when the server stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::spawn(server.stop());
    let ended = loop {
        match tokio::time::timeout(LIMIT, inbound.message())
            .await
            .expect("the stream ends within the limit")
        {
            Ok(Some(m)) => assert!(m.records.is_empty(), "no records were produced"),
            other => break other,
        }
    };
    unavailable(ended);
    stopped_within_limit(stopped).await;
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_holds_the_stop_no_longer_than_its_timeout() {
    a_subscriber_that_reads_nothing_holds_the_stop_no_longer_than_its_timeout_with(0).await;
}

/// The same, each connection on a thread of its own (`pin_connections`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_holds_the_stop_no_longer_on_connection_threads() {
    a_subscriber_that_reads_nothing_holds_the_stop_no_longer_than_its_timeout_with(2).await;
}

/// Found by review: a response whose client reads nothing cannot end (its data, then
/// its trailers, wait behind the client's shut window), and a graceful stop waits for
/// every response to end. The stalled-reader watchdog would close the connection, but
/// only after `stalled_reader_timeout` (300 s by default), longer than a service
/// manager waits before it kills the server. `shutdown_timeout` bounds the stop.
async fn a_subscriber_that_reads_nothing_holds_the_stop_no_longer_than_its_timeout_with(
    connection_threads: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        shutdown_timeout: Duration::from_secs(1),
        connection_threads,
        ..Default::default()
    };
    assert!(options.stalled_reader_timeout > LIMIT * 10);
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("t", 1).await;
    let records = vec![record(&"x".repeat(64 << 10)); 16];
    client
        .log()
        .produce(produce("t", Some(0), records))
        .await
        .unwrap();
    let stalled = server.subscriber_that_reads_nothing("t").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopped_by_the_hangup(server).await;
    drop(stalled);
    assert_eq!(log_after_restart(dir.path()).await.len(), 16);
}

/// The same for a ShareStream whose answers are not read (review): its applier waits
/// to send refusals into the shut window, and the stop must not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_stream_whose_answers_are_not_read_holds_the_stop_no_longer_than_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        shutdown_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("t", 1).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let open = pb::ShareStreamOpen {
        group: "g".into(),
        member_id: String::new(),
        topic: "t".into(),
    };
    tx.send(pb::ShareStreamRequest {
        body: Some(Body::Open(open)),
    })
    .unwrap();
    // Each message refused whole: about 1 MB of answer, never read.
    for i in 0..100u64 {
        let never = (0..10_000).map(|o| (1 << 40) + i * 10_000 + o).collect();
        let acks = pb::ShareStreamAcks {
            acks: vec![pb::Acknowledgement {
                partition: 0,
                offsets: never,
                r#type: pb::AckType::Accept as i32,
            }],
        };
        tx.send(pb::ShareStreamRequest {
            body: Some(Body::Acks(acks)),
        })
        .unwrap();
    }
    let stalled = client
        .queues()
        .share_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopped_by_the_hangup(server).await;
    drop((stalled, tx));
}

/// A client watching the server's health (gRPC's client-side health checking, a load
/// balancer) is told NOT_SERVING when the stop begins, and its stream ends: before, it
/// stayed open and held the stop until `shutdown_timeout` closed its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watcher_is_told_the_server_is_stopping_and_does_not_hold_it() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    assert!(
        ServeOptions::default().shutdown_timeout > LIMIT,
        "else this shows nothing"
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watching = Vec::new();
    for service in ["", "strom.v1.Log"] {
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        };
        let mut watch = HealthClient::new(channel.clone())
            .watch(request)
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);
        watching.push(watch);
    }
    let stopped = tokio::spawn(server.stop());
    for mut watch in watching {
        let told = tokio::time::timeout(LIMIT, watch.message())
            .await
            .expect("told within the limit")
            .unwrap()
            .expect("a status");
        assert_eq!(told.status, ServingStatus::NotServing as i32);
        let ended = tokio::time::timeout(LIMIT, watch.message())
            .await
            .expect("ended within the limit");
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }
    stopped_within_limit(stopped).await;
}
