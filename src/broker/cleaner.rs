//! The cleaner: every `retention_check_interval_ms` (and at once when free space falls
//! below `min_free_disk`) it applies each topic's retention to each of its partitions
//! (`partition/retention.rs`), and measures free space twice a second between passes.
//! Deciding uses only what the logs keep in memory; the file work runs on blocking
//! threads, off the partitions' write locks.

use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, Broker};
use crate::error::Error;

/// How often free space is measured between retention passes.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// What one pass deleted, over all partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerPass {
    pub segments: usize,
    pub bytes: u64,
}

impl Broker {
    /// Runs retention passes until shutdown.
    pub async fn run_cleaner(self: Arc<Self>, every: Duration) {
        let mut stopping = self.shutting_down();
        let stopped = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopped);
        let mut next_pass = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_pass) => {}
                _ = tokio::time::sleep(DISK_CHECK_INTERVAL) => {
                    // Falling below the floor wakes `low_space`, so the pass runs next.
                    self.disk.measure();
                    continue;
                }
                () = self.disk.low_space.notified() => {}
                () = &mut stopped => return,
            }
            self.clean_once().await;
            self.disk.measure();
            next_pass = tokio::time::Instant::now() + every;
        }
    }

    /// One retention pass over every partition of every topic.
    pub async fn clean_once(&self) -> CleanerPass {
        let topics: Vec<_> = self.read_topics().live.values().cloned().collect();
        let mut pass = CleanerPass::default();
        for topic in topics {
            let policy = topic.config().retention();
            for partition in &topic.partitions {
                match partition.enforce_retention(policy, now_ms()).await {
                    Ok(Some(cleaned)) => {
                        tracing::info!(
                            topic = %topic.name,
                            partition = partition.id,
                            segments = cleaned.segments,
                            bytes = cleaned.bytes,
                            log_start = cleaned.log_start,
                            reason = cleaned.reason.as_str(),
                            "deleted old segments"
                        );
                        pass.segments += cleaned.segments;
                        pass.bytes += cleaned.bytes;
                    }
                    Ok(None) => {}
                    // Deleted meanwhile, or not open: nothing to clean.
                    Err(Error::TopicNotFound { .. } | Error::Unavailable { .. }) => {}
                    Err(err) => tracing::error!(%err, "retention pass failed"),
                }
            }
        }
        pass
    }
}
