//! Tests of `acl.rs`.

use super::*;
use Kind::*;
use Operation::*;

fn rules(text: &str) -> Rules {
    Rules::parse(text, Path::new("acl")).unwrap()
}

#[test]
fn lines_grant_operations_on_names_and_prefixes_and_nothing_else() {
    let acl = rules(
        "# comment\n\
             orders-api write topic:orders producer:orders-api\n\
             billing read,admin topic:orders group:billing\n\
             ops all topic:* group:* producer:*\n\
             * read topic:public.*\n\
             team-a read topic:team.\n",
    );
    assert!(acl.allows("orders-api", Some(Write), Topic, "orders"));
    assert!(acl.allows("orders-api", Some(Write), Producer, "orders-api"));
    assert!(!acl.allows("orders-api", Some(Read), Topic, "orders"));
    assert!(!acl.allows("orders-api", Some(Write), Topic, "orders2"));
    // Kinds are not names: a topic grant is no group grant.
    assert!(!acl.allows("orders-api", Some(Write), Group, "orders"));
    assert!(acl.allows("billing", Some(Read), Topic, "orders"));
    assert!(acl.allows("billing", Some(Admin), Group, "billing"));
    assert!(!acl.allows("billing", Some(Write), Topic, "orders"));
    assert!(acl.allows("ops", Some(Admin), Topic, "anything"));
    assert!(acl.allows("ops", Some(Write), Producer, "x"));
    assert!(acl.allows("anyone", Some(Read), Topic, "public.news"));
    assert!(!acl.allows("anyone", Some(Read), Topic, "public"));
    assert!(!acl.allows("anyone", Some(Write), Topic, "public.news"));
    assert!(acl.allows("team-a", Some(Read), Topic, "team."));
    assert!(!acl.allows("team-ab", Some(Read), Topic, "team."));
    // Any operation: what describing and listing need.
    assert!(acl.allows("orders-api", None, Topic, "orders"));
    assert!(!acl.allows("orders-api", None, Group, "billing"));
    assert!(!acl.allows("nobody", None, Topic, "orders"));
    // An operation that means nothing on a kind grants nothing there, not even a
    // sight of it.
    let odd = rules("a write group:g topic:t\nb read,admin producer:p\n");
    assert!(!odd.allows("a", None, Group, "g"));
    assert!(odd.allows("a", None, Topic, "t"));
    assert!(!odd.allows("b", None, Producer, "p"));
}

/// `metrics` (no name) grants scraping the metrics endpoint, and only `read` of it;
/// grants on every topic and group do not reach it.
#[test]
fn metrics_is_a_resource_of_its_own() {
    let acl = rules(
        "prom read metrics
ops all topic:* group:* producer:* exchange:*
",
    );
    assert!(acl.allows("prom", Some(Read), Metrics, ""));
    assert!(!acl.allows("prom", Some(Read), Topic, "metrics"));
    assert!(!acl.allows("ops", Some(Read), Metrics, ""));
    let writer = rules(
        "w write metrics
",
    );
    assert!(!writer.allows("w", Some(Read), Metrics, ""));
    let err = Rules::parse(
        "a read metrics:x
",
        Path::new("f"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("or metrics"), "{err}");
}

#[test]
fn a_bad_line_is_refused_with_its_number() {
    for (text, says) in [
        ("a read\n", "no resource"),
        ("a\n", "no resource"),
        ("a read,delete topic:x\n", "\"delete\" is not an operation"),
        ("a read queue:x\n", "is not topic:NAME"),
        ("a read orders\n", "is not topic:NAME"),
        ("a read topic:a*b\n", "a * elsewhere"),
        ("a read topic:\n", "a * elsewhere"),
        ("a* read topic:x\n", "is not a principal"),
        ("*a read topic:x\n", "is not a principal"),
        ("# nothing\n\n", "no rule"),
    ] {
        let err = Rules::parse(&format!("ok read topic:x\n{text}"), Path::new("f"))
            .map(|_| ())
            .err()
            .or_else(|| Rules::parse(text, Path::new("f")).err())
            .unwrap_or_else(|| panic!("{text:?} was accepted"))
            .to_string();
        assert!(err.contains(says), "{text:?}: {err}");
        assert!(err.contains("acl f line"), "{text:?}: {err}");
    }
    let err = Rules::parse("ok read topic:x\nb write\n", Path::new("f"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_reload_swaps_the_rules_and_a_bad_file_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl");
    std::fs::write(&file, "a read topic:x\n").unwrap();
    let acl = Acl::load(&file).unwrap();
    assert!(acl.rules().allows("a", Some(Read), Topic, "x"));
    std::fs::write(&file, "a read topic:y\n").unwrap();
    acl.reload().unwrap();
    assert!(!acl.rules().allows("a", Some(Read), Topic, "x"));
    std::fs::write(&file, "a read\n").unwrap();
    assert!(acl.reload().is_err());
    assert!(acl.rules().allows("a", Some(Read), Topic, "y"));
    // The generation moves when the rules change, not when the file is read again,
    // nor when its lines or resources are only in another order.
    std::fs::write(&file, "a read topic:y group:g\nb read topic:y\n").unwrap();
    acl.reload().unwrap();
    let before = acl.generation();
    std::fs::write(
        &file,
        "# the same\nb read topic:y\na  read   group:g topic:y\n",
    )
    .unwrap();
    acl.reload().unwrap();
    assert_eq!(acl.generation(), before);
    std::fs::write(&file, "a read topic:z\n").unwrap();
    acl.reload().unwrap();
    assert_eq!(acl.generation(), before + 1);
}
