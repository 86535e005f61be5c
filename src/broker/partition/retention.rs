//! Retention of one partition: the cleaner's pass and DeleteRecords, in the log's steps
//! (plan under the read lock; persist the new log start with no lock; rename the doomed
//! files under the write lock; unlink them and sync the directory with no lock, on a
//! blocking thread). One such operation runs at a time per partition (`trim_lock`).

use std::sync::Arc;

use super::Partition;
use crate::error::{Error, Result};
use crate::log::{CompactionPolicy, CompactionStats, Expiry, Log, RetentionPlan, RetentionPolicy};

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    pub segments: usize,
    pub bytes: u64,
    /// The log start offset afterwards.
    pub log_start: u64,
    /// Why the newest segment deleted went.
    pub reason: Expiry,
}

/// A policy that deletes only what lies below the log start offset.
const BELOW_START_ONLY: RetentionPolicy = RetentionPolicy {
    retention_ms: None,
    retention_bytes: None,
    timestamp_after_max_ms: 0,
    keep_from: None,
};

impl Partition {
    /// Deletes the sealed segments that have expired under `policy`. An active segment
    /// whose records have all expired is rolled first, so that a partition that stopped
    /// receiving records still empties out.
    pub async fn enforce_retention(
        self: &Arc<Self>,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<Option<Cleaned>> {
        let _one = self.trim_lock.lock().await;
        self.enforce_locked(policy, now_ms).await
    }

    async fn enforce_locked(
        self: &Arc<Self>,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<Option<Cleaned>> {
        let rolled = self.with_log_mut(|log| {
            if log.active_expired(&policy, now_ms) {
                log.roll()?;
                return Ok(true);
            }
            Ok(false)
        })?;
        // Only durable segments are deleted (see `Log::plan_retention`): sync first.
        let unflushed = self.with_log(|log| Ok((!log.is_flushed()).then(|| log.next_offset())))?;
        if let Some(next) = unflushed {
            self.sync_below(next, self.epoch()).await?;
        }
        let plan = self.with_log(|log| Ok(log.plan_retention(&policy, now_ms)))?;
        let Some(plan) = plan else {
            if rolled {
                self.sync_sealed_soon();
            }
            return Ok(None);
        };
        let persisted = plan.clone();
        blocking(move || persisted.persist())
            .await
            .map_err(|e| self.context(e))?;
        let job = self.with_log_mut(|log| log.apply_retention(&plan))?;
        blocking(move || job.run())
            .await
            .map_err(|e| self.context(e))?;
        if rolled {
            // The rolled segment may have stayed (an older one with a newer record kept
            // the deletion short of it): its files still need their sync.
            self.sync_sealed_soon();
        }
        Ok(Some(self.cleaned(&plan)))
    }

    fn cleaned(&self, plan: &RetentionPlan) -> Cleaned {
        Cleaned {
            segments: plan.segments,
            bytes: plan.bytes,
            log_start: plan.new_start,
            reason: plan.reason,
        }
    }

    /// Moves the log start offset to `before` (the high watermark when `None`), as
    /// Kafka's DeleteRecords: records below it can no longer be read, and the segments
    /// wholly below it are deleted now. The records below it are synced first, so a
    /// crash cannot leave the start past the end of the log. Returns the new start; an
    /// offset below the current start changes nothing.
    pub async fn delete_records(self: &Arc<Self>, before: Option<u64>) -> Result<u64> {
        let _one = self.trim_lock.lock().await;
        let (target, start) = self.with_log(|log| {
            let (start, end) = (log.log_start_offset(), log.next_offset());
            let target = before.unwrap_or(end);
            if target > end {
                return Err(Error::OffsetOutOfRange {
                    offset: target,
                    start,
                    end,
                });
            }
            Ok((target, start))
        })?;
        if target <= start {
            return Ok(start);
        }
        self.sync_below(target, self.epoch()).await?;
        let dir = self.dir.clone();
        blocking(move || Log::persist_log_start(&dir, target))
            .await
            .map_err(|e| self.context(e))?;
        let start = self.with_log_mut(|log| log.delete_records(target))?;
        if let Err(err) = self.enforce_locked(BELOW_START_ONLY, 0).await {
            // The start has moved and is on disk; the cleaner deletes the files later.
            tracing::warn!(topic = %self.topic, partition = self.id, %err, "segments below the new log start not deleted yet");
        }
        tracing::info!(topic = %self.topic, partition = self.id, log_start = start, "records deleted by offset");
        Ok(start)
    }
}

impl Partition {
    /// One compaction pass (see `log/compaction/`), if anything is due: the key map
    /// and the new segments are built on a blocking thread without the log's lock, which
    /// is taken only to rename the new segments into place.
    pub async fn compact(
        self: &Arc<Self>,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        let _one = self.trim_lock.lock().await;
        // A due time reckoned with other settings is unknown: a lowered
        // delete.retention.ms was ignored until the old due time, a day by default
        // (hostile-client finding).
        let due = self
            .tombstone_due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|(reckoned, _)| *reckoned == policy)
            .map(|(_, due)| due);
        let plan = self.with_log(|log| Ok(log.plan_compaction(&policy, now_ms, due)))?;
        let Some(plan) = plan else {
            return Ok(None);
        };
        let compacted = blocking(move || plan.run(&policy, now_ms))
            .await
            .map_err(|e| self.context(e))?;
        let (stats, next_due) = (compacted.stats, compacted.next_tombstone_due);
        let job = self.with_log_mut(|log| log.apply_compaction(compacted))?;
        blocking(move || job.run())
            .await
            .map_err(|e| self.context(e))?;
        *self.tombstone_due.lock().unwrap_or_else(|e| e.into_inner()) = Some((policy, next_due));
        Ok((stats.segments_out > 0 || stats.segments_in > 0).then_some(stats))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("retention file work does not panic")
}
