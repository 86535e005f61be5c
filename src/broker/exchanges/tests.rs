use std::collections::BTreeMap;

use super::*;
use crate::broker::{Broker, Limits};

fn open(dir: &Path) -> Arc<Exchanges> {
    Arc::new(Exchanges::open(dir, |_, _| true).unwrap())
}

fn binding(topic: &str, id: &str, key: &str) -> Binding {
    Binding {
        topic: topic.into(),
        key: key.into(),
        topic_id: id.into(),
    }
}

async fn bind(x: &Arc<Exchanges>, name: &str, topic: &str, id: &str, key: &str) -> Result<bool> {
    x.bind(name, binding(topic, id, key), || true).await
}

fn topics(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.topic.as_str()).collect()
}

#[tokio::test]
async fn bindings_route_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges
        .create("orders", ExchangeType::Topic)
        .await
        .unwrap();
    assert!(matches!(
        exchanges.create("orders", ExchangeType::Direct).await,
        Err(Error::ExchangeExists { .. })
    ));
    assert!(bind(&exchanges, "orders", "eu", "id-eu", "eu.#")
        .await
        .unwrap());
    assert!(bind(&exchanges, "orders", "all", "id-all", "#")
        .await
        .unwrap());
    assert!(bind(&exchanges, "orders", "created", "id-c", "*.created")
        .await
        .unwrap());
    // The same binding again: nothing new.
    assert!(!bind(&exchanges, "orders", "eu", "id-eu", "eu.#")
        .await
        .unwrap());
    assert!(bind(&exchanges, "orders", "eu", "id-eu", "*.created")
        .await
        .unwrap());
    // Every matching binding, by topic: the broker keeps one a topic among the live.
    let routed = exchanges.route("orders", "eu.created").unwrap();
    assert_eq!(topics(&routed), ["all", "created", "eu", "eu"]);
    let shipped = exchanges.route("orders", "us.shipped").unwrap();
    assert_eq!(topics(&shipped), ["all"]);

    let reopened = open(dir.path());
    assert_eq!(
        reopened.get("orders").unwrap(),
        exchanges.get("orders").unwrap()
    );
    assert!(reopened.unbind("orders", "all", "#").await.unwrap());
    assert!(!reopened.unbind("orders", "all", "#").await.unwrap());
    assert!(reopened.route("orders", "us.shipped").unwrap().is_empty());
    reopened.delete("orders").await.unwrap();
    assert!(matches!(
        reopened.route("orders", "x"),
        Err(Error::ExchangeNotFound { .. })
    ));
    let listed = open(dir.path()).list(&Page::all(), |_| true);
    assert!(listed.entries.is_empty());
}

#[tokio::test]
async fn a_deleted_topic_takes_its_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("fan", ExchangeType::Fanout).await.unwrap();
    bind(&exchanges, "fan", "a", "id-a", "").await.unwrap();
    bind(&exchanges, "fan", "b", "id-b", "").await.unwrap();
    exchanges.forget_topic("a", Some("id-a")).await.unwrap();
    assert_eq!(topics(&exchanges.route("fan", "any").unwrap()), ["b"]);
    // A crash between the topic's deletion and the file's: the next start drops them.
    let reopened = Exchanges::open(dir.path(), |name, id| name == "a" && id == "id-a").unwrap();
    assert!(reopened.route("fan", "any").unwrap().is_empty());
    assert!(open(dir.path()).get("fan").unwrap().bindings.is_empty());
    // A topic made before topics had ids is forgotten by its name.
    bind(&exchanges, "fan", "legacy", "", "").await.unwrap();
    exchanges.forget_topic("legacy", None).await.unwrap();
    assert_eq!(topics(&exchanges.route("fan", "any").unwrap()), ["b"]);
    // A binding of a topic made again under its name follows the new topic.
    bind(&exchanges, "fan", "b", "id-b2", "").await.unwrap();
    assert_eq!(exchanges.route("fan", "x").unwrap()[0].topic_id, "id-b2");
}

