//! The server end to end: the real binary's library on 127.0.0.1:0, real files, real
//! gRPC clients. Every test is bounded in time.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fetch_all;
use common::requests::{config, produce, record};
use common::server::TestServer;
use strom::broker::partitioner::partition_for_key;
use strom::client::{Producer, ProducerConfig};
use strom::grpc::pb::{self, list_offsets_request::Spec, subscribe_request::Start as SubStart};
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn topic_administration_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut admin = server.client().await.admin();
    let created = admin
        .create_topic("orders", 3, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    assert_eq!(created.partitions.len(), 3);
    assert_eq!(created.config["durability"], "page_cache");
    admin
        .create_topic("audit", 0, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(admin.list_topics().await.unwrap(), ["audit", "orders"]);

    let err = admin
        .create_topic("orders", 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    for bad in ["../etc", "a/b", "", "x\0y", &"n".repeat(201)] {
        let err = admin
            .create_topic(bad, 1, BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
    }
    let err = admin
        .create_topic("many", 100_000, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most"), "{}", err.message());
    let err = admin
        .create_topic("cfg", 1, config(&[("segment.bytes", "ten")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        admin.describe_topic("missing").await.unwrap_err().code(),
        Code::NotFound
    );

    let altered = admin
        .alter_topic_config("orders", config(&[("durability", "fsync")]))
        .await
        .unwrap();
    assert_eq!(altered.config["durability"], "fsync");
    assert_eq!(
        admin
            .alter_topic_config("orders", config(&[("bogus", "1")]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let orders = common::topic_dir(dir.path(), "orders");
    admin.delete_topic("orders").await.unwrap();
    assert_eq!(admin.list_topics().await.unwrap(), ["audit"]);
    assert!(!orders.exists(), "its files are gone");
    let topics: Vec<_> = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .collect();
    assert_eq!(topics.len(), 1, "nothing else: {topics:?}");
    assert!(
        common::topic_dir(dir.path(), "audit")
            .join("topic.json")
            .exists(),
        "and nothing else"
    );
    assert_eq!(
        admin.delete_topic("orders").await.unwrap_err().code(),
        Code::NotFound
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn produce_and_fetch_records_with_keys_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 4, BTreeMap::new())
        .await
        .unwrap();
    let mut log = client.log();

    let keyed = pb::Record {
        key: Some(Bytes::from("user-42")),
        value: Bytes::from("v"),
        headers: vec![
            pb::Header {
                name: "h".into(),
                value: Bytes::from("1"),
            },
            pb::Header {
                name: "h".into(),
                value: Bytes::from("2"),
            },
        ],
        timestamp_ms: 1_700_000_000_000,
        offset: 0,
    };
    let before = strom::broker::now_ms();
    let response = log
        .produce(produce("t", None, vec![keyed.clone(), record("no time")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.partition,
        partition_for_key(b"user-42", 4),
        "Kafka's partitioner"
    );
    assert_eq!((response.base_offset, response.last_offset), (0, 1));
    assert!(response.log_append_time_ms >= before);

    let fetched = log
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: response.partition,
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let records: Vec<_> = fetched.records.iter().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].key, Some(&b"user-42"[..]));
    assert_eq!(
        records[0].headers().collect::<Vec<_>>(),
        vec![("h", &b"1"[..]), ("h", &b"2"[..])]
    );
    assert_eq!(records[0].timestamp_ms, 1_700_000_000_000);
    assert!(records[1].timestamp_ms >= before, "0 means server time");
    assert_eq!(
        (
            fetched.high_watermark,
            fetched.log_start_offset,
            fetched.next_offset
        ),
        (2, 0, 2)
    );

    // From the middle of a batch: records before the offset are not returned.
    let from_one = log
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: response.partition,
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        from_one
            .records
            .iter()
            .map(|r| r.unwrap().offset)
            .collect::<Vec<_>>(),
        [1]
    );

    let offsets = |spec| pb::ListOffsetsRequest {
        topic: "t".into(),
        partition: response.partition,
        spec: Some(spec),
    };
    assert_eq!(
        log.list_offsets(offsets(Spec::Latest(true)))
            .await
            .unwrap()
            .into_inner()
            .offset,
        2
    );
    assert_eq!(
        log.list_offsets(offsets(Spec::TimestampMs(1_700_000_000_001)))
            .await
            .unwrap()
            .into_inner()
            .offset,
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_their_status_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 2, config(&[("max.message.bytes", "1000")]))
        .await
        .unwrap();
    let mut log = client.log();
    log.produce(produce("t", Some(0), vec![record("kept")]))
        .await
        .unwrap();

    let keyed = |key: &str| pb::Record {
        key: Some(Bytes::from(key.to_string())),
        ..record("keyed")
    };
    let home = partition_for_key(b"k0", 2);
    let stranger = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), 2) != home)
        .unwrap();
    let cases = [
        (
            produce(
                "t",
                None,
                vec![keyed("k0"), record("free"), keyed(&stranger)],
            ),
            Code::InvalidArgument,
            "separate requests",
        ),
        (
            produce("nope", None, vec![record("x")]),
            Code::NotFound,
            "nope",
        ),
        (
            produce("t", Some(7), vec![record("x")]),
            Code::NotFound,
            "partition 7",
        ),
        (
            produce("t", Some(0), vec![]),
            Code::InvalidArgument,
            "at least one record",
        ),
        (
            produce("t", Some(0), vec![record("ok"), record(&"x".repeat(2000))]),
            Code::ResourceExhausted,
            "limit is 1000",
        ),
        (
            produce(
                "t",
                Some(0),
                vec![pb::Record {
                    timestamp_ms: -5,
                    ..record("x")
                }],
            ),
            Code::InvalidArgument,
            "negative",
        ),
        (
            pb::ProduceRequest {
                durability: 9,
                ..produce("t", Some(0), vec![record("x")])
            },
            Code::InvalidArgument,
            "durability",
        ),
    ];
    for (request, code, text) in cases {
        let err = log.produce(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(
            err.message().contains(text),
            "{:?} lacks {text:?}",
            err.message()
        );
    }
    let err = log
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("[0, 1)") && err.message().contains("partition 0"),
        "{}",
        err.message()
    );
    let err = log
        .list_offsets(pb::ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            spec: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fetch_all(&client, "t", 0).await,
        [(0, "kept".to_string())],
        "nothing partial was written"
    );
    assert!(fetch_all(&client, "t", 1).await.is_empty());
    // Records without a key travel with the keyed one, wherever it stands in the request.
    let landed = log
        .produce(produce("t", None, vec![record("free"), keyed("k0")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(landed.partition, home);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_answers_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 1, BTreeMap::new())
        .await
        .unwrap();
    let mut waiting = client.log();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let request = pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 20_000,
            ..Default::default()
        };
        waiting.fetch(request).await.unwrap().into_inner()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "nothing to return yet");
    client
        .log()
        .produce(produce("t", None, vec![record("wake")]))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken, not timed out")
        .unwrap();
    assert_eq!(response.records.iter().count(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered before its 20 s wait ran out"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn subscribe_sends_history_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 1, BTreeMap::new())
        .await
        .unwrap();
    let mut log = client.log();
    log.produce(produce("t", None, vec![record("0"), record("1")]))
        .await
        .unwrap();
    let request = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: Some(SubStart::Earliest(true)),
        max_bytes: 0,
    };
    let mut stream = log.subscribe(request).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let mut next_value = 2;
    while seen.len() < 5 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("bounded")
            .unwrap()
            .unwrap();
        seen.extend(
            message
                .records
                .iter()
                .map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap()),
        );
        if next_value < 5 {
            client
                .log()
                .produce(produce("t", None, vec![record(&next_value.to_string())]))
                .await
                .unwrap();
            next_value += 1;
        }
    }
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
    let missing = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: None,
        max_bytes: 0,
    };
    assert_eq!(
        client.log().subscribe(missing).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    drop(stream);
    server.stop().await.unwrap(); // a live subscription must not hold up shutdown
}

/// A subscription waiting past the end when the server stops is told to resubscribe
/// (UNAVAILABLE), and does not hold up the graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_subscription_ends_with_unavailable_when_the_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let request = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: Some(SubStart::Latest(true)),
        max_bytes: 0,
    };
    let mut stream = client.log().subscribe(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await; // waiting for records now
    let stopped = tokio::spawn(server.stop());
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the subscription ends within 10 s")
        .expect("with a status, not silently");
    let err = ended.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("resubscribe"), "{err:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops within 10 s")
        .unwrap()
        .unwrap();
}

/// The Rust client reads Fetch and Subscribe from the frames (`client/direct.rs`), and
/// the server sends long runs of records as slices of its maps (`grpc/direct`): both
/// must give what tonic's generated client reads, and the statuses it would see.
#[tokio::test]
async fn fetch_and_subscribe_read_from_frames_match_the_generated_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let mut admin = client.admin();
    admin.create_topic("t", 1, BTreeMap::new()).await.unwrap();
    // A batch of 300 records of 1000 bytes, then a small one: a 300 KB run, sent as a
    // slice, and a short one, copied.
    let big: Vec<_> = (0..300)
        .map(|i| pb::Record {
            value: Bytes::from(vec![i as u8; 1000]),
            ..Default::default()
        })
        .collect();
    let mut log = client.log();
    log.produce(produce("t", None, big)).await.unwrap();
    log.produce(produce("t", None, vec![record("last")]))
        .await
        .unwrap();
    for offset in [0, 7, 300] {
        let request = pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset,
            ..Default::default()
        };
        let direct = client.fetch(request.clone()).await.unwrap();
        let generated = log.fetch(request).await.unwrap().into_inner();
        assert_eq!(direct.records.iter().count(), 301 - offset as usize);
        assert_eq!(direct.high_watermark, 301);
        assert_eq!(direct.next_offset, 301);
        let values = |r: &strom::grpc::records::FetchResponse| -> Vec<(u64, Vec<u8>)> {
            r.records
                .iter()
                .map(|r| r.map(|r| (r.offset, r.value.to_vec())).unwrap())
                .collect()
        };
        assert_eq!(values(&direct), values(&generated));
    }
    // A status alone (trailers only), and one after messages (trailers).
    let missing = pb::FetchRequest {
        topic: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        client.fetch(missing).await.unwrap_err().code(),
        Code::NotFound
    );
    // A Fetch request is a name and a few numbers: one of 100 KB is not read whole, and
    // is refused as over a limit (not with OUT_OF_RANGE, which means an offset).
    let huge = pb::FetchRequest {
        topic: "t".repeat(100_000),
        ..Default::default()
    };
    let refused = client.fetch(huge).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("65536"), "{}", refused.message());
    let request = pb::SubscribeRequest {
        topic: "t".into(),
        partition: 0,
        start: Some(SubStart::Offset(1)),
        max_bytes: 0,
    };
    let mut stream = client.subscribe(request).await.unwrap();
    let mut seen = 0;
    while seen < 300 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("bounded")
            .expect("a message")
            .unwrap();
        seen += message.records.iter().count();
    }
    assert_eq!(seen, 300);
    admin.delete_topic("t").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("bounded");
    assert_eq!(end.unwrap().unwrap_err().code(), Code::NotFound);
    assert!(stream.next().await.is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn producer_and_consumer_clients_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 3, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_bytes: 4096,
            ..ProducerConfig::default()
        },
    );
    let mut acks = Vec::new();
    for i in 0..3000u32 {
        let key = (i % 2 == 0).then(|| Bytes::from(format!("k{}", i % 10)));
        let record = pb::Record {
            key: key.clone(),
            value: Bytes::from(i.to_string()),
            ..Default::default()
        };
        acks.push((key, producer.send("t", None, record).await));
    }
    producer.flush().await;
    let mut per_partition = [0u64; 3];
    for (key, ack) in acks {
        let ack = ack.await.unwrap().unwrap();
        if let Some(key) = key {
            assert_eq!(ack.partition, partition_for_key(&key, 3));
        }
        per_partition[ack.partition as usize] += 1;
    }
    producer.close().await;
    assert!(
        per_partition.iter().all(|&n| n > 0),
        "records spread: {per_partition:?}"
    );
    let mut total = 0;
    for p in 0..3 {
        let records = fetch_all(&client, "t", p).await;
        assert_eq!(records.len() as u64, per_partition[p as usize]);
        assert!(
            records.iter().enumerate().all(|(i, r)| r.0 == i as u64),
            "contiguous offsets"
        );
        total += records.len();
    }
    assert_eq!(total, 3000);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn topics_and_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("kept", 2, config(&[("segment.bytes", "1048576")]))
        .await
        .unwrap();
    let mut log = client.log();
    for i in 0..200 {
        let records = (0..20).map(|j| record(&format!("{i}-{j}"))).collect();
        log.produce(produce("kept", Some(i % 2), records))
            .await
            .unwrap();
    }
    let before = [
        fetch_all(&client, "kept", 0).await,
        fetch_all(&client, "kept", 1).await,
    ];
    drop((client, log));
    server.stop().await.unwrap();
    for p in 0..2 {
        assert!(
            common::topic_dir(dir.path(), "kept")
                .join(format!("{p}/.clean-shutdown"))
                .exists(),
            "closed cleanly"
        );
    }

    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let topic = client.admin().describe_topic("kept").await.unwrap();
    assert_eq!(topic.config["segment.bytes"], "1048576");
    assert_eq!(
        topic
            .partitions
            .iter()
            .map(|p| p.high_watermark)
            .collect::<Vec<_>>(),
        [2000, 2000]
    );
    assert_eq!(
        [
            fetch_all(&client, "kept", 0).await,
            fetch_all(&client, "kept", 1).await
        ],
        before
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "strom.v1.Log".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        check.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"strom.v1.Log".to_string())
            && names.contains(&"strom.v1.Admin".to_string()),
        "{names:?}"
    );
    server.stop().await.unwrap();
}

