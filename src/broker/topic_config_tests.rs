//! Tests of `topic_config.rs`.

use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn config_round_trips_and_rejects_bad_values() {
    let mut config = TopicConfig::default();
    config
        .apply(&map(&[
            ("durability", "page_cache"),
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("retention.bytes", "5000000"),
        ]))
        .unwrap();
    assert_eq!(config.durability, Durability::PageCache);
    assert_eq!(config.retention().retention_ms, None);
    assert_eq!(config.retention().retention_bytes, Some(5_000_000));
    let mut again = TopicConfig::default();
    again.apply(&config.to_map()).unwrap();
    assert_eq!(again, config);
    let before = TopicConfig::default();
    let mut partly = before.clone();
    let err = partly
        .apply(&map(&[
            ("durability", "page_cache"),
            ("segment.bytes", "ten"),
        ]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("segment.bytes"),
        "names the key users type: {err}"
    );
    assert_eq!(partly, before, "nothing half-applied");
    for (k, v) in [
        ("segment.bytes", "12"),
        ("segment.bytes", "1048575"),
        ("message.timestamp.after.max.ms", "-5"),
        ("durability", "maybe"),
        ("nope", "1"),
        ("segment.ms", "-1"),
        ("retention.ms", "-2"),
        ("retention.ms", "0"),
        ("retention.ms", "1e9"),
        ("retention.ms", "+5"),
        ("segment.bytes", "+1048576"),
        ("retention.bytes", "-7"),
        ("retention.bytes", "99999999999999999999"),
        ("cleanup.policy", "remove"),
        ("delete.retention.ms", "-1"),
        ("min.compaction.lag.ms", "soon"),
    ] {
        let err = TopicConfig::default()
            .apply(&map(&[(k, v)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(k), "{k}={v}: {err}");
    }
    let mut compacted = TopicConfig::default();
    compacted
        .apply(&map(&[
            ("cleanup.policy", "compact"),
            ("retention.ms", "1000"),
        ]))
        .unwrap();
    assert_eq!(
        compacted.retention().retention_ms,
        None,
        "compact alone deletes nothing by age"
    );
    assert!(compacted.compaction(10).is_some());
    compacted
        .apply(&map(&[("cleanup.policy", "delete,compact")]))
        .unwrap();
    assert_eq!(compacted.to_map()["cleanup.policy"], "compact,delete");
    assert_eq!(compacted.retention().retention_ms, Some(1000));
    assert!(TopicConfig::default().compaction(10).is_none());
}

#[test]
fn keys_a_topic_did_not_set_follow_the_server_defaults() {
    let mut defaults = TopicConfig::default();
    defaults
        .apply(&map(&[("retention.ms", "60000"), ("segment.ms", "5000")]))
        .unwrap();
    let mut overrides = BTreeSet::new();
    let set = update_overrides(&mut overrides, &map(&[("segment.ms", "9000")]));
    let mut stored = defaults.clone();
    stored.apply(&set).unwrap();
    // The server's default for retention.ms changes; the topic follows it, but keeps
    // its own segment.ms.
    let mut later = TopicConfig::default();
    later.apply(&map(&[("retention.ms", "120000")])).unwrap();
    let merged = TopicConfig::merged(&later, &stored, &overrides);
    assert_eq!(merged.retention_ms, 120_000);
    assert_eq!(merged.segment_ms, 9000);
    // An empty value for a key that does not exist is still an unknown key.
    let mut unknown = overrides.clone();
    let set = update_overrides(&mut unknown, &map(&[("retention.days", "")]));
    assert!(TopicConfig::default().apply(&set).is_err());
    // An empty value gives the key back to the default.
    update_overrides(&mut overrides, &map(&[("segment.ms", "")]));
    assert_eq!(
        TopicConfig::merged(&later, &stored, &overrides).segment_ms,
        later.segment_ms
    );
    // Every key can be copied (a key added to KEYS without a copy arm would not follow).
    let mut odd = TopicConfig::default();
    odd.apply(&map(&[
        ("durability", "page_cache"),
        ("segment.bytes", "2097152"),
        ("segment.ms", "7"),
        ("max.message.bytes", "9"),
        ("message.timestamp.after.max.ms", "3"),
        ("retention.ms", "11"),
        ("retention.bytes", "13"),
        ("cleanup.policy", "compact"),
        ("delete.retention.ms", "17"),
        ("min.compaction.lag.ms", "19"),
    ]))
    .unwrap();
    let all: BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        TopicConfig::merged(&TopicConfig::default(), &odd, &all),
        odd
    );
}
