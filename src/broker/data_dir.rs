//! The data directory: one server at a time, a layout version, and where everything
//! lives. This type owns the layout; nothing else builds a path under the data
//! directory's root.
//!
//! ```text
//! <data_dir>/
//!   .lock                 flock'ed by the server using the directory; holds its pid
//!   version               the layout version, "1"
//!   topics/<name>.<id>/   one directory per topic (topic.json, one directory per partition)
//!   groups/<name>.<id>/   one directory per consumer group (committed offsets)
//!   producers/            producer ids handed out, and named producers (producer_ids/)
//! ```
//! A topic's directory carries its id, so a topic re-created under a deleted one's name
//! shares no path with whatever the old one left behind. A deleted topic's directory is
//! first renamed to `<name>.<id>.deleted`, then removed; a crash in between leaves the
//! renamed directory, which the next start removes. Groups are named and deleted the
//! same way, so a group deleted and created again starts with no offsets.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::log::files::sync_dir;

/// The layout this code reads and writes.
pub const LAYOUT_VERSION: u32 = 1;
const LOCK_FILE: &str = ".lock";
const VERSION_FILE: &str = "version";
const TOPICS_DIR: &str = "topics";
const GROUPS_DIR: &str = "groups";
const SHARE_GROUPS_DIR: &str = "share-groups";
const DELETED_SUFFIX: &str = ".deleted";

/// A data directory this process holds exclusively until it is dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Holds the `flock`; closing it (at drop, or when the process dies, even by
    /// SIGKILL) releases the directory.
    _lock: File,
}

/// What a directory under `topics/` is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicDirName {
    /// `<name>.<id>`, or just `<name>` (made before topics had ids).
    Live { name: String, id: Option<String> },
    /// A deleted topic's directory, still to be removed.
    Deleted,
}

/// Length of a topic id: a UUID v4 as 32 lower-case hex digits.
pub const TOPIC_ID_LEN: usize = 32;

/// A fresh, random topic id.
pub fn new_topic_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn parse_topic_dir(file_name: &str) -> TopicDirName {
    // Only `<name>.<id>.deleted`: a topic of the layout before ids may itself be named
    // `x.deleted`, and its directory is data, not a leftover.
    if let Some(live) = file_name.strip_suffix(DELETED_SUFFIX) {
        if let TopicDirName::Live { id: Some(_), .. } = parse_topic_dir(live) {
            return TopicDirName::Deleted;
        }
    }
    match file_name.rsplit_once('.') {
        Some((name, id))
            if id.len() == TOPIC_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            TopicDirName::Live {
                name: name.to_string(),
                id: Some(id.to_string()),
            }
        }
        _ => TopicDirName::Live {
            name: file_name.to_string(),
            id: None,
        },
    }
}

