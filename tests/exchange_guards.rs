//! Exchanges under an access control list, with topics that cannot be opened, and at
//! their limit of records a publish writes.

mod common;

use common::exchanges::{publish, records, topic, topics};
use common::principals::write_tokens;
use common::requests::record;
use common::server::TestServer;
use strom::client::Client;
use strom::grpc::pb;
use tonic::Code;

/// With an acl: publishing needs write on the exchange only; changing it, admin; a
/// binding, write on its topic too; listings and descriptions show what is granted.
#[tokio::test]
async fn the_acl_decides_who_publishes_and_who_binds() {
    use strom::broker::Limits;
    use strom::client::ConnectOptions;
    use strom::server::{Acl, ServeOptions, Tokens};

    let dir = tempfile::tempdir().unwrap();
    let names = ["publisher", "binder", "ops", "owner", "nobody"];
    write_tokens(&dir.path().join("tokens"), &names);
    let acl = "publisher write exchange:orders\n\
               binder admin exchange:orders\n\
               binder write topic:eu\n\
               ops all topic:* exchange:*\n\
               owner admin topic:secret\n";
    std::fs::write(dir.path().join("acl"), acl).unwrap();
    let options = ServeOptions {
        tokens: Some(Tokens::load(&dir.path().join("tokens")).unwrap()),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.path().join("data"), Limits::default(), options).await;
    let connect = |name: &str| {
        let options = ConnectOptions {
            tls: None,
            token: Some(format!("{name}{name}")),
        };
        let addr = server.addr.to_string();
        async move { Client::connect_with(&addr, options).await.unwrap() }
    };
    let ops = connect("ops").await;
    topic(&ops, "eu", 1, &[]).await;
    topic(&ops, "secret", 1, &[]).await;
    let mut admin = ops.exchanges();
    admin.create("orders", "topic").await.unwrap();
    admin.create("other", "fanout").await.unwrap();
    admin.bind("orders", "secret", "#").await.unwrap();

    let denied = |result: Result<(), tonic::Status>, says: &str| {
        let status = result.expect_err("granted what no line grants");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    };
    let mut binder = connect("binder").await.exchanges();
    assert!(binder.bind("orders", "eu", "eu.#").await.unwrap());
    denied(
        binder.bind("orders", "secret", "x").await.map(drop),
        "write topic:secret",
    );
    denied(
        binder.bind("other", "eu", "").await.map(drop),
        "admin exchange:other",
    );
    denied(
        publish(&mut binder, "orders", "eu.x", vec![record("v")])
            .await
            .map(drop),
        "write exchange:orders",
    );
    let seen = binder.describe("orders").await.unwrap();
    let seen: Vec<&str> = seen.bindings.iter().map(|b| b.topic.as_str()).collect();
    assert_eq!(
        seen,
        ["eu"],
        "the binding of a topic it has no grant on is hidden"
    );

    let listed = binder.list().await.unwrap();
    assert_eq!(listed[0].bindings, 1, "counts only what describe shows");

    // The publisher reaches topics it has no grant on (the binders chose them), and
    // is told how many, not which.
    let mut publisher = connect("publisher").await.exchanges();
    let published = publish(&mut publisher, "orders", "eu.x", vec![record("v")]).await;
    let published = published.unwrap();
    assert!(published.topics.is_empty(), "{published:?}");
    assert_eq!(published.other_topics, 2);
    let mut admin_view = admin.clone();
    let published = publish(&mut admin_view, "orders", "eu.x", vec![record("v")]).await;
    assert_eq!(topics(&published.unwrap()), ["eu", "secret"]);
    denied(
        publisher.create("mine", "direct").await,
        "admin exchange:mine",
    );
    denied(publisher.delete("orders").await, "admin exchange:orders");
    denied(
        publisher.unbind("orders", "eu", "eu.#").await.map(drop),
        "admin exchange:orders",
    );
    denied(
        publish(&mut publisher, "other", "", vec![record("v")])
            .await
            .map(drop),
        "write exchange:other",
    );
    let listed = publisher.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "orders");
    assert!(publisher
        .describe("orders")
        .await
        .unwrap()
        .bindings
        .is_empty());

    // A topic's owner can take out a binding into its topic, and only that one.
    let mut owner = connect("owner").await.exchanges();
    assert!(owner.unbind("orders", "secret", "#").await.unwrap());
    // Nor does it learn which exchanges exist.
    assert!(!owner.unbind("no-such", "secret", "#").await.unwrap());
    denied(
        owner.unbind("orders", "eu", "eu.#").await.map(drop),
        "admin exchange:orders",
    );

    // Refused whether or not the exchange exists.
    let mut nobody = connect("nobody").await.exchanges();
    assert!(nobody.list().await.unwrap().is_empty());
    denied(
        nobody.describe("orders").await.map(drop),
        "write exchange:orders",
    );
    denied(
        publish(&mut nobody, "missing", "", vec![record("v")])
            .await
            .map(drop),
        "write exchange:missing",
    );
    assert_eq!(admin.list().await.unwrap().len(), 2);
    server.stop().await.unwrap();
}

