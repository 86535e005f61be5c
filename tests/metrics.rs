//! The Prometheus endpoint against a real server: what produces, fetches, failed calls,
//! consumer-group commits and a share group show in a scrape, read over HTTP; and the
//! text checked by the official Python client's OpenMetrics parser.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::requests::{produce, record};
use common::server::TestServer;
use strom::client::Client;
use strom::grpc::pb;

const LIMIT: Duration = Duration::from_secs(30);
/// Past the second for which a render answers every request.
const FRESH: Duration = Duration::from_millis(1100);

/// GETs `path`: the status, the content type and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let response = tokio::time::timeout(LIMIT, client.get(uri))
        .await
        .expect("answered in time")
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The samples of a scrape: `name{labels}` (as written) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let (status, content_type, body) = get(server.metrics.unwrap(), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    samples(&body)
}

/// Produces `n` records to a partition, one request.
async fn produce_n(client: &Client, topic: &str, partition: u32, n: usize) {
    let records = (0..n).map(|i| record(&format!("v{i}"))).collect();
    client
        .log()
        .produce(produce(topic, Some(partition), records))
        .await
        .unwrap();
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_produces_reads_calls_lag_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_metrics(dir.path()).await;
    let client = server.client_with_topic("m", 2).await;
    // A share group starts at the end of the log: it joins before the records come.
    let share_fetch = || async {
        client
            .queues()
            .share_fetch(pb::ShareFetchRequest {
                group: "q".into(),
                member_id: "w".into(),
                topic: "m".into(),
                max_records: 3,
                max_wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .records
            .len()
    };
    assert_eq!(share_fetch().await, 0);
    let mut exchanges = client.exchanges();
    exchanges.create("x", "fanout").await.unwrap();
    exchanges.bind("x", "m", "").await.unwrap();
    produce_n(&client, "m", 0, 10).await;
    produce_n(&client, "m", 1, 5).await;
    let missing = client
        .log()
        .produce(produce("absent", Some(0), vec![record("x")]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let fetched = client
        .log()
        .fetch(pb::FetchRequest {
            topic: "m".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(fetched);
    // A group with no members commits 4 of partition 0's 10: 6 behind.
    client
        .groups()
        .commit_offsets(pb::CommitOffsetsRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![pb::OffsetCommit {
                topic: "m".into(),
                partition: 0,
                offset: 4,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
    // The share group holds 3 of the 15 records under lock, and has accepted none.
    assert_eq!(share_fetch().await, 3);

    let s = scrape(&server).await;
    assert_eq!(
        value(&s, r#"strom_topic_appended_records_total{topic="m"}"#),
        15.0
    );
    assert!(value(&s, r#"strom_topic_appended_bytes_total{topic="m"}"#) > 15.0 * 2.0);
    assert!(value(&s, r#"strom_topic_read_bytes_total{topic="m"}"#) > 0.0);
    // Durable by default: each produce waited for a flush.
    assert!(value(&s, r#"strom_topic_flushes_total{topic="m"}"#) >= 2.0);
    let hw = |p: u32| {
        value(
            &s,
            &format!(r#"strom_partition_high_watermark{{topic="m",partition="{p}"}}"#),
        )
    };
    assert_eq!((hw(0), hw(1)), (10.0, 5.0));
    assert_eq!(
        value(
            &s,
            r#"strom_partition_log_start_offset{topic="m",partition="1"}"#
        ),
        0.0
    );
    assert!(value(&s, r#"strom_partition_size_bytes{topic="m",partition="0"}"#) > 0.0);
    let produce_ok = r#"strom_grpc_calls_total{service="strom.v1.Log",method="Produce",code="OK"}"#;
    assert_eq!(value(&s, produce_ok), 2.0);
    let not_found =
        r#"strom_grpc_calls_total{service="strom.v1.Log",method="Produce",code="NOT_FOUND"}"#;
    assert_eq!(value(&s, not_found), 1.0);
    // Every Produce is in the histogram, whatever its status.
    let count =
        r#"strom_grpc_call_duration_seconds_count{service="strom.v1.Log",method="Produce"}"#;
    assert_eq!(value(&s, count), 3.0);
    assert_eq!(
        value(&s, r#"strom_group_lag_records{group="g",topic="m"}"#),
        6.0
    );
    assert_eq!(
        value(
            &s,
            r#"strom_group_committed_partitions{group="g",topic="m"}"#
        ),
        1.0
    );
    let records = |state: &str| {
        value(
            &s,
            &format!(r#"strom_share_group_records{{group="q",topic="m",state="{state}"}}"#),
        )
    };
    assert_eq!((records("in_flight"), records("available")), (3.0, 12.0));
    assert!(value(&s, "strom_connections_open") >= 1.0);
    assert_eq!(value(&s, "strom_exchanges"), 1.0);
    assert_eq!(value(&s, "strom_exchange_bindings"), 1.0);
    assert!(value(&s, r#"strom_budget_size_bytes{budget="produce"}"#) > 0.0);
    assert!(value(&s, "strom_disk_free_bytes") > 0.0);

    // More produce moves the counters on; a second scrape a second later (a render
    // answers the requests of the next second) is not a copy of the first.
    produce_n(&client, "m", 0, 7).await;
    tokio::time::sleep(FRESH).await;
    let again = scrape(&server).await;
    assert_eq!(
        value(&again, r#"strom_topic_appended_records_total{topic="m"}"#),
        22.0
    );
    assert_eq!(
        value(&again, r#"strom_group_lag_records{group="g",topic="m"}"#),
        13.0
    );
    assert_eq!(value(&again, produce_ok), 3.0);

    let (status, _, _) = get(server.metrics.unwrap(), "/other").await;
    assert_eq!(status, 404);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_leaves_the_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_metrics(dir.path()).await;
    let client = server.client_with_topic("gone", 1).await;
    produce_n(&client, "gone", 0, 3).await;
    let series = r#"strom_topic_appended_records_total{topic="gone"}"#;
    assert_eq!(value(&scrape(&server).await, series), 3.0);
    client.admin().delete_topic("gone").await.unwrap();
    tokio::time::sleep(FRESH).await;
    assert!(!scrape(&server).await.contains_key(series));
    server.stop().await.unwrap();
}

/// The Python `prometheus_client` package's OpenMetrics parser reads the whole scrape
/// (it refuses malformed text, a family without `# EOF`, a counter without `_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_parser_reads_a_scrape() {
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    // With quotas, so that their families are read too.
    std::fs::write(dir.path().join("quotas"), "* produce=none\n").unwrap();
    let options = strom::server::ServeOptions {
        quotas: Some(strom::server::Quotas::load(&dir.path().join("quotas")).unwrap()),
        ..Default::default()
    };
    let data = dir.path().join("data");
    let server = TestServer::start_with_options_and_metrics(
        &data,
        strom::broker::Limits::default(),
        options,
    )
    .await;
    let client = server.client_with_topic("p", 1).await;
    produce_n(&client, "p", 0, 2).await;
    let url = format!("http://{}/metrics", server.metrics.unwrap());
    let script = r#"
import sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=20).read().decode()
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        print(family.type, sample.name, sorted(sample.labels.items()), sample.value)
"#;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", script, &url])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python ({e}); run ./scripts/test.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the parser refused the scrape (./scripts/test.sh installs prometheus_client):\n{stderr}"
    );
    let appended = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("counter strom_topic_appended_records_total [('topic', 'p')] ")
        })
        .unwrap_or_else(|| panic!("no appended records in {stdout}"));
    assert_eq!(appended.parse::<f64>().unwrap(), 2.0, "{stdout}");
    assert!(
        stdout.contains("histogram strom_grpc_call_duration_seconds_bucket"),
        "{stdout}"
    );
    for quota in [
        "counter strom_quota_throttled_total [('kind', 'produce')] 0.0",
        "counter strom_quota_throttled_seconds_total [('kind', 'fetch')] 0.0",
        "gauge strom_quota_clients [] 1.0",
        "counter strom_connections_refused_total [('reason', 'per_address')] 0.0",
    ] {
        assert!(stdout.contains(quota), "{quota} in {stdout}");
    }
    server.stop().await.unwrap();
}

/// A producer that closes ends its stream as a finished call: it half-closes and reads
/// the server's status, rather than hanging up (which the server counts as CANCELLED,
/// and a dashboard as a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_producer_ends_its_stream_ok_not_cancelled() {
    use strom::client::{Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_metrics(dir.path()).await;
    let client = server.client_with_topic("c", 1).await;
    let producer = Producer::new(client, ProducerConfig::default());
    let ack = producer.send("c", Some(0), record("x")).await;
    producer.close().await;
    ack.await.unwrap().unwrap();
    let stream = |code: &str| {
        format!(
            r#"strom_grpc_calls_total{{service="strom.v1.Log",method="ProduceStream",code="{code}"}}"#
        )
    };
    // The server counts the call once its response has gone: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let s = loop {
        let s = scrape(&server).await;
        if s.contains_key(&stream("OK")) || s.contains_key(&stream("CANCELLED")) {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never ended: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s.get(&stream("CANCELLED")), None);
    assert_eq!(value(&s, &stream("OK")), 1.0);
    server.stop().await.unwrap();
}

/// The README's example, as a process: `strom serve --metrics-listen ADDR`, a
/// produce by the CLI, and the appended records in a scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strom_serve_with_metrics_listen_serves_them() {
    use common::cli::Serve;
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = common::free_addr().parse().unwrap();
    let server = Serve::start_with_args(dir.path(), &["--metrics-listen", &metrics.to_string()]);
    server.ok(&["topic", "create", "readme"], b"");
    server.ok(&["produce", "-t", "readme"], b"one\ntwo\n");
    let (status, _, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &samples(&body),
            r#"strom_topic_appended_records_total{topic="readme"}"#
        ),
        2.0
    );
}

/// With TLS, failed handshakes are counted; a plaintext server has no such family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_counted() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = common::tls::Certs::make(certs_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let options = strom::server::ServeOptions {
        tls: Some(certs.server(false)),
        ..Default::default()
    };
    let server = TestServer::start_with_options_and_metrics(
        dir.path(),
        strom::broker::Limits::default(),
        options,
    )
    .await;
    assert_eq!(
        scrape(&server)
            .await
            .get("strom_tls_handshake_failures_total"),
        Some(&0.0)
    );
    for _ in 0..2 {
        let addr = server.addr;
        tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut socket, b"GET / HTTP/1.1\r\n\r\n").unwrap();
            assert!(common::closed_within(&mut socket, Duration::from_secs(10)));
        })
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while scrape(&server)
        .await
        .get("strom_tls_handshake_failures_total")
        != Some(&2.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            scrape(&server).await
        );
        tokio::time::sleep(Duration::from_millis(1100)).await; // renders are shared for 1 s
    }
    server.stop().await.unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = TestServer::start_with_metrics(plain_dir.path()).await;
    assert!(!scrape(&plain)
        .await
        .contains_key("strom_tls_handshake_failures_total"));
    plain.stop().await.unwrap();
}