impl DataDir {
    /// Creates the directory if needed and takes it for this process. A second server
    /// on the same directory fails here, naming the process that holds it, before it
    /// has read or written anything else.
    pub fn open(root: &Path) -> Result<DataDir> {
        // The directories this makes: each one's entry in its parent is synced below.
        let made: Vec<&Path> = root.ancestors().take_while(|d| !d.exists()).collect();
        fs::create_dir_all(root).at(root)?;
        let lock_path = root.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .at(&lock_path)?;
        if let Err(errno) =
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            if errno != rustix::io::Errno::WOULDBLOCK {
                return Err(std::io::Error::from(errno)).at(&lock_path);
            }
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("another strom process (pid {pid})"),
                Err(_) => "another strom process".to_string(),
            };
            return Err(Error::DataDirInUse {
                path: root.to_path_buf(),
                holder,
            });
        }
        // Ours now: record who holds it, for the message above.
        lock.set_len(0).at(&lock_path)?;
        lock.rewind().at(&lock_path)?;
        writeln!(lock, "{}", std::process::id()).at(&lock_path)?;
        let dir = DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        };
        dir.check_version()?;
        for sub in [
            dir.topics(),
            dir.groups(),
            dir.share_groups(),
            dir.producers(),
        ] {
            fs::create_dir_all(&sub).at(&sub)?;
        }
        // Their entries durable before anything in them is acknowledged: a topic's
        // creation syncs `topics/`, not the root that holds it (durability review). So
        // are the entries of the root and of its parents if this made them.
        sync_dir(root)?;
        for dir in made {
            match dir.parent() {
                Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new("."))?,
                Some(parent) => sync_dir(parent)?,
                None => {}
            }
        }
        Ok(dir)
    }

    /// Refuses a layout this code does not know; writes the version into a new (or a
    /// pre-version) directory.
    fn check_version(&self) -> Result<()> {
        let path = self.root.join(VERSION_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(LAYOUT_VERSION) => Ok(()),
                _ => Err(Error::Unavailable {
                    what: format!("data directory {}", self.root.display()),
                    reason: format!(
                        "its {VERSION_FILE} file says {:?}; this strom reads layout version {LAYOUT_VERSION}",
                        text.trim()
                    ),
                }),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                crate::log::files::write_atomically(&path, format!("{LAYOUT_VERSION}\n").as_bytes())
            }
            Err(err) => Err(err).at(&path),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where topics live.
    pub fn topics(&self) -> PathBuf {
        self.root.join(TOPICS_DIR)
    }

    /// Where consumer groups keep their state.
    pub fn groups(&self) -> PathBuf {
        self.root.join(GROUPS_DIR)
    }

    /// Where share groups (queues) keep their state.
    pub fn share_groups(&self) -> PathBuf {
        self.root.join(SHARE_GROUPS_DIR)
    }

    /// The directory of group `name` with id `id` (named as topics' are).
    pub fn group_dir(&self, name: &str, id: &str) -> PathBuf {
        self.groups().join(format!("{name}.{id}"))
    }

    /// Where producer ids and the names of named producers are kept.
    pub fn producers(&self) -> PathBuf {
        self.root.join("producers")
    }

    /// The directory of topic `name` with id `id`.
    pub fn topic_dir(&self, name: &str, id: &str) -> PathBuf {
        self.topics().join(format!("{name}.{id}"))
    }

    /// Takes a deleted topic's directory out of the way at once (a rename, made durable),
    /// then removes it. Whatever fails in the removal is logged and retried at the next
    /// start; the topic is gone either way.
    pub fn remove_topic_dir(&self, dir: &Path) -> Result<()> {
        Self::remove_dir(dir)
    }

    /// As `remove_topic_dir`, for a group's directory.
    pub fn remove_group_dir(&self, dir: &Path) -> Result<()> {
        Self::remove_dir(dir)
    }

    fn remove_dir(dir: &Path) -> Result<()> {
        let mut doomed = dir.as_os_str().to_owned();
        doomed.push(DELETED_SUFFIX);
        let doomed = PathBuf::from(doomed);
        fs::rename(dir, &doomed).at(dir)?;
        sync_dir(
            dir.parent()
                .expect("a topic or group directory has a parent"),
        )?;
        if let Err(err) = fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), %err, "could not remove deleted files; the next start retries");
        }
        Ok(())
    }

    /// Removes what deletions interrupted by a crash left behind.
    pub fn remove_deleted_leftovers(&self) {
        for parent in [self.topics(), self.groups(), self.share_groups()] {
            Self::remove_deleted_in(&parent);
        }
    }

    fn remove_deleted_in(parent: &Path) {
        let Ok(entries) = fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if parse_topic_dir(&name.to_string_lossy()) == TopicDirName::Deleted {
                let path = entry.path();
                match fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(dir = %path.display(), "removed a deleted topic's or group's leftovers")
                    }
                    Err(err) => {
                        tracing::warn!(dir = %path.display(), %err, "could not remove a deleted topic's or group's leftovers")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        drop(first);
        DataDir::open(dir.path()).unwrap(); // released with its holder
    }

    /// Durability review: the subdirectories were made after the root was last synced,
    /// so a power loss could lose `topics/` and every topic in it, though each topic's
    /// creation synced `topics/`. An open must sync the root once they are made.
    #[test]
    fn open_syncs_the_root_after_making_its_subdirectories() {
        use crate::log::files::failpoint;
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path()).unwrap());
        fs::remove_dir(dir.path().join("share-groups")).unwrap(); // as after a crash
        failpoint::fail_next_sync_of(dir.path());
        assert!(
            DataDir::open(dir.path()).is_err(),
            "the root was not synced"
        );
        DataDir::open(dir.path()).unwrap();
        assert!(dir.path().join("share-groups").is_dir());
    }

    #[test]
    fn an_unknown_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path()).unwrap());
        assert_eq!(
            fs::read_to_string(dir.path().join(VERSION_FILE)).unwrap(),
            "1\n"
        );
        fs::write(dir.path().join(VERSION_FILE), "7\n").unwrap();
        let err = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("layout version 1"), "{err}");
    }

    #[test]
    fn topic_directory_names_round_trip() {
        let id = new_topic_id();
        let dir = format!("or.ders.{id}");
        assert_eq!(
            parse_topic_dir(&dir),
            TopicDirName::Live {
                name: "or.ders".into(),
                id: Some(id.clone())
            }
        );
        assert_eq!(
            parse_topic_dir("legacy"),
            TopicDirName::Live {
                name: "legacy".into(),
                id: None
            }
        );
        assert_eq!(
            parse_topic_dir(&format!("{dir}.deleted")),
            TopicDirName::Deleted
        );
        // A legacy topic named like a leftover is a topic.
        assert_eq!(
            parse_topic_dir("orders.deleted"),
            TopicDirName::Live {
                name: "orders.deleted".into(),
                id: None
            }
        );
    }
}
