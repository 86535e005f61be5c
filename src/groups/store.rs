//! A group's files: `<prefix>.<position>.snap` (the whole state as of a journal
//! position) and `<prefix>.journal` (the changes since), in the group's directory. A
//! consumer group's prefix is `offsets` (its committed offsets); a share group's is
//! `share` (its partitions' windows). What the state is, and its bytes, is the
//! `Journaled` type's.
//!
//! A commit appends one record to the journal and waits for an fsync that covers it;
//! concurrent commits share fsyncs (group commit), as produces do. Past
//! `COMPACT_AFTER_BYTES` of journal the whole state goes into a new snapshot (written
//! aside, synced, renamed) and the journal is rewritten from its start, over its old
//! bytes: overwriting written blocks makes fdatasync cheaper than growing a file, and
//! records' history positions keep the old bytes from being replayed. So a group's disk
//! use and start-up work are bounded by its number of partitions, not of commits.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::offsets::{self, Committed, Offsets};
use super::Tp;
use crate::error::{Error, IoContext, Result};

/// A state kept as a snapshot plus a journal of changes.
pub trait Journaled: Sized {
    /// The files' name prefix.
    const PREFIX: &'static str;
    /// One change; a journal record holds a list of them, all applied or none.
    type Entry;
    fn empty() -> Self;
    fn encode_record(seq: u64, entries: &[Self::Entry]) -> Vec<u8>;
    /// The records of a journal (see `journal::replay`).
    fn replay(bytes: &[u8], seq: u64) -> (Vec<Vec<Self::Entry>>, usize, u64);
    fn apply(&mut self, entries: Vec<Self::Entry>);
    fn encode_snapshot(&self, seq: u64) -> Vec<u8>;
    fn decode_snapshot(bytes: &[u8], path: &Path) -> Result<(u64, Self)>;
}

impl Journaled for Offsets {
    const PREFIX: &'static str = "offsets";
    type Entry = (Tp, Committed);
    fn empty() -> Self {
        Offsets::default()
    }
    fn encode_record(seq: u64, entries: &[Self::Entry]) -> Vec<u8> {
        offsets::encode_record(seq, entries)
    }
    fn replay(bytes: &[u8], seq: u64) -> (Vec<Vec<Self::Entry>>, usize, u64) {
        let r = offsets::replay(bytes, seq);
        (r.records, r.valid_len, r.next_seq)
    }
    fn apply(&mut self, entries: Vec<Self::Entry>) {
        Offsets::apply(self, entries)
    }
    fn encode_snapshot(&self, seq: u64) -> Vec<u8> {
        offsets::encode_snapshot(seq, self)
    }
    fn decode_snapshot(bytes: &[u8], path: &Path) -> Result<(u64, Self)> {
        offsets::decode_snapshot(bytes, path)
    }
}
use crate::log::files::{sync_data, sync_dir, write_atomically_unlocked};

pub const JOURNAL_FILE: &str = "offsets.journal";

/// Snapshots are named by the journal position they continue from, and the newest one
/// counts: a snapshot write that a cancelled request left running cannot replace a newer
/// snapshot by landing late.
fn snapshot_name(prefix: &str, seq: u64) -> String {
    format!("{prefix}.{seq:020}.snap")
}

/// The snapshots in `dir`, oldest first. Removes the temporary files of snapshot
/// writes a crash cut short.
fn snapshots(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let seq = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".snap"))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}
/// Journal bytes after which the state is snapshotted and the journal restarted.
pub const COMPACT_AFTER_BYTES: u64 = 1 << 20;

/// The journal's fsync state, shared by commits waiting for it.
///
/// One sync runs at a time, on a spawned task (so a waiter that goes away cannot leave
/// it half done); it covers everything written when it starts, and its end wakes every
/// waiter at once through a watch channel. Waiters that find a sync already running wait
/// for the next one to cover them. Waking waiters one by one (each taking a lock in
/// turn) halved the commit rate.
pub struct Durability {
    file: File,
    path: PathBuf,
    /// History position after the last record written.
    written: AtomicU64,
    /// History position up to which everything is on disk.
    synced: tokio::sync::watch::Sender<u64>,
    /// True while a sync task runs.
    syncing: AtomicBool,
    /// Set by the first failed fsync: nothing written since is known to be on disk.
    failed: OnceLock<String>,
}

