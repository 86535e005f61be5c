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
            "topic name {name:?} is invalid: use 1 to {MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '.', '_' and '-', not \".\" or \"..\""
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
pub struct TopicConfig {
    pub durability: Durability,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// Largest record accepted: key + value + header names and values.
    pub max_message_bytes: u64,
}

/// Configuration keys, as the API and `strom topic` name them.
pub const KEYS: [&str; 4] = [
    "durability",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
];

impl Default for TopicConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicConfig {
            durability: Durability::Fsync,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_age.as_millis() as u64,
            max_message_bytes: 1 << 20,
        }
    }
}

impl TopicConfig {
    /// Applies `key = value` pairs, refusing unknown keys and bad values.
    pub fn apply(&mut self, changes: &BTreeMap<String, String>) -> Result<()> {
        for (key, value) in changes {
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "config {key} = {value:?} is not a whole number"
                    ))
                })
            };
            match key.as_str() {
                "durability" => {
                    self.durability = match value.as_str() {
                        "fsync" => Durability::Fsync,
                        "page_cache" => Durability::PageCache,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "config durability = {value:?}: use \"fsync\" or \"page_cache\""
                            )))
                        }
                    }
                }
                "segment.bytes" => self.segment_bytes = number()?,
                "segment.ms" => self.segment_ms = number()?,
                "max.message.bytes" => self.max_message_bytes = number()?,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown config key {key:?}; known keys: {}",
                        KEYS.join(", ")
                    )))
                }
            }
        }
        self.log_config().validate()?;
        if self.max_message_bytes == 0 || self.max_message_bytes > self.log_config().max_batch_bytes
        {
            return Err(Error::InvalidArgument(format!(
                "max.message.bytes must be between 1 and {}",
                self.log_config().max_batch_bytes
            )));
        }
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
    pub partitions: u32,
    pub config: TopicConfig,
}

impl TopicMetadata {
    pub fn read(dir: &Path) -> Result<TopicMetadata> {
        let path = dir.join(METADATA_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corruption {
            path,
            position: e.column() as u64,
            reason: e.to_string(),
        })
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
        for (k, v) in [
            ("segment.bytes", "12"),
            ("durability", "maybe"),
            ("nope", "1"),
            ("segment.ms", "-1"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(TopicConfig::default().apply(&bad).is_err(), "{k}={v}");
        }
    }
}
