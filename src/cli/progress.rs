//! The progress line of long-running commands: on a terminal, once a second, how much
//! has been done and the rate over the last second, on stderr (stdout is for data).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::note;

/// Counters the progress line reads.
#[derive(Default)]
pub struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// On a terminal, prints a line a second (elapsed, records, rate over the last
    /// second) to stderr until the returned guard is dropped.
    pub fn show(self: &Arc<Self>, verb: &'static str) -> ProgressLine {
        if !std::io::stderr().is_terminal() {
            return ProgressLine(None);
        }
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let (mut last_records, mut last_bytes) = (0, 0);
            loop {
                tick.tick().await;
                let records = me.records.load(Ordering::Relaxed);
                let bytes = me.bytes.load(Ordering::Relaxed);
                note!(
                    "\r\x1b[K{:>6.1} s  {records:>12} records {verb}  {:>10.0} records/s  {:>8.1} MB/s",
                    started.elapsed().as_secs_f64(),
                    (records - last_records) as f64,
                    (bytes - last_bytes) as f64 / 1e6,
                );
                (last_records, last_bytes) = (records, bytes);
            }
        });
        ProgressLine(Some(task))
    }
}

/// Stops the progress line and clears it when dropped.
pub struct ProgressLine(Option<tokio::task::JoinHandle<()>>);

impl Drop for ProgressLine {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            note!("\r\x1b[K");
        }
    }
}
