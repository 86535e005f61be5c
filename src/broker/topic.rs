//! A topic's name rules, configuration and `topic.json` metadata file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::log::files::write_atomically;
use crate::log::LogConfig;

/// Longest topic name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Name of a topic's metadata file, in the topic's directory.
pub const METADATA_FILE: &str = "topic.json";

/// Topic names become directory names, so only a safe alphabet is accepted: no `/`,
/// no NUL, no `.` or `..`, nothing over `MAX_NAME_LEN`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!(
            "topic name {} is invalid: use 1 to {MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '.', '_' and '-', not \".\" or \"..\"",
            crate::error::quote(name)
        )));
    }
    Ok(())
}

/// When a Produce that does not say is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the records are in the page cache.
    PageCache,
    /// After they are fsynced (shared with concurrent produces).
    Fsync,
}

/// Per-topic settings. Keys in the API and in `topic.json` are as in `KEYS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    pub durability: Durability,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// Largest record accepted: key + value + headers (names, values and their framing).
    pub max_message_bytes: u64,
    /// How far past the server's clock a record's timestamp may be.
    pub message_timestamp_after_max_ms: u64,
}

/// Configuration keys, as the API and `strom topic` name them.
pub const KEYS: [&str; 5] = [
    "durability",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
];

/// Smallest `segment.bytes`, as Kafka 4.0: every segment costs descriptors and maps
/// while it is written and read, and tiny segments multiply them.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

impl Default for TopicConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicConfig {
            durability: Durability::Fsync,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_age.as_millis() as u64,
            max_message_bytes: 1 << 20,
            // An hour, as Kafka 3.6+: a producer clock far in the future would otherwise
            // make a segment look young, and keep it from expiring, for as long.
            message_timestamp_after_max_ms: 3_600_000,
        }
    }
}

impl TopicConfig {
    /// Applies `key = value` pairs, refusing unknown keys and bad values. Nothing
    /// changes unless every pair is good.
    pub fn apply(&mut self, changes: &BTreeMap<String, String>) -> Result<()> {
        let mut next = self.clone();
        for (key, value) in changes {
            let bad = |accepted: String| {
                Error::InvalidArgument(format!(
                    "config {key} = {}: {accepted}",
                    crate::error::quote(value)
                ))
            };
            let number = |min: u64, max: u64| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| bad(format!("use a whole number from {min} to {max}")))
            };
            let max_segment = crate::log::config::MAX_SEGMENT_BYTES;
            match key.as_str() {
                "durability" => {
                    next.durability = match value.as_str() {
                        "fsync" => Durability::Fsync,
                        "page_cache" => Durability::PageCache,
                        _ => return Err(bad("use \"fsync\" or \"page_cache\"".into())),
                    }
                }
                "segment.bytes" => next.segment_bytes = number(MIN_SEGMENT_BYTES, max_segment)?,
                "segment.ms" => next.segment_ms = number(1, i64::MAX as u64)?,
                "max.message.bytes" => {
                    next.max_message_bytes = number(1, LogConfig::default().max_batch_bytes - 1024)?
                }
                "message.timestamp.after.max.ms" => {
                    next.message_timestamp_after_max_ms = number(0, i64::MAX as u64)?
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown config key {}; known keys: {}",
                        crate::error::quote(key),
                        KEYS.join(", ")
                    )))
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// Every key with its value, for DescribeTopic.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let durability = match self.durability {
            Durability::Fsync => "fsync",
            Durability::PageCache => "page_cache",
        };
        [
            ("durability", durability.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.after.max.ms",
                self.message_timestamp_after_max_ms.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The log settings of this topic's partitions. The broker decides when to fsync
    /// (per request, shared between requests), so the log itself never does on append.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_ms.max(1)),
            flush: crate::log::FlushPolicy::Os,
            ..LogConfig::default()
        }
    }
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
    pub config: TopicConfig,
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
        Ok(meta)
    }

    /// Replaces the file atomically (write, sync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("plain data serializes");
        write_atomically(&dir.join(METADATA_FILE), &json)
    }
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

    #[test]
    fn config_round_trips_and_rejects_bad_values() {
        let mut config = TopicConfig::default();
        let changes: BTreeMap<String, String> =
            [("durability", "page_cache"), ("segment.bytes", "1048576")]
                .map(|(k, v)| (k.into(), v.into()))
                .into();
        config.apply(&changes).unwrap();
        assert_eq!(config.durability, Durability::PageCache);
        let mut again = TopicConfig::default();
        again.apply(&config.to_map()).unwrap();
        assert_eq!(again, config);
        let before = TopicConfig::default();
        let mut partly = before.clone();
        let half_bad: BTreeMap<String, String> =
            [("durability", "page_cache"), ("segment.bytes", "ten")]
                .map(|(k, v)| (k.into(), v.into()))
                .into();
        let err = partly.apply(&half_bad).unwrap_err().to_string();
        assert!(
            err.contains("segment.bytes"),
            "names the key users type: {err}"
        );
        assert_eq!(partly, before, "nothing half-applied");
        for (k, v) in [
            ("segment.bytes", "12"),
            ("segment.bytes", "1048575"),
            ("message.timestamp.after.max.ms", "-5"),
            ("durability", "maybe"),
            ("nope", "1"),
            ("segment.ms", "-1"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(TopicConfig::default().apply(&bad).is_err(), "{k}={v}");
        }
    }
}
