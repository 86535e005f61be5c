use super::*;

fn open(dir: &Path) -> Exchanges {
    Exchanges::open(dir, |_, _| true).unwrap()
}

fn topics(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.topic.as_str()).collect()
}

#[test]
fn bindings_route_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("orders", ExchangeType::Topic).unwrap();
    assert!(matches!(
        exchanges.create("orders", ExchangeType::Direct),
        Err(Error::ExchangeExists { .. })
    ));
    assert!(exchanges.bind("orders", "eu", "id-eu", "eu.#").unwrap());
    assert!(exchanges.bind("orders", "all", "id-all", "#").unwrap());
    assert!(exchanges
        .bind("orders", "created", "id-c", "*.created")
        .unwrap());
    // The same binding again: nothing new; a second key to one topic: one delivery.
    assert!(!exchanges.bind("orders", "eu", "id-eu", "eu.#").unwrap());
    assert!(exchanges
        .bind("orders", "eu", "id-eu", "*.created")
        .unwrap());
    let routed = exchanges.route("orders", "eu.created").unwrap();
    assert_eq!(topics(&routed), ["all", "created", "eu"]);
    assert_eq!(
        topics(&exchanges.route("orders", "us.shipped").unwrap()),
        ["all"]
    );

    let reopened = open(dir.path());
    assert_eq!(
        reopened.get("orders").unwrap(),
        exchanges.get("orders").unwrap()
    );
    assert!(reopened.unbind("orders", "all", "#").unwrap());
    assert!(!reopened.unbind("orders", "all", "#").unwrap());
    assert!(reopened.route("orders", "us.shipped").unwrap().is_empty());
    reopened.delete("orders").unwrap();
    assert!(matches!(
        reopened.route("orders", "x"),
        Err(Error::ExchangeNotFound { .. })
    ));
    assert!(open(dir.path()).list(&Page::all()).entries.is_empty());
}

#[test]
fn a_deleted_topic_takes_its_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("fan", ExchangeType::Fanout).unwrap();
    exchanges.bind("fan", "a", "id-a", "").unwrap();
    exchanges.bind("fan", "b", "id-b", "").unwrap();
    exchanges.forget_topic("id-a").unwrap();
    assert_eq!(topics(&exchanges.route("fan", "any").unwrap()), ["b"]);
    // A crash between the topic's deletion and the file's: the next start drops them.
    let reopened = Exchanges::open(dir.path(), |name, id| name == "a" && id == "id-a").unwrap();
    assert!(reopened.route("fan", "any").unwrap().is_empty());
    assert!(open(dir.path()).get("fan").unwrap().bindings.is_empty());
    // A binding of a topic made again under its name follows the new topic.
    exchanges.bind("fan", "b", "id-b2", "").unwrap();
    assert_eq!(exchanges.route("fan", "x").unwrap()[0].topic_id, "id-b2");
}

#[test]
fn bad_names_keys_and_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    for bad in ["", "a/b", "..", &"x".repeat(201)] {
        let err = exchanges.create(bad, ExchangeType::Direct).unwrap_err();
        assert!(err.to_string().contains("exchange name"), "{err}");
    }
    exchanges.create("f", ExchangeType::Fanout).unwrap();
    assert!(exchanges.bind("f", "t", "id", "key").is_err());
    assert!(matches!(
        exchanges.bind("missing", "t", "id", ""),
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

#[test]
fn limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = Capacity {
        exchanges: 3,
        per_exchange: 4,
        bindings: 6,
    };
    let exchanges = Exchanges::open_with(dir.path(), |_, _| true, capacity).unwrap();
    for name in ["a", "b", "c"] {
        exchanges.create(name, ExchangeType::Direct).unwrap();
    }
    let err = exchanges.create("d", ExchangeType::Direct).unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    for i in 0..4 {
        exchanges.bind("a", "t", "id", &i.to_string()).unwrap();
    }
    let err = exchanges.bind("a", "t", "id", "one more").unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    // A binding already there is not one more.
    assert!(!exchanges.bind("a", "t", "id", "3").unwrap());
    exchanges.bind("b", "t", "id", "x").unwrap();
    exchanges.bind("b", "t", "id", "y").unwrap();
    let err = exchanges
        .bind("c", "t", "id", "over the server's")
        .unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    let listed = exchanges.list(&Page::all()).entries;
    assert_eq!(listed[0], ("a".into(), ExchangeType::Direct, 4));
}

/// The file is what storage-format.md's "Exchanges" shows.
#[test]
fn the_file_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = open(dir.path());
    exchanges.create("orders", ExchangeType::Topic).unwrap();
    exchanges.bind("orders", "eu", "5f0c", "eu.#").unwrap();
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
