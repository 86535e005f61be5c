//! A queue (share group) worked by several workers while the whole server is killed
//! with SIGKILL at random moments, and a producer keeps a backlog of jobs. Workers
//! accept most of what they get, release some, leave some to their locks' end, and give
//! up on calls that take too long (cancelled fetches and acknowledgements). Afterwards:
//! - a record whose acceptance was acknowledged is never handed out by a later fetch;
//! - no record is handed out twice with the same delivery count: the group journals
//!   its locks before it answers, and a process kill keeps the page cache, so a restart
//!   never forgets a delivery (nor counts one twice);
//! - once the queue is drained after the last restart, every record is accepted, once.
//!
//! The journal passes its snapshot threshold several times during the run, so kills
//! land around snapshots too. `STROM_CRASH_CYCLES` sets the kills (15 by default;
//! `scripts/crash.sh` runs more), `STROM_CRASH_SEED` the seed of their timing and of
//! the workers' choices.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::{env_or, free_addr, Rng};
use strom::client::Client;
use strom::grpc::pb::{self, AckType};

const TOPIC: &str = "jobs";
const GROUP: &str = "workers";
const PARTITIONS: u32 = 3;
const WORKERS: u64 = 3;
/// Jobs produced but not yet accepted the producer keeps the queue at, about.
const BACKLOG: usize = 6_000;

type Id = (u32, u64);

/// What the workers saw, each event with its place in one order of the whole run.
#[derive(Default)]
struct Seen {
    /// (partition, offset, delivery count), with the order number taken before the
    /// fetch that brought it was sent.
    delivered: Vec<(Id, u16, u64)>,
    /// Acceptances the server acknowledged, with the order number taken after.
    accepted: Vec<(Id, u64)>,
}

struct Run {
    addr: String,
    order: AtomicU64,
    /// The kills are over: the producer stops.
    stop: AtomicBool,
    /// The queue is drained: the workers stop.
    drain: AtomicBool,
    seen: Mutex<Seen>,
}

impl Run {
    fn next(&self) -> u64 {
        self.order.fetch_add(1, Ordering::SeqCst)
    }
}

async fn fetch(client: &Client, member: &str, max: u32) -> Result<pb::ShareFetchResponse, ()> {
    let request = pb::ShareFetchRequest {
        group: GROUP.into(),
        member_id: member.into(),
        topic: TOPIC.into(),
        max_records: max,
        max_wait_ms: 100,
    };
    // Given up (cancelled) if slow: the server must take the call's locks back.
    let mut queues = client.queues();
    let call = queues.share_fetch(request);
    match tokio::time::timeout(Duration::from_millis(400), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        _ => Err(()),
    }
}

/// Acknowledges `ids`; the ones the server applied, if it answered.
async fn ack(client: &Client, member: &str, ids: &[Id], kind: AckType) -> Option<Vec<Id>> {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(p, o) in ids {
        by_partition.entry(p).or_default().push(o);
    }
    let request = pb::ShareAcknowledgeRequest {
        group: GROUP.into(),
        member_id: member.into(),
        topic: TOPIC.into(),
        acks: by_partition
            .into_iter()
            .map(|(partition, offsets)| pb::Acknowledgement {
                partition,
                offsets,
                r#type: kind as i32,
            })
            .collect(),
    };
    let mut queues = client.queues();
    let call = queues.share_acknowledge(request);
    let refused = match tokio::time::timeout(Duration::from_millis(400), call).await {
        Ok(Ok(response)) => response.into_inner().refused,
        _ => return None,
    };
    let refused: Vec<Id> = refused.iter().map(|r| (r.partition, r.offset)).collect();
    Some(
        ids.iter()
            .filter(|id| !refused.contains(id))
            .copied()
            .collect(),
    )
}

async fn work(run: Arc<Run>, seed: u64) {
    let client = Client::connect(&run.addr).await.unwrap();
    let mut rng = Rng(seed);
    let mut member = String::new();
    while !run.drain.load(Ordering::SeqCst) {
        let sent = run.next();
        let Ok(fetched) = fetch(&client, &member, 200).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        member = fetched.member_id;
        let ids: Vec<Id> = fetched
            .records
            .iter()
            .map(|r| (r.partition, r.record.as_ref().unwrap().offset))
            .collect();
        {
            let mut seen = run.seen.lock().unwrap();
            for (r, id) in fetched.records.iter().zip(&ids) {
                seen.delivered.push((*id, r.delivery_count as u16, sent));
            }
        }
        match rng.below(10) {
            0 => {} // left to the lock's end
            1 => {
                let _ = ack(&client, &member, &ids, AckType::Release).await;
            }
            _ => {
                if let Some(applied) = ack(&client, &member, &ids, AckType::Accept).await {
                    let at = run.next();
                    let mut seen = run.seen.lock().unwrap();
                    seen.accepted.extend(applied.into_iter().map(|id| (id, at)));
                }
            }
        }
    }
}