#[tokio::test]
async fn bad_names_keys_and_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    for bad in ["", "a/b", "..", &"x".repeat(201)] {
        let err = exchanges
            .create(bad, ExchangeType::Direct)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exchange name"), "{err}");
    }
    exchanges.create("f", ExchangeType::Fanout).await.unwrap();
    assert!(bind(&exchanges, "f", "t", "id", "key").await.is_err());
    assert!(matches!(
        bind(&exchanges, "missing", "t", "id", "").await,
        Err(Error::ExchangeNotFound { .. })
    ));
    std::fs::write(dir.path().join(FILE), b"{\"version\": 1, \"exch").unwrap();
    assert!(matches!(
        Exchanges::open(dir.path(), |_, _| true),
        Err(Error::Corruption { .. })
    ));
    std::fs::write(
        dir.path().join(FILE),
        b"{\"version\": 9, \"exchanges\": {}}",
    )
    .unwrap();
    let err = Exchanges::open(dir.path(), |_, _| true).err().unwrap();
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[tokio::test]
async fn limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = Capacity {
        exchanges: 3,
        per_exchange: 4,
        bindings: 6,
    };
    let exchanges = Arc::new(Exchanges::open_with(dir.path(), |_, _| true, capacity).unwrap());
    for name in ["a", "b", "c"] {
        exchanges.create(name, ExchangeType::Direct).await.unwrap();
    }
    let err = exchanges
        .create("d", ExchangeType::Direct)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    for i in 0..4 {
        bind(&exchanges, "a", "t", "id", &i.to_string())
            .await
            .unwrap();
    }
    let err = bind(&exchanges, "a", "t", "id", "one more")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    // A binding already there is not one more.
    assert!(!bind(&exchanges, "a", "t", "id", "3").await.unwrap());
    bind(&exchanges, "b", "t", "id", "x").await.unwrap();
    bind(&exchanges, "b", "t", "id", "y").await.unwrap();
    let err = bind(&exchanges, "c", "t", "id", "over").await.unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    let listed = exchanges.list(&Page::all(), |_| true).entries;
    assert_eq!(listed[0], ("a".into(), ExchangeType::Direct, 4));
    let shown = exchanges.list(&Page::all(), |topic| topic != "t").entries;
    assert_eq!(shown[0], ("a".into(), ExchangeType::Direct, 0));
}

/// Changes made at once are written together, each answered as if alone: refused
/// ones refused, the rest kept, and the file holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("x", ExchangeType::Direct).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let exchanges = Arc::clone(&exchanges);
            tokio::spawn(async move {
                // Every tenth names an exchange that is not there.
                let name = if i % 10 == 0 { "missing" } else { "x" };
                bind(&exchanges, name, "t", "id", &i.to_string()).await
            })
        })
        .collect();
    let mut kept = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(created) => {
                assert!(created);
                kept += 1;
            }
            Err(err) => assert!(matches!(err, Error::ExchangeNotFound { .. }), "{err}"),
        }
    }
    assert_eq!(kept, 180);
    assert_eq!(open(dir.path()).get("x").unwrap().bindings.len(), 180);
}

/// A topic deleted while it is being bound: refused, and nothing written.
#[tokio::test]
async fn a_topic_gone_when_the_binding_is_written_is_not_bound() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("x", ExchangeType::Direct).await.unwrap();
    let err = exchanges
        .bind("x", binding("t", "id", "k"), || false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TopicNotFound { .. }), "{err}");
    assert!(open(dir.path()).get("x").unwrap().bindings.is_empty());
}

/// A file whose bindings are out of order or repeated is read sorted and once each.
#[tokio::test]
async fn bindings_are_sorted_and_unique_whatever_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"version": 1, "exchanges": {"x": {"type": "direct", "bindings": [
        {"topic": "b", "key": "k", "topic_id": "2"},
        {"topic": "a", "key": "k", "topic_id": "1"},
        {"topic": "b", "key": "k", "topic_id": "2"}]}}}"#;
    std::fs::write(dir.path().join(FILE), text).unwrap();
    let exchanges = open(dir.path());
    assert_eq!(topics(&exchanges.get("x").unwrap().bindings), ["a", "b"]);
    assert!(!bind(&exchanges, "x", "b", "2", "k").await.unwrap());
}

