//! Share groups (queues) against a real server: one worker per record, expired locks,
//! release, reject and the delivery limit, dead letters and their headers, delayed
//! records, SIGKILL with records accepted and in flight, the stream, admin calls, and
//! bad input.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::server::TestServer;
use strom::client::Client;
use strom::grpc::pb::{self, share_stream_request::Body, AckType};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(60);

async fn produce(client: &Client, topic: &str, partition: u32, records: Vec<pb::Record>) {
    let request = pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        records,
        ..Default::default()
    };
    client.log().produce(request).await.unwrap();
}

fn values(prefix: &str, n: usize) -> Vec<pb::Record> {
    (0..n)
        .map(|i| pb::Record {
            value: Bytes::from(format!("{prefix}-{i}")),
            ..Default::default()
        })
        .collect()
}

async fn config(client: &Client, group: &str, pairs: &[(&str, &str)]) -> Result<(), tonic::Status> {
    let config = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: group.into(),
            config,
        })
        .await
        .map(|_| ())
}

async fn fetch(
    client: &Client,
    group: &str,
    member: &str,
    topic: &str,
    max: u32,
    wait_ms: u32,
) -> pb::ShareFetchResponse {
    client
        .queues()
        .share_fetch(pb::ShareFetchRequest {
            group: group.into(),
            member_id: member.into(),
            topic: topic.into(),
            max_records: max,
            max_wait_ms: wait_ms,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn ack(
    client: &Client,
    group: &str,
    member: &str,
    topic: &str,
    records: &[(u32, u64)],
    kind: AckType,
) -> Result<Vec<pb::RefusedAck>, tonic::Status> {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, o) in records {
        by_partition.entry(*p).or_default().push(*o);
    }
    let acks = by_partition
        .into_iter()
        .map(|(partition, offsets)| pb::Acknowledgement {
            partition,
            offsets,
            r#type: kind as i32,
        })
        .collect();
    client
        .queues()
        .share_acknowledge(pb::ShareAcknowledgeRequest {
            group: group.into(),
            member_id: member.into(),
            topic: topic.into(),
            acks,
        })
        .await
        .map(|r| r.into_inner().refused)
}

fn ids(records: &[pb::SharedRecord]) -> Vec<(u32, u64)> {
    records
        .iter()
        .map(|r| (r.partition, r.record.as_ref().unwrap().offset))
        .collect()
}

/// SIGKILLs `serve` and starts a server on its data directory again, with a client.
async fn killed_and_restarted(mut serve: Serve, dir: &std::path::Path) -> (Serve, Client) {
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    drop(serve);
    let serve = Serve::start(dir);
    let client = Client::connect(&serve.addr).await.unwrap();
    (serve, client)
}

async fn describe(client: &Client, group: &str) -> pb::DescribeShareGroupResponse {
    client
        .queues()
        .describe_share_group(pb::DescribeShareGroupRequest {
            group: group.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn four_workers_each_record_to_one_of_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("jobs", 3).await;
    config(&client, "w", &[("start", "earliest")])
        .await
        .unwrap();
    for p in 0..3 {
        produce(&client, "jobs", p, values(&format!("p{p}"), 300)).await;
    }
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut member = String::new();
            let mut got = Vec::new();
            let deadline = Instant::now() + LIMIT;
            loop {
                let r = fetch(&client, "w", &member, "jobs", 37, 300).await;
                member = r.member_id.clone();
                if r.records.is_empty() {
                    break;
                }
                for rec in &r.records {
                    assert_eq!(rec.delivery_count, 1, "worker {w}: a record came twice");
                }
                let mine = ids(&r.records);
                let refused = ack(&client, "w", &member, "jobs", &mine, AckType::Accept)
                    .await
                    .unwrap();
                assert!(refused.is_empty(), "{refused:?}");
                got.extend(mine);
                assert!(Instant::now() < deadline);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (900, 900));
    let d = describe(&client, "w").await;
    let accepted: u64 = d.partitions.iter().map(|p| p.accepted).sum();
    assert_eq!(accepted, 900);
    assert!(d
        .partitions
        .iter()
        .all(|p| p.start_offset == 300 && p.in_flight == 0));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_lock_hands_the_record_to_another_worker_with_its_count_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    // 1.5 s locks: B's must outlast its own acknowledgement on a slow machine.
    config(&client, "g", &[("start", "earliest"), ("lock.ms", "1500")])
        .await
        .unwrap();
    produce(&client, "t", 0, values("v", 3)).await;
    let a = fetch(&client, "g", "a", "t", 10, 0).await;
    assert_eq!(ids(&a.records), [(0, 0), (0, 1), (0, 2)]);
    // B waits, and is handed the records when A's lock ends (woken by the deadline,
    // not by the log).
    let started = Instant::now();
    let b = fetch(&client, "g", "b", "t", 10, 10_000).await;
    let waited = started.elapsed();
    assert_eq!(ids(&b.records), [(0, 0), (0, 1), (0, 2)]);
    assert!(b.records.iter().all(|r| r.delivery_count == 2));
    assert!(waited < Duration::from_secs(9), "waited {waited:?}");
    // A's acknowledgement is refused record by record; B's is taken.
    let refused = ack(&client, "g", "a", "t", &[(0, 0), (0, 1)], AckType::Accept)
        .await
        .unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].code, Code::FailedPrecondition as i32);
    assert!(
        refused[0].message.contains("does not hold"),
        "{}",
        refused[0].message
    );
    let refused = ack(&client, "g", "b", "t", &ids(&b.records), AckType::Accept)
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn release_reject_the_delivery_limit_and_dead_letter_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("orders", 1).await;
    config(
        &client,
        "g",
        &[
            ("start", "earliest"),
            ("max.deliveries", "2"),
            ("dead.letter.topic", "orders-dlq"),
        ],
    )
    .await
    .unwrap();
    let mut records = values("o", 2);
    records[0].key = Some(Bytes::from_static(b"k0"));
    records[0].headers = vec![pb::Header {
        name: "trace".into(),
        value: Bytes::from_static(b"abc"),
    }];
    produce(&client, "orders", 0, records).await;
    let r = fetch(&client, "g", "m", "orders", 10, 0).await;
    assert_eq!(ids(&r.records), [(0, 0), (0, 1)]);
    // 1 is rejected; 0 is released twice and so runs out of deliveries.
    ack(&client, "g", "m", "orders", &[(0, 1)], AckType::Reject)
        .await
        .unwrap();
    ack(&client, "g", "m", "orders", &[(0, 0)], AckType::Release)
        .await
        .unwrap();
    let r = fetch(&client, "g", "m", "orders", 10, 1000).await;
    assert_eq!(ids(&r.records), [(0, 0)]);
    assert_eq!(r.records[0].delivery_count, 2);
    ack(&client, "g", "m", "orders", &[(0, 0)], AckType::Release)
        .await
        .unwrap();
    assert!(fetch(&client, "g", "m", "orders", 10, 200)
        .await
        .records
        .is_empty());
    let mut consumer =
        strom::client::Consumer::new(&client, "orders-dlq", 0, strom::client::Start::Earliest)
            .await
            .unwrap();
    let dlq = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(dlq.len(), 2);
    let headers = |i: usize| -> HashMap<String, String> {
        dlq[i]
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    };
    let first = headers(0);
    assert_eq!(first["strom-dlq-offset"], "1");
    assert_eq!(first["strom-dlq-reason"], "rejected");
    assert_eq!(first["strom-dlq-topic"], "orders");
    assert_eq!(first["strom-dlq-partition"], "0");
    assert_eq!(first["strom-dlq-delivery-count"], "1");
    let second = headers(1);
    assert_eq!(second["strom-dlq-offset"], "0");
    assert_eq!(second["strom-dlq-reason"], "max.deliveries");
    assert_eq!(second["strom-dlq-delivery-count"], "2");
    assert_eq!(second["trace"], "abc");
    assert_eq!(dlq[1].key.as_deref(), Some(&b"k0"[..]));
    let d = describe(&client, "g").await;
    assert_eq!(
        (d.partitions[0].dead_lettered, d.partitions[0].start_offset),
        (2, 2)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn delayed_records_are_not_handed_out_before_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    let at = strom::broker::now_ms() + 3000;
    let mut records = values("v", 2);
    records[0].headers = vec![pb::Header {
        name: "strom-deliver-at".into(),
        value: Bytes::from(at.to_string()),
    }];
    produce(&client, "t", 0, records).await;
    let early = fetch(&client, "g", "m", "t", 10, 0).await;
    // A fetch answered before `at` must leave record 0 out (only a machine stalled for
    // 3 s answers after it, and then the check has nothing to say).
    if strom::broker::now_ms() < at {
        assert_eq!(ids(&early.records), [(0, 1)]);
    }
    if !ids(&early.records).contains(&(0, 0)) {
        let r = fetch(&client, "g", "m", "t", 10, 10_000).await;
        assert_eq!(ids(&r.records), [(0, 0)]);
    }
    assert!(strom::broker::now_ms() >= at);
    server.stop().await.unwrap();
}

/// A record accepted before a SIGKILL never comes back; one locked at the kill comes
/// back with its count kept.
#[tokio::test]
async fn after_sigkill_accepted_records_stay_done_and_locked_ones_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let client = Client::connect(&serve.addr).await.unwrap();
    client
        .admin()
        .create_topic("t", 2, Default::default())
        .await
        .unwrap();
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    for p in 0..2 {
        produce(&client, "t", p, values("v", 50)).await;
    }
    let r = fetch(&client, "g", "m", "t", 60, 0).await;
    let got = ids(&r.records);
    assert_eq!(got.len(), 60);
    let (accepted, held) = got.split_at(40);
    ack(&client, "g", "m", "t", accepted, AckType::Accept)
        .await
        .unwrap();
    let (_serve, client) = killed_and_restarted(serve, dir.path()).await;
    let mut seen: HashMap<(u32, u64), u32> = HashMap::new();
    loop {
        let r = fetch(&client, "g", "n", "t", 500, 200).await;
        if r.records.is_empty() {
            break;
        }
        for rec in &r.records {
            seen.insert(
                (rec.partition, rec.record.as_ref().unwrap().offset),
                rec.delivery_count,
            );
        }
        ack(&client, "g", "n", "t", &ids(&r.records), AckType::Accept)
            .await
            .unwrap();
    }
    assert_eq!(seen.len(), 60);
    for a in accepted {
        assert!(!seen.contains_key(a), "{a:?} was accepted before the kill");
    }
    for h in held {
        assert_eq!(seen[h], 2, "{h:?} was locked at the kill");
    }
}

#[tokio::test]
async fn the_stream_pushes_records_within_its_credits_and_takes_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    for p in 0..2 {
        produce(&client, "t", p, values("v", 100)).await;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::ShareStreamRequest {
        body: Some(Body::Open(pb::ShareStreamOpen {
            group: "g".into(),
            member_id: String::new(),
            topic: "t".into(),
        })),
    })
    .await
    .unwrap();
    tx.send(pb::ShareStreamRequest {
        body: Some(Body::Credits(50)),
    })
    .await
    .unwrap();
    let mut inbound = client
        .queues()
        .share_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = inbound.message().await.unwrap().unwrap();
    assert!(!first.member_id.is_empty());
    assert!(first.records.is_empty(), "records before any credit");
    let mut got = Vec::new();
    let mut given = 50;
    let deadline = Instant::now() + LIMIT;
    while got.len() < 200 {
        assert!(Instant::now() < deadline);
        let m = tokio::time::timeout(LIMIT, inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(m.refused.is_empty(), "{:?}", m.refused);
        assert!(
            got.len() + m.records.len() <= given,
            "more records than credits"
        );
        for r in &m.records {
            got.push((r.partition, r.record.as_ref().unwrap().offset));
            // One ack per record, and one credit back for each.
            tx.send(pb::ShareStreamRequest {
                body: Some(Body::Acks(pb::ShareStreamAcks {
                    acks: vec![pb::Acknowledgement {
                        partition: r.partition,
                        offsets: vec![r.record.as_ref().unwrap().offset],
                        r#type: AckType::Accept as i32,
                    }],
                })),
            })
            .await
            .unwrap();
            tx.send(pb::ShareStreamRequest {
                body: Some(Body::Credits(1)),
            })
            .await
            .unwrap();
            given += 1;
        }
    }
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 200);
    drop(tx);
    while let Ok(Some(_)) = inbound.message().await {}
    // Every acknowledgement read before the stream ended is applied.
    let deadline = Instant::now() + LIMIT;
    loop {
        let d = describe(&client, "g").await;
        if d.partitions.iter().map(|p| p.accepted).sum::<u64>() == 200 {
            assert!(d.members.is_empty(), "the member left with its stream");
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_reset_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    produce(&client, "t", 0, values("v", 10)).await;
    // start=latest: a new group sees only what comes after it.
    let r = fetch(&client, "g", "m", "t", 10, 0).await;
    assert!(r.records.is_empty());
    let listed = client
        .queues()
        .list_share_groups(pb::ListShareGroupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.groups[0].group, "g");
    assert_eq!(listed.groups[0].members, 1);
    let mut q = client.queues();
    let reset = pb::ResetShareGroupRequest {
        group: "g".into(),
        topic: "t".into(),
        to: Some(pb::reset_share_group_request::To::Earliest(true)),
    };
    let err = q.reset_share_group(reset.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // After the member's session ends (2 s), the reset goes through: a replay.
    config(&client, "g", &[("session.timeout.ms", "2000")])
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let moved = loop {
        match q.reset_share_group(reset.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(e) if e.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(
        (moved.partitions[0].before, moved.partitions[0].after),
        (10, 0)
    );
    let r = fetch(&client, "g", "", "t", 100, 0).await;
    assert_eq!(r.records.len(), 10);
    let del = pb::DeleteShareGroupRequest { group: "g".into() };
    let err = q.delete_share_group(del.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let deadline = Instant::now() + LIMIT;
    while let Err(e) = q.delete_share_group(del.clone()).await {
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = q
        .describe_share_group(pb::DescribeShareGroupRequest { group: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    produce(&client, "t", 0, values("v", 3)).await;
    let code = |r: Result<(), tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(config(&client, "g", &[("max.deliveries", "0")]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(config(&client, "g", &[("lock.ms", "999999999999")]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(config(&client, "g", &[("lock.ms", "5000"), ("bogus", "1")]).await),
        Code::InvalidArgument
    );
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    let d = describe(&client, "g").await;
    assert_eq!(d.config["lock.ms"], "30000", "nothing half-applied");
    // The source topic cannot be the dead-letter topic.
    fetch(&client, "g", "m", "t", 1, 0).await;
    assert_eq!(
        code(config(&client, "g", &[("dead.letter.topic", "t")]).await),
        Code::InvalidArgument
    );
    // Acknowledgements: of an unknown group, by an unknown member, of records never
    // delivered, with no type.
    let unknown = ack(&client, "nope", "m", "t", &[(0, 0)], AckType::Accept).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    let stranger = ack(&client, "g", "who", "t", &[(0, 0)], AckType::Accept).await;
    assert_eq!(stranger.unwrap_err().code(), Code::FailedPrecondition);
    let never = ack(&client, "g", "m", "t", &[(0, 2)], AckType::Accept)
        .await
        .unwrap();
    assert!(never[0].message.contains("never delivered"), "{never:?}");
    let untyped = ack(&client, "g", "m", "t", &[(0, 0)], AckType::Unspecified).await;
    assert_eq!(untyped.unwrap_err().code(), Code::InvalidArgument);
    let no_partition = ack(&client, "g", "m", "t", &[(9, 0)], AckType::Accept).await;
    assert_eq!(no_partition.unwrap_err().code(), Code::NotFound);
    let mut q = client.queues();
    let bad_name = q
        .share_fetch(pb::ShareFetchRequest {
            group: "a/b".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_name.code(), Code::InvalidArgument);
    let no_topic = q
        .share_fetch(pb::ShareFetchRequest {
            group: "g".into(),
            topic: "absent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_topic.code(), Code::NotFound);
    // Still works after all of that.
    let refused = ack(&client, "g", "m", "t", &[(0, 0)], AckType::Accept)
        .await
        .unwrap();
    assert!(refused.is_empty());
    server.stop().await.unwrap();
}

/// Records produced one per request are one batch each, and a read returns many
/// batches back to back: a fetch takes them all, and a restart reads the whole window
/// back.
#[tokio::test]
async fn records_of_many_batches_all_arrive_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let client = Client::connect(&serve.addr).await.unwrap();
    client
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    for i in 0..40 {
        produce(&client, "t", 0, values(&format!("r{i}"), 1)).await;
    }
    let first = fetch(&client, "g", "m", "t", 100, 0).await;
    assert_eq!(
        ids(&first.records),
        (0..40).map(|o| (0, o)).collect::<Vec<_>>()
    );
    ack(
        &client,
        "g",
        "m",
        "t",
        &ids(&first.records)[..10],
        AckType::Accept,
    )
    .await
    .unwrap();
    let (_serve, client) = killed_and_restarted(serve, dir.path()).await;
    let again = fetch(&client, "g", "n", "t", 100, 0).await;
    assert_eq!(
        ids(&again.records),
        (10..40).map(|o| (0, o)).collect::<Vec<_>>()
    );
    assert!(again.records.iter().all(|r| r.delivery_count == 2));
}

/// With room for one record at a time, a worker waiting for the next is woken by the
/// acceptance of the one before, not by the end of its wait.
#[tokio::test]
async fn an_acceptance_wakes_a_waiting_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    config(
        &client,
        "g",
        &[("start", "earliest"), ("max.in.flight", "1")],
    )
    .await
    .unwrap();
    produce(&client, "t", 0, values("v", 2)).await;
    let a = fetch(&client, "g", "a", "t", 10, 0).await;
    assert_eq!(ids(&a.records), [(0, 0)]);
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let b = fetch(&client, "g", "b", "t", 10, 20_000).await;
            (ids(&b.records), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    ack(&client, "g", "a", "t", &[(0, 0)], AckType::Accept)
        .await
        .unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, [(0, 1)]);
    assert!(
        waited < Duration::from_secs(10),
        "woken only by its deadline: {waited:?}"
    );
    server.stop().await.unwrap();
}

/// A dead-letter topic that can never take a record (compacted, and the record has no
/// key) does not stall the queue: the record is archived, and the ones after it flow.
#[tokio::test]
async fn a_dead_letter_the_topic_refuses_is_archived_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let compacted = [("cleanup.policy".to_string(), "compact".to_string())].into();
    client
        .admin()
        .create_topic("dead", 1, compacted)
        .await
        .unwrap();
    config(
        &client,
        "g",
        &[
            ("start", "earliest"),
            ("dead.letter.topic", "dead"),
            ("max.in.flight", "2"),
        ],
    )
    .await
    .unwrap();
    produce(&client, "t", 0, values("v", 4)).await;
    let r = fetch(&client, "g", "m", "t", 10, 0).await;
    assert_eq!(ids(&r.records), [(0, 0), (0, 1)]);
    ack(&client, "g", "m", "t", &[(0, 0)], AckType::Reject)
        .await
        .unwrap();
    ack(&client, "g", "m", "t", &[(0, 1)], AckType::Accept)
        .await
        .unwrap();
    let r = fetch(&client, "g", "m", "t", 10, 5000).await;
    assert_eq!(ids(&r.records), [(0, 2), (0, 3)]);
    let d = describe(&client, "g").await;
    assert_eq!(d.partitions[0].dead_lettered, 1);
    server.stop().await.unwrap();
}

/// A released record's redelivery backoff is on disk: a restart does not bring the retry
/// forward.
#[tokio::test]
async fn a_redelivery_backoff_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let client = Client::connect(&serve.addr).await.unwrap();
    client
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    config(
        &client,
        "g",
        &[("start", "earliest"), ("redelivery.backoff.ms", "3000")],
    )
    .await
    .unwrap();
    produce(&client, "t", 0, values("v", 1)).await;
    let r = fetch(&client, "g", "m", "t", 10, 0).await;
    assert_eq!(ids(&r.records), [(0, 0)]);
    let released = Instant::now();
    ack(&client, "g", "m", "t", &[(0, 0)], AckType::Release)
        .await
        .unwrap();
    let (_serve, client) = killed_and_restarted(serve, dir.path()).await;
    let early = fetch(&client, "g", "m", "t", 10, 0).await;
    // Answered before the backoff could have ended (the clock started before the
    // release), the fetch must be empty; a machine slower than that has no say.
    if released.elapsed() < Duration::from_millis(3000) {
        assert!(
            early.records.is_empty(),
            "handed out again before its backoff ended"
        );
    }
    let again = fetch(&client, "g", "m", "t", 10, 10_000).await;
    assert_eq!(ids(&again.records), [(0, 0)]);
    assert_eq!(again.records[0].delivery_count, 2);
    assert!(released.elapsed() >= Duration::from_millis(3000));
}

/// Requests the server refuses leave no share group behind, and a member waiting in a
/// long fetch is heard from: its session does not end under the wait.
#[tokio::test]
async fn refused_requests_create_no_group_and_a_waiting_member_stays_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let mut q = client.queues();
    assert!(config(&client, "bad-config", &[("lock.ms", "99")])
        .await
        .is_err());
    let long_member = q
        .share_fetch(pb::ShareFetchRequest {
            group: "bad-member".into(),
            member_id: "m".repeat(300),
            topic: "t".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(long_member.unwrap_err().code(), Code::InvalidArgument);
    let no_topic = q
        .share_fetch(pb::ShareFetchRequest {
            group: "bad-topic".into(),
            topic: "absent".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(no_topic.unwrap_err().code(), Code::NotFound);
    let listed = q
        .list_share_groups(pb::ListShareGroupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.groups.is_empty(), "{listed:?}");
    // A member waits; its session ends (3 s); the group is deleted under the wait.
    config(&client, "g", &[("session.timeout.ms", "3000")])
        .await
        .unwrap();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .queues()
                .share_fetch(pb::ShareFetchRequest {
                    group: "g".into(),
                    member_id: "m".into(),
                    topic: "t".into(),
                    max_records: 1,
                    max_wait_ms: 10_000,
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The waiting member is still heard from: its session does not end mid-wait.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let d = describe(&client, "g").await;
    assert_eq!(d.members.len(), 1, "a waiting member was expired: {d:?}");
    let refused = q
        .delete_share_group(pb::DeleteShareGroupRequest { group: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let ended = waiting.await.unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    server.stop().await.unwrap();
}

/// Records deleted (DeleteRecords) while a member held them are refused as finished,
/// and the refusal says they may have been deleted: it said "accepted or
/// dead-lettered", and a worker could take them for done by another (hostile-client
/// finding).
#[tokio::test]
async fn acknowledging_records_deleted_meanwhile_says_they_may_have_been_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    config(&client, "g", &[("start", "earliest")])
        .await
        .unwrap();
    produce(&client, "t", 0, values("v", 50)).await;
    let held = ids(&fetch(&client, "g", "m", "t", 30, 0).await.records);
    assert_eq!(held.len(), 30);
    client
        .admin()
        .delete_records("t", 0, Some(50))
        .await
        .unwrap();
    // Another member's fetch moves the group past the deleted records.
    assert!(fetch(&client, "g", "n", "t", 30, 0)
        .await
        .records
        .is_empty());
    let refused = ack(&client, "g", "m", "t", &held, AckType::Accept)
        .await
        .unwrap();
    assert_eq!(refused.len(), 30);
    assert!(
        refused.iter().all(|r| r.message.contains("deleted")),
        "{:?}",
        refused[0]
    );
}

/// SIGKILL soak finding: records locked, then deleted by DeleteRecords, then rejected,
/// had nothing to dead-letter and were counted as dead-lettered, though no dead-letter
/// topic held them. They are lost, as records deleted before they were finished are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_deleted_meanwhile_count_as_lost_not_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    client
        .admin()
        .create_topic("dead", 1, Default::default())
        .await
        .unwrap();
    let settings = [("start", "earliest"), ("dead.letter.topic", "dead")];
    config(&client, "g", &settings).await.unwrap();
    produce(&client, "t", 0, values("v", 10)).await;
    let held = ids(&fetch(&client, "g", "m", "t", 10, 0).await.records);
    assert_eq!(held.len(), 10);
    client
        .admin()
        .delete_records("t", 0, Some(5))
        .await
        .unwrap();
    ack(&client, "g", "m", "t", &held, AckType::Reject)
        .await
        .unwrap();
    let p = &describe(&client, "g").await.partitions[0];
    assert_eq!((p.dead_lettered, p.lost), (5, 5), "{p:?}");
    server.stop().await.unwrap();
}

/// A topic deleted and made again: the group forgets the old one's records (its members
/// were counted as holding them for good, and every incarnation's window stayed in
/// memory and in the group's files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topics_records_are_forgotten_by_its_share_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let member = fetch(&client, "g", "", "t", 1, 0).await.member_id;
    produce(&client, "t", 0, values("old", 20)).await;
    assert_eq!(
        fetch(&client, "g", &member, "t", 100, 0)
            .await
            .records
            .len(),
        20
    );
    let held = |d: pb::DescribeShareGroupResponse| d.members[0].records_held;
    assert_eq!(held(describe(&client, "g").await), 20);

    let mut admin = client.admin();
    admin.delete_topic("t").await.unwrap();
    admin.create_topic("t", 1, BTreeMap::new()).await.unwrap();
    fetch(&client, "g", &member, "t", 1, 0).await; // the group starts on the new one
    produce(&client, "t", 0, values("new", 5)).await;
    let r = fetch(&client, "g", &member, "t", 100, 0).await;
    assert_eq!(r.records.len(), 5);
    let d = describe(&client, "g").await;
    assert_eq!(d.partitions.len(), 1, "{:?}", d.partitions);
    assert_eq!(held(d), 5, "the deleted topic's records are not held");
    server.stop().await.unwrap();
}
