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

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::error::{quote, Error, IoContext, Result};
use crate::log::files::{decode_offset_file, encode_offset_file, sync_all, write_atomically};

const NEXT_ID_FILE: &str = "next-id";
const NAMES_FILE: &str = "names";
const NEXT_ID_MAGIC: &[u8; 8] = b"STRMPIDS";
/// Ids reserved by one write of `next-id`.
const ID_BLOCK: i64 = 1_000;
/// Longest producer name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Named producers one server remembers at most.
pub const MAX_NAMED_PRODUCERS: usize = 100_000;
const RECORD_HEADER: usize = 8;

/// Epoch of an id whose name has moved on to a new id (its epochs ran out): every
/// produce with it is fenced.
const RETIRED: i32 = i32::MAX;

pub struct ProducerIds {
    dir: PathBuf,
    /// Ids below this may have been handed out.
    next: AtomicI64,
    /// Named ids and their newest epoch (or `RETIRED`); read by every idempotent produce.
    epochs: RwLock<HashMap<i64, i32>>,
    inner: Mutex<Inner>,
}

struct Inner {
    reserved_to: i64,
    names: HashMap<String, (i64, i16)>,
    journal: File,
    journal_bytes: u64,
    /// What a rewrite of the journal would hold (one record per name), kept as names
    /// come: summed over every name at each InitProducer, it cost a named call five
    /// times an unnamed one's CPU with 100,000 names (hostile-client finding).
    live_bytes: u64,
    /// The journal was damaged at open: names whose records may be lost get new ids
    /// rather than an epoch that may already have been handed out.
    trusted: bool,
}

