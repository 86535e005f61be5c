//! A write that the disk refuses part-way leaves the log exactly as it was, and the
//! next append works once space is back. "Full" is simulated with a file-size limit
//! (RLIMIT_FSIZE, SIGXFSZ ignored): the kernel writes what fits, then fails with EFBIG,
//! which is the same torn, failed write a full disk produces. The limited process is
//! this test binary re-run as a child, so the limit never touches the test runner.

mod common;

use std::process::Command;

use common::{batch_at, log_files, verify_log};
use strom::log::{FlushPolicy, Log, LogConfig};

const CHILD_DIR: &str = "STROM_DISK_FULL_CHILD_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        flush: FlushPolicy::EveryAppend,
        ..LogConfig::default()
    }
}

#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (mut log, _) = Log::open(&dir, config()).unwrap();
    let failed = loop {
        let mut batch = batch_at(log.next_offset(), 40); // ~30 KiB
        let before = (log.next_offset(), log.size_bytes());
        match log.append(&mut batch) {
            Ok(_) => continue,
            Err(err) => {
                assert!(err.is_storage_full(), "a size-limit error, got {err}");
                assert_eq!(
                    (log.next_offset(), log.size_bytes()),
                    before,
                    "nothing committed"
                );
                let active = log_files(std::path::Path::new(&dir)).pop().unwrap();
                assert_eq!(
                    std::fs::metadata(&active).unwrap().len(),
                    before.1,
                    "the partial write was cut off"
                );
                let again = log.append(&mut batch).unwrap_err();
                assert!(again.is_storage_full());
                break (batch, before.0);
            }
        }
    };
    // Space comes back: lift this process's limit and retry the same batch.
    let pid = std::process::id().to_string();
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success());
    let (mut batch, expected_base) = failed;
    let info = log.append(&mut batch).unwrap();
    assert_eq!(info.base_offset, expected_base);
    log.append(&mut batch_at(log.next_offset(), 5)).unwrap();
    assert_eq!(verify_log(&log), log.next_offset());
    log.close().unwrap();
    println!("DISK-FULL-CHILD-OK {}", info.last_offset + 6);
}

#[test]
fn a_refused_write_leaves_the_log_unchanged_and_the_next_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // `trap "" XFSZ` ignores the signal (inherited across exec), so the write fails with
    // EFBIG instead of killing the process; `ulimit -S -f 256` caps files at 256 KiB.
    let out = Command::new("bash")
        .args(["-c", r#"trap "" XFSZ; ulimit -S -f 256; exec "$0" "$@""#])
        .arg(&exe)
        .args([
            "disk_full_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end: u64 = stdout
        .lines()
        .find_map(|l| l.split("DISK-FULL-CHILD-OK ").nth(1))
        .expect("the child ran its checks")
        .trim()
        .parse()
        .unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert!(report.clean);
    assert_eq!(log.next_offset(), end);
    assert!(
        log.size_bytes() > 256 << 10,
        "the log grew past the old limit"
    );
    assert_eq!(verify_log(&log), end);
}
