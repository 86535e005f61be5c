//! ProduceStream end to end: a pipeline of requests on one stream, against the real
//! server on 127.0.0.1:0. Every test is bounded in time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fetch_all;
use common::requests::{config, produce, record};
use common::server::TestServer;
use strom::grpc::pb::{self, subscribe_request::Start};
use tokio_stream::StreamExt;
use tonic::Code;

/// Sends `requests` on one ProduceStream; its replies in the order they came, each as
/// (correlation id, base offset or error code).
async fn produce_stream_replies(
    client: &strom::client::Client,
    requests: Vec<pb::ProduceStreamRequest>,
) -> Vec<(u64, Result<u64, i32>)> {
    let mut replies = client
        .log()
        .produce_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(reply) = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("bounded")
    {
        let reply = reply.unwrap();
        out.push((
            reply.correlation_id,
            match reply.result.unwrap() {
                pb::produce_stream_response::Result::Response(r) => Ok(r.base_offset),
                pb::produce_stream_response::Result::Error(e) => Err(e.code),
            },
        ));
    }
    out
}

#[tokio::test]
async fn produce_stream_pipelines_and_survives_bad_requests_and_hangups() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 1, config(&[("durability", "fsync")]))
        .await
        .unwrap();
    let requests: Vec<_> = (0..50u64)
        .map(|i| pb::ProduceStreamRequest {
            correlation_id: 1000 + i,
            request: Some(if i == 10 {
                produce("nope", None, vec![record("x")])
            } else {
                produce("t", Some(0), vec![record(&i.to_string())])
            }),
        })
        .collect();
    let mut ok = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, result) in produce_stream_replies(&client, requests).await {
        match result {
            Ok(offset) => {
                ok.insert(id, offset);
            }
            Err(code) => errors.push((id, code)),
        }
    }
    assert_eq!(errors, [(1010, Code::NotFound as i32)]);
    assert_eq!(ok.len(), 49);
    let offsets: Vec<u64> = ok.values().copied().collect();
    assert_eq!(
        offsets,
        (0..49).collect::<Vec<_>>(),
        "appended in the order sent"
    );

    // A client that hangs up mid-stream: what was acknowledged stays, others go on.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut replies = client
        .log()
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::ProduceStreamRequest {
        correlation_id: 1,
        request: Some(produce("t", Some(0), vec![record("acked")])),
    })
    .await
    .unwrap();
    let acked = replies.next().await.unwrap().unwrap();
    assert_eq!(acked.correlation_id, 1);
    drop((tx, replies));
    client
        .log()
        .produce(produce("t", Some(0), vec![record("after")]))
        .await
        .unwrap();
    let all = fetch_all(&client, "t", 0).await;
    assert_eq!(
        all[49..].iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["acked", "after"]
    );
    server.stop().await.unwrap();
}

/// Small stream requests that find the appender idle are appended by the task that
/// read them, the rest by the appender: requests of both sizes, sent back to back, must
/// still be appended in the order sent.
#[tokio::test]
async fn produce_stream_keeps_the_order_sent_across_small_and_large_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    for (topic, durability) in [("pc", "page_cache"), ("fs", "fsync")] {
        client
            .admin()
            .create_topic(topic, 1, config(&[("durability", durability)]))
            .await
            .unwrap();
        // Sizes on both sides of the server's limit for appending in the reading task
        // (16 KiB), in runs.
        let values: Vec<String> = (0..60usize)
            .map(|i| {
                let size = if i % 7 < 3 { 20 << 10 } else { 10 };
                format!("{i:03}{}", "v".repeat(size))
            })
            .collect();
        let requests: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| pb::ProduceStreamRequest {
                correlation_id: i as u64,
                request: Some(produce(topic, Some(0), vec![record(v)])),
            })
            .collect();
        let mut offsets: Vec<(u64, u64)> = produce_stream_replies(&client, requests)
            .await
            .into_iter()
            .map(|(id, result)| (id, result.expect(topic)))
            .collect();
        let expected: Vec<(u64, u64)> = (0..60).map(|i| (i, i)).collect();
        if durability == "page_cache" {
            // Answered in the order appended, too.
            assert_eq!(
                offsets, expected,
                "{topic}: request i at offset i, in order"
            );
        }
        // Durable requests are answered as their fsyncs end, in any order.
        offsets.sort();
        assert_eq!(offsets, expected, "{topic}: request i at offset i");
        let stored: Vec<String> = fetch_all(&client, topic, 0)
            .await
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert!(stored == values, "{topic}: the values in the order sent");
    }
    server.stop().await.unwrap();
}

