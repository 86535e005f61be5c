//! A long history read from its start through the real server: maps and descriptors
//! stay bounded by the segment cache, whatever the number of segments.
//!
//! The topic is written with the log library in segments far smaller than a topic may
//! be configured with (1 KiB against 1 MiB), so that many segments cost little disk; the
//! server reads whatever segments it finds. `STROM_SEGMENTS` sets how many (default
//! 1,500, more than the cache's 1,024, so a cache that never closed a segment would
//! fail); `scripts/segments.sh` runs it with 100,000 and reports the figures.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use strom::broker::data_dir::{new_topic_id, DataDir};
use strom::broker::topic::{TopicConfig, TopicMetadata};
use strom::broker::Limits;
use strom::client::{Consumer, Start};
use strom::log::{BatchBuilder, FlushPolicy, Log, LogConfig, Record};

/// Maps and descriptors of this process on files under `dir`.
fn open_under(dir: &Path) -> (usize, usize) {
    let needle = dir.display().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .count();
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|t| t.starts_with(dir))
        .count();
    (maps, fds)
}

/// Writes topic `long` of one partition with `segments` segments of one record each.
fn write_history(data: &Path, segments: u64) {
    let id = new_topic_id();
    let topic_dir = {
        let data_dir = DataDir::open(data).unwrap(); // released at the end of this block
        data_dir.topic_dir("long", &id)
    };
    std::fs::create_dir_all(&topic_dir).unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(topic_dir.join("0"), config).unwrap();
    for i in 0..segments {
        let mut batch = BatchBuilder::default();
        batch
            .push(&Record {
                value: Bytes::from(vec![(i % 251) as u8; 900]),
                timestamp_ms: 1,
                ..Record::default()
            })
            .unwrap();
        log.append(&mut batch.build().unwrap()).unwrap();
    }
    assert_eq!(log.segment_count() as u64, segments);
    log.close().unwrap();
    TopicMetadata {
        name: "long".into(),
        id,
        partitions: 1,
        config: TopicConfig::default(),
        overrides: None,
        created: Vec::new(),
    }
    .write(&topic_dir)
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_reads_from_its_start_with_bounded_maps_and_descriptors() {
    let segments: u64 = std::env::var("STROM_SEGMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_history(dir.path(), segments);
    let written = started.elapsed();

    let limits = Limits::default();
    let cache = limits.max_open_segments;
    let server = TestServer::start_with(dir.path(), limits).await;
    let client = server.client().await;
    let mut consumer = Consumer::new(&client, "long", 0, Start::Earliest)
        .await
        .unwrap();
    let (mut peak_maps, mut peak_fds) = (0, 0);
    let started = Instant::now();
    let mut read = 0u64;
    while read < segments {
        let records = consumer.poll(Duration::ZERO).await.unwrap();
        for r in &records {
            assert_eq!(r.offset, read);
            assert_eq!(r.value[0], (read % 251) as u8);
            read += 1;
        }
        let (maps, fds) = open_under(dir.path());
        (peak_maps, peak_fds) = (peak_maps.max(maps), peak_fds.max(fds));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{segments} segments: written in {:.1} s, read in {:.1} s; peak {peak_maps} maps, {peak_fds} descriptors on the data",
        written.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    // Three maps per open sealed segment, three for the active one; descriptors only for
    // the active segment and topic files.
    assert!(
        peak_maps <= 3 * cache + 3,
        "{peak_maps} maps for a cache of {cache}"
    );
    assert!(peak_fds <= 8, "{peak_fds} descriptors");
    server.stop().await.unwrap();
}
