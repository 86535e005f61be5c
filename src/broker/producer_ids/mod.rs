//! Producer ids for idempotent producers (`InitProducer`): never handed out twice, even
//! across crashes; a named producer gets the same id each time with the next epoch,
//! which fences every older epoch of that name.
//!
//! Files in `<data_dir>/producers/`:
//! - `next-id`: the one-offset file of `log/files.rs` (magic `STRMPIDS`). No id at or
//!   above it was handed out. Ids are reserved in blocks of `ID_BLOCK`: the file is
//!   rewritten (synced) before the first id of a block goes out, so a crash skips the
//!   rest of a block and never reuses an id.
//! - `names`: a journal of `(name, id, epoch)` records, each synced before InitProducer
//!   answers; the last record of a name wins. A record is `length u32` (of what follows
//!   the CRC), `CRC-32 u32` (of what follows it), `id i64`, `epoch i16`, then the name's
//!   UTF-8 bytes, little-endian. A torn last record (a crash during an InitProducer that
//!   was never answered) is cut at open; the journal is rewritten without superseded
//!   records when it has grown to four times what it holds.
//!
//! Every produce with a producer id is checked here first (`check`): an id never handed
//! out, an epoch older than its name's newest (fenced) or newer (never handed out). The
//! partition checks sequences under its lock (`log/producers`).
//!
//! A name neither initialised nor produced with for `NameLimits::expiry` (7 days) is
//! forgotten, journal included (`expiry.rs`), so names cannot fill the table for good.
//! Fencing survives that because a named id's epochs start at 1: an id the server does
//! not know as a name's is taken at epoch 0 only (an unnamed id's), so a forgotten id's
//! instances are refused, and the name's next InitProducer gets a new id. Ids handed out
//! before names started at 1 (below `expiry-floor`) may have instances at epoch 0, so
//! they are never forgotten. When a name was last used is kept in memory only: a
//! restart starts every name's count again, which can only keep a name longer.
//!
//! `open.rs` reads the files back at start-up; `journal.rs` encodes and reads the
//! `names` records; `expiry.rs` forgets unused names.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::{quote, Error, IoContext, Result};
use crate::log::files::{encode_offset_file, sync_all, write_atomically};

mod expiry;
mod journal;
mod open;
use journal::{encode_record, record_len};

const NEXT_ID_FILE: &str = "next-id";
const NAMES_FILE: &str = "names";
const FLOOR_FILE: &str = "expiry-floor";
const NEXT_ID_MAGIC: &[u8; 8] = b"STRMPIDS";
const FLOOR_MAGIC: &[u8; 8] = b"STRMPFLR";
/// Ids reserved by one write of `next-id`.
const ID_BLOCK: i64 = 1_000;
/// Longest producer name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Named producers one server remembers at most.
pub const MAX_NAMED_PRODUCERS: usize = 100_000;

/// Epoch of an id below the floor whose name has moved on to a new id (its epochs ran
/// out, or the journal was damaged): every produce with it is fenced. One at or above
/// the floor is simply dropped, as its epochs start at 1.
const RETIRED: i32 = i32::MAX;
/// A named id's first epoch; see the module's comment for why not 0.
const FIRST_EPOCH: i16 = 1;

/// The journal's name for a retired id below the floor: a record under it keeps the id
/// fenced across rewrites (which keep one record per name) and restarts. Clients cannot
/// send it: names with control characters are refused.
fn tombstone(id: i64) -> String {
    format!("\0retired {id}")
}

fn is_tombstone(name: &str) -> bool {
    name.starts_with('\0')
}

/// How many names a server keeps, and for how long unused.
#[derive(Debug, Clone, Copy)]
pub struct NameLimits {
    pub max_names: usize,
    /// A name with no InitProducer and no produce with its id for this long is forgotten.
    pub expiry: Duration,
}

