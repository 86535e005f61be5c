//! `strom bench e2e --slow-log`: every record slower than a threshold, with the times
//! it was due and answered or received on `CLOCK_MONOTONIC`.
//!
//! Why that clock: it is the one `perf record -k CLOCK_MONOTONIC` stamps scheduler
//! events with, so a slow record can be lined up with what each CPU ran while it waited
//! (`scripts/e2e-tail.sh`). A latency histogram says how many records were late; this
//! says which, and when, which is what finding their cause needs.
//!
//! Lines are `ack|e2e DUE_NS AT_NS ID` (ID: the request's number for `ack`,
//! `PARTITION:OFFSET` of the record for `e2e`). They are written as they come through a buffer, so a long run's
//! log costs disk, not memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where slow records are written, and what counts as slow.
pub struct SlowLog {
    threshold: Duration,
    /// One moment read on both clocks: `Instant` is `CLOCK_MONOTONIC` on Linux, but
    /// does not say its value in nanoseconds, so others are placed relative to this.
    origin: Instant,
    origin_ns: u64,
    out: Mutex<Out>,
}

struct Out {
    file: BufWriter<File>,
    /// The first write that failed, for `finish` to report.
    failed: Option<std::io::Error>,
}

impl SlowLog {
    pub fn create(path: &Path, threshold: Duration) -> Result<SlowLog, String> {
        let file = File::create(path)
            .map_err(|e| format!("cannot create the slow log {}: {e}", path.display()))?;
        let origin_ns = monotonic_now_ns();
        let origin = Instant::now();
        Ok(SlowLog {
            threshold,
            origin,
            origin_ns,
            out: Mutex::new(Out {
                file: BufWriter::new(file),
                failed: None,
            }),
        })
    }

    /// Writes the record if `at - due` exceeds the threshold. The first write error is
    /// kept and reported by `finish`; nothing is written after it.
    pub fn note(&self, kind: &str, due: Instant, at: Instant, id: impl std::fmt::Display) {
        if at.saturating_duration_since(due) <= self.threshold {
            return;
        }
        let (due, at) = (self.monotonic_ns(due), self.monotonic_ns(at));
        let mut out = self.out.lock().expect("not poisoned");
        if out.failed.is_none() {
            if let Err(err) = writeln!(out.file, "{kind} {due} {at} {id}") {
                out.failed = Some(err);
            }
        }
    }

    /// Flushes what is buffered; fails if any write did.
    pub fn finish(&self) -> Result<(), String> {
        let mut out = self.out.lock().expect("not poisoned");
        let flushed = out.file.flush();
        match out.failed.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("cannot write the slow log: {e}")),
        }
    }

    fn monotonic_ns(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.origin) {
            Some(after) => self.origin_ns + after.as_nanos() as u64,
            None => self.origin_ns - (self.origin - at).as_nanos() as u64,
        }
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
fn monotonic_now_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_records_over_the_threshold_on_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow");
        let log = SlowLog::create(&path, Duration::from_millis(1)).unwrap();
        let due = Instant::now();
        log.note("ack", due, due + Duration::from_micros(999), 1);
        log.note("e2e", due, due + Duration::from_millis(3), "0:2");
        log.finish().unwrap();
        let now_ns = monotonic_now_ns();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let fields: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!((fields[0], fields[3]), ("e2e", "0:2"));
        let (due_ns, at_ns): (u64, u64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        assert_eq!(at_ns - due_ns, 3_000_000);
        // `due` was read before `now`, on the same clock.
        assert!(
            due_ns <= now_ns && now_ns - due_ns < 10_000_000_000,
            "{due_ns} {now_ns}"
        );
    }
}
