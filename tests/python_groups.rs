//! A consumer group whose members are Python processes speaking only the protos:
//! `examples/python/group_consumer.py`, run twice at once in one group against the real
//! server, must consume every record exactly once between them, hand partitions over at
//! their committed offsets, and leave the group with everything committed. Needs grpcio:
//! `scripts/test.sh` installs it into `target/pyenv` and points STROM_PYTHON at it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use strom::broker::Limits;
use strom::groups::GroupsConfig;
use strom::grpc::pb::{self, groups_client::GroupsClient};
use strom::server::ServeOptions;
use tonic::transport::Channel;

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const PARTITIONS: u32 = 4;
/// A consumer exits once it has its share of records, or after this long without one
/// (a safety net: long enough to span a rebalance and a Python start on a slow machine).
const IDLE_EXIT_MS: &str = "30000";
/// The most any one consumer may run.
const CONSUMER_LIMIT: Duration = Duration::from_secs(60);

/// A running `group_consumer.py`, killed if dropped before it exits.
struct PyConsumer {
    name: &'static str,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a consumer printed: (partition, offset, value) per record, and its stderr.
struct Consumed {
    records: Vec<(u32, u64, String)>,
    stderr: String,
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = from.read_to_string(&mut out);
        out
    })
}

impl PyConsumer {
    fn start(name: &'static str, addr: &str, idle_exit_ms: &str, max_records: &str) -> PyConsumer {
        let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/python/group_consumer.py"
        );
        let mut child = Command::new(&python)
            .args([script, addr, GROUP, TOPIC, "--idle-exit-ms", idle_exit_ms])
            .args(["--max-records", max_records])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} ({e}); run ./scripts/test.sh, which installs grpcio")
            });
        let stdout = Some(read_all(child.stdout.take().unwrap()));
        let stderr = Some(read_all(child.stderr.take().unwrap()));
        PyConsumer {
            name,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the consumer to exit by itself (failing the test past `limit`), and
    /// parses what it printed.
    async fn finish(mut self, limit: Duration) -> Consumed {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "consumer {} still running after {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert!(
            status.success(),
            "consumer {} failed ({status}; ./scripts/test.sh installs grpcio):\n{stdout}\n{stderr}",
            self.name
        );
        let records = stdout
            .lines()
            .map(|line| {
                let mut fields = line.splitn(3, ' ');
                let mut next = || fields.next().unwrap_or_else(|| panic!("bad line {line:?}"));
                let partition = next().parse().unwrap();
                let offset = next().parse().unwrap();
                (partition, offset, next().to_string())
            })
            .collect();
        Consumed { records, stderr }
    }
}

