//! The cleaner: every `retention_check_interval_ms` (and at once when free space falls
//! below `min_free_disk`) it compacts the partitions of compacted topics and applies
//! each topic's retention to each of its partitions (`partition/retention.rs`), and
//! measures free space twice a second between passes. Retention by age stops at the
//! partition's retention floor (`RetentionFloor`: what share groups have not finished).
//! Deciding uses only what the logs keep in memory; the file work runs on blocking
//! threads, off the partitions' write locks.

use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, Broker};
use crate::error::Error;

/// How often free space is measured between retention passes.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The most keys a compaction pass maps within `budget` bytes. The map is a hash table
/// of 25-byte buckets (24 bytes of entry and a control byte), a power of two of them,
/// at most 7/8 full; it doubles as it fills, and while it doubles the old table (half
/// the size) is still there. So the largest table must fit in two thirds of the budget:
/// 458,752 keys for 32 MiB.
pub fn max_map_keys(budget: usize) -> usize {
    let buckets = (budget * 2 / 3 / 25).max(16);
    let pow2 = 1usize << (usize::BITS - 1 - buckets.leading_zeros());
    pow2 / 8 * 7
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
    pub async fn clean_once(&self) {
        let topics: Vec<_> = self.read_topics().live.values().cloned().collect();
        for topic in topics {
            let config = topic.config();
            let policy = config.retention();
            let compaction = config.compaction(max_map_keys(self.limits.compaction_map_bytes));
            for partition in topic.partitions().iter() {
                // Retention first: on a disk below the floor it frees space, which
                // compaction (writing new segments before deleting old ones) needs.
                let policy = crate::log::RetentionPolicy {
                    keep_from: self.retention_floor(&topic.id, partition.id),
                    ..policy
                };
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
                    }
                    Ok(None) => {}
                    // Deleted meanwhile, or not open: nothing to clean.
                    Err(Error::TopicNotFound { .. } | Error::Unavailable { .. }) => {}
                    Err(err) => tracing::error!(%err, "retention pass failed"),
                }
                if let Some(compaction) = compaction {
                    match partition.compact(compaction, now_ms()).await {
                        Ok(Some(stats)) => {
                            tracing::info!(
                                topic = %topic.name,
                                partition = partition.id,
                                segments_in = stats.segments_in,
                                segments_out = stats.segments_out,
                                bytes_read = stats.bytes_read,
                                bytes_written = stats.bytes_written,
                                records_kept = stats.records_kept,
                                records_read = stats.records_read,
                                tombstones_removed = stats.tombstones_removed,
                                keys = stats.keys,
                                "compacted"
                            );
                        }
                        Ok(None) => {}
                        Err(Error::TopicNotFound { .. } | Error::Unavailable { .. }) => {}
                        Err(err) => tracing::error!(%err, "compaction pass failed"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_map_budget_holds_while_the_table_doubles() {
        for budget in [1 << 20, 32 << 20, 100 << 20] {
            let keys = super::max_map_keys(budget);
            let buckets = (keys / 7 * 8).next_power_of_two();
            assert!(buckets * 25 * 3 / 2 <= budget, "{budget}: {keys} keys");
            assert!(
                buckets * 2 * 25 * 3 / 2 > budget,
                "{budget}: the next size would not fit"
            );
        }
        assert_eq!(super::max_map_keys(32 << 20), 458_752);
    }
}