/// Produces 300 jobs to each partition whenever the backlog is short, until stopped;
/// retries what fails (a job may then be there twice: both are worked).
async fn produce(run: Arc<Run>) {
    let client = Client::connect(&run.addr).await.unwrap();
    let mut n = 0u64;
    while !run.stop.load(Ordering::SeqCst) {
        let accepted = run.seen.lock().unwrap().accepted.len();
        if (n as usize) * (PARTITIONS as usize) > accepted + BACKLOG {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for partition in 0..PARTITIONS {
            let records = (n..n + 300)
                .map(|i| pb::Record {
                    value: Bytes::from(format!("job {partition}/{i}")),
                    ..Default::default()
                })
                .collect();
            let request = pb::ProduceRequest {
                topic: TOPIC.into(),
                partition: Some(partition),
                records,
                ..Default::default()
            };
            let mut log = client.log();
            while log.produce(request.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 300;
    }
}

fn describe(runtime: &tokio::runtime::Runtime, addr: &str) -> pb::DescribeShareGroupResponse {
    runtime.block_on(async {
        let client = Client::connect(addr).await.unwrap();
        let request = pb::DescribeShareGroupRequest {
            group: GROUP.into(),
        };
        let response = client.queues().describe_share_group(request).await;
        response.unwrap().into_inner()
    })
}

#[test]
fn a_queue_keeps_its_acceptances_and_delivery_counts_across_sigkills() {
    let cycles = env_or("STROM_CRASH_CYCLES", 15);
    let seed = env_or("STROM_CRASH_SEED", 0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut serve = Serve::start_at(dir.path(), &addr);
    let partitions = PARTITIONS.to_string();
    serve.ok(&["topic", "create", TOPIC, "-p", &partitions], b"");
    let config = [
        "start=earliest",
        "lock.ms=1000",
        "max.deliveries=1000",
        "max.in.flight=4000",
    ];
    for pair in config {
        serve.ok(&["queue", "config", GROUP, "--set", pair], b"");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = Arc::new(Run {
        addr: addr.clone(),
        order: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        drain: AtomicBool::new(false),
        seen: Mutex::new(Seen::default()),
    });
    let producer = runtime.spawn(produce(Arc::clone(&run)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| runtime.spawn(work(Arc::clone(&run), seed ^ (w + 1))))
        .collect();
    let mut rng = Rng(seed);
    let started = Instant::now();
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        drop(serve); // SIGKILL, and reaped
        serve = Serve::start_at(dir.path(), &addr);
    }
    let killed = Instant::now();
    // Drained after the last restart: every record is accepted in the end.
    run.stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), producer)
            .await
            .expect("the producer stops")
            .unwrap();
    });
    let ends = runtime.block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        let mut ends = Vec::new();
        for partition in 0..PARTITIONS {
            let request = pb::ListOffsetsRequest {
                topic: TOPIC.into(),
                partition,
                spec: Some(pb::list_offsets_request::Spec::Latest(true)),
            };
            ends.push(
                client
                    .log()
                    .list_offsets(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .offset,
            );
        }
        ends
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut states = loop {
        let states = describe(&runtime, &addr).partitions;
        let finished: Vec<u64> = states.iter().map(|p| p.start_offset).collect();
        if states.len() == ends.len() && finished.iter().sum::<u64>() == ends.iter().sum::<u64>() {
            break states;
        }
        assert!(Instant::now() < deadline, "not drained in time: {states:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let drained = Instant::now();
    run.drain.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for w in workers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("workers stop")
                .unwrap();
        }
    });

    states.sort_by_key(|p| p.partition);
    for (p, &end) in states.iter().zip(&ends) {
        assert_eq!(
            (p.start_offset, p.available, p.in_flight),
            (end, 0, 0),
            "{p:?}"
        );
        assert_eq!((p.accepted, p.dead_lettered, p.lost), (end, 0, 0), "{p:?}");
    }
    let seen = run.seen.lock().unwrap();
    // No delivery forgotten or counted twice: each count of a record comes once.
    let mut counts: HashMap<(Id, u16), u64> = HashMap::new();
    for &(id, count, _) in &seen.delivered {
        *counts.entry((id, count)).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "records delivered twice with one count: {twice:?}"
    );
    // Never handed out after an acknowledged acceptance.
    let accepted: HashMap<Id, u64> = seen.accepted.iter().copied().collect();
    for &(id, count, sent) in &seen.delivered {
        if let Some(&at) = accepted.get(&id) {
            assert!(
                sent < at,
                "{id:?} handed out (count {count}) by a fetch sent after its acceptance"
            );
        }
    }
    let redelivered = seen.delivered.iter().filter(|d| d.1 > 1).count();
    assert!(
        seen.accepted.len() > 1000 && redelivered > 100,
        "the run did something: {} acceptances, {redelivered} redeliveries",
        seen.accepted.len()
    );
    eprintln!(
        "{cycles} kills in {:.1}s, drained {:.1}s after: {} records, {} deliveries ({redelivered} redeliveries), {} acknowledged acceptances",
        (killed - started).as_secs_f64(),
        (drained - killed).as_secs_f64(),
        ends.iter().sum::<u64>(),
        seen.delivered.len(),
        seen.accepted.len()
    );
}
