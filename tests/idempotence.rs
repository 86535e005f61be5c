//! Idempotent producers against the real server: retries answered with the first
//! attempt's offsets and written once, gaps and fenced epochs refused, bad fields
//! explained, and all of it across a graceful restart and a SIGKILL.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cli::Serve;
use common::server::TestServer;
use strom::broker::producer_ids::NameLimits;
use strom::broker::Limits;
use strom::client::Client;
use strom::grpc::pb;
use tonic::Code;

async fn init(client: &Client, name: &str) -> (i64, i32) {
    let r = client
        .log()
        .init_producer(pb::InitProducerRequest {
            producer_name: name.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (r.producer_id, r.producer_epoch)
}

fn request(partition: u32, producer: (i64, i32), seq: i32, values: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(partition),
        records: values
            .iter()
            .map(|v| pb::Record {
                value: Bytes::from(v.to_string()),
                ..Default::default()
            })
            .collect(),
        producer_id: Some(producer.0),
        producer_epoch: Some(producer.1),
        base_sequence: Some(seq),
        ..Default::default()
    }
}

/// (base offset, last offset) of a produce, or its status.
async fn produce(client: &Client, r: pb::ProduceRequest) -> Result<(u64, u64), tonic::Status> {
    let r = client.log().produce(r).await?.into_inner();
    Ok((r.base_offset, r.last_offset))
}

async fn values(client: &Client, partition: u32) -> Vec<String> {
    common::fetch_all(client, "t", partition)
        .await
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

fn refused(result: Result<(u64, u64), tonic::Status>, code: Code, says: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} lacks {says:?}",
        status.message()
    );
}

