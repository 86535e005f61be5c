//! Kafka's own client libraries against strom: confluent-kafka (librdkafka, the C
//! client most non-Java Kafka clients wrap) and kafka-python, from PyPI, run
//! `tests/python/kafka_clients.py` against the real server's Kafka listener; the
//! records they wrote are then read back through gRPC too. Consumer groups, partitions
//! added under a group (`kafka_grow.py`), static members restarted
//! (`kafka_static.py`), consumers started together (`kafka_together.py`), SASL with an acl and quotas each have a
//! script of their own. `scripts/test.sh` installs
//! both into `target/pyenv` and points STROM_PYTHON at it.

mod common;

use std::process::Command;

use common::server::TestServer;
use strom::broker::Limits;
use strom::server::ServeOptions;

/// Runs `tests/python/SCRIPT ARGS` (with the bootstrap address first); its stdout,
/// once it has exited 0 and printed a line starting with `ok`.
async fn run_python(script: &str, args: Vec<String>) -> String {
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .expect("python runs (scripts/test.sh installs its packages)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.starts_with("ok"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_client_libraries_produce_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("kafka-clients", 3).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let stdout = run_python("kafka_clients.py", vec![bootstrap, "kafka-clients".into()]).await;
    assert!(stdout.contains("ok 1000"), "{stdout}");
    // Every record, through gRPC: 1,000 over the three partitions.
    let mut total = 0;
    for partition in 0..3 {
        let records = common::fetch_all(&client, "kafka-clients", partition).await;
        assert!(records
            .iter()
            .all(|(_, v)| v.starts_with("librdkafka ") || v.starts_with("kafka-python ")));
        total += records.len();
    }
    assert_eq!(total, 1000);
    server.stop().await.unwrap();
}

/// Kafka consumer groups with Kafka's clients: two librdkafka consumers share a topic's
/// partitions, commit, and a kafka-python consumer of the group resumes after them.
/// The commits are strom's: the group's offsets over gRPC are the partitions' ends,
/// but for partition 2's, which kafka-python's admin client deleted.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_consumer_groups_share_partitions_and_resume_from_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("grouped", 3).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let args = vec![bootstrap, "grouped".into(), "billing".into()];
    let stdout = run_python("kafka_groups.py", args).await;
    assert!(stdout.starts_with("ok 300 30"), "{stdout}");
    let offsets = client
        .groups()
        .fetch_offsets(strom::grpc::pb::FetchOffsetsRequest {
            group: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut committed: Vec<(u32, u64)> = offsets
        .offsets
        .iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    committed.sort();
    // Partition 2's was deleted (OffsetDelete) at the end.
    assert_eq!(committed, [(0, 110), (1, 110)]);
    server.stop().await.unwrap();
}

/// The same libraries over SASL_SSL: TLS, then SASL/PLAIN with a token; the group's
/// commits land in strom's group; a wrong token and a principal without a grant are
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_over_sasl_ssl_with_tokens_and_an_acl() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::tls::Certs::make(dir.path());
    let tokens = dir.path().join("tokens");
    let lines = [("app", "app-token"), ("stranger", "stranger-token")]
        .map(|(name, token)| strom::grpc::auth::file_line(name, token).unwrap());
    std::fs::write(&tokens, lines.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "app all topic:secured group:billing\n",
    )
    .unwrap();
    let options = ServeOptions {
        tls: Some(certs.server(false)),
        tokens: Some(strom::server::Tokens::load(&tokens).unwrap()),
        acl: Some(strom::server::Acl::load(&dir.path().join("acl")).unwrap()),
        ..ServeOptions::default()
    };
    let server =
        TestServer::start_with_kafka(&dir.path().join("data"), Limits::default(), options).await;
    let connect = strom::client::ConnectOptions {
        tls: Some(certs.client(&certs.ca, None)),
        token: Some("app-token".into()),
    };
    let url = format!("https://localhost:{}", server.addr.port());
    let client = strom::client::Client::connect_with(&url, connect)
        .await
        .unwrap();
    client
        .admin()
        .create_topic("secured", 1, Default::default())
        .await
        .unwrap();
    let args = [
        server.kafka.unwrap().to_string(),
        "secured".into(),
        certs.ca.display().to_string(),
        "app".into(),
        "app-token".into(),
        "stranger".into(),
        "stranger-token".into(),
    ];
    let stdout = run_python("kafka_security.py", args.to_vec()).await;
    assert!(stdout.starts_with("ok 200"), "{stdout}");
    let offsets = client
        .groups()
        .fetch_offsets(strom::grpc::pb::FetchOffsetsRequest {
            group: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let committed: Vec<(u32, u64)> = offsets
        .offsets
        .iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(committed, [(0, 100)]);
    server.stop().await.unwrap();
}

/// Kafka's clients authenticating with SCRAM-SHA-256 and -512
/// (`tests/python/kafka_scram.py`), over plaintext: the tokens file line of `strom
/// token new`, with SCRAM keys. Every record both produced is read back, and a wrong
/// token is refused.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_authenticate_with_scram() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let line = strom::grpc::auth::file_line_with_scram("app", "app-token").unwrap();
    std::fs::write(&tokens, line + "\n").unwrap();
    let options = ServeOptions {
        tokens: Some(strom::server::Tokens::load(&tokens).unwrap()),
        ..ServeOptions::default()
    };
    let server =
        TestServer::start_with_kafka(&dir.path().join("data"), Limits::default(), options).await;
    let connect = strom::client::ConnectOptions {
        tls: None,
        token: Some("app-token".into()),
    };
    let url = format!("http://{}", server.addr);
    let client = strom::client::Client::connect_with(&url, connect)
        .await
        .unwrap();
    client
        .admin()
        .create_topic("scrammed", 1, Default::default())
        .await
        .unwrap();
    let args = [
        server.kafka.unwrap().to_string(),
        "scrammed".into(),
        "app".into(),
        "app-token".into(),
    ];
    let stdout = run_python("kafka_scram.py", args.to_vec()).await;
    assert!(stdout.starts_with("ok 100"), "{stdout}");
    server.stop().await.unwrap();
}

/// Kafka's clients under quotas (`tests/python/kafka_quotas.py`): a librdkafka producer
/// and a kafka-python consumer, each at 512 KiB/s, take at least as long as the rate
/// allows, lose nothing and see no error; librdkafka is told its throttle.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_sit_out_their_quota() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quotas"), "* produce=512KiB fetch=512KiB\n").unwrap();
    let options = ServeOptions {
        quotas: Some(strom::server::Quotas::load(&dir.path().join("quotas")).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_kafka(&dir.path().join("data"), Limits::default(), options).await;
    server.client_with_topic("throttled", 1).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let stdout = run_python("kafka_quotas.py", vec![bootstrap, "throttled".into()]).await;
    eprintln!("{stdout}");
    let figure = |name: &str| -> f64 {
        let at = stdout.find(&format!("{name}=")).unwrap() + name.len() + 1;
        stdout[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 1.5 MiB and more on the wire, less the first second's 512 KiB: at least 2 s each.
    assert!(figure("produce") >= 1.8, "{stdout}");
    assert!(figure("consume") >= 1.8, "{stdout}");
    assert!(figure("throttle") > 0.0, "{stdout}");
    server.stop().await.unwrap();
}

/// Partitions added while librdkafka consumers of a group read the topic: they
/// rebalance over every partition and read every record of the new ones.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_consumer_groups_take_up_partitions_added_to_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    let client = server.client_with_topic("growing", 2).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let args = vec![bootstrap, "growing".into(), "growers".into()];
    let stdout = run_python("kafka_grow.py", args).await;
    assert!(stdout.contains("ok 40"), "{stdout}");
    let described = client.admin().describe_topic("growing").await.unwrap();
    assert_eq!(described.partitions.len(), 4);
    server.stop().await.unwrap();
}

/// Static members: a librdkafka consumer with a `group.instance.id`, killed with
/// SIGKILL and started again, takes back its partition without the group's other
/// consumer being rebalanced.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_static_kafka_consumer_takes_its_place_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    server.client_with_topic("steady", 2).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let args = vec![bootstrap, "steady".into(), "statics".into()];
    let stdout = run_python("kafka_static.py", args).await;
    println!("{stdout}");
    server.stop().await.unwrap();
}

/// Kafka consumers started together, half a second apart, form one generation: each
/// is assigned once and rebalanced never, as the group's first rebalance waits for
/// them (`kafka_group_initial_delay`, Kafka's `group.initial.rebalance.delay.ms`).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_consumers_started_together_are_assigned_once() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_kafka(dir.path(), Limits::default(), ServeOptions::default()).await;
    server.client_with_topic("together", 6).await;
    let bootstrap = server.kafka.unwrap().to_string();
    let args = vec![bootstrap, "together".into(), "crew".into()];
    let stdout = run_python("kafka_together.py", args).await;
    println!("{stdout}");
    server.stop().await.unwrap();
}
