//! Small durable files of a partition directory: the recovery checkpoint, the log start
//! offset, the clean-shutdown marker, and the write-then-rename used to replace a file
//! atomically.
//!
//! Recovery checkpoint (`recovery-checkpoint`, 48 bytes, little-endian):
//! ```text
//!  0  8  magic "STRMCKPT"
//!  8  4  version (1)
//! 12  4  CRC-32 of bytes [16, 48)
//! 16  8  base offset of the segment the checkpoint points into
//! 24  8  position in that segment: every byte below it is on disk, indexes included
//! 32  8  next offset at that position
//! 40  8  largest record timestamp below that position (i64::MIN when none)
//! ```
//!
//! Log start offset (`log-start-offset`, 24 bytes, little-endian), written by retention
//! and DeleteRecords before they delete anything:
//! ```text
//!  0  8  magic "STRMSTRT"
//!  8  4  version (1)
//! 12  4  CRC-32 of bytes [16, 24)
//! 16  8  the first offset readers may see
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::naming::{
    temp_path, unique_temp_path, CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE, LOG_START_FILE,
};
use crate::error::{IoContext, Result};

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"STRMCKPT";
pub const CHECKPOINT_VERSION: u32 = 1;
pub const CHECKPOINT_LEN: usize = 48;

/// How far a log is known to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut buf = [0u8; CHECKPOINT_LEN];
        buf[0..8].copy_from_slice(CHECKPOINT_MAGIC);
        buf[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.segment_base.to_le_bytes());
        buf[24..32].copy_from_slice(&self.position.to_le_bytes());
        buf[32..40].copy_from_slice(&self.next_offset.to_le_bytes());
        buf[40..48].copy_from_slice(&self.max_timestamp.to_le_bytes());
        let crc = crc32fast::hash(&buf[16..]);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(buf: &[u8]) -> Option<Checkpoint> {
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        if buf.len() != CHECKPOINT_LEN
            || &buf[0..8] != CHECKPOINT_MAGIC
            || buf[8..12] != CHECKPOINT_VERSION.to_le_bytes()
            || buf[12..16] != crc32fast::hash(&buf[16..]).to_le_bytes()
            // A segment's offsets start at its base, and the bytes below a position hold
            // offsets exactly when it is not 0: a checkpoint saying otherwise is damaged
            // however good its CRC, and open would compute offsets below the base.
            || u64_at(32) < u64_at(16)
            || (u64_at(24) == 0) != (u64_at(32) == u64_at(16))
        {
            return None;
        }
        Some(Checkpoint {
            segment_base: u64_at(16),
            position: u64_at(24),
            next_offset: u64_at(32),
            max_timestamp: u64_at(40) as i64,
        })
    }
}

/// Reads the checkpoint; `Ok(None)` when it is missing or damaged (then the whole log
/// is scanned, so a damaged checkpoint costs time, never data).
pub fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let checkpoint = Checkpoint::decode(&bytes);
            if checkpoint.is_none() {
                tracing::warn!(path = %path.display(), len = bytes.len(), "recovery checkpoint is damaged; scanning the log from its first segment");
            }
            Ok(checkpoint)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).at(&path),
    }
}

pub fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    write_atomically(&dir.join(CHECKPOINT_FILE), &checkpoint.encode())
}

pub const LOG_START_MAGIC: &[u8; 8] = b"STRMSTRT";
pub const CLEANER_OFFSET_MAGIC: &[u8; 8] = b"STRMCLNR";
/// Length of `log-start-offset` and `cleaner-offset`: one offset, framed alike.
pub const LOG_START_LEN: usize = 24;

/// A one-offset file: magic, version 1, CRC-32 of the offset, the offset.
pub fn encode_offset_file(magic: &[u8; 8], offset: u64) -> [u8; LOG_START_LEN] {
    let mut buf = [0u8; LOG_START_LEN];
    buf[0..8].copy_from_slice(magic);
    buf[8..12].copy_from_slice(&1u32.to_le_bytes());
    buf[16..24].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&buf[16..]);
    buf[12..16].copy_from_slice(&crc.to_le_bytes());
    buf
}

