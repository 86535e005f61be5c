//! A log's life: opening it (see `recovery.rs` for what that involves), opening it
//! again from disk after a failed fsync, and closing it cleanly.

use std::path::Path;
use std::sync::Arc;

use super::cache::SegmentCache;
use super::config::LogConfig;
use super::files;
use super::log::Log;
use super::recovery::{open, OpenReport};
use crate::error::Result;

impl Log {
    /// Opens the log in `dir` (see `recovery.rs`'s module comment for what that
    /// involves), with a cache of its own for its sealed segments.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Log, OpenReport)> {
        let cache = SegmentCache::new(super::cache::DEFAULT_OPEN_SEGMENTS);
        open(dir.as_ref(), config, &cache, false)
    }

    /// Opens the log in `dir`, keeping its open sealed segments in `cache` (which bounds
    /// them for every log that shares it).
    pub fn open_in(
        dir: impl AsRef<Path>,
        config: LogConfig,
        cache: &Arc<SegmentCache>,
    ) -> Result<(Log, OpenReport)> {
        open(dir.as_ref(), config, cache, false)
    }

    /// Closes this log as if the process had crashed and opens it again from what is on
    /// disk: the way back after a failed fsync. The segments past the last checkpoint are
    /// copied to new files first and recovered from the copies, as after a crash: readers
    /// still holding maps of the old files keep valid memory (nothing they map is cut),
    /// and the copies' pages are all written by recovery's syncs (after a failed fsync
    /// the page cache may hold pages the kernel marked clean without writing them).
    pub fn reopen(self) -> Result<(Log, OpenReport)> {
        let (dir, config, cache) = (
            self.dir.clone(),
            self.config.clone(),
            Arc::clone(&self.cache),
        );
        drop(self);
        Log::recover_in(&dir, config, &cache)
    }

    /// What `reopen` does once the log is dropped: for another try after a reopen
    /// that failed (a full disk while copying the segments, say).
    pub fn recover_in(
        dir: &Path,
        config: LogConfig,
        cache: &Arc<SegmentCache>,
    ) -> Result<(Log, OpenReport)> {
        open(dir, config, cache, true)
    }

    /// The segment cache this log's sealed segments are opened through.
    pub fn cache(&self) -> &Arc<SegmentCache> {
        &self.cache
    }

    /// Syncs everything, writes a checkpoint at the exact end and the clean-shutdown
    /// marker, so the next open scans nothing. Dropping a `Log` without `close` is a
    /// crash as far as the next open is concerned.
    pub fn close(mut self) -> Result<()> {
        self.check_writable()?;
        self.active_mut().persist_indexes()?;
        let job = self.begin_flush();
        job.run()?;
        // The checkpoint at the exact end is written right below, so a due one is moot.
        drop(self.finish_flush(job)?);
        self.write_checkpoint()?;
        self.write_snapshot_now();
        files::write_clean_marker(&self.dir)
    }
}
