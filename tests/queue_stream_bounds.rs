//! A ShareStream's acknowledgements against a hostile or careless client: a stream
//! whose answers are never read holds a bounded number of acknowledgements, and a bad
//! acknowledgement message fails alone, whatever arrived with it.

mod common;

use std::time::{Duration, Instant};

use common::cli::Serve;
use common::server::TestServer;
use strom::client::Client;
use strom::grpc::pb::{self, share_stream_request::Body, AckType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(60);

fn open(group: &str) -> pb::ShareStreamRequest {
    pb::ShareStreamRequest {
        body: Some(Body::Open(pb::ShareStreamOpen {
            group: group.into(),
            member_id: String::new(),
            topic: "t".into(),
        })),
    }
}

fn acks(acks: Vec<pb::Acknowledgement>) -> pb::ShareStreamRequest {
    pb::ShareStreamRequest {
        body: Some(Body::Acks(pb::ShareStreamAcks { acks })),
    }
}

fn accept(partition: u32, offsets: Vec<u64>) -> pb::Acknowledgement {
    pb::Acknowledgement {
        partition,
        offsets,
        r#type: AckType::Accept as i32,
    }
}

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// The server as its own process (its memory is measured), with topic `t`.
async fn serve_with_topic(dir: &std::path::Path) -> (Serve, Client) {
    let serve = Serve::start(dir);
    let client = Client::connect(&serve.addr).await.unwrap();
    client
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    (serve, client)
}

/// Opens a stream of group `group` on `client`, fed by the returned sender, and reads
/// its first answer (the member's id).
async fn joined_stream(
    client: &Client,
    group: &str,
) -> (
    mpsc::UnboundedSender<pb::ShareStreamRequest>,
    tonic::Streaming<pb::ShareStreamResponse>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(open(group)).unwrap();
    let mut inbound = client
        .queues()
        .share_stream(UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(LIMIT, inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.member_id.is_empty());
    (tx, inbound)
}

/// Opens a stream of group `group` on a connection of its own, and stalls its
/// acknowledgement applier: `refused` answers of 10,000 refusals (offsets never
/// delivered, about 1 MB an answer), never read, fill the stream's window.
async fn stalled_stream(
    addr: &str,
    group: &str,
    refused: u64,
) -> (
    mpsc::UnboundedSender<pb::ShareStreamRequest>,
    tonic::Streaming<pb::ShareStreamResponse>,
    Client,
) {
    // A connection each: unread answers fill the connection's window too.
    let own = Client::connect(addr).await.unwrap();
    let (tx, inbound) = joined_stream(&own, group).await;
    for i in 0..refused {
        let never = (0..10_000).map(|o| (1 << 40) + i * 10_000 + o).collect();
        tx.send(acks(vec![accept(0, never)])).unwrap();
    }
    (tx, inbound, own)
}

/// The server's resident size once it has stopped growing (within `LIMIT`).
async fn settled_rss_mb(pid: u32) -> u64 {
    let mut last = rss_mb(pid);
    let deadline = Instant::now() + LIMIT;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = rss_mb(pid);
        if now <= last + 2 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Found by a hostile client: a stream whose answers are not read stalls the server's
/// applier (its refusals wait to be sent), and the server read on, queueing 64
/// messages a stream, each decoded to tens of times its size. Now it reads no further
/// than two messages' worth of acknowledgements ahead of the applier. Twenty such
/// streams sending a hundred messages of 10,000 empty entries each grew the server by
/// 394 MB; the bound leaves the HTTP/2 windows' unread bytes (64 MiB a
/// connection) and a few MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_answers_are_not_read_holds_few_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, client) = serve_with_topic(dir.path()).await;
    let pid = serve.child.id();
    let before = rss_mb(pid);
    let mut streams = Vec::new();
    for s in 0..20 {
        let (tx, inbound, own) = stalled_stream(&serve.addr, &format!("g{s}"), 40).await;
        // Then 20 KB messages that decode to about 400 KB each.
        for _ in 0..100 {
            tx.send(acks(vec![accept(0, Vec::new()); 10_000])).unwrap();
        }
        streams.push((tx, inbound, own));
    }
    let last = settled_rss_mb(pid).await;
    let grown = last.saturating_sub(before);
    eprintln!("the server grew by {grown} MB ({before} MB before)");
    assert!(
        grown < 250,
        "the server grew by {grown} MB ({before} MB before) holding unread streams' acks"
    );
    // The server still answers others.
    let mut admin = client.admin();
    tokio::time::timeout(Duration::from_secs(10), admin.list_topics())
        .await
        .expect("the server answers")
        .unwrap();
    drop(streams);
}

/// Found by a hostile client: acknowledgements that arrive while the previous ones are
/// applied are applied together, and one for a partition that does not exist failed
/// them all, so valid ACCEPTs sent before it were dropped, more or fewer by timing.
/// Now a stream checks each message as it reads it: those before the bad one are
/// applied, and the stream ends with the bad one's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_acknowledgement_on_a_stream_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let records: Vec<pb::Record> = (0..100)
        .map(|i| pb::Record {
            value: format!("v{i}").into_bytes().into(),
            ..Default::default()
        })
        .collect();
    client
        .log()
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records,
            ..Default::default()
        })
        .await
        .unwrap();
    // Several rounds: which acknowledgements arrive together is a matter of timing.
    for round in 0..5 {
        let group = format!("g{round}");
        let config = pb::AlterShareGroupConfigRequest {
            group: group.clone(),
            config: [("start".to_string(), "earliest".to_string())].into(),
        };
        client
            .queues()
            .alter_share_group_config(config)
            .await
            .unwrap();
        let (tx, mut inbound) = joined_stream(&client, &group).await;
        tx.send(pb::ShareStreamRequest {
            body: Some(Body::Credits(100)),
        })
        .unwrap();
        let mut held = Vec::new();
        while held.len() < 100 {
            let m = tokio::time::timeout(LIMIT, inbound.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            held.extend(m.records.iter().map(|r| r.record.as_ref().unwrap().offset));
        }
        for offset in held {
            tx.send(acks(vec![accept(0, vec![offset])])).unwrap();
        }
        tx.send(acks(vec![accept(5, vec![0])])).unwrap();
        let ended = loop {
            match tokio::time::timeout(LIMIT, inbound.message())
                .await
                .unwrap()
            {
                Ok(Some(m)) => assert!(m.refused.is_empty(), "{:?}", m.refused),
                Ok(None) => panic!("the stream ended without the bad message's error"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), Code::NotFound, "{ended:?}");
        assert!(
            ended.message().contains("partition 5"),
            "{}",
            ended.message()
        );
        let described = client
            .queues()
            .describe_share_group(pb::DescribeShareGroupRequest {
                group: group.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let accepted: u64 = described.partitions.iter().map(|p| p.accepted).sum();
        assert_eq!(accepted, 100, "round {round}: {described:?}");
    }
}

/// A queue request is at most 1 MiB (an acknowledgement of 10,000 offsets is far
/// less): a larger one is refused before it is decoded, not decoded to tens of times
/// its size first (found by a hostile client: four 16 MB ShareAcknowledges of empty
/// entries held 1 GB).
#[tokio::test]
async fn a_queue_request_over_1_mib_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let request = pb::ShareAcknowledgeRequest {
        group: "g".into(),
        member_id: "m".into(),
        topic: "t".into(),
        acks: vec![accept(0, Vec::new()); 600_000],
    };
    let refused = client
        .queues()
        .share_acknowledge(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("1048576"),
        "{}",
        refused.message()
    );
}

/// Found in review: a message with no acknowledgements counted for none, took no
/// place, and queued without end behind a stalled applier (7 bytes sent, about 40
/// held). Two million of them grew the server by 93 MB; each takes a place now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_acknowledgement_messages_take_places_too() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, _client) = serve_with_topic(dir.path()).await;
    let pid = serve.child.id();
    // Enough refusals that the applier stalls on an unread answer, few enough that
    // the reader is not then held back by the places of refusals still queued (over
    // loopback here: 10 answers pass, 12 stall it with at most 2 queued).
    let (tx, inbound, own) = stalled_stream(&serve.addr, "g", 12).await;
    let before = settled_rss_mb(pid).await;
    for _ in 0..2_000_000 {
        tx.send(acks(Vec::new())).unwrap();
    }
    let last = settled_rss_mb(pid).await;
    let grown = last.saturating_sub(before);
    eprintln!("the server grew by {grown} MB ({before} MB before)");
    assert!(
        grown < 40,
        "the server grew by {grown} MB holding empty acks"
    );
    drop((tx, inbound, own));
}

/// A stream message over the Queues service's 1 MiB ends the stream with the reason,
/// not with OK (found in review: the decode error was dropped).
#[tokio::test]
async fn a_stream_message_over_1_mib_ends_the_stream_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    let (tx, mut inbound) = joined_stream(&client, "g").await;
    tx.send(acks(vec![accept(0, Vec::new()); 600_000])).unwrap();
    let ended = tokio::time::timeout(LIMIT, inbound.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert!(ended.message().contains("1048576"), "{}", ended.message());
}