/// The file is what storage-format.md's "Exchanges" shows.
#[tokio::test]
async fn the_file_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges
        .create("orders", ExchangeType::Topic)
        .await
        .unwrap();
    bind(&exchanges, "orders", "eu", "5f0c", "eu.#")
        .await
        .unwrap();
    let text = std::fs::read(dir.path().join(FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let expected = serde_json::json!({
        "version": 1,
        "exchanges": {
            "orders": {
                "type": "topic",
                "bindings": [{ "topic": "eu", "key": "eu.#", "topic_id": "5f0c" }]
            }
        }
    });
    assert_eq!(json, expected);
}

/// A binding left behind with a topic's old id (a delete whose forgetting failed)
/// must not hide a live binding of the topic that matches too.
#[tokio::test]
async fn a_stale_binding_does_not_hide_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    broker.create_topic("a", 1, &BTreeMap::new()).await.unwrap();
    broker
        .create_exchange("x", ExchangeType::Topic)
        .await
        .unwrap();
    // Sorted first: (a, "#") comes before (a, "eu.#").
    bind(&broker.exchanges, "x", "a", "an-old-id", "#")
        .await
        .unwrap();
    broker.bind("x", "a", "eu.#").await.unwrap();
    let routed = broker.route("x", "eu.orders").unwrap();
    assert_eq!(routed.len(), 1, "the live binding of a routes");
    assert!(broker.route("x", "us.orders").unwrap().is_empty());
}

/// A broker with topics `names` (one partition each) bound to fanout exchange "x".
async fn fanned(dir: &Path, names: &[&str]) -> Arc<Broker> {
    let broker = Arc::new(Broker::open(dir, Limits::default()).unwrap());
    broker
        .create_exchange("x", ExchangeType::Fanout)
        .await
        .unwrap();
    for topic in names {
        broker
            .create_topic(topic, 1, &BTreeMap::new())
            .await
            .unwrap();
        broker.bind("x", topic, "").await.unwrap();
    }
    broker
}

/// A publish of one record of `bytes` bytes to "x".
fn one_record(durability: Option<crate::broker::Durability>, bytes: usize) -> Publish {
    Publish {
        exchange: "x".into(),
        routing_key: String::new(),
        durability,
        drop_unroutable: false,
        records: 1,
        bytes,
        copied: 64,
    }
}

/// Pushes one record of `value`, without key or headers.
fn push(w: &mut crate::broker::BatchWriter, value: &'static [u8]) -> Result<()> {
    let no_headers = std::iter::empty::<(&str, &[u8])>();
    w.push(None, bytes::Bytes::from_static(value), no_headers, 0)
}

/// A publish to two topics whose second fsync fails: an error that says the records
/// went to every topic and names the one not on disk.
#[tokio::test]
async fn a_publish_whose_fsync_fails_says_where_its_records_are() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fanned(dir.path(), &["a", "b"]).await;
    let b_dir = broker.topic("b").unwrap().dir.clone();
    crate::log::files::failpoint::fail_next_sync_under(&b_dir);
    let fsync = Some(crate::broker::Durability::Fsync);
    let fill = |w: &mut _| push(w, b"v");
    let err = broker
        .publish(one_record(fsync, 1), fill, || 1)
        .await
        .unwrap_err();
    let Error::PublishedPartly { detail, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        detail.contains("every topic") && detail.contains("\"b\""),
        "{err}"
    );
}

/// A topic's configuration changed between the two passes (as a hostile client's
/// AlterTopicConfig did) does not refuse a publish after other topics took it: the
/// second pass checks under the first pass's configuration.
#[tokio::test]
async fn a_configuration_changed_between_the_passes_does_not_split_a_publish() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let broker = fanned(dir.path(), &["a", "b"]).await;
    let b = broker.topic("b").unwrap();
    let calls = AtomicUsize::new(0);
    let fill = move |w: &mut _| {
        // The third call is the second pass's first: b's limit drops under the record.
        if calls.fetch_add(1, Ordering::Relaxed) == 2 {
            let mut settings = b.settings.write().unwrap();
            settings.config.max_message_bytes = 1;
        }
        push(w, b"value")
    };
    let published = broker
        .publish(one_record(None, 5), fill, || 1)
        .await
        .unwrap();
    assert_eq!(published.len(), 2);
}