#[tokio::test]
async fn a_retried_batch_is_written_once_and_answered_with_its_first_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let p = init(&client, "").await;
    let q = init(&client, "").await;
    assert_ne!(p.0, q.0, "unnamed producers get ids of their own");
    assert_eq!((p.1, q.1), (0, 0));
    // The first round writes; the second, a retry of each request in the same order,
    // gets the first attempts' offsets and writes nothing.
    for _round in 0..2 {
        let sent = [
            (p, 0, &["a", "b", "c"][..], (0, 2)),
            (q, 0, &["x"], (3, 3)),
            (p, 3, &["d", "e"], (4, 5)),
        ];
        for (producer, seq, values, offsets) in sent {
            assert_eq!(
                produce(&client, request(0, producer, seq, values))
                    .await
                    .unwrap(),
                offsets
            );
        }
    }
    assert_eq!(values(&client, 0).await, ["a", "b", "c", "x", "d", "e"]);
    // A gap, and a retry with other records: refused, saying what was expected.
    refused(
        produce(&client, request(0, p, 9, &["z"])).await,
        Code::FailedPrecondition,
        "expected sequence 5, got 9",
    );
    refused(
        produce(&client, request(0, p, 3, &["d"])).await,
        Code::InvalidArgument,
        "resend exactly",
    );
    // Sequences are per partition: partition 1 starts wherever this producer starts.
    assert_eq!(
        produce(&client, request(1, p, 0, &["p1"])).await.unwrap(),
        (0, 0)
    );
    assert_eq!(values(&client, 0).await.len(), 6);
    // The same request on a ProduceStream: appended in the order sent, retries answered.
    let requests = [
        request(0, p, 5, &["f"]),
        request(0, p, 6, &["g"]),
        request(0, p, 5, &["f"]),
    ];
    let stream = tokio_stream::iter(requests.into_iter().enumerate().map(|(i, r)| {
        pb::ProduceStreamRequest {
            correlation_id: i as u64,
            request: Some(r),
        }
    }));
    let mut replies = client
        .log()
        .produce_stream(stream)
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        match reply.result.unwrap() {
            pb::produce_stream_response::Result::Response(r) => {
                offsets.push((reply.correlation_id, r.base_offset))
            }
            pb::produce_stream_response::Result::Error(e) => panic!("{e:?}"),
        }
    }
    offsets.sort();
    assert_eq!(offsets, [(0, 6), (1, 7), (2, 6)]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_named_producer_fences_its_older_epochs_on_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let old = init(&client, "billing").await;
    produce(&client, request(0, old, 0, &["1"])).await.unwrap();
    let new = init(&client, "billing").await;
    assert_eq!((new.0, new.1), (old.0, old.1 + 1), "same id, next epoch");
    // The old epoch is fenced, also on a partition the new one has not written to,
    // and the status says so to a program: the instance must stop.
    let reason = |status: &tonic::Status| {
        let reason = status.metadata().get(strom::grpc::REASON_KEY);
        reason.map(|r| r.to_str().unwrap().to_string())
    };
    for partition in [0, 1] {
        let fenced = produce(&client, request(partition, old, 1, &["zombie"])).await;
        assert_eq!(
            reason(fenced.as_ref().unwrap_err()).as_deref(),
            Some("PRODUCER_FENCED")
        );
        refused(fenced, Code::FailedPrecondition, "fenced");
    }
    // A new epoch starts at sequence 0; a gap is no fencing.
    let gap = produce(&client, request(0, new, 1, &["2"])).await;
    assert_eq!(reason(gap.as_ref().unwrap_err()), None);
    refused(gap, Code::FailedPrecondition, "expected sequence 0");
    assert_eq!(
        produce(&client, request(0, new, 0, &["2"])).await.unwrap(),
        (1, 1)
    );
    refused(
        produce(&client, request(0, (new.0, new.1 + 1), 1, &["3"])).await,
        Code::FailedPrecondition,
        "no epoch",
    );
    assert_eq!(values(&client, 0).await, ["1", "2"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_producer_fields_get_a_status_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let p = init(&client, "").await;
    let unknown = request(0, (p.0 + 1_000_000, 0), 0, &["v"]);
    refused(
        produce(&client, unknown).await,
        Code::FailedPrecondition,
        "call InitProducer",
    );
    refused(
        produce(&client, request(0, (p.0, 1), 0, &["v"])).await,
        Code::FailedPrecondition,
        "only epoch is 0",
    );
    let cases: Vec<(pb::ProduceRequest, &str)> = vec![
        (
            pb::ProduceRequest {
                partition: None,
                ..request(0, p, 0, &["v"])
            },
            "must set partition",
        ),
        (request(0, p, -1, &["v"]), "negative"),
        (request(0, (p.0, 70_000), 0, &["v"]), "outside 0..=32767"),
        (request(0, (-5, 0), 0, &["v"]), "negative"),
        (
            pb::ProduceRequest {
                base_sequence: None,
                ..request(0, p, 0, &["v"])
            },
            "needs base_sequence",
        ),
        (
            pb::ProduceRequest {
                producer_id: None,
                ..request(0, p, 0, &["v"])
            },
            "go with a producer_id",
        ),
    ];
    for (r, says) in cases {
        refused(produce(&client, r).await, Code::InvalidArgument, says);
    }
    let long = client
        .log()
        .init_producer(pb::InitProducerRequest {
            producer_name: "n".repeat(300),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument, "{long:?}");
    assert!(
        values(&client, 0).await.is_empty(),
        "nothing refused was written"
    );
    server.stop().await.unwrap();
}

/// A name unused for `producer_name_expiry_ms` is forgotten: its instance is refused
/// and told to call InitProducer, which gives the name a new id.
#[tokio::test]
async fn a_name_unused_for_its_expiry_is_forgotten_and_its_id_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        producer_names: NameLimits {
            expiry: Duration::from_millis(800),
            ..NameLimits::default()
        },
        ..Limits::default()
    };
    let server = TestServer::start_with(dir.path(), limits).await;
    let client = server.client_with_topic("t", 1).await;
    let old = init(&client, "svc").await;
    assert_eq!(old.1, 1, "a named producer's first epoch");
    produce(&client, request(0, old, 0, &["a"])).await.unwrap();
    // Past the expiry, and past the second names are looked at no more often than.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    init(&client, "another").await; // names are looked at for expiry here
    refused(
        produce(&client, request(0, old, 1, &["b"])).await,
        Code::FailedPrecondition,
        "was forgotten; call InitProducer again",
    );
    let new = init(&client, "svc").await;
    assert!(new.0 > old.0 && new.1 == 1, "{new:?} after {old:?}");
    produce(&client, request(0, new, 0, &["c"])).await.unwrap();
    assert_eq!(values(&client, 0).await, ["a", "c"]);
    server.stop().await.unwrap();
}

/// `max_idempotent_producers` bounds what every partition together remembers: past it,
/// a partition forgets its idlest producer for a new one, whose retries it then no
/// longer recognises.
#[tokio::test]
async fn past_the_servers_cap_the_idlest_producer_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_idempotent_producers: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(dir.path(), limits).await;
    let client = server.client_with_topic("t", 1).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        let p = init(&client, "").await;
        first.push((p, produce(&client, request(0, p, 0, &["v"])).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(5)).await; // the idlest is clear
    }
    let [(oldest, _), (kept, kept_at), _] = first[..] else {
        unreachable!()
    };
    let retried = produce(&client, request(0, kept, 0, &["v"])).await.unwrap();
    assert_eq!(
        retried, kept_at,
        "remembered: answered with its first offsets"
    );
    let again = produce(&client, request(0, oldest, 0, &["v"]))
        .await
        .unwrap();
    assert_eq!(again, (3, 3), "forgotten: the retry is written again");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retries_are_recognised_after_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let p = init(&client, "").await;
    let named = init(&client, "svc").await;
    for seq in 0..8 {
        produce(&client, request(0, p, seq, &["v"])).await.unwrap();
    }
    server.stop().await.unwrap();
    let server = TestServer::start_with(dir.path(), Limits::default()).await;
    let client = server.client().await;
    assert_eq!(
        produce(&client, request(0, p, 7, &["v"])).await.unwrap(),
        (7, 7)
    );
    refused(
        produce(&client, request(0, p, 9, &["v"])).await,
        Code::FailedPrecondition,
        "expected sequence 8",
    );
    let q = init(&client, "").await;
    assert!(q.0 > named.0, "ids are not reused: {q:?} after {named:?}");
    assert_eq!(init(&client, "svc").await, (named.0, named.1 + 1));
    server.stop().await.unwrap();
}

