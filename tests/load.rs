//! Many clients at once against `strom serve`: producers (idempotent, each with its own
//! connection and producer id) and long-polling consumers, for a bounded time on
//! loopback. No request may fail, the server's memory must stay bounded, and its file
//! descriptors must come back to where they were once the clients have gone.
//!
//! `STROM_LOAD_CLIENTS` (default 500) and `STROM_LOAD_SECS` (default 8) size the run;
//! `scripts/load.sh` runs it for minutes in release and prints the figures that go into
//! BENCHMARKS.md.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cli::Serve;
use common::env_or;
use strom::client::Client;
use strom::grpc::pb;

const PARTITIONS: u32 = 8;

/// (anonymous resident memory in KiB, open descriptors) of a process. Anonymous: the
/// heap and stacks. Pages of mapped segment files also count in the resident set as they
/// are read, and belong to the page cache, not to the server's heap.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[derive(Default)]
struct Counts {
    produced: AtomicU64,
    requests: AtomicU64,
    fetched: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Counts {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(what);
    }
}

async fn producer(addr: String, i: u64, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let client = match Client::connect(&addr).await {
        Ok(c) => c,
        Err(e) => return counts.error(format!("connect: {e}")),
    };
    let id = match client
        .log()
        .init_producer(pb::InitProducerRequest::default())
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return counts.error(format!("InitProducer: {s}")),
    };
    let partition = (i % u64::from(PARTITIONS)) as u32;
    let mut sequence = 0;
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<pb::Record> = (0..10)
            .map(|n| pb::Record {
                value: Bytes::from(format!("{i}:{}:{}", sequence + n, "v".repeat(200))),
                ..Default::default()
            })
            .collect();
        let request = pb::ProduceRequest {
            topic: "load".into(),
            partition: Some(partition),
            records,
            // Half the producers wait for fsync (sharing group commits), half do not.
            durability: if i % 2 == 0 {
                pb::Durability::Fsync
            } else {
                pb::Durability::PageCache
            } as i32,
            producer_id: Some(id.producer_id),
            producer_epoch: Some(id.producer_epoch),
            base_sequence: Some(sequence),
            ..Default::default()
        };
        match client.log().produce(request).await {
            Ok(_) => {
                sequence += 10;
                counts.produced.fetch_add(10, Ordering::Relaxed);
                counts.requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => return counts.error(format!("produce: {status:?}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn consumer(addr: String, i: u64, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let client = match Client::connect(&addr).await {
        Ok(c) => c,
        Err(e) => return counts.error(format!("connect: {e}")),
    };
    let partition = (i % u64::from(PARTITIONS)) as u32;
    let mut offset = 0;
    while !stop.load(Ordering::Relaxed) {
        let request = pb::FetchRequest {
            topic: "load".into(),
            partition,
            offset,
            max_bytes: 64 << 10,
            max_wait_ms: 500,
            ..Default::default()
        };
        match client.log().fetch(request).await {
            Ok(r) => {
                let r = r.into_inner();
                counts
                    .fetched
                    .fetch_add(r.records.iter().count() as u64, Ordering::Relaxed);
                offset = r.next_offset;
            }
            Err(status) => return counts.error(format!("fetch: {status:?}")),
        }
    }
}

#[test]
fn hundreds_of_clients_produce_and_consume_without_errors_or_leaks() {
    let clients = env_or("STROM_LOAD_CLIENTS", 500);
    let secs = env_or("STROM_LOAD_SECS", 8);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    serve.ok(
        &["topic", "create", "load", "-p", &PARTITIONS.to_string()],
        b"",
    );
    let pid = serve.child.id();
    let (rss_before, fds_before) = usage(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, stop, counts) = (serve.addr.clone(), Arc::clone(&stop), Arc::clone(&counts));
            match i % 2 {
                0 => runtime.spawn(producer(addr, i / 2, stop, counts)),
                _ => runtime.spawn(consumer(addr, i / 2, stop, counts)),
            }
        })
        .collect();
    let started = Instant::now();
    let (mut rss_peak, mut fds_peak, mut samples) = (rss_before, fds_before, Vec::new());
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let (rss, fds) = usage(pid);
        rss_peak = rss_peak.max(rss);
        fds_peak = fds_peak.max(fds);
        samples.push(rss);
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("clients stop")
                .unwrap();
        }
    });
    drop(runtime); // every connection closed
    let elapsed = started.elapsed().as_secs_f64();
    // The server notices closed connections as it gets to them: wait for that, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut rss_after, mut fds_after) = usage(pid);
    while fds_after > fds_before + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (rss_after, fds_after) = usage(pid);
    }
    let produced = counts.produced.load(Ordering::Relaxed);
    let fetched = counts.fetched.load(Ordering::Relaxed);
    eprintln!(
        "load: {clients} clients for {elapsed:.0} s: {produced} records produced in {} requests ({:.0} requests/s), {fetched} records fetched; \
         server anonymous memory {} MiB before, peak {} MiB, {} MiB after (per second: {:?} MiB); descriptors {fds_before} before, peak {fds_peak}, {fds_after} after",
        counts.requests.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed) as f64 / elapsed,
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
        samples.iter().map(|kib| kib / 1024).collect::<Vec<_>>(),
    );
    assert_eq!(
        counts.errors.load(Ordering::Relaxed),
        0,
        "first error: {:?}",
        counts.first_error.lock().unwrap()
    );
    assert!(produced > 0 && fetched > 0);
    // Bounded: a few hundred connections and their buffers, not a growing heap.
    assert!(
        rss_peak < 1 << 20,
        "peak anonymous memory {} MiB",
        rss_peak / 1024
    );
    // Every connection's descriptor is released once its client has gone.
    assert!(
        fds_peak >= fds_before + clients as usize / 2,
        "the clients were connected: {fds_peak}"
    );
    assert!(
        fds_after <= fds_before + 4,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
}
