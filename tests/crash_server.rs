//! The whole server killed with SIGKILL at random moments while idempotent producers
//! write and retry on every error, and a committer commits group offsets: afterwards
//! every acknowledged record is there exactly once, each producer's records are in
//! order in every partition, and no committed offset is past the data. Once with fsync
//! durability and once with page-cache durability (a process kill keeps the page
//! cache, so nothing acknowledged may be lost either).
//!
//! `STROM_CRASH_CYCLES` sets the kills per test (30 by default; `scripts/crash.sh` runs
//! 300), `STROM_CRASH_SEED` the seed of their timing.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::{env_or, free_addr, Rng};
use strom::client::{Client, Producer, ProducerConfig};
use strom::grpc::pb;

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
const PRODUCERS: u64 = 3;
const GROUP: &str = "g";

/// What one producer saw: acknowledged (partition, offset, n), and failed n.
#[derive(Default)]
struct Outcome {
    acked: Vec<(u32, u64, u64)>,
    failed: Vec<(u64, String)>,
}

fn value(producer: u64, n: u64) -> Bytes {
    // Padded so that segments roll (1 MiB) and snapshots are written during the run.
    Bytes::from(format!("{producer}:{n}:{}", "x".repeat(200)))
}

fn parse(value: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(value).unwrap();
    let mut parts = text.split(':');
    let producer = parts.next().unwrap().parse().unwrap();
    let n = parts.next().unwrap().parse().unwrap();
    (producer, n)
}

