//! Exchanges: a publish is appended to every topic a binding takes it to, checked for
//! every topic before any append, and refused when no binding takes it; exchanges and
//! bindings survive a restart, and a deleted topic takes its bindings.

mod common;

use std::collections::BTreeMap;

use common::exchanges::{keyed, publish, records, topic, topics};
use common::requests::{config, record};
use common::server::TestServer;
use strom::grpc::pb;
use tonic::Code;

#[tokio::test]
async fn a_publish_reaches_every_topic_a_binding_takes_it_to() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    topic(&client, "eu", 2, &[]).await;
    topic(&client, "all", 1, &[]).await;
    topic(&client, "created", 1, &[]).await;
    let mut exchanges = client.exchanges();
    exchanges.create("orders", "topic").await.unwrap();
    assert!(exchanges.bind("orders", "eu", "eu.#").await.unwrap());
    assert!(exchanges.bind("orders", "all", "#").await.unwrap());
    assert!(exchanges
        .bind("orders", "created", "*.created")
        .await
        .unwrap());
    assert!(exchanges.bind("orders", "eu", "*.created").await.unwrap());
    assert!(!exchanges.bind("orders", "eu", "eu.#").await.unwrap());

    // Bound twice, "eu" gets the records once; every topic its batch, whole.
    let batch = vec![keyed("k1", "a"), keyed("k1", "b"), keyed("k1", "c")];
    let published = exchanges
        .publish("orders", "eu.created", batch, pb::Durability::Fsync)
        .await
        .unwrap();
    assert_eq!(topics(&published), ["all", "created", "eu"]);
    for p in &published.topics {
        assert_eq!((p.base_offset, p.last_offset), (0, 2), "{p:?}");
    }
    let eu = records(&client, "eu").await;
    assert_eq!(eu.len(), 3);
    let partition = published.topics[2].partition;
    for (i, (p, key, value, headers)) in eu.iter().enumerate() {
        assert_eq!(*p, partition, "by the key's hash, as Produce");
        assert_eq!(key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(value, ["a", "b", "c"][i]);
        assert_eq!(*headers, 1);
    }
    let shipped = publish(&mut exchanges, "orders", "us.shipped", vec![record("d")])
        .await
        .unwrap();
    assert_eq!(topics(&shipped), ["all"]);
    assert_eq!(records(&client, "all").await.len(), 4);
    assert_eq!(records(&client, "created").await.len(), 3);

    // Without keys, a topic's partitions take publishes in turn.
    let first = publish(&mut exchanges, "orders", "eu.x", vec![record("e")]).await;
    let second = publish(&mut exchanges, "orders", "eu.x", vec![record("f")]).await;
    let eu_partition = |p: pb::PublishResponse| p.topics[1].partition;
    assert_ne!(
        eu_partition(first.unwrap()),
        eu_partition(second.unwrap()),
        "one partition for both"
    );

    // A key no binding takes: refused, nothing stored, unless the publisher accepts
    // the drop.
    exchanges.unbind("orders", "all", "#").await.unwrap();
    assert!(!exchanges.unbind("orders", "all", "#").await.unwrap());
    let refused = publish(&mut exchanges, "orders", "us.shipped", vec![record("g")]).await;
    let status = refused.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("drop_unroutable"), "{status:?}");
    let dropped = exchanges
        .publish_request(pb::PublishRequest {
            exchange: "orders".into(),
            routing_key: "us.shipped".into(),
            records: vec![record("g")],
            drop_unroutable: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(dropped.topics.is_empty());
    assert_eq!(records(&client, "all").await.len(), 6);

    // Direct and fanout.
    exchanges.create("exact", "direct").await.unwrap();
    exchanges
        .bind("exact", "created", "eu.created")
        .await
        .unwrap();
    let direct = publish(&mut exchanges, "exact", "eu.*", vec![record("h")]).await;
    assert_eq!(direct.unwrap_err().code(), Code::FailedPrecondition);
    let direct = publish(&mut exchanges, "exact", "eu.created", vec![record("h")]).await;
    assert_eq!(topics(&direct.unwrap()), ["created"]);
    exchanges.create("everyone", "fanout").await.unwrap();
    exchanges.bind("everyone", "all", "").await.unwrap();
    exchanges.bind("everyone", "eu", "").await.unwrap();
    let fanned = publish(&mut exchanges, "everyone", "anything", vec![record("i")]).await;
    assert_eq!(topics(&fanned.unwrap()), ["all", "eu"]);

    let listed = exchanges.list().await.unwrap();
    let listed: Vec<(&str, &str, u32)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.r#type.as_str(), e.bindings))
        .collect();
    assert_eq!(
        listed,
        [
            ("everyone", "fanout", 2),
            ("exact", "direct", 1),
            ("orders", "topic", 3)
        ]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_publish_one_topic_refuses_writes_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    topic(&client, "big", 1, &[]).await;
    topic(&client, "small", 1, &[("max.message.bytes", "100")]).await;
    topic(&client, "many", 3, &[]).await;
    topic(&client, "compacted", 1, &[("cleanup.policy", "compact")]).await;
    let mut exchanges = client.exchanges();
    exchanges.create("fan", "fanout").await.unwrap();
    exchanges.bind("fan", "big", "").await.unwrap();
    exchanges.bind("fan", "small", "").await.unwrap();

    // "big" comes first and would take it; "small" refuses it.
    let large = record(&"x".repeat(500));
    let status = publish(&mut exchanges, "fan", "", vec![large])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Keys that one topic's partition count splits.
    exchanges.unbind("fan", "small", "").await.unwrap();
    exchanges.bind("fan", "many", "").await.unwrap();
    let split = (0..20).map(|i| keyed(&format!("k{i}"), "v")).collect();
    let status = publish(&mut exchanges, "fan", "", split).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A compacted topic takes only keyed records.
    exchanges.bind("fan", "compacted", "").await.unwrap();
    let status = publish(&mut exchanges, "fan", "", vec![record("no key")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("compacted"), "{status:?}");
    for topic in ["big", "small", "many", "compacted"] {
        assert!(
            records(&client, topic).await.is_empty(),
            "{topic} took some"
        );
    }
    let fine = publish(&mut exchanges, "fan", "", vec![keyed("k", "v")]).await;
    assert_eq!(topics(&fine.unwrap()), ["big", "compacted", "many"]);

    // Bad requests, each with its code.
    let cases: Vec<(Result<(), tonic::Status>, Code)> = vec![
        (exchanges.create("fan", "topic").await, Code::AlreadyExists),
        (
            exchanges.create("h", "headers").await,
            Code::InvalidArgument,
        ),
        (
            exchanges.create("a/b", "topic").await,
            Code::InvalidArgument,
        ),
        (exchanges.delete("nothing").await, Code::NotFound),
        (
            exchanges.bind("fan", "no-such-topic", "").await.map(drop),
            Code::NotFound,
        ),
        (
            exchanges.bind("fan", "big", "key").await.map(drop),
            Code::InvalidArgument,
        ),
        (
            exchanges.bind("nothing", "big", "").await.map(drop),
            Code::NotFound,
        ),
        (
            publish(&mut exchanges, "nothing", "", vec![record("v")])
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            publish(&mut exchanges, "fan", &"k".repeat(256), vec![record("v")])
                .await
                .map(drop),
            Code::InvalidArgument,
        ),
        (
            publish(&mut exchanges, "fan", "", vec![]).await.map(drop),
            Code::InvalidArgument,
        ),
    ];
    for (i, (result, code)) in cases.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), code, "case {i}");
    }
    exchanges.create("t", "topic").await.unwrap();
    let status = exchanges.bind("t", "big", "eu.or*").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("stand alone"), "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn exchanges_survive_a_restart_and_a_deleted_topic_takes_its_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start(&data).await;
    let client = server.client().await;
    topic(&client, "a", 1, &[]).await;
    topic(&client, "b", 1, &[]).await;
    let mut exchanges = client.exchanges();
    exchanges.create("x", "direct").await.unwrap();
    exchanges.bind("x", "a", "k").await.unwrap();
    exchanges.bind("x", "b", "k").await.unwrap();
    server.stop().await.unwrap();

    let server = TestServer::start(&data).await;
    let client = server.client().await;
    let mut exchanges = client.exchanges();
    let described = exchanges.describe("x").await.unwrap();
    assert_eq!(described.r#type, "direct");
    let bound = |d: &pb::DescribeExchangeResponse| -> BTreeMap<String, String> {
        d.bindings
            .iter()
            .map(|b| (b.topic.clone(), b.key.clone()))
            .collect()
    };
    assert_eq!(bound(&described), config(&[("a", "k"), ("b", "k")]));

    // A deleted topic takes its bindings, and one made again under its name is not
    // bound.
    client.admin().delete_topic("a").await.unwrap();
    assert_eq!(
        bound(&exchanges.describe("x").await.unwrap()),
        config(&[("b", "k")])
    );
    topic(&client, "a", 1, &[]).await;
    let published = publish(&mut exchanges, "x", "k", vec![record("v")]).await;
    assert_eq!(topics(&published.unwrap()), ["b"]);
    assert!(records(&client, "a").await.is_empty());
    exchanges.delete("x").await.unwrap();
    server.stop().await.unwrap();

    let server = TestServer::start(&data).await;
    let mut exchanges = server.client().await.exchanges();
    assert!(exchanges.list().await.unwrap().is_empty());
    server.stop().await.unwrap();
}
