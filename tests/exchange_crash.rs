//! `strom serve` killed with SIGKILL in the middle of bursts of binding changes and
//! publishes: after each restart, every bind and unbind that was acknowledged holds,
//! `exchanges.json` reads, and every acknowledged publish is in each topic it named.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cli::Serve;
use common::{env_or, free_addr, Rng};
use strom::client::Client;
use strom::grpc::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_and_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut rng = Rng(env_or("STROM_CRASH_SEED", 7));
    let mut serve = Serve::start_at(dir.path(), &addr);
    let client = Client::connect(&addr).await.unwrap();
    for topic in ["a", "b"] {
        let mut admin = client.admin();
        admin
            .create_topic(topic, 1, Default::default())
            .await
            .unwrap();
    }
    let mut exchanges = client.exchanges();
    exchanges.create("x", "direct").await.unwrap();
    exchanges.bind("x", "a", "publish").await.unwrap();
    exchanges.bind("x", "b", "publish").await.unwrap();
    // Keys acknowledged bound (and not since unbound), and publishes acknowledged.
    let mut bound: BTreeSet<String> = BTreeSet::new();
    let mut published = 0u64;
    for round in 0..env_or("STROM_EXCHANGE_KILLS", 5) {
        let client = Client::connect(&addr).await.unwrap();
        let changes: Vec<_> = (0..300u64)
            .map(|i| {
                let mut exchanges = client.exchanges();
                let key = format!("k{}", (round * 300 + i) % 400);
                // Two in three bind, the rest unbind a key perhaps bound before.
                tokio::spawn(async move {
                    let done = match i % 3 {
                        0 => exchanges.unbind("x", "a", &key).await.map(|_| false),
                        _ => exchanges.bind("x", "a", &key).await.map(|_| true),
                    };
                    (key, done)
                })
            })
            .collect();
        let publishes: Vec<_> = (0..100)
            .map(|_| {
                let mut exchanges = client.exchanges();
                tokio::spawn(async move {
                    let record = pb::Record {
                        value: bytes::Bytes::from_static(b"v"),
                        ..Default::default()
                    };
                    let durability = pb::Durability::Fsync;
                    exchanges
                        .publish("x", "publish", vec![record], durability)
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.below(60) + 5)).await;
        serve.child.kill().unwrap();
        serve.child.wait().unwrap();
        // An unacknowledged change may or may not have happened: nothing is claimed
        // of its key.
        let mut unbound = BTreeSet::new();
        for change in changes {
            match change.await.unwrap() {
                (key, Ok(true)) => {
                    bound.insert(key);
                }
                (key, Ok(false)) => {
                    bound.remove(&key);
                    unbound.insert(key);
                }
                (key, Err(_)) => {
                    bound.remove(&key);
                }
            }
        }
        for publish in publishes {
            if let Ok(answer) = publish.await.unwrap() {
                assert_eq!(answer.topics.len(), 2, "{answer:?}");
                published += 1;
            }
        }
        serve = Serve::start_at(dir.path(), &addr);
        let client = Client::connect(&addr).await.unwrap();
        let described = client.exchanges().describe("x").await.unwrap();
        let on_a: BTreeSet<String> = described
            .bindings
            .iter()
            .filter(|b| b.topic == "a" && b.key != "publish")
            .map(|b| b.key.clone())
            .collect();
        let missing: Vec<_> = bound.difference(&on_a).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged binds lost: {missing:?}"
        );
        let back: Vec<_> = unbound.intersection(&on_a).collect();
        assert!(
            back.is_empty(),
            "round {round}: acknowledged unbinds undone: {back:?}"
        );
        for topic in ["a", "b"] {
            let info = client.admin().describe_topic(topic).await.unwrap();
            let stored = info.partitions[0].high_watermark;
            assert!(
                stored >= published,
                "round {round}: {topic} holds {stored} of {published}"
            );
        }
        // Start the next round from what the server holds.
        bound = on_a;
    }
}