impl Default for NameLimits {
    fn default() -> Self {
        NameLimits {
            max_names: MAX_NAMED_PRODUCERS,
            expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A named id: its newest epoch (or `RETIRED`), and when this process last saw it used.
struct Named {
    epoch: i32,
    used_ms: AtomicU64,
}

impl Named {
    fn new(epoch: i32, now_ms: u64) -> Named {
        Named {
            epoch,
            used_ms: AtomicU64::new(now_ms),
        }
    }
}

pub struct ProducerIds {
    dir: PathBuf,
    limits: NameLimits,
    /// The clock of `Named::used_ms`: ms since `started`, plus what tests skip ahead.
    started: Instant,
    skipped_ms: AtomicU64,
    /// Ids below this may have been handed out.
    next: AtomicI64,
    /// Named ids; read by every idempotent produce.
    epochs: RwLock<HashMap<i64, Named>>,
    inner: Mutex<Inner>,
}

struct Inner {
    reserved_to: i64,
    /// When names were last looked at for expiry.
    swept_ms: u64,
    names: HashMap<String, (i64, i16)>,
    journal: File,
    journal_bytes: u64,
    /// What a rewrite of the journal would hold (one record per name), kept as names
    /// come: summed over every name at each InitProducer, it cost a named call five
    /// times an unnamed one's CPU with 100,000 names (hostile-client finding).
    live_bytes: u64,
    /// The journal was damaged at open, or an append or rewrite failed: names whose
    /// records may be lost get new ids rather than an epoch that may already have been
    /// handed out. A rewrite that succeeds makes it whole again.
    trusted: bool,
    /// Ids below it may have instances at epoch 0: never forgotten (see the module),
    /// and kept fenced by a tombstone when retired.
    floor: i64,
    /// `journal` is a file no longer at the path (a rewrite failed after its rename,
    /// and reopening failed too): named calls are refused until it reopens, as their
    /// records would be lost at the next start.
    stale: bool,
}

fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "producer name {} must be at most {MAX_NAME_BYTES} bytes without control characters",
            quote(name)
        )));
    }
    Ok(())
}

