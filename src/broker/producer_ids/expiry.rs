//! Forgetting producer names unused for the expiry, rewriting the names journal, and
//! the floor below which ids are never forgotten (see the module above for why).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{journal, Inner, Named, ProducerIds, FLOOR_FILE, FLOOR_MAGIC, NAMES_FILE};
use crate::error::{IoContext, Result};
use crate::log::files::{decode_offset_file, encode_offset_file, write_atomically};

/// The floor of `dir`: read from `expiry-floor`, or set once. A journal of `journal_len`
/// bytes written before the file existed may name ids with instances at epoch 0: the
/// floor is then `next`, past every id handed out so far; with no journal, nothing was
/// named, and every id may be forgotten.
pub(super) fn read_floor(dir: &Path, journal_len: usize, next: i64) -> Result<i64> {
    let path = dir.join(FLOOR_FILE);
    let floor = match fs::read(&path) {
        Ok(bytes) => match decode_offset_file(FLOOR_MAGIC, &bytes) {
            Some(floor) => return Ok(floor as i64),
            None => {
                tracing::error!(path = %path.display(), next, "the producer id expiry floor is unreadable; no name known now will be forgotten");
                next
            }
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if journal_len == 0 {
                0
            } else {
                next
            }
        }
        Err(err) => return Err(err).at(&path),
    };
    write_atomically(&path, &encode_offset_file(FLOOR_MAGIC, floor as u64))?;
    Ok(floor)
}

impl ProducerIds {
    /// Forgets the names (and their ids' epochs) unused for the expiry, at or above the
    /// floor, and rewrites the journal without them; if that fails they are kept.
    /// Looks at most every quarter of the expiry (at least a second apart, at most a
    /// minute), so that calls at a full table do not each walk every name.
    pub(super) fn forget_unused(&self, inner: &mut Inner) {
        let now = self.now_ms();
        let expiry = self.limits.expiry.as_millis() as u64;
        if now.saturating_sub(inner.swept_ms) < (expiry / 4).clamp(1_000, 60_000) {
            return;
        }
        inner.swept_ms = now;
        let unused =
            |named: &Named| now.saturating_sub(named.used_ms.load(Ordering::Relaxed)) >= expiry;
        // Looked for under the read lock, so that produces go on meanwhile.
        let candidates: Vec<(String, i64)> = {
            let epochs = self.epochs.read().unwrap_or_else(|p| p.into_inner());
            inner
                .names
                .iter()
                .filter(|(_, &(id, _))| id >= inner.floor && epochs.get(&id).is_some_and(unused))
                .map(|(name, &(id, _))| (name.clone(), id))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        // Taken out under the write lock, each looked at again: a produce before this
        // keeps its name; one after it finds the name gone and is refused.
        let forgotten: Vec<(String, i64, Named)> = {
            let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
            let mut forgotten = Vec::new();
            for (name, id) in candidates {
                if epochs.get(&id).is_some_and(unused) {
                    let named = epochs.remove(&id).expect("looked up above");
                    forgotten.push((name, id, named));
                }
            }
            forgotten
        };
        if forgotten.is_empty() {
            return;
        }
        let gone: HashSet<&str> = forgotten.iter().map(|(name, _, _)| name.as_str()).collect();
        match self.rewrite(inner, |name| !gone.contains(name)) {
            Ok(()) => {
                for name in &gone {
                    inner.names.remove(*name);
                }
                tracing::info!(
                    names = gone.len(),
                    "forgot producer names unused for producer_name_expiry_ms"
                );
            }
            Err(err) => {
                tracing::warn!(%err, "could not rewrite the producer names without the unused ones; keeping them");
                let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
                for (_, id, named) in forgotten {
                    epochs.insert(id, named);
                }
            }
        }
    }

    /// Replaces the journal with the newest record of each name `keep` keeps. After a
    /// failure the rename may have happened or not: appends go on to whatever file is at
    /// the path now (the old handle may be to a file no longer there). And no epoch is
    /// trusted until a rewrite succeeds, as after a failed append: if the directory
    /// sync failed, a power loss may bring the old file back without the records
    /// appended since, and names then get new ids rather than epochs those records
    /// handed out (a case no test can make: it takes losing the machine).
    pub(super) fn rewrite(&self, inner: &mut Inner, keep: impl Fn(&str) -> bool) -> Result<()> {
        let path = self.dir.join(NAMES_FILE);
        let bytes = journal::encode_names(inner.names.iter().filter(|(name, _)| keep(name)));
        let reopened = write_atomically(&path, &bytes)
            .and_then(|()| OpenOptions::new().append(true).open(&path).at(&path));
        match reopened {
            Ok(journal) => {
                inner.journal = journal;
                inner.journal_bytes = bytes.len() as u64;
                inner.live_bytes = bytes.len() as u64;
                inner.trusted = true;
                inner.stale = false;
                Ok(())
            }
            Err(err) => {
                inner.trusted = false;
                let at_path = OpenOptions::new().append(true).open(&path);
                match at_path.and_then(|j| j.metadata().map(|m| (j, m))) {
                    Ok((journal, meta)) => {
                        inner.journal = journal;
                        inner.journal_bytes = meta.len();
                        inner.stale = false;
                    }
                    Err(_) => inner.stale = true,
                }
                Err(err)
            }
        }
    }

    /// The clock of `Named::used_ms`, in ms.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + self.skipped_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock of expiry on, as if `by` had passed.
    #[cfg(test)]
    pub(super) fn skip(&self, by: std::time::Duration) {
        self.skipped_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}
