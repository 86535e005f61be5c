//! A consumer group's members on disk, so that a server restart is invisible to them:
//! `members` in the group's directory holds the coordinator's state
//! (`coordinator/saved.rs`), written whenever it changes and before the heartbeat that
//! changed it is answered, and read when the group is first used after a start. Byte
//! table in `storage-format.md` ("A group's members").
//!
//! Written without fsync: a heartbeat waiting for a disk sync in every step of a
//! rebalance would make rebalances of large groups slow. After a process crash the page
//! cache still holds the last write, so the file is exact. After the machine itself went
//! down it may be older than what members were told; so the file names the machine's
//! boot (Linux's `boot_id`), and one from another boot is not used. The group is then
//! held for two heartbeat intervals instead (`slots::RESTART_HOLD_INTERVALS`), as is one
//! whose file is missing or damaged, or whose last write failed (the file is removed).
//!
//! Only groups with a directory (committed offsets) have the file: a group that has
//! never committed keeps its members in memory only.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::slots::{Loaded, Slot};
use super::{Groups, Membership, Scope};

pub const MEMBERS_FILE: &str = "members";
const TEMP_FILE: &str = "members.tmp";
const MAGIC: &[u8; 8] = b"STRMMEMB";
const VERSION: u32 = 1;
/// magic, version, boot id.
const HEADER_LEN: usize = 8 + 4 + 16;

/// What a principal's scoped pattern may match, given by the server (which has the access
/// control list) once at its start.
pub type ScopeFn = Box<dyn Fn(&str) -> Option<Scope> + Send + Sync>;

/// This boot of the machine, from `/proc/sys/kernel/random/boot_id`; None where there is
/// none, and then no file is written or read.
pub fn boot_id() -> Option<u128> {
    static BOOT: OnceLock<Option<u128>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        (hex.len() == 32)
            .then(|| u128::from_str_radix(&hex, 16).ok())
            .flatten()
    })
}

/// The file's bytes: `magic | version u32 | boot u128 | body | crc32` (the CRC over all
/// before it).
pub fn encode(boot: u128, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&boot.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a file written in boot `boot`, or why it cannot be used.
pub fn decode(bytes: &[u8], boot: u128) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return Err("not a members file");
    }
    let (data, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(data).to_le_bytes() != crc {
        return Err("its checksum does not match");
    }
    if data[8..12] != VERSION.to_le_bytes() {
        return Err("written by another version of strom");
    }
    if data[12..HEADER_LEN] != boot.to_le_bytes() {
        return Err("written before the machine last started, so it may be out of date");
    }
    Ok(&data[HEADER_LEN..])
}

/// Most a `members` file may hold: a thousand members with long subscriptions and
/// assignments of a hundred thousand partitions take well under this. A larger file
/// was not written by strom, and is not read (hostile-sweep finding: a 1 GiB file was
/// read whole into memory, and took the group's lock for seconds).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The file's bytes, if it is a regular file of at most `MAX_FILE_BYTES` (a FIFO put
/// there would block the read for good, a link to `/dev/zero` never end). Blocking.
fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file of at most {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why a save failed: the write's error, and the removal's if the old file stayed.
type Failed = (std::io::Error, Option<std::io::Error>);
pub(super) type Saved = Result<Written, Failed>;

pub(super) enum Written {
    Yes,
    /// The group's directory is not made yet (its first commit's open runs beside the
    /// save, and saves once done) or is gone (deleted).
    NoDirectory,
}

/// Replaces the file (a temporary file renamed over it, not synced). If that fails the
/// file is removed: an out-of-date one would restore members as they were, and could
/// hand a partition to one while another consumes it; without one, a restart holds the
/// group instead. Blocking.
fn write(dir: &Path, bytes: &[u8]) -> Saved {
    let temp = dir.join(TEMP_FILE);
    let written =
        std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, dir.join(MEMBERS_FILE)));
    match written {
        Ok(()) => Ok(Written::Yes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Written::NoDirectory),
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            match std::fs::remove_file(dir.join(MEMBERS_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((err, Some(e))),
                _ => Err((err, None)),
            }
        }
    }
}

impl Groups {
    /// Lets scoped patterns be restored: without it, a group with one is held instead.
    pub fn set_scopes(&self, scope_of: ScopeFn) {
        let _ = self.scope_of.set(scope_of);
    }

