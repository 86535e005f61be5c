//! Tests of `produce_stream.rs`: its push-back, the order of its replies, and its yields.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::broker::Limits;

/// A broker in a new directory (kept while the returned guard lives) with topic "t" of
/// one partition at `durability`.
async fn broker_with_topic(durability: &str) -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    let config = [("durability".to_string(), durability.to_string())].into();
    broker.create_topic("t", 1, &config).await.unwrap();
    (dir, broker)
}

/// Both ways a request is appended (by the reading task, and by the appender for
/// larger ones) stop reading once MAX_UNANSWERED replies wait for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_stream_whose_replies_are_not_taken_stops_reading_requests() {
    for size in [1, APPEND_IN_READER_BYTES + 1] {
        let (_dir, broker) = broker_with_topic("fsync").await;
        // An endless client, counting the requests the server has pulled.
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&pulled);
        let value = Bytes::from(vec![b'x'; size]);
        let requests = tokio_stream::iter(0u64..).map(move |id| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(pb::ProduceStreamRequest {
                correlation_id: id,
                request: Some(pb::ProduceRequest::decode_from(
                    "t",
                    &pb::Record {
                        value: value.clone(),
                        ..Default::default()
                    },
                )),
            })
        });
        // The replies are never taken.
        let replies = produce_stream(
            broker,
            Box::pin(requests),
            Charge::default(),
            (Access::Everything, None),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let taken = pulled.load(Ordering::Relaxed);
        assert!(
            taken <= MAX_UNANSWERED as u64 + 2,
            "{size}-byte values: {taken} requests pulled while no reply was taken"
        );
        drop(replies);
    }
}

/// A durable request in a burst is answered after the requests sent before it, even
/// when its fsync ends while the burst would still hold their replies: here the
/// stream's poll for the next request blocks for 300 ms and then returns it, so the
/// reading task never sees Pending and the burst goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_request_in_a_burst_is_answered_after_the_earlier_ones() {
    let (_dir, broker) = broker_with_topic("page_cache").await;
    let requests = tokio_stream::iter(0u64..8).map(|id| {
        if id == 4 {
            // Blocks the reading task in its poll, so the burst goes on; the
            // worker's queue, where the fsync's reply task waits, moves to another
            // thread meanwhile.
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(300)));
        }
        let mut request = pb::ProduceRequest::decode_from(
            "t",
            &pb::Record {
                value: Bytes::from(vec![b'x'; 10]),
                ..Default::default()
            },
        );
        if id == 3 {
            request.durability = pb::Durability::Fsync as i32;
        }
        Ok(pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(request),
        })
    });
    let replies = produce_stream(
        broker,
        Box::pin(requests),
        Charge::default(),
        (Access::Everything, None),
    );
    let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(10), replies.collect())
        .await
        .expect("every request answered");
    let order: Vec<u64> = replies
        .into_iter()
        .map(|reply| reply.unwrap().correlation_id)
        .collect();
    let durable = order.iter().position(|&id| id == 3).unwrap();
    let mut earlier = order[..durable].to_vec();
    earlier.sort_unstable();
    assert_eq!(earlier, [0, 1, 2], "replies in the order {order:?}");
}

