//! Kafka's wire protocol against the real server, request by request, in the oldest
//! and newest versions strom takes: what a Kafka client sends and what it must get
//! back, what is refused and with which code, and hostile frames. Kafka client
//! libraries run against it in `kafka_clients.rs`.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::kafka::{batch, fetch, list_offsets, name, produce, record, records_of, KafkaConn};
use common::server::TestServer;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};
use strom::broker::Limits;
use strom::server::ServeOptions;

async fn kafka_server(dir: &std::path::Path) -> TestServer {
    TestServer::start_with_kafka(dir, Limits::default(), ServeOptions::default()).await
}

/// The first three records every round-trip test produces: a keyed one with headers,
/// one without a key, and a tombstone (null value).
fn three() -> Vec<Record> {
    vec![
        record(
            Some(b"k1"),
            Some(b"first"),
            &[("trace", b"abc"), ("empty", b"")],
        ),
        record(None, Some(b"second"), &[]),
        record(Some(b"k3"), None, &[]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn records_produced_over_kafka_are_fetched_over_kafka_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_server(dir.path()).await;
    let client = server.client_with_topic("events", 2).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    // ApiVersions lists every API strom answers, in both header kinds.
    for version in [0, 3] {
        let versions = conn.call(&ApiVersionsRequest::default(), version).await;
        assert_eq!(versions.error_code, 0);
        let keys: Vec<i16> = versions.api_keys.iter().map(|k| k.api_key).collect();
        for key in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::Metadata,
        ] {
            assert!(keys.contains(&(key as i16)), "{key:?} in {keys:?}");
        }
    }

    // Metadata names this server as the leader of both partitions, at the address
    // the client reached it on.
    for version in [0, 1, 9, 12] {
        let mut request = MetadataRequest::default();
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(name("events"));
        request.topics = Some(vec![topic]);
        let metadata = conn.call(&request, version).await;
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!(
            metadata.brokers[0].port,
            i32::from(server.kafka.unwrap().port())
        );
        assert_eq!(metadata.brokers[0].host.as_str(), "127.0.0.1");
        let topic = &metadata.topics[0];
        assert_eq!(topic.error_code, 0, "version {version}");
        assert_eq!(topic.partitions.len(), 2);
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.leader_id.0 == metadata.brokers[0].node_id.0));
    }
    // Every topic, when none is named (null from version 1, empty in version 0).
    let mut every = MetadataRequest::default();
    every.topics = None;
    let all = conn.call(&every, 12).await;
    assert_eq!(all.topics.len(), 1);
    let mut empty = MetadataRequest::default();
    empty.topics = Some(Vec::new());
    assert_eq!(conn.call(&empty, 0).await.topics.len(), 1);

    // Produce in the oldest and newest versions strom takes.
    let sent = three();
    let first = conn
        .call(
            &produce("events", &[(1, Some(batch(&sent, Compression::None)))], -1),
            3,
        )
        .await;
    let p = &first.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let second = conn
        .call(
            &produce("events", &[(1, Some(batch(&sent, Compression::None)))], 1),
            12,
        )
        .await;
    let p = &second.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset, p.log_start_offset), (0, 3, 0));

    // A gzip batch is stored decompressed (librdkafka's other codecs are run in
    // kafka_clients.rs).
    let gzip = conn
        .call(
            &produce("events", &[(1, Some(batch(&sent, Compression::Gzip)))], -1),
            12,
        )
        .await;
    let p = &gzip.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 6));

    // Fetch from the middle of the first batch, in the oldest and newest versions.
    for version in [4, 12] {
        let response = conn.call(&fetch("events", 1, 1, 0), version).await;
        let p = &response.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 9));
        let got = records_of(p.records.clone().unwrap());
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [1, 2, 3, 4, 5, 6, 7, 8], "version {version}");
        assert_eq!(
            got[6].value.as_deref(),
            Some(&b"second"[..]),
            "decompressed"
        );
        assert_eq!(got[0].value.as_deref(), Some(&b"second"[..]));
        assert_eq!(got[0].key, None);
        assert_eq!(got[0].timestamp, 1_700_000_000_000);
        // The tombstone comes back empty: the topic is not compacted, so strom cannot
        // tell a null value from an empty one there.
        assert_eq!(got[1].value.as_deref(), Some(&b""[..]));
        assert_eq!(got[2].key.as_deref(), Some(&b"k1"[..]));
        let headers: Vec<_> = got[2]
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(
            headers,
            [
                ("trace".to_string(), Some(Bytes::from_static(b"abc"))),
                ("empty".to_string(), Some(Bytes::new()))
            ]
        );
    }

    // The same records through gRPC.
    let grpc = common::fetch_all(&client, "events", 1).await;
    let values: Vec<&str> = grpc.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        values,
        ["first", "second", "", "first", "second", "", "first", "second", ""]
    );

    // And records produced through gRPC come out of a Kafka fetch.
    client
        .log()
        .produce(common::requests::produce(
            "events",
            Some(0),
            vec![common::requests::record("from grpc")],
        ))
        .await
        .unwrap();
    let response = conn.call(&fetch("events", 0, 0, 0), 12).await;
    let got = records_of(response.responses[0].partitions[0].records.clone().unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"from grpc"[..]));

    // ListOffsets: latest, earliest, and by time.
    for (timestamp, offset) in [
        (-1, 9),
        (-2, 0),
        (1_700_000_000_000, 0),
        (1_800_000_000_000, -1),
    ] {
        for version in [1, 6] {
            let response = conn
                .call(&list_offsets("events", 1, timestamp), version)
                .await;
            let p = &response.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.offset),
                (0, offset),
                "{timestamp} v{version}"
            );
        }
    }

    // On a compacted topic an empty value is a tombstone: it comes back null.
    client
        .admin()
        .create_topic(
            "table",
            1,
            common::requests::config(&[("cleanup.policy", "compact")]),
        )
        .await
        .unwrap();
    let records = [
        record(Some(b"k"), Some(b"v"), &[]),
        record(Some(b"k"), None, &[]),
    ];
    let produced = conn
        .call(
            &produce(
                "table",
                &[(0, Some(batch(&records, Compression::None)))],
                -1,
            ),
            12,
        )
        .await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let response = conn.call(&fetch("table", 0, 0, 0), 12).await;
    let got = records_of(response.responses[0].partitions[0].records.clone().unwrap());
    let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, [Some(Bytes::from_static(b"v")), None]);
    drop(conn);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_carry_kafkas_codes_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_server(dir.path()).await;
    let client = server.client_with_topic("events", 1).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let good = batch(&three(), Compression::None);

    let code = |response: &kafka_protocol::messages::ProduceResponse| {
        let p = &response.responses[0].partition_responses[0];
        (
            p.error_code,
            p.error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )
    };
    let mut damaged = BytesMut::from(&good[..]);
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let mut two = BytesMut::from(&good[..]);
    two.put_slice(&good);
    let big = vec![b'x'; 1_100_000];
    let mut codec_7 = BytesMut::from(&good[..]);
    codec_7[22] |= 0x07; // the attributes' compression bits
    let mut transactional = BytesMut::from(&good[..]);
    transactional[22] |= 0x10; // the attributes' transactional bit
    let cases: Vec<(&str, ProduceRequest, i16, &str)> = vec![
        (
            "no such topic",
            produce("nope", &[(0, Some(good.clone()))], -1),
            3,
            "nope",
        ),
        (
            "no such partition",
            produce("events", &[(7, Some(good.clone()))], -1),
            3,
            "partition 7",
        ),
        (
            "a damaged batch",
            produce("events", &[(0, Some(damaged.freeze()))], -1),
            2,
            "CRC",
        ),
        (
            "two batches",
            produce("events", &[(0, Some(two.freeze()))], -1),
            87,
            "exactly one",
        ),
        (
            "null records",
            produce("events", &[(0, None)], -1),
            87,
            "no records",
        ),
        (
            "an unknown compression codec (its CRC made right)",
            produce("events", &[(0, Some(with_crc(codec_7)))], -1),
            76,
            "codec 7",
        ),
        (
            "a record over max.message.bytes",
            produce(
                "events",
                &[(
                    0,
                    Some(batch(&[record(None, Some(&big), &[])], Compression::None)),
                )],
                -1,
            ),
            10,
            "the limit is 1048576",
        ),
        (
            "acks=2",
            produce("events", &[(0, Some(good.clone()))], 2),
            21,
            "acks",
        ),
        (
            "a transactional batch (its CRC made right)",
            produce("events", &[(0, Some(with_crc(transactional)))], -1),
            87,
            "transactions",
        ),
    ];
    for (what, request, expected, says) in cases {
        let response = conn.call(&request, 12).await;
        let (code, message) = code(&response);
        assert_eq!(code, expected, "{what}: {message}");
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
    }
    // Version 3 has no message field, but the same codes.
    let response = conn
        .call(&produce("nope", &[(0, Some(good.clone()))], -1), 3)
        .await;
    assert_eq!(code(&response).0, 3);
    let offsets = client.admin().describe_topic("events").await.unwrap();
    assert_eq!(
        offsets.partitions[0].high_watermark, 0,
        "nothing refused was written"
    );

    // One partition's refusal leaves the other's append alone.
    let mixed = produce(
        "events",
        &[(5, Some(good.clone())), (0, Some(good.clone()))],
        -1,
    );
    let response = conn.call(&mixed, 12).await;
    let codes: Vec<i16> = response.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, [3, 0]);

    // Fetch and ListOffsets refusals.
    let response = conn.call(&fetch("events", 0, 99, 0), 12).await;
    assert_eq!(
        response.responses[0].partitions[0].error_code, 1,
        "offset out of range"
    );
    let response = conn.call(&fetch("nope", 0, 0, 0), 4).await;
    assert_eq!(response.responses[0].partitions[0].error_code, 3);
    let response = conn.call(&list_offsets("nope", 0, -1), 6).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 3);
    let mut request = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(name("nope"));
    request.topics = Some(vec![topic]);
    assert_eq!(conn.call(&request, 12).await.topics[0].error_code, 3);
    // A transactional producer's id is refused.
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(StrBytes::from_static_str("tx").into());
    assert_eq!(conn.call(&init, 4).await.error_code, 53);
    drop(conn);
    server.stop().await.unwrap();
}