impl Drop for PyConsumer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Produces `values` round-robin over the partitions (one request per record); returns
/// (partition, offset, value) of each.
async fn produce(client: &strom::client::Client, values: &[String]) -> Vec<(u32, u64, String)> {
    let mut log = client.log();
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let partition = i as u32 % PARTITIONS;
        let ack = log
            .produce(pb::ProduceRequest {
                topic: TOPIC.into(),
                partition: Some(partition),
                records: vec![pb::Record {
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.push((partition, ack.base_offset, value.clone()));
    }
    out
}

/// Polls DescribeGroup until `done` holds of it, or fails after 30 s.
async fn wait_for_group(
    groups: &mut GroupsClient<Channel>,
    what: &str,
    done: impl Fn(&pb::DescribeGroupResponse) -> bool,
) -> pb::DescribeGroupResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = groups
            .describe_group(pb::DescribeGroupRequest {
                group: GROUP.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(d) = &described {
            if done(d) {
                return d.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "group never got to: {what}; last: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fully_committed(d: &pb::DescribeGroupResponse, records: usize) -> bool {
    d.offsets.len() == PARTITIONS as usize
        && d.offsets.iter().all(|o| o.lag == 0)
        && d.offsets.iter().map(|o| o.high_watermark).sum::<u64>() == records as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn python_group_members_share_partitions_and_consume_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    // Short heartbeats, so that partitions move within a fraction of a second.
    let options = ServeOptions {
        groups: GroupsConfig::new(Duration::from_millis(200), Duration::from_secs(3600)),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options).await;
    let addr = server.addr.to_string();
    let client = server.client_with_topic(TOPIC, PARTITIONS).await;
    let mut groups = GroupsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let values: Vec<String> = (0..200).map(|i| format!("order-{i:03}")).collect();

    // The first half, consumed by member A alone: it owns all four partitions.
    let mut produced = produce(&client, &values[..100]).await;
    let a = PyConsumer::start("A", &addr, IDLE_EXIT_MS, "150");
    wait_for_group(&mut groups, "A alone, with the first half committed", |d| {
        d.members.len() == 1 && d.state == "stable" && fully_committed(d, 100)
    })
    .await;

    // Member B joins: two partitions move from A to B, which must start them at A's
    // committed offsets. The second half then goes to both.
    let b = PyConsumer::start("B", &addr, IDLE_EXIT_MS, "50");
    let shared = wait_for_group(&mut groups, "A and B, two partitions each", |d| {
        d.members.len() == 2
            && d.state == "stable"
            && d.members.iter().all(|m| {
                m.assignment
                    .iter()
                    .map(|t| t.partitions.len())
                    .sum::<usize>()
                    == 2
            })
    })
    .await;
    produced.extend(produce(&client, &values[100..]).await);

    let a = a.finish(CONSUMER_LIMIT).await;
    let b = b.finish(CONSUMER_LIMIT).await;
    let context = format!(
        "group while shared: {shared:?}\nA's stderr:\n{}\nB's stderr:\n{}",
        a.stderr, b.stderr
    );

    // Exactly once: the union is what was produced, and nothing came twice.
    let mut seen: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for record in a.records.iter().chain(&b.records) {
        let previous = seen.insert((record.0, record.1), record.2.clone());
        assert!(
            previous.is_none(),
            "partition {} offset {} consumed twice\n{context}",
            record.0,
            record.1
        );
    }
    let expected: BTreeMap<(u32, u64), String> =
        produced.into_iter().map(|(p, o, v)| ((p, o), v)).collect();
    assert_eq!(seen, expected, "{context}");
    // A had all of the first half; the second went half to A, half to B.
    assert_eq!(
        (a.records.len(), b.records.len()),
        (150, 50),
        "records consumed by A and B\n{context}"
    );
    // B's records are all of the second half: it started its partitions at A's commits.
    let first_half: BTreeSet<&String> = values[..100].iter().collect();
    assert!(
        b.records.iter().all(|r| !first_half.contains(&r.2)),
        "B consumed records A had committed\n{context}"
    );

    // Both left, and committed everything: the committed offsets are the high watermarks.
    let described = wait_for_group(&mut groups, "empty", |d| d.members.is_empty()).await;
    assert_eq!(described.state, "empty");
    let committed: BTreeMap<u32, u64> = groups
        .fetch_offsets(pb::FetchOffsetsRequest {
            group: GROUP.into(),
            topics: vec![TOPIC.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .offsets
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    let high_watermarks: BTreeMap<u32, u64> = client
        .admin()
        .describe_topic(TOPIC)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    assert_eq!(committed, high_watermarks);
    assert_eq!(high_watermarks.values().sum::<u64>(), 200);

    // A third member, alone in the group, resumes from the commits: nothing is left.
    let c = PyConsumer::start("C", &addr, "5000", "0")
        .finish(CONSUMER_LIMIT)
        .await;
    assert!(
        c.records.is_empty(),
        "a restarted member consumed again: {:?}\n{}",
        c.records,
        c.stderr
    );
    assert!(
        c.stderr
            .contains("assigned [0, 1, 2, 3] from [50, 50, 50, 50]"),
        "{}",
        c.stderr
    );

    server.stop().await.unwrap();
}