/// A bound topic or partition that cannot be opened refuses the whole publish
/// (UNAVAILABLE) before any topic takes it; deleting such a topic takes its bindings.
#[tokio::test]
async fn a_bound_topic_that_cannot_be_opened_refuses_the_publish_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start(&data).await;
    let client = server.client().await;
    for name in ["a", "broken", "halfbroken"] {
        topic(&client, name, 2, &[]).await;
    }
    let mut exchanges = client.exchanges();
    exchanges.create("fan", "fanout").await.unwrap();
    exchanges.create("part", "fanout").await.unwrap();
    for (exchange, topic) in [
        ("fan", "a"),
        ("fan", "broken"),
        ("part", "a"),
        ("part", "halfbroken"),
    ] {
        exchanges.bind(exchange, topic, "").await.unwrap();
    }
    server.stop().await.unwrap();
    // One topic's metadata damaged; one partition of another replaced by a file.
    let broken = common::topic_dir(&data, "broken");
    std::fs::write(broken.join("topic.json"), b"{ not json").unwrap();
    let half = common::topic_dir(&data, "halfbroken").join("1");
    std::fs::remove_dir_all(&half).unwrap();
    std::fs::write(&half, b"not a directory").unwrap();

    let server = TestServer::start(&data).await;
    let client = server.client().await;
    let mut exchanges = client.exchanges();
    let status = publish(&mut exchanges, "fan", "", vec![record("v")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("broken"), "{status:?}");
    // Without keys the partitions take turns: every other publish would go to the
    // partition that cannot be written, and each of those is refused whole.
    let mut refused = 0;
    for _ in 0..4 {
        match publish(&mut exchanges, "part", "", vec![record("v")]).await {
            Ok(p) => assert_eq!(topics(&p), ["a", "halfbroken"]),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.metadata().get("strom-reason").is_none(),
                    "{status:?}"
                );
                // Not the server's paths: the publisher may have no grant on the topic.
                assert!(!status.message().contains("topics/"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(
        records(&client, "a").await.len(),
        2,
        "one for each publish taken"
    );
    client.admin().delete_topic("broken").await.unwrap();
    let described = exchanges.describe("fan").await.unwrap();
    let bound: Vec<&str> = described
        .bindings
        .iter()
        .map(|b| b.topic.as_str())
        .collect();
    assert_eq!(bound, ["a"]);
    server.stop().await.unwrap();
}

/// A publish to several topics writes at most 4,000,000 records and fields in all
/// (headers count, each one a field).
#[tokio::test]
async fn a_fan_out_writes_at_most_four_million_records_and_fields_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let mut exchanges = client.exchanges();
    exchanges.create("fan", "fanout").await.unwrap();
    for i in 0..41 {
        let name = format!("t{i}");
        topic(&client, &name, 1, &[]).await;
        exchanges.bind("fan", &name, "").await.unwrap();
    }
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("4000000"), "{status:?}");
    };
    // 100,000 empty records to 41 topics: 4,100,000.
    let many = vec![pb::Record::default(); 100_000];
    refused(publish(&mut exchanges, "fan", "", many).await.unwrap_err());
    // 100 records of 1,000 empty headers: 100,100 a topic, 4,104,100 in all.
    let header = pb::Header {
        name: String::new(),
        value: Default::default(),
    };
    let headed = pb::Record {
        headers: vec![header; 1000],
        ..Default::default()
    };
    let status = publish(&mut exchanges, "fan", "", vec![headed.clone(); 100]).await;
    refused(status.unwrap_err());
    exchanges.unbind("fan", "t40", "").await.unwrap();
    let published = publish(&mut exchanges, "fan", "", vec![headed; 10]).await;
    assert_eq!(published.unwrap().topics.len(), 40);
    server.stop().await.unwrap();
}