/// Small requests that arrive together are appended as one burst, whose replies and
/// wake-ups of waiting readers wait for its end (`grpc/produce_stream.rs`, `Burst`).
/// First, bursts broken up by large requests (the appender's) and by a durable one:
/// page-cache replies around them must stay in the order sent. Then, with the readers
/// asleep at the end of the partition, small requests alone, and the stream left
/// open so that no end of stream flushes anything: the subscription and a long poll
/// must be woken, and every request answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_stream_requests_wakes_waiting_readers_and_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    client
        .admin()
        .create_topic("t", 1, config(&[("durability", "page_cache")]))
        .await
        .unwrap();
    let mut subscription = client
        .log()
        .subscribe(pb::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            start: Some(Start::Latest(true)),
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(300);
    let mut replies = client
        .log()
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut values = Vec::new();
    let mut long_poll = None;
    for (first, count) in [(0u64, 250u64), (250, 50)] {
        if first > 0 {
            let mut waiting = client.log();
            long_poll = Some(tokio::spawn(async move {
                let request = pb::FetchRequest {
                    topic: "t".into(),
                    partition: 0,
                    offset: first,
                    max_wait_ms: 30_000,
                    ..Default::default()
                };
                waiting.fetch(request).await.unwrap().into_inner()
            }));
            // Both readers asleep at the end before the small requests come.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for i in first..first + count {
            let size = if i % 50 == 49 && i < 250 {
                20 << 10
            } else {
                10
            };
            let value = format!("{i:03}{}", "v".repeat(size));
            let mut request = produce("t", Some(0), vec![record(&value)]);
            if i == 120 {
                request.durability = pb::Durability::Fsync as i32;
            }
            values.push(value);
            tx.send(pb::ProduceStreamRequest {
                correlation_id: i,
                request: Some(request),
            })
            .await
            .unwrap();
        }
        let mut answered = Vec::new();
        while answered.len() < count as usize {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .expect("every request answered while the stream stays open")
                .unwrap()
                .unwrap();
            let offset = match reply.result.unwrap() {
                pb::produce_stream_response::Result::Response(r) => r.base_offset,
                pb::produce_stream_response::Result::Error(e) => panic!("{}", e.message),
            };
            answered.push((reply.correlation_id, offset));
        }
        // The durable request is answered when its fsync ends, after every request sent
        // before it; the rest in order.
        if let Some(durable) = answered.iter().position(|&(id, _)| id == 120) {
            let earlier = answered[..durable].iter().filter(|&&(id, _)| id < 120);
            assert_eq!(
                earlier.count(),
                120,
                "request 120 answered before an earlier one"
            );
            assert_eq!(answered.remove(durable), (120, 120));
        }
        let expected: Vec<(u64, u64)> = (first..first + count)
            .filter(|&i| i != 120)
            .map(|i| (i, i))
            .collect();
        assert_eq!(
            answered, expected,
            "request i at offset i, answered in order"
        );

        let mut delivered = 0;
        while delivered < count {
            let message = tokio::time::timeout(Duration::from_secs(10), subscription.next())
                .await
                .expect("the waiting subscription woken while the stream stays open")
                .unwrap()
                .unwrap();
            for r in message.records.iter() {
                let r = r.unwrap();
                assert_eq!(r.value, values[r.offset as usize].as_bytes());
                delivered += 1;
            }
        }
        assert_eq!(delivered, count, "nothing delivered twice");
    }
    let polled = tokio::time::timeout(Duration::from_secs(10), long_poll.unwrap())
        .await
        .expect("the long poll woken while the stream stays open")
        .unwrap();
    assert_eq!(polled.records.iter().next().unwrap().unwrap().offset, 250);
    drop(tx);
    server.stop().await.unwrap();
}
