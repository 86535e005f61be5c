//! Connections must not take what the server needs: a client that stops reading a
//! response has its connection closed after `stalled_reader_timeout` (and with it the
//! slices of segment maps its queued replies held, which kept deleted segments' files
//! on disk), and connections past `max_connections`, or past
//! `max_connections_per_address` from one address, are closed at once. Bounded in
//! time.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use strom::broker::Limits;
use strom::grpc::pb;
use strom::server::ServeOptions;
use tokio_stream::StreamExt;

/// This process's mappings of files under `dir` that have been deleted.
fn deleted_maps(dir: &Path) -> usize {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(dir) && line.ends_with("(deleted)"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_and_frees_deleted_segments() {
    a_subscriber_that_stops_reading_is_disconnected_and_frees_deleted_segments_with(0).await;
}

/// The same, each connection on a thread of its own (`pin_connections`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_on_connection_threads_too() {
    a_subscriber_that_stops_reading_is_disconnected_and_frees_deleted_segments_with(2).await;
}

async fn a_subscriber_that_stops_reading_is_disconnected_and_frees_deleted_segments_with(
    connection_threads: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        stalled_reader_timeout: Duration::from_secs(2),
        connection_threads,
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client().await;
    let small_segments = BTreeMap::from([("segment.bytes".to_string(), "1048576".to_string())]);
    client
        .admin()
        .create_topic("t", 1, small_segments)
        .await
        .unwrap();
    // 8 MB in records of 64 KiB: eight segments, read back as slices of their maps.
    let record = pb::Record {
        value: Bytes::from(vec![7u8; 64 << 10]),
        ..Default::default()
    };
    for _ in 0..8 {
        let request = pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: vec![record.clone(); 15],
            ..Default::default()
        };
        client.log().produce(request).await.unwrap();
    }

    let mut stalled = server.subscriber_that_reads_nothing("t").await;
    // The server reads ahead into the shut window; then the topic goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.admin().delete_topic("t").await.unwrap();
    assert!(
        deleted_maps(dir.path()) > 0,
        "the stalled response holds maps of deleted segments (else this test shows nothing)"
    );

    // After the timeout the connection is closed, and the maps go with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while deleted_maps(dir.path()) > 0 {
        assert!(
            Instant::now() < deadline,
            "a stalled reader still holds {} maps of deleted segments",
            deleted_maps(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The subscriber, reading at last, finds its stream ended with an error.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stalled.next().await {
            if let Err(status) = item {
                return Some(status);
            }
        }
        None
    })
    .await
    .unwrap();
    assert!(ended.is_some(), "the stalled stream ended without an error");
    // Other connections are served as before.
    client
        .admin()
        .create_topic("u", 1, BTreeMap::new())
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// Whether the server has closed `socket` (end of file, or a reset), waiting 300 ms.
fn closed_by_server(socket: &mut std::net::TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // the server's HTTP/2 settings
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_and_the_server_serves_on() {
    connections_past_max_connections_are_closed_and_the_server_serves_on_with(0).await;
}

/// The same, each connection on a thread of its own (`pin_connections`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_on_connection_threads_too() {
    connections_past_max_connections_are_closed_and_the_server_serves_on_with(2).await;
}

async fn connections_past_max_connections_are_closed_and_the_server_serves_on_with(
    connection_threads: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_connections: 8,
        connection_threads,
        ..Default::default()
    };
    let server =
        TestServer::start_with_options_and_metrics(dir.path(), Limits::default(), options).await;
    let addr = server.addr;
    // Eight idle sockets take every place; the next two are closed at once. They come
    // after the eight have been served a while (a place is held from the accept to the
    // connection's end, wherever it is served).
    let closed = tokio::task::spawn_blocking(move || {
        let connect = |_| std::net::TcpStream::connect(addr).unwrap();
        let mut sockets: Vec<std::net::TcpStream> = (0..8).map(connect).collect();
        let mut closed: Vec<bool> = sockets.iter_mut().map(closed_by_server).collect();
        let mut more: Vec<std::net::TcpStream> = (8..10).map(connect).collect();
        closed.extend(more.iter_mut().map(closed_by_server));
        sockets.extend(more);
        (closed, sockets)
    });
    let (closed, mut sockets) = closed.await.unwrap();
    assert_eq!(
        closed,
        [false, false, false, false, false, false, false, false, true, true]
    );
    // Places come back as connections end: a client gets one and is served.
    sockets.truncate(4);
    served_again(addr).await;
    drop(sockets);
    // At least the two: the client's own attempts while places came back may add more.
    let refused = r#"strom_connections_refused_total{reason="max_connections"}"#;
    assert!(server.metric(refused).await >= 2.0);
    server.stop().await.unwrap();
}

