//! Opening the producer ids' files: the next id to hand out, the names journal read
//! back (a torn last record cut, damage fencing every name), and the journal rewritten
//! without superseded records when it has grown.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use super::{
    expiry, is_tombstone, journal, tombstone, Inner, NameLimits, Named, ProducerIds, NAMES_FILE,
    NEXT_ID_FILE, NEXT_ID_MAGIC, RETIRED,
};
use crate::error::{IoContext, Result};
use crate::log::files::{decode_offset_file, write_atomically};

impl ProducerIds {
    /// Opens (or makes) `dir`'s files; see the module comment of `producer_ids` for
    /// what each holds.
    pub fn open(dir: &Path, limits: NameLimits) -> Result<ProducerIds> {
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
        let journal::Read {
            records,
            len,
            damaged,
            trusted,
        } = journal::read(&names_path)?;
        let next = records
            .iter()
            .map(|&(_, id, _)| id + 1)
            .fold(reserved_to, i64::max);
        let floor = expiry::read_floor(dir, len, next)?;
        let mut names = HashMap::new();
        let mut epochs = HashMap::new();
        for (name, id, epoch) in records {
            if is_tombstone(&name) {
                epochs.insert(id, Named::new(RETIRED, 0));
                names.insert(name, (id, i16::MAX));
                continue;
            }
            // After damage, later epochs of any name may have been handed out and lost:
            // each name is written back at the last epoch, so its next InitProducer gets
            // a new id, and every instance of its old id is fenced meanwhile. That
            // survives the rewrite below, and so the next start.
            let epoch = if trusted { epoch } else { i16::MAX };
            if let Some((old, _)) = names.insert(name, (id, epoch)) {
                if old != id {
                    epochs.remove(&old);
                    if old < floor {
                        epochs.insert(old, Named::new(RETIRED, 0));
                        names.insert(tombstone(old), (old, i16::MAX));
                    }
                }
            }
            epochs.insert(id, Named::new(i32::from(epoch), 0));
        }
        // A tombstone whose id a name still holds: the name's move was lost after the
        // tombstone was written. The id is the name's again (its instances are fenced
        // by its epoch, as any name's), or a rewrite could order the tombstone after
        // the name's record and retire a live id at the next start.
        let held: HashMap<i64, i16> = names
            .iter()
            .filter(|(name, _)| !is_tombstone(name))
            .map(|(_, &(id, epoch))| (id, epoch))
            .collect();
        names.retain(|name, (id, _)| {
            let Some(&epoch) = held.get(id).filter(|_| is_tombstone(name)) else {
                return true;
            };
            epochs.insert(*id, Named::new(i32::from(epoch), 0));
            false
        });
        // Rewritten at once: without superseded and damaged records, and synced.
        let live = journal::encode_names(names.iter());
        if damaged || len > 4 * live.len() + 4096 {
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
            limits,
            started: Instant::now(),
            skipped_ms: AtomicU64::new(0),
            next: AtomicI64::new(next),
            epochs: RwLock::new(epochs),
            inner: Mutex::new(Inner {
                reserved_to: reserved_to.max(next),
                swept_ms: 0,
                names,
                journal,
                journal_bytes,
                live_bytes: live.len() as u64,
                trusted,
                floor,
                stale: false,
            }),
        })
    }
}