/// A client that sends without pause, to a stream whose replies nobody takes (they
/// are dropped, so every turn comes back at once): the reading task must still let
/// the other tasks of its thread run. On a one-thread runtime, a sleep of the test
/// itself ends only if it does; the test runs on a thread of its own so that a
/// task that never yields fails it rather than hanging it.
#[test]
fn a_stream_that_never_waits_still_yields_its_thread() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_dir, broker) = broker_with_topic("page_cache").await;
            let request = pb::ProduceRequest::decode_from(
                "t",
                &pb::Record {
                    value: Bytes::from_static(b"endless"),
                    ..Default::default()
                },
            );
            let requests = tokio_stream::iter(0u64..).map(move |id| {
                Ok(pb::ProduceStreamRequest {
                    correlation_id: id,
                    request: Some(request.clone()),
                })
            });
            drop(produce_stream(
                broker,
                Box::pin(requests),
                Charge::default(),
                (Access::Everything, None),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        drop(runtime);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the test's sleep ended and the runtime shut down");
}

/// Large requests (`ALONE_AT_LEAST_BYTES`), most sent after a pause and every third
/// at once: one sent after a pause finds the appender idle and, when the next is also
/// paused, nothing after it, so the reading task appends it itself; one followed at
/// once is read ahead and the one in hand goes to the appender; the last is followed
/// by the stream's end. Every one is answered, in the order sent, at the offset of its
/// place in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_alone_or_read_ahead_are_appended_in_the_order_sent() {
    let (_dir, broker) = broker_with_topic("page_cache").await;
    let value = Bytes::from(vec![b'x'; ALONE_AT_LEAST_BYTES]);
    let requests = futures_util::StreamExt::then(tokio_stream::iter(0u64..12), move |id| {
        let value = value.clone();
        async move {
            if id % 3 != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let record = pb::Record {
                value,
                ..Default::default()
            };
            Ok(pb::ProduceStreamRequest {
                correlation_id: id,
                request: Some(pb::ProduceRequest::decode_from("t", &record)),
            })
        }
    });
    let replies = produce_stream(
        broker,
        Box::pin(requests),
        Charge::default(),
        (Access::Everything, None),
    );
    let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(10), replies.collect())
        .await
        .expect("every request answered");
    let answered: Vec<(u64, u64)> = replies
        .into_iter()
        .map(|reply| {
            let reply = reply.unwrap();
            match reply.result {
                Some(pb::produce_stream_response::Result::Response(r)) => {
                    (reply.correlation_id, r.base_offset)
                }
                other => panic!("request {} failed: {other:?}", reply.correlation_id),
            }
        })
        .collect();
    let expected: Vec<(u64, u64)> = (0..12).map(|id| (id, id)).collect();
    assert_eq!(answered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_that_does_not_decode_ends_the_stream_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    let requests = tokio_stream::iter(vec![Err(Status::invalid_argument("not protobuf"))]);
    let mut replies = produce_stream(
        broker,
        Box::pin(requests),
        Charge::default(),
        (Access::Everything, None),
    );
    let ended = replies.next().await.expect("a final item");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// Requests read before a message that does not decode are appended, and answered
/// before the status ends the stream: durable ones too, whose replies wait for their
/// fsync. The status went out first, and tonic ended the stream on it, so their
/// records were stored unacknowledged (a review found 48 of 50 replies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_a_bad_message_are_answered_before_the_stream_ends() {
    let (_dir, broker) = broker_with_topic("fsync").await;
    let mut requests: Vec<Result<pb::ProduceStreamRequest, Status>> = (0u64..50)
        .map(|id| {
            let record = pb::Record {
                value: Bytes::from(vec![b'x'; 10]),
                ..Default::default()
            };
            Ok(pb::ProduceStreamRequest {
                correlation_id: id,
                request: Some(pb::ProduceRequest::decode_from("t", &record)),
            })
        })
        .collect();
    requests.push(Err(Status::invalid_argument("not protobuf")));
    let replies = produce_stream(
        broker,
        Box::pin(tokio_stream::iter(requests)),
        Charge::default(),
        (Access::Everything, None),
    );
    let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(20), replies.collect())
        .await
        .expect("the stream ends");
    let (last, answers) = replies.split_last().expect("replies");
    assert_eq!(
        last.as_ref().unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut ids: Vec<u64> = answers
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("an answer before the status")
                .correlation_id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
}

/// A request's share of the produce budget goes back once the request is answered,
/// whether or not the client takes the reply: a client that never reads its replies
/// (its HTTP/2 window shut) held the server-wide budget, and every producer on the
/// server waited (found by a hostile client). Only the stream's own turns wait for the
/// client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_request_gives_its_budget_back_before_its_reply_is_taken() {
    for durability in ["page_cache", "fsync"] {
        let (_dir, broker) = broker_with_topic(durability).await;
        let budget = Arc::new(Semaphore::new(10));
        let charge = Charge::default();
        for _ in 0..3 {
            charge.push(Arc::clone(&budget).try_acquire_many_owned(3).unwrap());
        }
        let requests = tokio_stream::iter(0u64..3)
            .map(|id| {
                Ok(pb::ProduceStreamRequest {
                    correlation_id: id,
                    request: Some(pb::ProduceRequest::decode_from(
                        "t",
                        &pb::Record {
                            value: Bytes::from_static(b"v"),
                            ..Default::default()
                        },
                    )),
                })
            })
            // The client keeps its side open.
            .chain(tokio_stream::pending());
        // The replies are never taken.
        let replies = produce_stream(
            broker,
            Box::pin(requests),
            charge,
            (Access::Everything, None),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while budget.available_permits() < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "{durability}: {} of 10 permits back",
                budget.available_permits()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(replies);
    }
}