impl ProducerIds {
    /// A producer id and epoch (blocking: syncs files). Without a name: a new id, epoch
    /// 0. With one: its id and the next epoch, fencing the older ones; a new id at
    /// epoch 1 for a name not known (or forgotten), or once 32,767 epochs are used up.
    pub fn init(&self, name: Option<&str>) -> Result<(i64, i16)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok((self.allocate(&mut inner)?, 0));
        };
        check_name(name)?;
        if inner.stale {
            let path = self.dir.join(NAMES_FILE);
            inner.journal = OpenOptions::new().append(true).open(&path).at(&path)?;
            inner.journal_bytes = inner.journal.metadata().at(&path)?.len();
            inner.stale = false;
        }
        self.forget_unused(&mut inner);
        let known = inner.names.get(name).copied().filter(|_| inner.trusted);
        let max = self.limits.max_names;
        if known.is_none() && inner.names.len() >= max && !inner.names.contains_key(name) {
            return Err(Error::LimitReached(format!(
                "this server already knows {max} producer names, each kept until unused for {} ms (producer_name_expiry_ms); use fewer \
                 names (one per logical producer, not per process start), or call InitProducer without a name",
                self.limits.expiry.as_millis()
            )));
        }
        let (id, epoch, retired) = match known {
            Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1, None),
            Some((old, _)) => (self.allocate(&mut inner)?, FIRST_EPOCH, Some(old)),
            None => (
                self.allocate(&mut inner)?,
                FIRST_EPOCH,
                inner.names.get(name).map(|&(id, _)| id),
            ),
        };
        // A retired id below the floor gets its tombstone first, in a write of its
        // own (a torn write is one record): if the name's record is then lost, the name
        // keeps its old id, and open drops the tombstone.
        let retired = retired.filter(|&old| old != id);
        let buried = retired.filter(|&old| old < inner.floor);
        if let Some(old) = buried {
            self.append(&mut inner, &encode_record(&tombstone(old), old, i16::MAX))?;
        }
        self.append(&mut inner, &encode_record(name, id, epoch))?;
        if inner.names.insert(name.to_string(), (id, epoch)).is_none() {
            inner.live_bytes += record_len(name);
        }
        // Known once both are written: a tombstone alone on disk is dropped at open.
        if let Some(old) = buried {
            let grave = tombstone(old);
            if inner.names.insert(grave.clone(), (old, i16::MAX)).is_none() {
                inner.live_bytes += record_len(&grave);
            }
        }
        {
            let now = self.now_ms();
            let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
            epochs.insert(id, Named::new(i32::from(epoch), now));
            if let Some(old) = retired {
                epochs.remove(&old);
                if old < inner.floor {
                    epochs.insert(old, Named::new(RETIRED, now));
                }
            }
        }
        self.compact_if_large(&mut inner);
        Ok((id, epoch))
    }

    /// Appends one record to the journal and syncs it. A failed write is cut back (a
    /// full disk), so the next record does not follow torn bytes; if even that fails,
    /// no epoch of the journal is trusted until a rewrite or the next open sorts it out.
    fn append(&self, inner: &mut Inner, record: &[u8]) -> Result<()> {
        let path = self.dir.join(NAMES_FILE);
        let written = inner
            .journal
            .write_all(record)
            .at(&path)
            .and_then(|()| sync_all(&inner.journal, &path));
        if let Err(err) = written {
            if inner.journal.set_len(inner.journal_bytes).is_err() {
                inner.trusted = false;
            }
            return Err(err);
        }
        inner.journal_bytes += record.len() as u64;
        Ok(())
    }

    fn allocate(&self, inner: &mut Inner) -> Result<i64> {
        let id = self.next.load(Ordering::Acquire);
        if id >= inner.reserved_to {
            let to = id + ID_BLOCK;
            write_atomically(
                &self.dir.join(NEXT_ID_FILE),
                &encode_offset_file(NEXT_ID_MAGIC, to as u64),
            )?;
            inner.reserved_to = to;
        }
        self.next.store(id + 1, Ordering::Release);
        Ok(id)
    }

    /// Rewrites the journal once it holds four times what is live. A failure is only
    /// logged: the InitProducer that triggered it has its record written, and `rewrite`
    /// keeps the state safe.
    fn compact_if_large(&self, inner: &mut Inner) {
        if inner.journal_bytes < (1 << 20) || inner.journal_bytes < 4 * inner.live_bytes {
            return;
        }
        if let Err(err) = self.rewrite(inner, |_| true) {
            tracing::warn!(%err, "could not rewrite the producer names without superseded records");
        }
    }

    /// Whether a produce may use this id and epoch (sequences are the partition's).
    pub fn check(&self, id: i64, epoch: i16) -> Result<()> {
        if id >= self.next.load(Ordering::Acquire) {
            return Err(Error::FailedPrecondition(format!(
                "producer id {id} was never handed out by this server: call InitProducer for one"
            )));
        }
        let epochs = self.epochs.read().unwrap_or_else(|p| p.into_inner());
        let Some(named) = epochs.get(&id) else {
            if epoch == 0 {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "producer {id} has no epoch {epoch} here: it was handed out without a name (an unnamed \
                 id's only epoch is 0), or it is fenced, as its name moved to a new id or went unused \
                 for {} ms and was forgotten; call InitProducer again (an older instance of a name must stop)",
                self.limits.expiry.as_millis()
            )));
        };
        match named.epoch {
            RETIRED => Err(Error::ProducerFenced(format!(
                "producer {id} is fenced: its name has a new producer id since; this instance must stop"
            ))),
            current if i32::from(epoch) < current => Err(Error::ProducerFenced(format!(
                "producer {id} epoch {epoch} is fenced: InitProducer gave epoch {current} of its name to a newer \
                 instance; this instance must stop"
            ))),
            current if i32::from(epoch) > current => Err(Error::FailedPrecondition(format!(
                "producer {id} has no epoch {epoch} yet (the newest is {current}): use the epoch InitProducer answered"
            ))),
            _ => {
                // A use keeps the name from expiring; stored only when the ms changes, so
                // that one producer's checks on several cores do not bounce the line.
                let now = self.now_ms();
                if named.used_ms.load(Ordering::Relaxed) != now {
                    named.used_ms.store(now, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
