//! Compaction of one partition: `cargo bench --bench compaction`.
//!
//! Writes a log of `STROM_COMPACT_BYTES` (default 1 GiB) of 1 KiB records over
//! `STROM_COMPACT_KEYS` (default 100,000) distinct keys in random order, in 128 MiB
//! segments, then times one compaction pass (plan, map, rewrite, sync, swap) and prints
//! MB/s of the log read, the key map's size and the process's peak RSS. With
//! `STROM_COMPACT_COLD=1` the page cache is dropped before the pass (needs root), so
//! the pass reads from the disk. Each run prints one line; compare runs alternately.

use std::time::Instant;

use bytes::Bytes;
use strom::log::{BatchBuilder, CompactionPolicy, FlushPolicy, Log, LogConfig, Record};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours means "not us".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "compaction")
    {
        return;
    }
    let total = env("STROM_COMPACT_BYTES", 1 << 30);
    let keys = env("STROM_COMPACT_KEYS", 100_000);
    let dir = tempfile::Builder::new()
        .prefix("strom-compaction-bench")
        .tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let config = LogConfig {
        segment_bytes: 128 << 20,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    let value = Bytes::from(vec![b'v'; 1000]);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let started = Instant::now();
    let now = strom::broker::now_ms();
    while log.size_bytes() < total {
        let mut batch = BatchBuilder::default();
        for _ in 0..100 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = format!("key-{:08}", rng % keys);
            batch
                .push(&Record {
                    key: Some(Bytes::from(key)),
                    value: value.clone(),
                    headers: vec![],
                    timestamp_ms: now - 60_000,
                })
                .unwrap();
        }
        log.append(&mut batch.build().unwrap()).unwrap();
    }
    log.roll().unwrap();
    log.flush().unwrap();
    let written = log.size_bytes();
    let fill_secs = started.elapsed().as_secs_f64();
    if std::env::var("STROM_COMPACT_COLD").is_ok_and(|v| v == "1") {
        std::fs::write("/proc/sys/vm/drop_caches", "3\n").expect("root, to drop the page cache");
    }
    let rss_before = peak_rss_kib();
    let policy = CompactionPolicy {
        min_lag_ms: 0,
        delete_retention_ms: 86_400_000,
        timestamp_after_max_ms: 3_600_000,
        max_keys: strom::broker::max_map_keys(32 << 20),
        segment_bytes: 128 << 20,
    };
    let started = Instant::now();
    let plan = log
        .plan_compaction(&policy, now, None)
        .expect("segments to compact");
    let compacted = plan.run(&policy, now).unwrap();
    let stats = compacted.stats;
    log.apply_compaction(compacted).unwrap().run().unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "compaction: {:.0} MB/s ({} MB read in {:.2} s, {} MB written, {} of {} records kept, {} keys, key map {:.1} MiB, peak RSS {} MiB before the pass and {} MiB after; fill {:.1} s)",
        stats.bytes_read as f64 / secs / 1e6,
        stats.bytes_read / 1_000_000,
        secs,
        stats.bytes_written / 1_000_000,
        stats.records_kept,
        stats.records_read,
        stats.keys,
        stats.map_bytes as f64 / (1 << 20) as f64,
        rss_before / 1024,
        peak_rss_kib() / 1024,
        fill_secs,
    );
    assert_eq!(stats.bytes_read, written, "every sealed segment was read");
}