/// Waits (at most 30 s) until a client connects to `addr` and is served: a place came
/// back.
async fn served_again(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = strom::client::Client::connect(&addr.to_string()).await;
        match client.map(|c| c.admin()) {
            Ok(mut admin) => match admin.create_topic("t", 1, BTreeMap::new()).await {
                Ok(_) => return admin.delete_topic("t").await.unwrap(),
                Err(status) => assert!(Instant::now() < deadline, "{status}"),
            },
            Err(err) => assert!(Instant::now() < deadline, "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A socket connected to `to` from the loopback address `from` (every 127.0.0.0/8
/// address is this host's: a second client address without a second host).
async fn connect_from(from: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let socket = socket.connect(to).await.unwrap().into_std().unwrap();
    socket.set_nonblocking(false).unwrap();
    socket
}

/// One address holds at most `max_connections_per_address` places, over the gRPC and
/// Kafka listeners together; another address is not held back by it, and a place comes
/// back when its connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_an_address_limit_are_closed_and_other_addresses_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_connections_per_address: 3,
        ..Default::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let (grpc, kafka) = (server.addr, server.kafka.unwrap());
    // Two gRPC connections and a Kafka one take 127.0.0.1's three places; its next,
    // on either listener, is closed at once; 127.0.0.2's are served.
    let mut sockets = Vec::new();
    for (from, to) in [
        ("127.0.0.1", grpc),
        ("127.0.0.1", kafka),
        ("127.0.0.1", grpc),
        ("127.0.0.1", grpc),
        ("127.0.0.1", kafka),
        ("127.0.0.2", grpc),
        ("127.0.0.2", kafka),
    ] {
        sockets.push(connect_from(from, to).await);
        // Accepted in this order: each is counted before the next comes.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = tokio::task::spawn_blocking(move || {
        let closed: Vec<bool> = sockets.iter_mut().map(closed_by_server).collect();
        sockets.remove(0);
        (closed, sockets)
    });
    let (closed, sockets) = closed.await.unwrap();
    assert_eq!(closed, [false, false, false, true, true, false, false]);
    // One of 127.0.0.1's connections gone: a client from there gets its place.
    served_again(grpc).await;
    drop(sockets);
    // At least the two: the client's attempts while the place came back may add more.
    let refused = r#"strom_connections_refused_total{reason="per_address"}"#;
    assert!(server.metric(refused).await >= 2.0);
    server.stop().await.unwrap();
}

/// A client that connects and says nothing, or stops halfway through HTTP/2's greeting,
/// is closed after `silent_client_timeout`: it would hold a place of `max_connections`
/// for ever. One that goes quiet after greeting is pinged, and closed when it does not
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_vanished_clients_are_closed() {
    silent_and_vanished_clients_are_closed_with(0).await;
}

/// The same, each connection on a thread of its own (`pin_connections`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_vanished_clients_are_closed_on_connection_threads_too() {
    silent_and_vanished_clients_are_closed_with(2).await;
}

