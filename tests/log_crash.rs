//! Crash test: a child process appends with fsync on every append and reports each
//! acknowledged batch; the parent kills it with SIGKILL at a random moment, reopens the
//! log and checks that every acknowledged record is there, in order, with no gap and
//! nothing unreadable after it. The child is this test binary, re-run in child mode.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{batch_at, verify_log, Rng};
use strom::log::{FlushPolicy, Log, LogConfig};

const CHILD_DIR: &str = "STROM_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "STROM_CRASH_CHILD_SEED";

fn config() -> LogConfig {
    // Small segments, so kills also land around rolls and checkpoints.
    LogConfig {
        segment_bytes: 256 << 10,
        flush: FlushPolicy::EveryAppend,
        ..LogConfig::default()
    }
}

/// Child mode: append until killed, printing `acked <next offset>` after each append.
#[test]
fn crash_child_appender() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return; // not a child: nothing to do
    };
    let (mut log, _) = Log::open(&dir, config()).unwrap();
    let mut rng = Rng(seed.parse().unwrap());
    println!("ready");
    loop {
        let most = if rng.below(4) == 0 { 400 } else { 20 }; // some batches of ~300 KiB
        let n = 1 + rng.below(most);
        let info = log.append(&mut batch_at(log.next_offset(), n)).unwrap();
        println!("acked {}", info.last_offset + 1);
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch() {
    let kills: u64 = std::env::var("STROM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_SEED, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // libtest prints its own banner first.
        while !rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not start")
            .ends_with("ready")
        {}
        let mut rng = Rng(round ^ 0xC0FFEE);
        std::thread::sleep(Duration::from_millis(2 + rng.below(60)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Only complete lines count: a line cut by the kill was not an acknowledgement.
        let acked = rx
            .try_iter()
            .filter_map(|l| l.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()))
            .max();
        let acked = acked.unwrap_or(acked_total).max(acked_total);

        let started = Instant::now();
        let (mut log, report) = Log::open(dir.path(), config()).unwrap();
        assert!(!report.clean, "a killed process cannot have closed the log");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(
            log.next_offset() >= acked,
            "round {round}: acked up to {acked}, log ends at {}",
            log.next_offset()
        );
        assert_eq!(verify_log(&log), log.next_offset() - log.log_start_offset());
        acked_total = log.next_offset();
        // Retention keeps the log small, so each round re-verifies everything written
        // since the last one (and a little before) without re-reading all history.
        log.delete_segments_below(acked_total.saturating_sub(2000))
            .unwrap();
        drop(log); // not closed: the next child's open recovers again
    }
    assert!(
        acked_total > kills,
        "the children appended something ({acked_total} records)"
    );
}
