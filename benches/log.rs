//! Benchmarks of the partition log, from the page cache. Run: `cargo bench --bench log`.
//! `STROM_BENCH_BIG=0` skips the 10 GB open/recovery benches (they write 11 GB).
//!
//! - append: 1 KiB records in batches of 100 and 1000, already encoded (what the server
//!   hands the log), and with encoding included; flush policy `Os` (page cache).
//! - read: sequential reads of 1 MiB from a 512 MiB log, verifying CRCs and returning
//!   slices of the map; and the same with the one copy a Fetch response makes.
//! - open: a clean open of a 10 GB log of 100 segments.
//! - recover: opening after a crash with the same 16 MiB unflushed tail, for a 1 GB
//!   and a 10 GB log: the time must not grow with the log.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strom::log::naming::CHECKPOINT_FILE;
use strom::log::{BatchBuilder, FlushPolicy, Log, LogConfig, PendingBatch, Record};

const RECORD: usize = 1024;

fn page_cache() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{}", i % 64))),
            value: Bytes::from(vec![(i % 251) as u8; RECORD]),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn encode(records: &[Record]) -> PendingBatch {
    let mut builder = BatchBuilder::with_capacity(records.len() * (RECORD + 32));
    for r in records {
        builder.push(r).unwrap();
    }
    builder.build().unwrap()
}

/// Appends `iters` copies of `batch` to a fresh log; the log is deleted afterwards, so
/// its dirty pages are dropped rather than written back during the next sample.
fn append_fresh(batch: &PendingBatch, iters: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), page_cache()).unwrap();
    let mut batch = batch.clone();
    let started = Instant::now();
    for _ in 0..iters {
        black_box(log.append(&mut batch).unwrap());
    }
    started.elapsed()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for per_batch in [100, 1000] {
        let recs = records(per_batch);
        let batch = encode(&recs);
        group.throughput(Throughput::Bytes(batch.len_bytes() as u64));
        group.bench_function(BenchmarkId::new("encoded", per_batch), |b| {
            b.iter_custom(|iters| append_fresh(&batch, iters))
        });
        group.bench_function(BenchmarkId::new("encode+append", per_batch), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let (mut log, _) = Log::open(dir.path(), page_cache()).unwrap();
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(log.append(&mut encode(&recs)).unwrap());
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

fn fill(dir: &Path, config: LogConfig, bytes: u64) -> Log {
    let (mut log, _) = Log::open(dir, config).unwrap();
    let mut batch = encode(&records(1000));
    while log.size_bytes() < bytes {
        log.append(&mut batch).unwrap();
    }
    log
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path(), page_cache(), 512 << 20);
    let total = log.size_bytes();
    let mut group = c.benchmark_group("read");
    group.sample_size(20).throughput(Throughput::Bytes(total));
    group.bench_function("sequential 1 MiB reads, slices", |b| {
        b.iter(|| {
            let mut at = 0;
            while at < log.next_offset() {
                let read = log.read(at, 1 << 20).unwrap();
                at = read.next_offset;
                black_box(read);
            }
        })
    });
    group.bench_function("sequential 1 MiB reads, copied out", |b| {
        let mut out = Vec::with_capacity(2 << 20);
        b.iter(|| {
            let mut at = 0;
            while at < log.next_offset() {
                let read = log.read(at, 1 << 20).unwrap();
                out.clear();
                for chunk in &read.chunks {
                    out.extend_from_slice(chunk);
                }
                at = read.next_offset;
                black_box(&out);
            }
        })
    });
    group.finish();
}

/// A log of `bytes` in 100 segments, closed cleanly, then with a 16 MiB tail appended
/// after the last checkpoint. Returns the checkpoint that precedes the tail.
fn big_log(dir: &Path, bytes: u64) -> (LogConfig, Vec<u8>) {
    let config = LogConfig {
        segment_bytes: bytes / 100,
        checkpoint_interval: Duration::from_secs(3600),
        ..page_cache()
    };
    let log = fill(dir, config.clone(), bytes);
    log.close().unwrap();
    (config, std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap())
}

fn open_and_recover(c: &mut Criterion) {
    if std::env::var("STROM_BENCH_BIG").is_ok_and(|v| v == "0") {
        return;
    }
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    for gb in [1u64, 10] {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = big_log(dir.path(), gb * 1_000_000_000);
        let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let segments = log.segment_count();
        log.close().unwrap();
        group.bench_function(format!("clean, {gb} GB in {segments} segments"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let (log, report) = Log::open(dir.path(), config.clone()).unwrap();
                    total += started.elapsed();
                    assert!(report.clean);
                    log.close().unwrap();
                }
                total
            })
        });
        // The crash case: a 16 MiB tail past the checkpoint. Recovery rewrites the
        // checkpoint, so each iteration puts the old one back to recreate the crash.
        let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let checkpoint = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let mut batch = encode(&records(1000));
        for _ in 0..16 {
            log.append(&mut batch).unwrap();
        }
        drop(log);
        group.bench_function(format!("crash, 16 MiB tail, {gb} GB log"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    std::fs::write(dir.path().join(CHECKPOINT_FILE), &checkpoint).unwrap();
                    let started = Instant::now();
                    let (log, report) = Log::open(dir.path(), config.clone()).unwrap();
                    total += started.elapsed();
                    assert!(
                        !report.clean
                            && report.scanned_bytes > 16 << 20
                            && report.scanned_bytes < 18 << 20
                    );
                    drop(log);
                }
                total
            })
        });
    }
    group.finish();
}

/// What a roll costs under the partition's lock with many idempotent producers: the
/// producer snapshot is encoded there (and written by the flush after it, outside).
fn producer_snapshot(c: &mut Criterion) {
    use strom::log::producers::{snapshot, ProducerStates};
    use strom::log::ProducerInfo;
    let mut group = c.benchmark_group("producer_snapshot_encode");
    for producers in [100i64, 20_000] {
        let mut states = ProducerStates::default();
        let mut offset = 0;
        for id in 0..producers {
            for seq in 0..5 {
                let p = ProducerInfo {
                    id,
                    epoch: 0,
                    base_sequence: seq * 10,
                };
                states.record(&p, 10, offset, 1, usize::MAX);
                offset += 10;
            }
        }
        group.bench_with_input(
            BenchmarkId::from_parameter(producers),
            &states,
            |b, states| b.iter(|| snapshot::encode(offset, states)),
        );
    }
    group.finish();
}

criterion_group!(benches, append, read, open_and_recover, producer_snapshot);
criterion_main!(benches);
