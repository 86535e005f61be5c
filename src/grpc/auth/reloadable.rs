//! A file the server reads at start and again on SIGHUP (the tokens, the access control
//! list): what is in use, how many times it changed, and a wake-up at each change, for
//! the streams that check themselves against it (`revocable.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::error::Result;

pub(crate) struct Reloadable<T> {
    file: PathBuf,
    read: fn(&Path) -> Result<T>,
    current: RwLock<Arc<T>>,
    /// How many times what is in use changed: calls open since an earlier one check
    /// themselves again.
    generation: Arc<AtomicU64>,
    /// Told at each change, to wake streams that have nothing to send.
    changes: watch::Sender<()>,
}

impl<T: PartialEq> Reloadable<T> {
    /// Reads `file` with `read`, which checks it whole.
    pub(crate) fn load(file: &Path, read: fn(&Path) -> Result<T>) -> Result<Reloadable<T>> {
        Ok(Reloadable {
            current: RwLock::new(Arc::new(read(file)?)),
            file: file.to_path_buf(),
            read,
            generation: Arc::new(AtomicU64::new(0)),
            changes: watch::Sender::new(()),
        })
    }

    /// Reads the file again: from now on it is what is used. On any error what is in
    /// use stays, all of it. The same contents again (a SIGHUP for another file)
    /// change nothing, so nothing checks itself again.
    pub(crate) fn reload(&self) -> Result<()> {
        let fresh = (self.read)(&self.file)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if **current == fresh {
            return Ok(());
        }
        *current = Arc::new(fresh);
        drop(current);
        self.generation.fetch_add(1, Ordering::Release);
        self.changes.send_replace(());
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many times what is in use changed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The counter itself, for what checks it without the file at hand.
    pub(crate) fn generation_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.generation)
    }

    /// A receiver told at each change.
    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }
}
