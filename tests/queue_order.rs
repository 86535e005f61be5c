//! A key-ordered share group against a real server: three workers take records and, at
//! random, accept or release them; a record is never handed out before every earlier
//! record of its key was accepted, so each key's records are accepted in offset order.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use common::Rng;
use strom::grpc::pb::{self, AckType};

const KEYS: u64 = 4;
const PER_KEY: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_under_random_releases_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    // Enough deliveries that no record runs out (it would be dead-lettered, which also
    // lets the next record of its key go).
    let config = [
        ("start", "earliest"),
        ("key.ordered", "true"),
        ("max.deliveries", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: "g".into(),
            config,
        })
        .await
        .unwrap();
    // Keys interleaved: k0 k1 k2 k3 k0 k1 ...
    let records = (0..KEYS * PER_KEY)
        .map(|i| pb::Record {
            key: Some(Bytes::from(format!("k{}", i % KEYS))),
            value: Bytes::from(i.to_string()),
            ..Default::default()
        })
        .collect();
    let request = pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records,
        ..Default::default()
    };
    client.log().produce(request).await.unwrap();
    // Marked before the acknowledgement is sent: the server may hand out the next
    // record of the key as soon as it applies the acceptance.
    let accepted: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let (client, accepted) = (client.clone(), Arc::clone(&accepted));
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(w + 7);
            let mut queues = client.queues();
            let member = format!("w{w}");
            let mut order: Vec<u64> = Vec::new();
            while accepted.lock().unwrap().len() < (KEYS * PER_KEY) as usize {
                assert!(Instant::now() < deadline, "the queue never drained");
                let r = queues
                    .share_fetch(pb::ShareFetchRequest {
                        group: "g".into(),
                        member_id: member.clone(),
                        topic: "t".into(),
                        max_records: 3,
                        max_wait_ms: 50,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                for shared in r.records {
                    let offset = shared.record.unwrap().offset;
                    {
                        let done = accepted.lock().unwrap();
                        let mut earlier = offset % KEYS;
                        while earlier < offset {
                            assert!(
                                done.contains(&earlier),
                                "{offset} handed out before {earlier} of its key was accepted"
                            );
                            earlier += KEYS;
                        }
                    }
                    let release = rng.below(3) == 0;
                    if !release {
                        accepted.lock().unwrap().insert(offset);
                        order.push(offset);
                    }
                    let kind = if release {
                        AckType::Release
                    } else {
                        AckType::Accept
                    };
                    let refused = queues
                        .share_acknowledge(pb::ShareAcknowledgeRequest {
                            group: "g".into(),
                            member_id: member.clone(),
                            topic: "t".into(),
                            acks: vec![pb::Acknowledgement {
                                partition: 0,
                                offsets: vec![offset],
                                r#type: kind as i32,
                            }],
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .refused;
                    assert!(refused.is_empty(), "{refused:?}");
                }
            }
            order
        }));
    }
    let mut all = HashMap::new();
    for w in workers {
        for offset in w.await.unwrap() {
            assert!(all.insert(offset, ()).is_none(), "{offset} accepted twice");
        }
    }
    assert_eq!(all.len() as u64, KEYS * PER_KEY);
    server.stop().await.unwrap();
}
