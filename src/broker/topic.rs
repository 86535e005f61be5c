//! A topic: its name rules, its `topic.json` metadata file, and the served `Topic` with
//! its partitions (its configuration keys are in `topic_config.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub use super::topic_config::*;
use super::{now_ms, Partition, PartitionInfo};
use crate::error::{Error, IoContext, Result};
use crate::log::files::write_atomically;

/// Longest topic name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Name of a topic's metadata file, in the topic's directory.
pub const METADATA_FILE: &str = "topic.json";

/// Topic names become directory names, so only a safe alphabet is accepted: no `/`,
/// no NUL, no `.` or `..`, nothing over `MAX_NAME_LEN`.
pub fn validate_name(name: &str) -> Result<()> {
    check_name("topic", name)
}

/// A name of `what` (a topic, an exchange) in the topic names' alphabet.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!(
            "{what} name {} is invalid: use 1 to {MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '.', '_' and '-', not \".\" or \"..\"",
            crate::error::quote(name)
        )));
    }
    Ok(())
}

/// What `topic.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Empty in files written before topics had names and ids in them.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub id: String,
    pub partitions: u32,
    /// Every key's value when the file was written.
    pub config: TopicConfig,
    /// The keys set for this topic; the others follow the server's defaults. Missing in
    /// files written before it was recorded (see `legacy_overrides`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BTreeSet<String>>,
    /// When the partitions were made, in runs: the first `count` at `at_ms`, the next
    /// run when partitions were added, and so on. Empty in files written before it was
    /// recorded; partitions it does not cover count as made at 0 (long ago).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<PartitionsCreated>,
}

/// A run of partitions made together (`TopicMetadata::created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionsCreated {
    pub count: u32,
    pub at_ms: i64,
}

/// When partition `id` was made, from runs of partitions; 0 if the runs do not cover it.
pub fn created_at(created: &[PartitionsCreated], id: u32) -> i64 {
    let mut first = 0u64;
    for run in created {
        first += u64::from(run.count);
        if u64::from(id) < first {
            return run.at_ms;
        }
    }
    0
}

impl TopicMetadata {
    /// Reads and checks `topic.json`: a name that is not a valid topic name, a partition
    /// count of zero, or config values out of range are corruption, not a topic.
    pub fn read(dir: &Path) -> Result<TopicMetadata> {
        let path = dir.join(METADATA_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        let corrupt = |reason: String| Error::Corruption {
            path: path.clone(),
            position: 0,
            reason,
        };
        let mut meta: TopicMetadata =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if meta.name.is_empty() {
            // Written before topic.json named its topic: the directory did.
            meta.name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        validate_name(&meta.name).map_err(|e| corrupt(e.to_string()))?;
        if meta.partitions == 0 {
            return Err(corrupt("a topic has at least one partition".into()));
        }
        // Only what the log needs to open: the ranges `apply` enforces have tightened
        // over time (segment.bytes was at least 1 KiB before 1 MiB), and a topic made
        // under the old ones must still open.
        meta.config
            .log_config()
            .validate()
            .map_err(|e| corrupt(e.to_string()))?;
        if meta.config.max_message_bytes == 0 {
            return Err(corrupt("max_message_bytes is 0".into()));
        }
        if meta.overrides.is_none() {
            // Written before retention existed, when topics kept everything: they go on
            // doing so (retention.ms = -1, as set for the topic) until altered.
            meta.config.retention_ms = -1;
            meta.overrides = Some(legacy_overrides());
        }
        Ok(meta)
    }

    /// Replaces the file atomically (write, sync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("plain data serializes");
        write_atomically(&dir.join(METADATA_FILE), &json)
    }
}

pub struct Topic {
    pub name: String,
    /// Unique over the life of the data directory: a topic re-created under the same
    /// name has a new one.
    pub id: String,
    pub(super) dir: PathBuf,
    /// Grows when partitions are added (`Broker::add_partitions`), never shrinks:
    /// readers take the list as it is now and keep it for their request.
    pub(super) partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
    /// The partition count, for waits that must see partitions added.
    pub(super) count: tokio::sync::watch::Sender<u32>,
    /// Held by an add of partitions throughout: one at a time.
    pub(super) adding: Arc<tokio::sync::Mutex<()>>,
    pub(super) settings: RwLock<TopicSettings>,
    /// Next partition for records with neither key nor partition.
    pub(super) round_robin: AtomicU32,
}

/// A topic's effective configuration, and the keys set for it (the others follow the
/// server's defaults).
#[derive(Clone)]
pub(super) struct TopicSettings {
    pub(super) config: TopicConfig,
    pub(super) overrides: BTreeSet<String>,
    /// When the partitions were made (`TopicMetadata::created`).
    pub(super) created: Vec<PartitionsCreated>,
}

impl Topic {
    /// The topic's configuration and the keys set for it (the others follow the
    /// server's defaults), read together: an alter between two reads could pair one
    /// config with another's keys.
    pub fn config_and_overrides(&self) -> (TopicConfig, BTreeSet<String>) {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        (settings.config.clone(), settings.overrides.clone())
    }