pub fn decode_offset_file(magic: &[u8; 8], buf: &[u8]) -> Option<u64> {
    (buf.len() == LOG_START_LEN
        && &buf[0..8] == magic
        && buf[8..12] == 1u32.to_le_bytes()
        && buf[12..16] == crc32fast::hash(&buf[16..]).to_le_bytes())
    .then(|| u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes")))
}

pub fn encode_log_start(offset: u64) -> [u8; LOG_START_LEN] {
    encode_offset_file(LOG_START_MAGIC, offset)
}

pub fn decode_log_start(buf: &[u8]) -> Option<u64> {
    decode_offset_file(LOG_START_MAGIC, buf)
}

/// The persisted log start offset: 0 when the file is missing (nothing was ever
/// deleted by offset), and also when it is damaged, which the caller is told of, since
/// records below the lost start may then be read again.
pub fn read_log_start(dir: &Path) -> Result<(u64, bool)> {
    let path = dir.join(LOG_START_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(decode_log_start(&bytes).map_or((0, false), |o| (o, true))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok((0, true)),
        Err(err) => Err(err).at(&path),
    }
}

/// Writes the log start offset. Once the file exists it is overwritten in place (24
/// bytes, within one sector, then fdatasync), which needs no new disk block: retention
/// must be able to free space on a full disk. A write torn all the same fails the CRC
/// and counts as a damaged file (the log then starts at its first segment).
pub fn write_log_start(dir: &Path, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(LOG_START_FILE);
    let bytes = encode_log_start(offset);
    match OpenOptions::new().write(true).open(&path) {
        Ok(file) if file.metadata().at(&path)?.len() == LOG_START_LEN as u64 => {
            file.write_all_at(&bytes, 0).at(&path)?;
            sync_data(&file, &path)
        }
        Ok(_) => write_atomically(&path, &bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => write_atomically(&path, &bytes),
        Err(err) => Err(err).at(&path),
    }
}

/// Writes `bytes` to `path.tmp`, syncs it, renames it over `path` and syncs the
/// directory: afterwards `path` holds either the old or the new bytes, never a mix. For
/// a writer that holds a lock across the write: two at once would share `path.tmp`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, &temp_path(path), bytes)
}

/// `write_atomically` through a temporary file of the call's own, `path.<n>.tmp`, for
/// writers that may run at once: a group's snapshot write that a cancelled request
/// left running, and the same snapshot written again. The directory's owner removes
/// what a crash leaves.
pub fn write_atomically_unlocked(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, &unique_temp_path(path), bytes)
}

fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    write_synced(tmp, bytes)?;
    fs::rename(tmp, path).at(path)?;
    sync_dir(path.parent().expect("files live in a directory"))
}

/// Creates (or truncates) `path`, writes `bytes` and syncs them: the first half of an
/// atomic replacement, whose caller renames the file into place.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).at(path)?;
    file.write_all(bytes).at(path)?;
    sync_all(&file, path)
}

/// Makes creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_all(&File::open(dir).at(dir)?, dir)
}

/// `fdatasync`: every fsync of a log's data goes through here or `sync_all`, the seam
/// where tests inject failures.
pub fn sync_data(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    failpoint::check(path)?;
    file.sync_data().at(path)
}

/// `fsync`, for files whose size or name must be durable too.
pub fn sync_all(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    failpoint::check(path)?;
    file.sync_all().at(path)
}

/// Fault injection for tests (in the manner of raft-engine's fail points, but keyed by
/// directory, so tests running in parallel on their own directories never meet each
/// other's faults). Compiled only into the crate's own tests.
#[cfg(test)]
pub mod failpoint {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use crate::error::{IoContext, Result};

