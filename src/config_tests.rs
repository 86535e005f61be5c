//! Tests of `config.rs`.

use super::*;

#[test]
fn a_file_overrides_only_what_it_names_and_rejects_typos() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strom.toml");
    std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nlog_format = \"json\"\n").unwrap();
    let config = ServerConfig::from_file(&path).unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    std::fs::write(&path, "keepalive_interval_ms = 5000\nkeepalive_timeout_ms = 2000\nsilent_client_timeout_ms = 0\nkafka_group_initial_rebalance_delay_ms = 0\n").unwrap();
    let options = ServerConfig::from_file(&path).unwrap().serve_options();
    assert_eq!(options.kafka_group_initial_delay, Duration::ZERO);
    assert_eq!(options.keepalive_interval, Duration::from_secs(5));
    assert_eq!(options.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(options.silent_client_timeout, Duration::from_millis(10));
    let defaults = ServerConfig::default().serve_options();
    assert_eq!(
        defaults.keepalive_interval,
        ServeOptions::default().keepalive_interval
    );
    assert_eq!(
        defaults.silent_client_timeout,
        ServeOptions::default().silent_client_timeout
    );
    assert_eq!(defaults.kafka_group_initial_delay, Duration::from_secs(3));
    std::fs::write(&path, "listn = \"0.0.0.0:9000\"\n").unwrap();
    let err = ServerConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("listn"), "{err}");
}

#[test]
fn topic_defaults_and_the_disk_floor_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strom.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        ServerConfig::from_file(&path).and_then(|c| c.limits())
    };
    let limits = load("min_free_disk = \"2GiB\"\n[topic_defaults]\n\"retention.ms\" = 60000\n\"cleanup.policy\" = \"delete\"\n").unwrap();
    assert_eq!(limits.topic_defaults.retention_ms, 60_000);
    assert_eq!(limits.min_free_disk, DiskFloor::bytes(2 << 30));
    let limits = load("min_free_disk = 0\n").unwrap();
    assert_eq!(limits.min_free_disk.floor(1 << 40), 0);
    for (text, names) in [
        ("[topic_defaults]\n\"retention.ms\" = -3\n", "retention.ms"),
        (
            "[topic_defaults]\n\"retention.days\" = 3\n",
            "retention.days",
        ),
        ("[topic_defaults]\nretention.ms = 3\n", "\"retention.ms\""),
        ("min_free_disk = \"lots\"\n", "min_free_disk"),
        ("min_free_disk = \"150%\"\n", "min_free_disk"),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(names), "{text}: {err}");
    }
}

/// metrics_tls and metrics_auth without metrics_listen are set for nothing, and refused.
/// (What they need besides is `server::metrics::Guard`'s to check.)
#[test]
fn metrics_tls_and_auth_need_metrics_listen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strom.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        ServerConfig::from_file(&path).and_then(|c| c.check_metrics())
    };
    for text in ["metrics_tls = true\n", "metrics_auth = true\n"] {
        let err = check(text).unwrap_err().to_string();
        assert!(err.contains("need metrics_listen"), "{text}: {err}");
    }
    check("metrics_listen = \"127.0.0.1:0\"\nmetrics_tls = true\n").unwrap();
    check("").unwrap();
}