/// A v2 batch whose CRC-32C is computed again after a test changed its bytes.
fn with_crc(mut batch: BytesMut) -> Bytes {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// The `strom_topic_flushes` count of `topic`, from a scrape of the metrics endpoint
/// (which answers with the same render for a second: waited out first).
async fn flushes(server: &TestServer, topic: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut socket = tokio::net::TcpStream::connect(server.metrics.unwrap())
        .await
        .unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    socket.read_to_string(&mut body).await.unwrap();
    let series = format!("strom_topic_flushes_total{{topic=\"{topic}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} in {body}"))
        .parse()
        .unwrap()
}

/// acks=all is acknowledged after an fsync, acks=1 and acks=0 after the page cache.
#[tokio::test(flavor = "multi_thread")]
async fn acks_all_waits_for_the_disk_and_acks_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // No upkeep during the test: its syncs would count as flushes.
    let options = ServeOptions {
        upkeep_interval: Duration::from_secs(3600),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let _client = server.client_with_topic("events", 1).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let records = || Some(batch(&three(), Compression::None));
    let mut before = flushes(&server, "events").await;
    for (acks, synced) in [(1, false), (0, false), (-1, true), (1, false)] {
        match acks {
            0 => {
                conn.send(&produce("events", &[(0, records())], 0), 12)
                    .await;
                conn.call(&list_offsets("events", 0, -1), 6).await; // after it, in order
            }
            acks => {
                let response = conn
                    .call(&produce("events", &[(0, records())], acks), 12)
                    .await;
                assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            }
        }
        let after = flushes(&server, "events").await;
        assert_eq!(
            after > before,
            synced,
            "acks={acks}: {before} flushes, then {after}"
        );
        before = after;
    }
    drop(conn);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_producers_retry_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_server(dir.path()).await;
    let _client = server.client_with_topic("events", 1).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut idempotent = InitProducerIdRequest::default();
    idempotent.transactional_id = None;
    let init = conn.call(&idempotent, 4).await;
    assert_eq!(init.error_code, 0);
    let (id, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(id >= 0);
    let idempotent = |sequence: i32| {
        let records: Vec<Record> = three()
            .into_iter()
            .map(|r| Record {
                producer_id: id,
                producer_epoch: epoch,
                sequence,
                ..r
            })
            .collect();
        batch(&records, Compression::None)
    };
    for (sequence, expected) in [
        (0, (0, 0)),
        (0, (0, 0)),
        (3, (0, 3)),
        (3, (0, 3)),
        (9, (45, -1)),
    ] {
        let response = conn
            .call(
                &produce("events", &[(0, Some(idempotent(sequence)))], -1),
                9,
            )
            .await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            expected,
            "sequence {sequence}"
        );
    }
    let response = conn.call(&list_offsets("events", 0, -1), 6).await;
    assert_eq!(
        response.topics[0].partitions[0].offset, 6,
        "each batch once"
    );
    drop(conn);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_waits_for_records_and_acks_zero_is_not_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_server(dir.path()).await;
    let _client = server.client_with_topic("events", 1).await;
    let mut waiting = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut producing = KafkaConn::connect(server.kafka.unwrap()).await;
    let started = Instant::now();
    let correlation = waiting.send(&fetch("events", 0, 0, 15_000), 12).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // acks=0: no answer, so the next request's answer is the next frame.
    producing
        .send(
            &produce(
                "events",
                &[(0, Some(batch(&three(), Compression::None)))],
                0,
            ),
            12,
        )
        .await;
    let answered = producing.call(&list_offsets("events", 0, -1), 6).await;
    assert_eq!(answered.topics[0].partitions[0].offset, 3);
    let response = waiting.receive::<FetchRequest>(correlation, 12).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the append, not the deadline"
    );
    let got = records_of(response.responses[0].partitions[0].records.clone().unwrap());
    assert_eq!(got.len(), 3);

    // An acks=0 produce that is refused closes the connection: the one way to tell.
    producing
        .send(
            &produce("nope", &[(0, Some(batch(&three(), Compression::None)))], 0),
            12,
        )
        .await;
    assert!(producing.closed().await);

    // A long poll open at the stop does not hold it.
    let _pending = waiting.send(&fetch("events", 0, 3, 30_000), 12).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    server.stop().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_frames_close_their_connection_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_request_bytes: 1 << 20,
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let _client = server.client_with_topic("events", 1).await;
    let addr = server.kafka.unwrap();
    let header = |key: i16, version: i16| {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(1);
        b.put_i16(-1); // no client id
        b
    };
    let mut huge_array = header(3, 1);
    huge_array.put_i32(50_000_000); // fifty million topics, in a 14-byte request
    let mut truncated = header(0, 3);
    truncated.put_i16(-1);
    truncated.put_i16(-1);
    let mut negative_array = header(3, 1);
    negative_array.put_i32(-5);
    let mut trailing = header(18, 0);
    trailing.put_slice(b"junk");
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("a 50,000,000-entry array", huge_array.to_vec()),
        ("a truncated produce", truncated.to_vec()),
        ("a negative array length", negative_array.to_vec()),
        (
            "an API strom does not answer (JoinGroup)",
            header(11, 5).to_vec(),
        ),
        (
            "a Produce version strom does not take",
            header(0, 2).to_vec(),
        ),
        (
            "a Fetch version naming topics by id",
            header(1, 13).to_vec(),
        ),
    ];
    for (what, frame) in frames {
        let mut conn = KafkaConn::connect(addr).await;
        conn.send_frame(&frame).await;
        assert!(conn.closed().await, "{what}");
    }
    // Bytes after a request's last field are ignored, as Kafka ignores them
    // (librdkafka's Metadata for all topics sends three): the request is answered.
    let mut conn = KafkaConn::connect(addr).await;
    conn.send_frame(&trailing).await;
    let answer = conn.read_frame().await.expect("answered, not closed");
    assert_eq!(&answer[..4], &1i32.to_be_bytes(), "its correlation id");
    // Sizes: over max_request_bytes, negative, and too small to hold a header. The
    // server closes the connection on the size alone, before reading or holding a byte.
    for size in [(1 << 20) + 1, i32::MAX, -1, 3] {
        let mut conn = KafkaConn::connect(addr).await;
        use tokio::io::AsyncWriteExt;
        conn.stream.write_all(&size.to_be_bytes()).await.unwrap();
        assert!(conn.closed().await, "size {size}");
    }
    // A gzip batch of 20 KB that would decompress to 2 MiB, over this server's 1 MiB:
    // refused, and the connection goes on.
    let zeros = vec![0u8; 2 << 20];
    let bomb = batch(&[record(None, Some(&zeros), &[])], Compression::Gzip);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let mut conn = KafkaConn::connect(addr).await;
    let response = conn
        .call(&produce("events", &[(0, Some(bomb))], -1), 12)
        .await;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 10, "{:?}", p.error_message);
    drop(conn);

    // A newer ApiVersions than strom's is answered in version 0 with
    // UNSUPPORTED_VERSION and strom's list, so that the client asks again.
    let mut conn = KafkaConn::connect(addr).await;
    let correlation = conn.send(&ApiVersionsRequest::default(), 4).await;
    let response = conn.receive::<ApiVersionsRequest>(correlation, 0).await;
    assert_eq!(response.error_code, 35);
    assert!(!response.api_keys.is_empty());
    // The server still serves, Kafka and gRPC alike.
    let fine = conn.call(&list_offsets("events", 0, -1), 6).await;
    assert_eq!(fine.topics[0].partitions[0].error_code, 0);
    server
        .client()
        .await
        .admin()
        .describe_topic("events")
        .await
        .unwrap();
    drop(conn);
    server.stop().await.unwrap();
}