    /// Directories, each with how many of its syncs still succeed before one fails.
    static FAIL_SYNCS_UNDER: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());
    /// Paths whose next sync fails (that file or directory only, not what is under it).
    static FAIL_SYNC_OF: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// The next sync of `path` itself fails with EIO (once).
    pub fn fail_next_sync_of(path: &Path) {
        FAIL_SYNC_OF.lock().unwrap().push(path.to_path_buf());
    }

    /// Directories whose next sync (of anything under them) first sleeps this long.
    static DELAY_SYNCS_UNDER: Mutex<Vec<(PathBuf, std::time::Duration)>> = Mutex::new(Vec::new());

    /// The next sync of a file under `dir` takes `delay` longer (once): for a test that
    /// acts while a sync is under way.
    pub fn delay_next_sync_under(dir: &Path, delay: std::time::Duration) {
        DELAY_SYNCS_UNDER
            .lock()
            .unwrap()
            .push((dir.to_path_buf(), delay));
    }

    /// The next sync of a file under `dir` fails with EIO (once).
    pub fn fail_next_sync_under(dir: &Path) {
        fail_sync_under_after(dir, 0);
    }

    /// After `passing` syncs under `dir` (the directory itself included), the next fails
    /// with EIO (once): `1` fails the directory sync after an atomic replacement's
    /// rename, when the rename may have happened.
    pub fn fail_sync_under_after(dir: &Path, passing: usize) {
        FAIL_SYNCS_UNDER
            .lock()
            .unwrap()
            .push((dir.to_path_buf(), passing));
    }

    pub(super) fn check(path: &Path) -> Result<()> {
        let mut delayed = DELAY_SYNCS_UNDER.lock().unwrap();
        if let Some(i) = delayed.iter().position(|(dir, _)| path.starts_with(dir)) {
            let (_, delay) = delayed.remove(i);
            drop(delayed);
            std::thread::sleep(delay);
        } else {
            drop(delayed);
        }
        let mut exact = FAIL_SYNC_OF.lock().unwrap();
        if let Some(i) = exact.iter().position(|p| p == path) {
            exact.remove(i);
            return Err(std::io::Error::from_raw_os_error(5)).at(path);
        }
        drop(exact);
        let mut armed = FAIL_SYNCS_UNDER.lock().unwrap();
        if let Some(i) = armed.iter().position(|(dir, _)| path.starts_with(dir)) {
            if armed[i].1 > 0 {
                armed[i].1 -= 1;
                return Ok(());
            }
            armed.remove(i);
            return Err(std::io::Error::from_raw_os_error(5)).at(path);
        }
        Ok(())
    }
}

pub fn clean_marker_exists(dir: &Path) -> bool {
    dir.join(CLEAN_SHUTDOWN_FILE).exists()
}

pub fn write_clean_marker(dir: &Path) -> Result<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .at(&path)?;
    sync_dir(dir)
}

/// Removed durably at open, before the first append: a crash from then on must not be
/// mistaken for a clean shutdown.
pub fn remove_clean_marker(dir: &Path) -> Result<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).at(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let cp = Checkpoint {
            segment_base: 7,
            position: 4096,
            next_offset: 99,
            max_timestamp: -5,
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
        for i in 0..CHECKPOINT_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert_eq!(Checkpoint::decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(Checkpoint::decode(&bytes[..40]), None);
    }

    #[test]
    fn log_start_round_trips_and_rejects_damage() {
        let bytes = encode_log_start(1234);
        assert_eq!(decode_log_start(&bytes), Some(1234));
        for i in 0..LOG_START_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            assert_eq!(decode_log_start(&bad), None, "flipped byte {i}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), (0, true));
        write_log_start(dir.path(), 77).unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), (77, true));
        fs::write(dir.path().join(LOG_START_FILE), b"garbage").unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), (0, false));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Two unlocked writes of one path at once (a snapshot write a cancelled request
    /// left running, and the same snapshot written again as its group is reopened)
    /// each land whole: the file holds one or the other, never a mix, and neither fails.
    #[test]
    fn concurrent_atomic_writes_of_one_path_each_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let a: &'static [u8] = &[b'a'; 256 << 10];
        let b: &'static [u8] = &[b'b'; 128 << 10];
        for _ in 0..20 {
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                let writer = |bytes: &'static [u8]| {
                    let (barrier, path) = (&barrier, &path);
                    move || {
                        barrier.wait();
                        write_atomically_unlocked(path, bytes)
                    }
                };
                let first = s.spawn(writer(a));
                let second = s.spawn(writer(b));
                first.join().unwrap().unwrap();
                second.join().unwrap().unwrap();
            });
            let landed = fs::read(&path).unwrap();
            assert!(
                landed == a || landed == b,
                "a mix of {} bytes",
                landed.len()
            );
        }
    }
}