/// Runs `f` with a client of a `strom serve` child process.
fn with_client<T>(serve: &Serve, f: impl AsyncFnOnce(Client) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connect(&serve.addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), f(client))
            .await
            .expect("within a minute")
    })
}

#[test]
fn retries_are_recognised_and_ids_not_reused_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    // Small segments, so the state comes back from a roll's snapshot and the headers
    // after it.
    serve.ok(
        &["topic", "create", "t", "--config", "segment.bytes=1048576"],
        b"",
    );
    let value = "x".repeat(50_000);
    let (p, named) = with_client(&serve, async |client| {
        let p = init(&client, "").await;
        for seq in 0..60 {
            produce(&client, request(0, p, seq, &[&value]))
                .await
                .unwrap();
        }
        (p, init(&client, "svc").await)
    });
    drop(serve); // SIGKILL
    let serve = Serve::start(dir.path());
    with_client(&serve, async |client| {
        for seq in 55..60 {
            assert_eq!(
                produce(&client, request(0, p, seq, &[&value]))
                    .await
                    .unwrap(),
                (seq as u64, seq as u64)
            );
        }
        refused(
            produce(&client, request(0, p, 61, &["v"])).await,
            Code::FailedPrecondition,
            "expected sequence 60",
        );
        assert_eq!(
            produce(&client, request(0, p, 60, &["v"])).await.unwrap(),
            (60, 60)
        );
        let q = init(&client, "").await;
        assert!(q.0 > named.0 && q.0 > p.0, "{q:?}");
        assert_eq!(
            init(&client, "svc").await,
            (named.0, named.1 + 1),
            "the name's epoch was durable"
        );
        refused(
            produce(&client, request(0, named, 0, &["v"])).await,
            Code::FailedPrecondition,
            "fenced",
        );
    });
    let dir_files: Vec<String> = std::fs::read_dir(common::topic_dir(dir.path(), "t").join("0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        dir_files.iter().any(|f| f.ends_with(".snapshot")),
        "{dir_files:?}"
    );
}

/// Two instances of a named Producer: the newer fences the older, and the older stops.
/// It used to take the name back with InitProducer at its next batch, fencing the newer
/// one, which did the same: the two took turns, and both kept writing (a review found
/// it; `ensure_identity` re-initialised after any refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_instance_stops_rather_than_fencing_the_newer_one() {
    use strom::client::{Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let named = || ProducerConfig {
        name: Some("billing".into()),
        idempotent: true,
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    };
    let send = async |producer: &Producer, value: &str| {
        let record = pb::Record {
            value: Bytes::from(value.to_string()),
            ..Default::default()
        };
        let ack = producer.send("t", Some(0), record).await;
        tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .expect("answered")
            .unwrap()
    };
    let old = Producer::new(client.clone(), named());
    send(&old, "old-1").await.unwrap();
    let new = Producer::new(client.clone(), named());
    send(&new, "new-1").await.unwrap();
    let fenced = send(&old, "old-2").await.unwrap_err();
    assert_eq!(fenced.code(), Code::FailedPrecondition, "{fenced}");
    assert!(fenced.message().contains("fenced"), "{fenced}");
    // Once fenced, for good: no InitProducer takes the name back.
    let again = send(&old, "old-3").await.unwrap_err();
    assert!(again.message().contains("fenced"), "{again}");
    send(&new, "new-2").await.unwrap();
    assert_eq!(values(&client, 0).await, ["old-1", "new-1", "new-2"]);
    old.close().await;
    new.close().await;
    server.stop().await.unwrap();
}