/// A write that fails fails every change from the first that changed something on
/// (a later one was checked against that change), and leaves the state and the file
/// as they were; the ones before keep their answers.
#[tokio::test]
async fn a_failed_write_fails_the_changes_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("x", ExchangeType::Direct).await.unwrap();
    let mut answers = Vec::new();
    let mut queue = |change: Change| {
        let (answer, answered) = oneshot::channel();
        answers.push(answered);
        Queued { change, answer }
    };
    let batch = vec![
        queue(Box::new(|s: &mut State| s.unbind("x", "t", "k"))),
        queue(Box::new(|s: &mut State| {
            s.create("y", ExchangeType::Topic, 10)
        })),
        queue(Box::new(|s: &mut State| {
            s.create("y", ExchangeType::Topic, 10)
        })),
    ];
    let tmp = crate::log::naming::temp_path(&dir.path().join(FILE));
    crate::log::files::failpoint::fail_next_sync_of(&tmp);
    exchanges.apply(batch);
    let mut answers = answers.into_iter();
    assert!(!answers.next().unwrap().await.unwrap().unwrap());
    for refused in answers {
        let err = refused.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "not ALREADY_EXISTS: {err}");
    }
    assert!(exchanges.get("y").is_err());
    assert!(open(dir.path()).get("y").is_err());
    // The rename done, the directory's sync failed: the change is in the file, so it
    // is in use too (a later change must not undo it unseen), and its caller was told
    // it failed.
    crate::log::files::failpoint::fail_next_sync_of(dir.path());
    let err = exchanges
        .create("z", ExchangeType::Topic)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(exchanges.get("z").is_ok());
    exchanges.create("w", ExchangeType::Topic).await.unwrap();
    assert!(open(dir.path()).get("z").is_ok());
}

/// A publish to one topic whose fsync fails fails as a produce does: no topic took
/// its records besides the one whose error it is.
#[tokio::test]
async fn a_publish_to_one_topic_fails_as_a_produce_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fanned(dir.path(), &["a"]).await;
    let a_dir = broker.topic("a").unwrap().dir.clone();
    crate::log::files::failpoint::fail_next_sync_under(&a_dir);
    let fsync = Some(crate::broker::Durability::Fsync);
    let fill = |w: &mut _| push(w, b"v");
    let err = broker
        .publish(one_record(fsync, 1), fill, || 1)
        .await
        .unwrap_err();
    assert!(!matches!(err, Error::PublishedPartly { .. }), "{err}");
}

/// A publish to many topics must fit above the free-disk floor whole: the topics are
/// not measured one by one (a hostile client wrote a gigabyte past the floor).
#[tokio::test]
async fn a_fan_out_that_would_cross_the_disk_floor_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    {
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let big = BTreeMap::from([("max.message.bytes".to_string(), (15 << 20).to_string())]);
        broker
            .create_exchange("x", ExchangeType::Fanout)
            .await
            .unwrap();
        for name in &names {
            broker.create_topic(name, 1, &big).await.unwrap();
            broker.bind("x", name, "").await.unwrap();
        }
        Arc::into_inner(broker).unwrap().close().unwrap();
    }
    // 256 MiB above the floor; the publish needs 64 x 15 MiB.
    let free = crate::broker::disk::space_of(dir.path()).unwrap().free;
    let limits = Limits {
        min_free_disk: crate::broker::DiskFloor::bytes(free.saturating_sub(256 << 20)),
        ..Limits::default()
    };
    let broker = Arc::new(Broker::open(dir.path(), limits).unwrap());
    let value = bytes::Bytes::from(vec![0u8; 15 << 20]);
    let fill = move |w: &mut crate::broker::BatchWriter| {
        let no_headers = std::iter::empty::<(&str, &[u8])>();
        w.push(None, value.clone(), no_headers, 0)
    };
    let err = broker
        .publish(one_record(None, 15 << 20), fill, || 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    assert!(err.to_string().contains("min_free_disk"), "{err}");
    for name in &names {
        let end = broker.partition(name, 0).unwrap().offsets().unwrap();
        assert_eq!(end.high_watermark, 0, "{name}");
    }
}