async fn produce(addr: String, id: u64, stop: Arc<AtomicBool>) -> Outcome {
    let client = Client::connect(&addr).await.unwrap();
    let producer = Producer::new(
        client,
        ProducerConfig {
            linger: Duration::from_millis(2),
            batch_bytes: 16 << 10,
            delivery_timeout: Duration::from_secs(120),
            max_in_flight: 16,
            ..ProducerConfig::default()
        },
    );
    let mut out = Outcome::default();
    let mut pending = VecDeque::new();
    let mut n = 0;
    async fn settle(
        (n, ack): (
            u64,
            tokio::sync::oneshot::Receiver<Result<strom::client::Ack, tonic::Status>>,
        ),
        out: &mut Outcome,
    ) {
        match ack.await.expect("the producer answers every record") {
            Ok(strom::client::Ack { partition, offset }) => out.acked.push((partition, offset, n)),
            Err(status) => out.failed.push((n, format!("{status:?}"))),
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let partition = (n % u64::from(PARTITIONS)) as u32;
        let record = pb::Record {
            value: value(id, n),
            ..Default::default()
        };
        pending.push_back((n, producer.send(TOPIC, Some(partition), record).await));
        n += 1;
        if pending.len() > 2_000 {
            settle(pending.pop_front().unwrap(), &mut out).await;
        }
        if n % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    producer.flush().await;
    for item in pending {
        settle(item, &mut out).await;
    }
    producer.close().await;
    out
}

/// Commits each partition's high watermark for the group, over and over; returns the
/// commits that succeeded.
async fn commit(addr: String, stop: Arc<AtomicBool>) -> Vec<(u32, u64)> {
    let mut committed = Vec::new();
    let Ok(client) = Client::connect(&addr).await else {
        return committed;
    };
    while !stop.load(Ordering::Relaxed) {
        for partition in 0..PARTITIONS {
            let latest = client
                .log()
                .list_offsets(pb::ListOffsetsRequest {
                    topic: TOPIC.into(),
                    partition,
                    spec: Some(pb::list_offsets_request::Spec::Latest(true)),
                })
                .await;
            let Ok(latest) = latest else { continue };
            let offset = latest.into_inner().offset;
            let request = pb::CommitOffsetsRequest {
                group: GROUP.into(),
                offsets: vec![pb::OffsetCommit {
                    topic: TOPIC.into(),
                    partition,
                    offset,
                    metadata: String::new(),
                }],
                ..Default::default()
            };
            if client.groups().commit_offsets(request).await.is_ok() {
                committed.push((partition, offset));
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    committed
}

/// Every record of a partition, as (offset, producer, n).
async fn read_partition(client: &Client, partition: u32) -> Vec<(u64, u64, u64)> {
    common::fetch_all(client, TOPIC, partition)
        .await
        .into_iter()
        .map(|(offset, value)| {
            let (producer, n) = parse(value.as_bytes());
            (offset, producer, n)
        })
        .collect()
}

fn run(durability: &str) {
    let cycles = env_or("STROM_CRASH_CYCLES", 30);
    let seed = env_or("STROM_CRASH_SEED", 0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut serve = Serve::start_at(dir.path(), &addr);
    serve.ok(
        &[
            "topic",
            "create",
            TOPIC,
            "-p",
            &PARTITIONS.to_string(),
            "--config",
            &format!("durability={durability}"),
            "--config",
            "segment.bytes=1048576",
        ],
        b"",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| runtime.spawn(produce(addr.clone(), id, Arc::clone(&stop))))
        .collect();
    let committer = runtime.spawn(commit(addr.clone(), Arc::clone(&stop)));
    let mut rng = Rng(seed);
    let started = Instant::now();
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        drop(serve); // SIGKILL, and reaped
        serve = Serve::start_at(dir.path(), &addr);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let mut out = Vec::new();
        for p in producers {
            out.push(
                tokio::time::timeout(Duration::from_secs(180), p)
                    .await
                    .expect("producers finish")
                    .unwrap(),
            );
        }
        out
    });
    let committed = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), committer).await })
        .expect("the committer stops")
        .unwrap();

    let (records, high_watermarks, group) = runtime.block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        let mut records = BTreeMap::new();
        let mut hw = Vec::new();
        for partition in 0..PARTITIONS {
            let rs = read_partition(&client, partition).await;
            hw.push(rs.last().map_or(0, |r| r.0 + 1));
            records.insert(partition, rs);
        }
        let group = client
            .groups()
            .fetch_offsets(pb::FetchOffsetsRequest {
                group: GROUP.into(),
                topics: vec![TOPIC.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .offsets;
        (records, hw, group)
    });

    // Exactly once, and in order per partition and producer.
    let mut seen: HashMap<(u64, u64), (u32, u64)> = HashMap::new();
    for (&partition, rs) in &records {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(offset, producer, n) in rs {
            if let Some(before) = seen.insert((producer, n), (partition, offset)) {
                panic!("record {producer}:{n} stored twice: at {before:?} and at ({partition}, {offset})");
            }
            if let Some(&prev) = last.get(&producer) {
                assert!(
                    n > prev,
                    "partition {partition}: producer {producer}'s record {n} after {prev}"
                );
            }
            last.insert(producer, n);
        }
    }
    // Every acknowledged record is where its acknowledgement said.
    let mut acked = 0;
    for (producer, outcome) in outcomes.iter().enumerate() {
        assert!(
            outcome.failed.is_empty(),
            "producer {producer} gave up on records: {:?}",
            &outcome.failed[..outcome.failed.len().min(5)]
        );
        for &(partition, offset, n) in &outcome.acked {
            assert_eq!(
                seen.get(&(producer as u64, n)),
                Some(&(partition, offset)),
                "acknowledged record {producer}:{n} at ({partition}, {offset})"
            );
            acked += 1;
        }
    }
    // Committed offsets are never past the data.
    for c in &group {
        assert!(
            c.offset <= high_watermarks[c.partition as usize],
            "committed {c:?} past {high_watermarks:?}"
        );
    }
    assert!(
        !committed.is_empty() && acked > 1_000,
        "the run did something: {acked} acknowledged, {} commits",
        committed.len()
    );
    eprintln!(
        "{durability}: {cycles} kills in {:.1}s, {acked} records acknowledged, {} stored, {} group commits",
        started.elapsed().as_secs_f64(),
        seen.len(),
        committed.len()
    );
}

#[test]
fn fsync_produces_survive_sigkill_exactly_once_and_in_order() {
    run("fsync");
}

#[test]
fn page_cache_produces_survive_process_kills_exactly_once_and_in_order() {
    run("page_cache");
}
