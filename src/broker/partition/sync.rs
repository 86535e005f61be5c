//! Making a partition durable: group commit of fsyncs, the background sync of rolled
//! segments, the upkeep, and reopening a log after a failed fsync.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Partition, Slot};
use crate::error::{Error, Result};
use crate::log::Log;

impl Partition {
    /// A roll leaves the sealed segment's files open until a flush syncs them. Syncing
    /// them soon, in the background, keeps the descriptors held by sealed segments to a
    /// few however fast small segments roll (page-cache produces would otherwise keep
    /// every one open until the next upkeep: thousands). One such sync at a time: it
    /// covers every roll before it starts.
    pub(super) fn sync_sealed_soon(self: &Arc<Self>) {
        if self.roll_sync_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let upto = *me.high_watermark.borrow();
            me.roll_sync_pending.store(false, Ordering::Release);
            match me.sync_below(upto, me.epoch()).await {
                // Its topic deleted meanwhile: nothing is lost, nothing to say.
                Err(_) if me.is_deleted() => {}
                Err(err) => {
                    tracing::warn!(topic = %me.topic, partition = me.id, %err, "sync of sealed segments failed")
                }
                Ok(()) => {}
            }
        });
    }

    /// Returns once every offset below `offset` of the log of `epoch` is on disk,
    /// sharing the fsync with every other append waiting for the same. After a failed
    /// fsync no later one is trusted: every waiter gets the error, not the next fsync's
    /// success, and so does one whose log has since been reopened.
    pub async fn sync_below(self: &Arc<Self>, offset: u64, epoch: u64) -> Result<()> {
        let checkpoint = {
            let _turn = self.flush_lock.lock().await;
            if self.epoch() != epoch {
                return Err(self.context(Error::SyncFailed {
                    dir: self.dir.clone(),
                    reason: "the log was recovered from disk after a failed fsync before this batch was known to be on disk; it may be lost: produce it again".into(),
                }));
            }
            let job = self.with_log_mut(|log| {
                if let Some(reason) = log.sync_failure() {
                    return Err(Error::SyncFailed {
                        dir: log.dir().to_path_buf(),
                        reason: reason.to_string(),
                    });
                }
                let covered = log.flushed_offset() >= offset && log.is_flushed_files();
                Ok((!covered).then(|| log.begin_flush()))
            })?;
            let Some(job) = job else {
                return Ok(()); // the flush of whoever held the lock before covered us
            };
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                job.run().map_err(|e| me.context(e))?;
                me.stats.synced(started.elapsed());
                me.with_log_mut(|log| log.finish_flush(job))
            })
            .await
            .expect("flush task does not panic")?
        };
        // Our batch is durable. A due recovery checkpoint is written after the flush lock
        // is released and without the log's lock, so appends never wait for its fsyncs,
        // and the next group commit only for its index fsyncs, which take turns with
        // it (`SyncState`; no change in the durable e2e p99, BENCHMARKS.md). This
        // caller does (at most once per checkpoint_interval): a detached task would
        // still hold the partition when the server closes it, and it would not be marked
        // cleanly closed.
        // A checkpoint that fails costs a longer scan after a crash, not data: it does not
        // fail the produce whose batch is already on disk, and the next one is tried
        // when one is next due (`Log::checkpoint_due`).
        if let Some(job) = checkpoint {
            let me = Arc::clone(self);
            let written = tokio::task::spawn_blocking(move || {
                job.run()?;
                let mut job = job;
                // The job, and the old checkpoint file it holds, go after the lock.
                me.with_log_mut(|log| log.finish_checkpoint(&mut job))
            })
            .await
            .expect("checkpoint task does not panic");
            match written {
                Err(_) if self.is_deleted() => {}
                Err(err) => {
                    tracing::warn!(topic = %self.topic, partition = self.id, %err, "recovery checkpoint not written")
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Background upkeep: sync what page-cache appends left unsynced (which also bounds
    /// crash recovery), roll a segment that has grown old without appends, and forget
    /// idempotent producers idle past `producer.id.expiration.ms`. A log whose fsync
    /// failed is reopened from disk here.
    pub async fn maintain(self: &Arc<Self>, now_ms: i64) -> Result<()> {
        let failed = match &*self.read_slot() {
            Slot::Open(log) => log.sync_failure().is_some(),
            Slot::Failed { .. } => true, // the last reopen failed: try again
            _ => return Ok(()),
        };
        if failed {
            return self.reopen().await;
        }
        // A segment sealed here has its files synced below with the rest.
        let next = self.with_log_mut(|log| {
            log.roll_if_aged(now_ms)?;
            log.expire_producers(now_ms);
            Ok((!log.is_flushed()).then(|| log.next_offset()))
        })?;
        if let Some(next) = next {
            self.sync_below(next, self.epoch()).await?;
        }
        Ok(())
    }

    /// Drops the log as a crash would and opens it again from disk (after a failed
    /// fsync: see `Log::reopen`), or tries again after such a reopen failed. Holds the
    /// flush lock throughout, so no group commit runs on the old log meanwhile.
    async fn reopen(self: &Arc<Self>) -> Result<()> {
        // No retention or compaction pass runs while the log is reopened: opening
        // finishes or drops an interrupted compaction's files, which a running pass owns.
        let _trim = self.trim_lock.lock().await;
        let _turn = self.flush_lock.lock().await;
        // Taken out under the lock, recovered without it: requests meanwhile get
        // UNAVAILABLE at once instead of blocking a worker on the lock for the length
        // of a recovery on a failing disk.
        let (log, config, cache) = {
            let mut slot = self.write_slot();
            if !matches!(&*slot, Slot::Open(_) | Slot::Failed { .. }) {
                return Ok(());
            }
            let recovering = Slot::Unavailable(
                "it is being recovered from disk after a failed fsync; retry shortly".into(),
            );
            match std::mem::replace(&mut *slot, recovering) {
                Slot::Open(log) => {
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    let (config, cache) = (log.config().clone(), Arc::clone(log.cache()));
                    (Some(log), config, cache)
                }
                Slot::Failed { config, cache, .. } => (None, config, cache),
                _ => unreachable!("checked above"),
            }
        };
        let dir = self.dir.clone();
        let (again, cache_again) = (config.clone(), Arc::clone(&cache));
        let reopened = tokio::task::spawn_blocking(move || match log {
            Some(log) => log.reopen(),
            None => Log::recover_in(&dir, again, &cache_again),
        })
        .await
        .expect("reopen task does not panic");
        let mut slot = self.write_slot();
        if matches!(*slot, Slot::Deleted) {
            return Ok(()); // deleted meanwhile: the new log goes too
        }
        let changed = self
            .pending_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match reopened {
            Ok((mut log, report)) => {
                if let Some(changed) = changed {
                    if let Err(err) = log.reconfigure(changed) {
                        tracing::warn!(topic = %self.topic, partition = self.id, %err, "a config change made during the reopen was not applied");
                    }
                }
                tracing::warn!(topic = %self.topic, partition = self.id, scanned_bytes = report.scanned_bytes, truncated = report.truncated.len(), "partition reopened and recovered from disk after a failed fsync");
                self.high_watermark.send_replace(log.next_offset());
                *slot = Slot::Open(log);
                Ok(())
            }
            Err(err) => {
                tracing::error!(topic = %self.topic, partition = self.id, %err, "partition could not be reopened after a failed fsync; the upkeep tries again");
                *slot = Slot::Failed {
                    reason: format!("reopening after a failed fsync failed: {err}"),
                    config: changed.unwrap_or(config),
                    cache,
                };
                Err(self.context(err))
            }
        }
    }
}