    /// The membership saved in a group's directory, restored with its sessions starting
    /// now; None if there is none that can be used (then the group is held).
    pub(super) async fn restored(&self, slot: &Slot) -> Option<Membership> {
        let boot = self.boot?;
        let path = slot.dir.join(MEMBERS_FILE);
        let read = tokio::task::spawn_blocking(move || read(&path));
        let bytes = match read.await.expect("a read does not panic") {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(group = %slot.name, %err, "could not read the group's members; holding it");
                return None;
            }
        };
        let why = match decode(&bytes, boot) {
            Ok(body) => {
                let scope_of = |who: &str| self.scope_of.get().and_then(|f| f(who));
                let interval = self.config.heartbeat_interval.as_millis() as u64;
                let tally = Arc::clone(&self.subscriptions);
                let restored = Membership::restore(
                    &slot.name,
                    interval,
                    self.view(),
                    tally,
                    body,
                    self.now(),
                    &scope_of,
                );
                match restored {
                    Ok(membership) => return Some(membership),
                    Err(why) => why,
                }
            }
            Err(why) => why,
        };
        tracing::info!(group = %slot.name, "the group's saved members are not used ({why}); holding it");
        None
    }

    /// Saves a locked group's membership if it changed since it was last saved: before
    /// the answer of the request that changed it goes out. Each write is started before
    /// this waits for anything, and waits for the one before it (a cancelled request's,
    /// still running): so writes land in order, and the newest state is written even
    /// if this request is cancelled too (a file ahead of what a member was told is a
    /// lost answer, which the coordinator handles; one behind it is not).
    pub(super) async fn save_members(&self, slot: &Slot, loaded: &mut Loaded) {
        let Some(boot) = self.boot else { return };
        if !slot.has_files.load(Ordering::Relaxed) {
            return;
        }
        let changes = loaded.membership.changes();
        if let Some((saved_at, crc)) = loaded.saved {
            if saved_at == changes {
                // Every change moves `changes`: a missed one would leave the file behind.
                debug_assert_eq!(crc32fast::hash(&loaded.membership.saved()), crc);
                return;
            }
        }
        let body = loaded.membership.saved();
        let crc = crc32fast::hash(&body);
        loaded.saved = None;
        let dir = slot.dir.clone();
        let bytes = encode(boot, &body);
        let earlier = loaded.saving.take();
        let saving = loaded.saving.insert(tokio::spawn(async move {
            if let Some(earlier) = earlier {
                let _ = earlier.await;
            }
            let write = tokio::task::spawn_blocking(move || write(&dir, &bytes));
            write.await.expect("a write does not panic")
        }));
        // Cancelled here, the write goes on, and stays in `saving` for the next save
        // (and the group's unloading) to wait for.
        let written = saving.await.expect("a write does not panic");
        loaded.saving = None;
        let failed = match written {
            Ok(Written::Yes) => {
                loaded.saved = Some((changes, crc));
                return;
            }
            Ok(Written::NoDirectory) => return,
            Err(failed) => failed,
        };
        // Once a second at most: a failing disk under a large group's heartbeats
        // logged a line each (hostile-sweep finding).
        let Some(held_back) = self.save_failures.allow() else {
            return;
        };
        match failed {
            (err, None) => {
                tracing::warn!(group = %slot.name, %err, held_back, "could not save the group's members; a restart will hold the group")
            }
            (err, Some(remove)) => {
                tracing::error!(group = %slot.name, %err, %remove, held_back, "could not save the group's members nor remove their old file: a restart may restore members as they were before")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_used_only_in_the_boot_that_wrote_it_and_whole() {
        let file = encode(7, b"body");
        assert_eq!(decode(&file, 7), Ok(&b"body"[..]));
        assert!(decode(&file, 8)
            .unwrap_err()
            .contains("machine last started"));
        for cut in 0..file.len() {
            assert!(decode(&file[..cut], 7).is_err(), "cut at {cut}");
        }
        let mut flipped = file.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(decode(&flipped, 7).unwrap_err().contains("checksum"));
        // A directory not there (yet) is not a save: the group's first open saves.
        let dir = tempfile::tempdir().unwrap();
        let written = write(&dir.path().join("not-made"), &file);
        assert!(matches!(written, Ok(Written::NoDirectory)));
        assert!(matches!(write(dir.path(), &file), Ok(Written::Yes)));
        assert_eq!(std::fs::read(dir.path().join(MEMBERS_FILE)).unwrap(), file);
    }

    /// Review finding: a request cancelled while the save before it ran never wrote
    /// its own state. A member joins and its request is cancelled while its save runs;
    /// the first member leaves, cancelled the same way. Both writes land, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_changed_by_a_cancelled_request_is_still_saved_in_order() {
        use futures_util::FutureExt;
        use std::collections::BTreeMap;

        use crate::broker::{Broker, Limits};
        use crate::groups::subscriptions::SubscriptionTally;
        use crate::groups::{GroupsConfig, Heartbeat};

        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 2, &BTreeMap::new()).await.unwrap();
        let groups = Groups::open(Arc::clone(&broker), GroupsConfig::default()).unwrap();
        let join = || Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscription: crate::groups::subscription(vec!["t".into()], "").unwrap(),
            instance_id: None,
            session_timeout_ms: 10_000,
            owned: Vec::new(),
        };
        let (first, _) = groups.heartbeat("g", join()).await.unwrap();
        let offsets = vec![("t".to_string(), 0, 0, String::new())];
        let epoch = first.member_epoch;
        groups
            .commit("g", &first.member_id, epoch, offsets)
            .await
            .unwrap();
        let joining = groups.heartbeat("g", join()).now_or_never();
        assert!(
            joining.is_none(),
            "the join answered before its save was cut"
        );
        let leaving = groups.leave("g", &first.member_id).now_or_never();
        assert!(
            leaving.is_none(),
            "the leave answered before its save was cut"
        );

        let slot = groups.find("g").unwrap();
        let restored = || {
            let bytes = std::fs::read(slot.dir.join(MEMBERS_FILE)).unwrap();
            let body = decode(&bytes, boot_id().unwrap()).unwrap().to_vec();
            let tally = Arc::new(SubscriptionTally::new(usize::MAX));
            let view = groups.view();
            Membership::restore("g", 3_000, view, tally, &body, 0, &|_| None).unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let ids: Vec<String> = restored().members().map(|m| m.id.to_string()).collect();
            if ids.len() == 1 && ids[0] != first.member_id {
                break; // the joiner alone: the leave's state
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the file holds {ids:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Hostile-sweep findings: a 1 GiB file was read whole, and a FIFO put in its place
    /// blocked the group for good. Neither is read now.
    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        assert!(read(&big).is_err());
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(read(&fifo).is_err(), "a FIFO is refused, not read");
        let fine = dir.path().join("fine");
        std::fs::write(&fine, b"bytes").unwrap();
        assert_eq!(read(&fine).unwrap(), b"bytes");
    }

    #[test]
    fn this_machine_has_a_boot_id() {
        // Linux: the files are written. Elsewhere this is None and groups are held.
        assert!(cfg!(not(target_os = "linux")) || boot_id().is_some());
    }
}