impl Durability {
    fn new(file: File, path: PathBuf, position: u64) -> Durability {
        Durability {
            file,
            path,
            written: AtomicU64::new(position),
            synced: tokio::sync::watch::Sender::new(position),
            syncing: AtomicBool::new(false),
            failed: OnceLock::new(),
        }
    }

    /// Waits until the journal is on disk up to history position `end`.
    pub async fn wait(self: &Arc<Self>, end: u64) -> Result<()> {
        let mut synced = self.synced.subscribe();
        loop {
            if let Some(reason) = self.failed.get() {
                return Err(Error::SyncFailed {
                    dir: self.path.parent().unwrap_or(&self.path).to_path_buf(),
                    reason: reason.clone(),
                });
            }
            if *synced.borrow_and_update() >= end {
                return Ok(());
            }
            if !self.syncing.swap(true, Ordering::AcqRel) {
                tokio::spawn(Arc::clone(self).sync());
            }
            // Woken by the end of the running sync (or of the one just started).
            if synced.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    async fn sync(self: Arc<Self>) {
        let upto = self.written.load(Ordering::Acquire);
        let me = Arc::clone(&self);
        let result = tokio::task::spawn_blocking(move || sync_data(&me.file, &me.path))
            .await
            .expect("fsync task does not panic");
        if let Err(err) = result {
            tracing::error!(%err, "fsync of a group's journal failed");
            let _ = self.failed.set(err.to_string());
        }
        self.syncing.store(false, Ordering::Release);
        // After clearing the flag: a waiter woken here that is not yet covered starts
        // the next sync itself.
        self.synced.send_modify(|synced| {
            if self.failed.get().is_none() {
                *synced = (*synced).max(upto);
            }
        });
    }

    fn covered(&self, upto: u64) {
        self.synced
            .send_modify(|synced| *synced = (*synced).max(upto));
    }

    pub fn has_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    /// History position after the last record written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// History position up to which everything is on disk.
    pub fn synced(&self) -> u64 {
        *self.synced.borrow()
    }
}

pub struct GroupFiles<S> {
    dir: PathBuf,
    durability: Arc<Durability>,
    /// Where the next record goes in the journal file.
    position: u64,
    /// History position of the next record.
    seq: u64,
    /// The position the current snapshot continues from (its name).
    snapshot_seq: u64,
    state: std::marker::PhantomData<fn() -> S>,
}

impl<S: Journaled> GroupFiles<S> {
    /// Opens the group in `dir`, creating it if it is not there, and returns its state.
    /// A journal with records is folded into a fresh snapshot at once, so what is served
    /// from now on is what a synced file holds. Blocking.
    pub fn open(dir: &Path) -> Result<(GroupFiles<S>, S)> {
        let journal_path = dir.join(format!("{}.journal", S::PREFIX));
        std::fs::create_dir_all(dir).at(dir)?;
        let mut found = snapshots(dir, S::PREFIX)?;
        if found.is_empty() {
            // A new group, or one whose making was cut short (a crash, or a failed sync
            // of the parent, after the directory was made): its entry in the parent
            // must be durable before anything in it is acknowledged (durability review).
            sync_dir(dir.parent().expect("groups live in a directory"))?;
        }
        // The newest snapshot may have been renamed into place without the directory
        // sync that makes the rename durable (the sync failed, or the process died before
        // it). What follows writes relative to it (the journal restarts at its position),
        // so it must be durable first, or a power loss would bring back the older
        // snapshot under a journal that no longer continues it.
        sync_dir(dir)?;
        let newest = found.pop();
        let (seq, mut state) = match &newest {
            Some((_, path)) => S::decode_snapshot(&std::fs::read(path).at(path)?, path)?,
            None => {
                let path = dir.join(snapshot_name(S::PREFIX, 0));
                write_atomically_unlocked(&path, &S::empty().encode_snapshot(0))?;
                (0, S::empty())
            }
        };
        for (_, stale) in found {
            let _ = std::fs::remove_file(stale);
        }
        let created = !journal_path.exists();
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&journal_path)
            .at(&journal_path)?;
        if created {
            sync_dir(dir)?;
        }
        let bytes = std::fs::read(&journal_path).at(&journal_path)?;
        let (records, valid_len, next_seq) = S::replay(&bytes, seq);
        let had_records = !records.is_empty();
        if !had_records && !bytes.is_empty() {
            // The next pass writes from the file's start at the snapshot's position, as
            // the crashed one did: records that lie past a damaged one (never
            // acknowledged) would carry the positions it expects, and be replayed after
            // its records. (The next fdatasync makes the new length durable.)
            journal.set_len(0).at(&journal_path)?;
        }
        for record in records {
            state.apply(record);
        }
        let durability = Arc::new(Durability::new(journal, journal_path, next_seq));
        let mut files = GroupFiles {
            dir: dir.to_path_buf(),
            durability,
            position: valid_len as u64,
            seq: next_seq,
            snapshot_seq: seq,
            state: std::marker::PhantomData,
        };
        if had_records {
            files.write_snapshot(&state)?;
        }
        Ok((files, state))
    }

    /// Appends one commit to the journal (into the page cache) and returns the history
    /// position that must be synced before it is acknowledged.
    pub fn append(&mut self, entries: &[S::Entry]) -> Result<u64> {
        let record = S::encode_record(self.seq, entries);
        let d = &self.durability;
        d.file.write_all_at(&record, self.position).at(&d.path)?;
        self.position += record.len() as u64;
        self.seq += record.len() as u64;
        d.written.store(self.seq, Ordering::Release);
        Ok(self.seq)
    }

    /// True once an fsync of the journal failed: what is on disk is unknown, so the
    /// group must be read again from its files (and re-synced) before it is used.
    pub fn has_failed(&self) -> bool {
        self.durability.has_failed()
    }

    pub fn durability(&self) -> Arc<Durability> {
        Arc::clone(&self.durability)
    }

    pub fn needs_snapshot(&self) -> bool {
        self.position >= COMPACT_AFTER_BYTES
    }

    /// Writes the whole state into a new snapshot (synced and renamed into place) and
    /// restarts the journal at its first byte; commits waiting for an fsync are then
    /// durable through the snapshot. Blocking.
    pub fn write_snapshot(&mut self, state: &S) -> Result<()> {
        let (path, bytes) = self.snapshot(state);
        write_atomically_unlocked(&path, &bytes)?;
        self.snapshot_written();
        Ok(())
    }

    /// The snapshot file and its bytes, for a caller that writes them on a blocking
    /// thread and then calls `snapshot_written`, with no append in between.
    pub fn snapshot(&self, state: &S) -> (PathBuf, Vec<u8>) {
        (self.snapshot_path(), state.encode_snapshot(self.seq))
    }

    /// Where a snapshot written now goes.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(snapshot_name(S::PREFIX, self.seq))
    }