/// The offsets and values of a fetch's answer.
fn fetched(response: &strom::grpc::records::FetchResponse) -> Vec<(u64, String)> {
    response
        .records
        .iter()
        .map(|r| {
            let r = r.unwrap();
            (r.offset, String::from_utf8(r.value.to_vec()).unwrap())
        })
        .collect()
}

/// A fetch with `min_bytes` waits until that much is there, and answers with every
/// record appended meanwhile, each once and in order, and never more than `max_bytes`
/// (a record that would pass it waits for the next fetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_waits_for_min_bytes_and_answers_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let value = |i: u64| format!("{i}-{}", "x".repeat(1000));
    let request = |min_bytes: u32, max_bytes: u32| pb::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes,
        max_wait_ms: 20_000,
        min_bytes,
    };
    // Record `i`, in the page cache (the fetch waits for it, not for a sync).
    let append = |i: u64| {
        let mut request = produce("t", Some(0), vec![record(&value(i))]);
        request.durability = pb::Durability::PageCache as i32;
        let mut log = client.log();
        async move { log.produce(request).await.unwrap() }
    };
    // About five records' worth; the answer must come after the fifth is appended.
    let mut log = client.log();
    let waiting = tokio::spawn(async move { log.fetch(request(5_000, 1 << 20)).await });
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered after {i} records");
        append(i).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered once min_bytes are there")
        .unwrap()
        .unwrap()
        .into_inner();
    let expected: Vec<(u64, String)> = (0..5).map(|i| (i, value(i))).collect();
    assert_eq!(fetched(&answer), expected);
    assert_eq!(answer.next_offset, 5);

    // max_bytes of two and a half records' worth, min_bytes more: the two that fit,
    // answered when the third would pass max_bytes.
    let mut log = client.log();
    let limit = answer.records.encoded_len() as u32 / 2;
    let from_five = pb::FetchRequest {
        offset: 5,
        ..request(u32::MAX, limit)
    };
    let waiting = tokio::spawn(async move { log.fetch(from_five).await });
    for i in 5..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(i).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered once the next record does not fit")
        .unwrap()
        .unwrap()
        .into_inner();
    let got = fetched(&answer);
    assert!(
        got.len() == 2,
        "{:?}",
        got.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let expected: Vec<(u64, String)> = (5..5 + got.len() as u64).map(|i| (i, value(i))).collect();
    assert_eq!(got, expected);
    assert!(answer.records.encoded_len() <= limit as usize);
    server.stop().await.unwrap();
}
