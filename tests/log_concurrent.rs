//! Readers and a writer sharing a `Log` behind a `RwLock`, as the broker will: readers
//! keep the slices they got after releasing the lock and read them while the writer
//! appends, rolls, deletes old segments and truncates. A map shrunk under a reader would
//! kill this process with SIGBUS; a wrong slice would fail the value checks.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use common::{batch_at, value_for, Rng};
use strom::log::{records, BatchHeader, FlushPolicy, Log, LogConfig};

#[test]
fn readers_keep_valid_slices_across_appends_retention_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 << 10,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), config).unwrap();
    let log = Arc::new(RwLock::new(log));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut rng = Rng(seed);
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let read = {
                        let log = log.read().unwrap();
                        let (start, end) = (log.log_start_offset(), log.next_offset());
                        if start == end {
                            continue;
                        }
                        log.read(start + rng.below(end - start), 256 << 10).unwrap()
                    }; // lock released: the slices must stay valid on their own
                    std::thread::yield_now();
                    for chunk in &read.chunks {
                        let mut rest = &chunk[..];
                        while !rest.is_empty() {
                            let (batch, after) =
                                rest.split_at(BatchHeader::parse(rest).length as usize);
                            for r in records(batch).unwrap() {
                                assert_eq!(r.value, &value_for(r.offset)[..]);
                                checked += 1;
                            }
                            rest = after;
                        }
                    }
                }
                checked
            })
        })
        .collect();
    let mut rng = Rng(99);
    for step in 0..3000u64 {
        let mut log = log.write().unwrap();
        let next = log.next_offset();
        log.append(&mut batch_at(next, 1 + rng.below(10))).unwrap();
        if step % 97 == 0 {
            let end = log.next_offset();
            log.delete_segments_below(end.saturating_sub(300)).unwrap();
        }
        if step % 131 == 0 {
            // Truncate to a batch boundary a little below the end: the batch just appended.
            log.truncate(next).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checked > 0, "readers read something");
}
