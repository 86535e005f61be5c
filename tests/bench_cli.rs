//! `strom bench` as `scripts/bench.sh` runs it: the real binary, a separate process,
//! against a real server, with `--json`. Small loads: this checks that the benches
//! run and that their counts add up, not how fast anything is.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::run_within;
use common::server::TestServer;
use serde_json::Value;

async fn bench(addr: &str, args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strom"));
    command.args(["bench", "-s", addr]).args(args).arg("--json");
    let out = tokio::task::spawn_blocking(move || {
        run_within(&mut command, b"", Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "strom bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Every bench says how much of the machine's CPU time the hypervisor took while it ran
/// (Linux counts it in /proc/stat), so a slow run can be told from a slow host.
fn assert_steal_is_a_share(out: &Value) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let steal = out["steal_percent"]
        .as_f64()
        .unwrap_or_else(|| panic!("no steal_percent on Linux: {out}"));
    assert!((0.0..=100.0).contains(&steal), "{out}");
}

fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_consume_and_e2e_benches_count_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr.to_string();

    let produced = bench(
        &addr,
        &[
            "produce",
            "-t",
            "b",
            "--partitions",
            "3",
            "--records",
            "2000",
            "--batch",
            "100",
            "--record-size",
            "64",
        ],
    )
    .await;
    assert_eq!(produced["records"], 2000);
    assert_eq!(produced["bytes"], 2000 * 64);
    assert_eq!(
        produced["ack_latency_ms"]["count"], 20.0,
        "one sample a request"
    );

    let consumed = bench(&addr, &["consume", "-t", "b", "--consumers", "2"]).await;
    assert_eq!(consumed["records"], 2000);
    assert_eq!(consumed["bytes"], 2000 * 64);

    // Through the Rust Producer, keyed, two producers: one latency sample a record, and
    // every record stored.
    let through = bench(
        &addr,
        &[
            "produce",
            "--through-producer",
            "-t",
            "p",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--keys",
            "uniform",
            "--records",
            "3000",
            "--batch",
            "100",
            "--record-size",
            "64",
        ],
    )
    .await;
    assert_eq!(through["records"], 3000);
    assert_eq!(through["ack_latency_ms"]["count"], 3000.0, "{through}");
    let consumed = bench(&addr, &["consume", "-t", "p"]).await;
    assert_eq!(consumed["records"], 3000);

    // The same through send_many, with a last call short of --batch: every record
    // counted and stored once.
    let many = bench(
        &addr,
        &[
            "produce",
            "--through-producer",
            "--send-many",
            "-t",
            "q",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--keys",
            "uniform",
            "--records",
            "2950",
            "--batch",
            "100",
            "--record-size",
            "64",
        ],
    )
    .await;
    assert_eq!(many["records"], 2950);
    assert_eq!(many["ack_latency_ms"]["count"], 2950.0, "{many}");
    let consumed = bench(&addr, &["consume", "-t", "q"]).await;
    assert_eq!(consumed["records"], 2950);

    // Keyed, unary, paced: every record still arrives, and the e2e latency has a
    // sample for each. With a threshold of 0, the slow log has every record too.
    let slow_log = dir.path().join("slow.log");
    let started_ns = monotonic_ns();
    let e2e = bench(
        &addr,
        &[
            "e2e",
            "--slow-log",
            slow_log.to_str().unwrap(),
            "--slow-ms",
            "0",
            "-t",
            "e",
            "--partitions",
            "4",
            "--rate",
            "2000",
            "--duration",
            "1s",
            "--batch",
            "1",
            "--record-size",
            "32",
            "--keys",
            "uniform",
            "--unary",
            "--in-flight",
            "16",
        ],
    )
    .await;
    let records = e2e["records"].as_u64().unwrap();
    assert!(records > 100, "{e2e}");
    assert_eq!(
        e2e["e2e_latency_ms"]["count"].as_f64(),
        Some(records as f64)
    );
    assert_steal_is_a_share(&e2e);
    let ended_ns = monotonic_ns();
    let log = std::fs::read_to_string(&slow_log).unwrap();
    let (mut acks, mut receipts) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [kind, due, at, id] = fields[..] else {
            panic!("a line of four fields: {line:?}")
        };
        let (due, at): (u64, u64) = (due.parse().unwrap(), at.parse().unwrap());
        // Both on the clock this process reads, within the run.
        assert!(started_ns <= due && due <= at && at <= ended_ns, "{line}");
        match kind {
            "ack" => assert!(acks.insert(id.parse::<u64>().unwrap()), "{line}"),
            "e2e" => assert!(receipts.insert(id.to_string()), "{line}"),
            _ => panic!("an unknown kind: {line}"),
        }
    }
    // One request a record: every request number once, every partition:offset once.
    assert_eq!(acks, (0..records).collect(), "ack ids");
    assert_eq!(receipts.len() as u64, records, "e2e ids");

    let client = server.client().await;
    let topic = client.admin().describe_topic("e").await.unwrap();
    let stored: u64 = topic.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(stored, records);
    assert!(
        topic
            .partitions
            .iter()
            .filter(|p| p.high_watermark > 0)
            .count()
            > 1,
        "uniform keys spread over the partitions"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_refuses_to_run_without_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strom"));
        command.args(["bench", "-s", &addr, "e2e", "--duration", "1s"]);
        run_within(&mut command, b"", Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn jitter_counts_wakeups_that_slept_at_least_as_asked() {
    // No server: the address is never dialled.
    let out = bench(
        "127.0.0.1:9",
        &["jitter", "--duration", "1s", "--sleep-us", "2000"],
    )
    .await;
    let wakeups = out["wakeups"].as_u64().unwrap();
    // A 2 ms sleep never ends early, so one second holds at most 500 of them; a loop
    // that did not sleep would count far more.
    assert!((10..=500).contains(&wakeups), "{out}");
    assert_eq!(out["late_ms"]["count"].as_f64(), Some(wakeups as f64));
    assert!(out["late_ms"]["p50"].as_f64().unwrap() >= 0.0);
    assert!(
        out["late_over_1ms_per_minute"].as_f64() >= out["late_over_4ms_per_minute"].as_f64(),
        "{out}"
    );
    assert_steal_is_a_share(&out);
}

/// `bench produce --unary --exchange`: each request a Publish, its records counted
/// once, and every topic bound gets them.
#[tokio::test(flavor = "multi_thread")]
async fn the_produce_bench_publishes_through_an_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr.to_string();
    let client = server.client().await;
    let mut exchanges = client.exchanges();
    exchanges.create("fan", "fanout").await.unwrap();
    for topic in ["p1", "p2"] {
        client
            .admin()
            .create_topic(topic, 2, Default::default())
            .await
            .unwrap();
        exchanges.bind("fan", topic, "").await.unwrap();
    }
    let args = [
        "produce",
        "-t",
        "p1",
        "--unary",
        "--exchange",
        "fan",
        "--records",
        "300",
        "--batch",
        "10",
    ];
    let published = bench(&addr, &args).await;
    assert_eq!(published["records"], 300, "{published}");
    for topic in ["p1", "p2"] {
        let described = client.admin().describe_topic(topic).await.unwrap();
        let stored: u64 = described.partitions.iter().map(|p| p.high_watermark).sum();
        assert_eq!(stored, 300, "{topic}");
    }
    server.stop().await.unwrap();
}