    pub fn config(&self) -> TopicConfig {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }

    /// The partitions as they are now. Partitions may be added later; none go.
    pub fn partitions(&self) -> Arc<Vec<Arc<Partition>>> {
        Arc::clone(&self.partitions.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes when partitions are added. Subscribe before taking `partitions`: an
    /// add in between is then seen.
    pub fn watch_count(&self) -> tokio::sync::watch::Receiver<u32> {
        self.count.subscribe()
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u32
    }

    pub fn partition(&self, id: u32) -> Result<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        Self::partition_in(&self.name, &partitions, id).cloned()
    }

    /// Partition `id` of topic `name` in `partitions` (a list `partitions` gave).
    pub fn partition_in<'a>(
        name: &str,
        partitions: &'a [Arc<Partition>],
        id: u32,
    ) -> Result<&'a Arc<Partition>> {
        partitions
            .get(id as usize)
            .ok_or_else(|| Error::PartitionNotFound {
                topic: name.to_string(),
                partition: id,
                count: partitions.len() as u32,
            })
    }

    /// Whether the topic was deleted (its partitions are marked so, under its
    /// settings' lock, before its directory goes).
    pub fn is_deleted(&self) -> bool {
        self.partitions().iter().any(|p| p.is_deleted())
    }

    /// When partition `id` was made, in ms since the epoch; 0 if it was made before
    /// this was recorded (or does not exist).
    pub fn partition_created_ms(&self, id: u32) -> i64 {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        created_at(&settings.created, id)
    }

    /// When each of the first `n` partitions was made (`partition_created_ms`).
    pub fn created_times(&self, n: usize) -> Vec<i64> {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        (0..n as u32)
            .map(|id| created_at(&settings.created, id))
            .collect()
    }

    /// What `topic.json` is to hold: the topic as it is, with `settings` (held by the
    /// caller, so that what it writes is not raced by another writer).
    pub(super) fn metadata(&self, settings: &TopicSettings, partitions: u32) -> TopicMetadata {
        TopicMetadata {
            name: self.name.clone(),
            id: self.id.clone(),
            partitions,
            config: settings.config.clone(),
            overrides: Some(settings.overrides.clone()),
            created: settings.created.clone(),
        }
    }

    /// The topic and its partitions' state; `floor` gives a partition's retention floor
    /// (`Broker::describe`). May read each partition's first record from disk: call off
    /// async workers.
    pub fn describe(&self, floor: impl Fn(u32) -> Option<u64>) -> Result<TopicInfo> {
        // Under the settings, which partitions are added under: runs that cover them.
        let (config, created, partitions) = {
            let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
            let partitions = self.partitions();
            (
                settings.config.clone(),
                settings.created.clone(),
                partitions,
            )
        };
        let (policy, now) = (config.retention(), now_ms());
        let partitions = partitions
            .iter()
            .map(|p| {
                let policy = crate::log::RetentionPolicy {
                    keep_from: floor(p.id),
                    ..policy
                };
                let mut info = p.describe(&policy, now)?;
                info.created_ms = created_at(&created, p.id);
                Ok(info)
            })
            .collect::<Result<_>>()?;
        Ok(TopicInfo {
            name: self.name.clone(),
            id: self.id.clone(),
            config: config.to_map(),
            partitions,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_data_directory_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\0b",
            "sp ace",
            "é",
            &"x".repeat(201),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["orders", "a.b_c-D9", "..x", &"x".repeat(200)] {
            validate_name(good).unwrap();
        }
    }
}