    pub fn snapshot_written(&mut self) {
        self.position = 0;
        self.durability.covered(self.seq);
        if self.snapshot_seq != self.seq {
            // Superseded; a failure here leaves a file the next open removes.
            let _ =
                std::fs::remove_file(self.dir.join(snapshot_name(S::PREFIX, self.snapshot_seq)));
            self.snapshot_seq = self.seq;
        }
    }

    /// Marks the group as active now (the file's time), for offset expiry across
    /// restarts.
    pub fn touch(&self) {
        let _ = self
            .durability
            .file
            .set_modified(std::time::SystemTime::now());
    }
}

/// Marks the group in `dir` as active now, through its journal's time, when its files
/// are not open. Blocking.
pub fn touch(dir: &Path) {
    if let Ok(journal) = OpenOptions::new().write(true).open(dir.join(JOURNAL_FILE)) {
        let _ = journal.set_modified(std::time::SystemTime::now());
    }
}

/// When a group last changed, from its files' times: for expiry of groups not loaded.
/// The journal is written by every commit and touched while the group has members, so
/// its time alone says; one `stat` per group keeps start-up quick with many groups.
pub fn last_modified_ms(dir: &Path) -> Option<i64> {
    std::fs::metadata(dir.join(JOURNAL_FILE))
        .or_else(|_| std::fs::metadata(dir))
        .ok()?
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

/// Says that a group's snapshot (consumer or share group) could not be written, at most
/// once a minute over the server: on a full disk it fails at every commit. Its journal
/// grows until one is written; nothing else is lost.
pub fn snapshot_failed(err: &crate::error::Error) {
    static WARNED: super::throttle::Throttle = super::throttle::Throttle::new();
    if WARNED.due(60_000) {
        tracing::warn!(%err, "a group's snapshot was not written; its journal grows until one is (said at most once a minute)");
    }
}