async fn silent_and_vanished_clients_are_closed_with(connection_threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        silent_client_timeout: Duration::from_millis(500),
        connection_threads,
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let addr = server.addr;
    let silent = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        common::closed_within(&mut socket, Duration::from_secs(20))
    });
    // HTTP/2's preface and an empty SETTINGS frame, then nothing: no acknowledgement
    // of the server's SETTINGS or of its pings, as from a client whose host is gone.
    let vanished = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(
            &mut socket,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        )
        .unwrap();
        common::closed_within(&mut socket, Duration::from_secs(20))
    });
    // Half of HTTP/2's preface, and no more: the handshake never ends, so no ping
    // would ever be sent.
    let halfway = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut socket, b"PRI * HTTP/2.0\r\n").unwrap();
        common::closed_within(&mut socket, Duration::from_secs(20))
    });
    assert!(silent.await.unwrap(), "a silent client stayed connected");
    assert!(
        halfway.await.unwrap(),
        "a half-greeting client stayed connected"
    );
    assert!(vanished.await.unwrap(), "an unanswered ping closed nothing");
    // Clients that answer are served as before, pings and all.
    let client = server.client().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .admin()
        .create_topic("t", 1, BTreeMap::new())
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// A connection carries at most `max_concurrent_streams` calls at once (a hostile
/// client opened 100,000 on one, +331 MB): the client waits to open more, here until a
/// long poll ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_at_most_max_concurrent_streams_calls() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_concurrent_streams: 4,
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("t", 1).await;
    let poll = |max_wait_ms| pb::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms,
        min_bytes: 1,
    };
    let began = Instant::now();
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let mut log = client.log();
            let request = poll(3_000);
            tokio::spawn(async move { log.fetch(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fifth call, answered at once by the server, waits for a place.
    client.log().fetch(poll(0)).await.unwrap();
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(2), "answered after {took:?}");
    for call in waiting {
        call.await.unwrap().unwrap();
    }
    server.stop().await.unwrap();
}

/// The server carries at most `max_calls` calls at once over all its connections (a
/// hostile client opened 100,000 Subscribe streams over ten connections, +331 MB): past
/// it, a call is refused at once with RESOURCE_EXHAUSTED, health checks still answer,
/// and a closed stream gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_carries_at_most_max_calls_calls() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_calls: 3,
        ..Default::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let setup = server.client_with_topic("t", 1).await;
    drop(setup);
    let subscribe = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: Some(pb::subscribe_request::Start::Offset(0)),
        ..Default::default()
    };
    // Three streams, each on a connection of its own.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let client = server.client().await;
        let stream = client.log().subscribe(subscribe.clone()).await.unwrap();
        streams.push((client, stream));
    }
    let other = server.client().await;
    let refused = other.admin().list_topics().await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_calls"),
        "{}",
        refused.message()
    );
    let health = tonic_health::pb::health_client::HealthClient::new(other_channel(&server).await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "{health:?}");
    let watch = tonic_health::pb::health_client::HealthClient::new(other_channel(&server).await)
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        watch.code(),
        tonic::Code::ResourceExhausted,
        "a Watch is a stream like any other"
    );
    drop(streams.pop());
    let listed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match other.admin().list_topics().await {
                Ok(listed) => return listed,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a place comes back once a stream closes");
    assert_eq!(listed.len(), 1);
    drop(streams);
    server.stop().await.unwrap();
}

async fn other_channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A client that starts many calls and cancels them at once (a GroupConsumer giving
/// back hundreds of partitions, each with a long poll just sent) keeps its connection:
/// HTTP/2 closed it (GOAWAY, ENHANCE_YOUR_CALM) past 20 calls cancelled before the
/// server took them up, and the consumer failed (hostile-client finding, seen once in
/// 27 rebalances of a 1,024-partition group). Here 200 such calls in one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_cancelled_before_the_server_takes_them_up_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let goaway = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
                                              // HPACK, literal fields without indexing: POST, http, the path, the authority,
                                              // the content type.
        let mut headers = vec![0x83, 0x86, 0x04, 19];
        headers.extend_from_slice(b"/strom.v1.Log/Fetch");
        headers.extend_from_slice(&[0x01, 9]);
        headers.extend_from_slice(b"localhost");
        headers.extend_from_slice(&[0x0f, 0x10, 16]);
        headers.extend_from_slice(b"application/grpc");
        for n in 0..200u32 {
            let stream = 2 * n + 1;
            out.extend(h2_frame(0x1, 0x4, stream, &headers)); // HEADERS, END_HEADERS
            out.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
        }
        std::io::Write::write_all(&mut socket, &out).unwrap();
        // What the server sends for two seconds: a GOAWAY, or not.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        let mut buf = [0u8; 64 << 10];
        while Instant::now() < deadline {
            match socket.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let mut at = 0;
        while got.len() >= at + 9 {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            if got[at + 3] == 0x7 && got.len() >= at + 9 + 8 {
                let code = &got[at + 9 + 4..at + 9 + 8];
                return Some(u32::from_be_bytes(code.try_into().unwrap()));
            }
            at += 9 + len;
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(
        goaway, None,
        "the server closed the connection (GOAWAY code)"
    );
    server.stop().await.unwrap();
}