fn encode_record(name: &str, id: i64, epoch: i16) -> Vec<u8> {
    let mut body = Vec::with_capacity(10 + name.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&epoch.to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The bytes of a name's record in the journal.
fn record_len(name: &str) -> u64 {
    (RECORD_HEADER + 10 + name.len()) as u64
}

/// A journal holding one record per name, its newest: what a rewrite keeps.
fn encode_names(names: &HashMap<String, (i64, i16)>) -> Vec<u8> {
    names
        .iter()
        .flat_map(|(name, &(id, epoch))| encode_record(name, id, epoch))
        .collect()
}

/// The records of a names journal, and where the valid ones end (with why, if early).
fn decode_records(buf: &[u8]) -> (Vec<(String, i64, i16)>, usize, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let bad = |why: String| Some(format!("byte {at}: {why}"));
        let Some(head) = buf.get(at..at + RECORD_HEADER) else {
            return (out, at, bad("a record header cut short".into()));
        };
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let Some(body) = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return (out, at, bad(format!("a record of {len} bytes cut short")));
        };
        if !(11..=10 + MAX_NAME_BYTES).contains(&len) || crc32fast::hash(body) != crc {
            return (out, at, bad("a record fails its checksum".into()));
        }
        let id = i64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
        let epoch = i16::from_le_bytes(body[8..10].try_into().expect("2 bytes"));
        let Ok(name) = std::str::from_utf8(&body[10..]) else {
            return (out, at, bad("a name that is not UTF-8".into()));
        };
        out.push((name.to_string(), id, epoch));
        at += RECORD_HEADER + len;
    }
    (out, at, None)
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
    pub fn open(dir: &Path) -> Result<ProducerIds> {
        fs::create_dir_all(dir).at(dir)?;
        let next_path = dir.join(NEXT_ID_FILE);
        // Without a readable `next-id`, ids start at the clock in microseconds: no server
        // hands out a thousand ids a millisecond for long, so that is past every id handed
        // out before (and past the floor a previous start without the file set). A new
        // data directory starts there too, so its ids never meet a producer id that a
        // client wrote into batches before the server checked them.
        let floor = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64)
        };
        let reserved_to = match fs::read(&next_path) {
            Ok(bytes) => match decode_offset_file(NEXT_ID_MAGIC, &bytes) {
                Some(next) => next as i64,
                None => {
                    let floor = floor();
                    tracing::error!(path = %next_path.display(), floor, "the next producer id is unreadable; handing out ids from the clock in microseconds on, which is past any handed out before");
                    floor
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => floor(),
            Err(err) => return Err(err).at(&next_path),
        };
        let names_path = dir.join(NAMES_FILE);
        let bytes = match fs::read(&names_path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err).at(&names_path),
        };
        let (records, valid, damage) = decode_records(&bytes);
        let mut trusted = true;
        if let Some(why) = &damage {
            // A write a crash cut short (an InitProducer that never answered) is the last
            // record: shorter than the largest one, and either zeros (blocks allocated,
            // never written) or a plausible length that runs past the end of the file.
            // Anything else, a bad length or checksum in the middle included, is damage.
            let rest = &bytes[valid..];
            let longest = RECORD_HEADER + 10 + MAX_NAME_BYTES;
            let runs_past = |rest: &[u8]| {
                let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                (11..=10 + MAX_NAME_BYTES).contains(&len) && RECORD_HEADER + len > rest.len()
            };
            let torn_tail = rest.len() < longest
                && (rest.len() < RECORD_HEADER || rest.iter().all(|&b| b == 0) || runs_past(rest));
            trusted = torn_tail;
            if torn_tail {
                tracing::warn!(path = %names_path.display(), %why, "cutting a torn last record of the producer names");
            } else {
                tracing::error!(path = %names_path.display(), %why, "producer names are damaged; the records after the damage are lost, so every named producer is fenced and gets a new id at its next InitProducer");
            }
        }
        let mut names = HashMap::new();
        let mut epochs = HashMap::new();
        let mut next = reserved_to;
        for (name, id, epoch) in records {
            // After damage, later epochs of any name may have been handed out and lost:
            // each name is written back at the last epoch, so its next InitProducer gets
            // a new id, and every instance of its old id is fenced meanwhile. That
            // survives the rewrite below, and so the next start.
            let epoch = if trusted { epoch } else { i16::MAX };
            next = next.max(id + 1);
            if let Some((old, _)) = names.insert(name, (id, epoch)) {
                if old != id {
                    epochs.insert(old, RETIRED);
                }
            }
            epochs.insert(id, i32::from(epoch));
        }
        // Rewritten at once: without superseded and damaged records, and synced.
        let live = encode_names(&names);
        if damage.is_some() || bytes.len() > 4 * live.len() + 4096 {
            write_atomically(&names_path, &live)?;
        }
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&names_path)
            .at(&names_path)?;
        let journal_bytes = journal.metadata().at(&names_path)?.len();
        Ok(ProducerIds {
            dir: dir.to_path_buf(),
            next: AtomicI64::new(next),
            epochs: RwLock::new(epochs),
            inner: Mutex::new(Inner {
                reserved_to: reserved_to.max(next),
                names,
                journal,
                journal_bytes,
                live_bytes: live.len() as u64,
                trusted,
            }),
        })
    }

    /// A producer id and epoch (blocking: syncs files). Without a name: a new id, epoch
    /// 0. With one: its id and the next epoch, fencing the older ones; a new id once
    /// 32,767 epochs are used up.
    pub fn init(&self, name: Option<&str>) -> Result<(i64, i16)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok((self.allocate(&mut inner)?, 0));
        };
        check_name(name)?;
        let known = inner.names.get(name).copied().filter(|_| inner.trusted);
        if known.is_none()
            && inner.names.len() >= MAX_NAMED_PRODUCERS
            && !inner.names.contains_key(name)
        {
            return Err(Error::LimitReached(format!(
                "this server already knows {MAX_NAMED_PRODUCERS} producer names; use fewer names (one per \
                 logical producer, not per process start), or call InitProducer without a name"
            )));
        }
        let (id, epoch, retired) = match known {
            Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1, None),
            Some((old, _)) => (self.allocate(&mut inner)?, 0, Some(old)),
            None => (
                self.allocate(&mut inner)?,
                0,
                inner.names.get(name).map(|&(id, _)| id),
            ),
        };
        let record = encode_record(name, id, epoch);
        let path = self.dir.join(NAMES_FILE);
        let written = inner
            .journal
            .write_all(&record)
            .at(&path)
            .and_then(|()| sync_all(&inner.journal, &path));
        if let Err(err) = written {
            // Cut what part of the record got written (a full disk), so the next record
            // does not follow torn bytes; if even that fails, trust no epoch of the
            // journal until the next open sorts it out.
            if inner.journal.set_len(inner.journal_bytes).is_err() {
                inner.trusted = false;
            }
            return Err(err);
        }
        inner.journal_bytes += record.len() as u64;
        if inner.names.insert(name.to_string(), (id, epoch)).is_none() {
            inner.live_bytes += record_len(name);
        }
        {
            let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
            epochs.insert(id, i32::from(epoch));
            if let Some(old) = retired.filter(|&old| old != id) {
                epochs.insert(old, RETIRED);
            }
        }
        self.compact_if_large(&mut inner)?;
        Ok((id, epoch))
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

    fn compact_if_large(&self, inner: &mut Inner) -> Result<()> {
        if inner.journal_bytes < (1 << 20) || inner.journal_bytes < 4 * inner.live_bytes {
            return Ok(());
        }
        let path = self.dir.join(NAMES_FILE);
        let bytes = encode_names(&inner.names);
        write_atomically(&path, &bytes)?;
        inner.journal = OpenOptions::new().append(true).open(&path).at(&path)?;
        inner.journal_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Whether a produce may use this id and epoch (sequences are the partition's).
    pub fn check(&self, id: i64, epoch: i16) -> Result<()> {
        if id >= self.next.load(Ordering::Acquire) {
            return Err(Error::FailedPrecondition(format!(
                "producer id {id} was never handed out by this server: call InitProducer for one"
            )));
        }
        let current = self
            .epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied();
        match current {
            Some(RETIRED) => Err(Error::FailedPrecondition(format!(
                "producer {id} is fenced: its name has a new producer id since; this instance must stop"
            ))),
            Some(current) if i32::from(epoch) < current => Err(Error::FailedPrecondition(format!(
                "producer {id} epoch {epoch} is fenced: InitProducer gave epoch {current} of its name to a newer \
                 instance; this instance must stop"
            ))),
            Some(current) if i32::from(epoch) > current => Err(Error::FailedPrecondition(format!(
                "producer {id} has no epoch {epoch} yet (the newest is {current}): use the epoch InitProducer answered"
            ))),
            Some(_) => Ok(()),
            None if epoch != 0 => Err(Error::FailedPrecondition(format!(
                "producer {id} was handed out without a name, so its only epoch is 0, not {epoch}"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live size kept as names come is what a rewrite of the journal would hold,
    /// at open and after new and repeated names: compaction starts when it should.
    #[test]
    fn the_live_size_kept_is_what_a_rewrite_holds() {
        let dir = tempfile::tempdir().unwrap();
        let live = |ids: &ProducerIds| {
            let inner = ids.inner.lock().unwrap();
            (inner.live_bytes, encode_names(&inner.names).len() as u64)
        };
        let ids = ProducerIds::open(dir.path()).unwrap();
        for name in ["a", "billing", "a", "a-much-longer-name", "billing"] {
            ids.init(Some(name)).unwrap();
            ids.init(None).unwrap();
            let (kept, rewrite) = live(&ids);
            assert_eq!(kept, rewrite, "after {name}");
        }
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (kept, rewrite) = live(&ids);
        assert_eq!(kept, rewrite, "after a reopen");
        assert_eq!(kept, 3 * 18 + 1 + 7 + 18);
    }

    #[test]
    fn ids_are_never_reused_across_restarts_and_names_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (a, _) = ids.init(None).unwrap();
        let (b, _) = ids.init(None).unwrap();
        assert_ne!(a, b);
        assert_eq!(ids.init(Some("billing")).unwrap().1, 0);
        let (named, epoch) = ids.init(Some("billing")).unwrap();
        assert_eq!(epoch, 1);
        drop(ids); // a crash: nothing is closed
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (c, _) = ids.init(None).unwrap();
        assert!(c > named && c > b, "{c} after {a}, {b}, {named}");
        assert_eq!(ids.init(Some("billing")).unwrap(), (named, 2));
        // Epoch 1 is fenced now; epoch 3 was never handed out; an unnamed id has epoch 0.
        assert!(ids
            .check(named, 1)
            .unwrap_err()
            .to_string()
            .contains("fenced"));
        assert!(ids
            .check(named, 3)
            .unwrap_err()
            .to_string()
            .contains("no epoch 3"));
        ids.check(named, 2).unwrap();
        ids.check(c, 0).unwrap();
        assert!(ids.check(c, 1).is_err());
        assert!(ids
            .check(c + 5_000, 0)
            .unwrap_err()
            .to_string()
            .contains("never handed out"));
    }

    #[test]
    fn a_torn_last_record_is_cut_and_damage_gives_new_ids() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (id, _) = ids.init(Some("a")).unwrap();
        let (b_old, _) = ids.init(Some("b")).unwrap();
        drop(ids);
        let path = dir.path().join(NAMES_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode_record("c", 77, 0)[..12]);
        fs::write(&path, &bytes).unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(
            ids.init(Some("a")).unwrap(),
            (id, 1),
            "a torn tail loses nothing"
        );
        drop(ids);
        let mut bytes = fs::read(&path).unwrap();
        let len = bytes.len();
        bytes[len - 1] ^= 1; // the last record's name: damage, not a torn write
        fs::write(&path, &bytes).unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (new, epoch) = ids.init(Some("a")).unwrap();
        assert!(
            new != id && epoch == 0,
            "damage: a new id, never a reused epoch"
        );
        assert!(
            ids.check(id, 1).unwrap_err().to_string().contains("fenced"),
            "the old id is fenced"
        );
        drop(ids);
        // What the damage decided survives the next start.
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.init(Some("a")).unwrap(), (new, 1));
        let (b, _) = ids.init(Some("b")).unwrap();
        assert!(
            b != b_old && b != new,
            "b's record was before the damage, and b gets a new id too"
        );
    }

    #[test]
    fn bad_names_are_refused_and_an_unreadable_next_id_skips_far_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert!(ids.init(Some(&"x".repeat(300))).is_err());
        assert!(ids.init(Some("a\nb")).is_err());
        let (first, _) = ids.init(None).unwrap();
        drop(ids);
        fs::write(dir.path().join(NEXT_ID_FILE), b"junk").unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (after, _) = ids.init(None).unwrap();
        assert!(after > first, "{after} after {first}");
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert!(
            ids.init(None).unwrap().0 > after,
            "the new floor was written"
        );
    }
}