/// What a review of the listener found, each fixed: a name asked twice in Metadata,
/// a request naming more partitions than a server should look up, a waiting fetch
/// that reads on across appends, a `min_bytes` past what can come back, a frame that
/// stops arriving, and a stop while a frame is half sent.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_cost_more_than_they_weigh_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = kafka_server(dir.path()).await;
    let client = server.client_with_topic("events", 3).await;
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    // A name asked 1,000 times is answered once.
    let mut request = MetadataRequest::default();
    let repeated = (0..1000).map(|_| {
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(name("events"));
        topic
    });
    request.topics = Some(repeated.collect());
    assert_eq!(conn.call(&request, 1).await.topics.len(), 1);

    // 10,001 partitions in one produce close the connection before any is looked at.
    let many: Vec<(i32, Option<Bytes>)> = (0..10_001).map(|i| (i, None)).collect();
    let mut closing = KafkaConn::connect(server.kafka.unwrap()).await;
    closing.send(&produce("events", &many, -1), 12).await;
    assert!(closing.closed().await);
    // So do 10,001 topics without partitions (each counts as one).
    let mut empty = produce("events", &[], -1);
    empty.topic_data = (0..10_001)
        .map(|i| {
            let mut topic = empty.topic_data[0].clone();
            topic.name = name(&format!("t{i}"));
            topic
        })
        .collect();
    let mut closing = KafkaConn::connect(server.kafka.unwrap()).await;
    closing.send(&empty, 12).await;
    assert!(closing.closed().await, "10,001 empty topics");

    // A fetch waiting for 2,000 bytes gets the records of three appends made while it
    // waits, each once and in order.
    let correlation = conn
        .send(
            &{
                let mut f = fetch("events", 0, 0, 15_000);
                f.min_bytes = 2_000;
                f
            },
            12,
        )
        .await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let records = (0..10)
            .map(|i| common::requests::record(&format!("{round}-{i}-{}", "x".repeat(60))))
            .collect();
        client
            .log()
            .produce(common::requests::produce("events", Some(0), records))
            .await
            .unwrap();
    }
    let response = conn.receive::<FetchRequest>(correlation, 12).await;
    let got = records_of(response.responses[0].partitions[0].records.clone().unwrap());
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..30).collect::<Vec<i64>>());

    // min_bytes past max_bytes: what can come back is there, so no wait.
    let started = Instant::now();
    let mut f = fetch("events", 0, 0, 15_000);
    f.min_bytes = i32::MAX;
    f.max_bytes = 500;
    let response = conn.call(&f, 12).await;
    assert!(!records_of(response.responses[0].partitions[0].records.clone().unwrap()).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A frame whose bytes stop coming is closed after MESSAGE_IDLE (5 s), not held
    // for the whole 30 s.
    use tokio::io::AsyncWriteExt;
    let mut stalled = KafkaConn::connect(server.kafka.unwrap()).await;
    stalled
        .stream
        .write_all(&[0, 0, 0, 100, 0, 3, 0, 1])
        .await
        .unwrap();
    let started = Instant::now();
    assert!(stalled.closed().await);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A stop while a frame is half sent is a clean stop.
    let mut half = KafkaConn::connect(server.kafka.unwrap()).await;
    half.stream.write_all(&[0, 0, 0, 100, 0, 3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    server.stop().await.unwrap();
}

/// A fetch holding some of the response pool never waits for more (a review found a
/// fetch of two partitions waiting, holding the first's share, for the second's, which
/// no one could give back): it answers with what it holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_never_waits_for_the_pool_while_holding_some_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        produce_budget_bytes: 128 << 10, // the response pool is as large
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let client = server.client_with_topic("events", 2).await;
    for partition in 0..2 {
        let records = (0..10)
            .map(|_| common::requests::record(&"x".repeat(10_000)))
            .collect();
        let request = common::requests::produce("events", Some(partition), records);
        client.log().produce(request).await.unwrap();
    }
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;
    let mut both = fetch("events", 0, 0, 0);
    let mut second = FetchPartition::default();
    second.partition = 1;
    second.partition_max_bytes = 1 << 20;
    both.topics[0].partitions.push(second);
    both.topics[0].partitions[0].partition_max_bytes = 1 << 20;
    let response = conn.call(&both, 12).await; // within the helper's 20 s, or it fails
    let partitions = &response.responses[0].partitions;
    let first = records_of(partitions[0].records.clone().unwrap());
    assert_eq!(first.len(), 10, "the first partition, whole");
    assert_eq!(
        partitions[1].high_watermark, 10,
        "the second answers its offsets"
    );
    drop(conn);
    server.stop().await.unwrap();
}

/// Small answers a review found wrong: a refused partition still carries the log
/// start offset (a Java producer retries until its delivery timeout without it), a
/// topic asked for by id is refused by code, and Kafka connections count in
/// `max_connections` with gRPC's.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_limits_that_clients_read() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        max_connections: 3,
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_kafka(dir.path(), Limits::default(), options).await;
    let _client = server.client_with_topic("events", 1).await; // one gRPC connection
    let mut conn = KafkaConn::connect(server.kafka.unwrap()).await;

    let refused = conn.call(&produce("events", &[(0, None)], -1), 12).await;
    let p = &refused.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.log_start_offset), (87, 0));

    let mut by_id = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = None;
    by_id.topics = Some(vec![topic]);
    let answer = conn.call(&by_id, 10).await;
    assert_eq!(answer.topics[0].error_code, 100, "UNKNOWN_TOPIC_ID");

    // One gRPC and two Kafka connections fill max_connections = 3: a fourth closes.
    let mut second = KafkaConn::connect(server.kafka.unwrap()).await;
    assert_eq!(
        second.call(&list_offsets("events", 0, -1), 6).await.topics[0].partitions[0].error_code,
        0
    );
    let mut third = KafkaConn::connect(server.kafka.unwrap()).await;
    third.send(&list_offsets("events", 0, -1), 6).await;
    assert!(
        third.closed().await,
        "past max_connections, counting gRPC's"
    );
    drop((conn, second));
    server.stop().await.unwrap();
}
