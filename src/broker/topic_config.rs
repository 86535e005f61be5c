//! A topic's configuration: the keys users type, their values, and how a topic's own
//! settings (overrides) combine with the server's defaults.
//!
//! A topic stores every key's value in `topic.json`, and the names of the keys set for it
//! (at creation or by AlterTopicConfig). The other keys follow the server's defaults
//! (`[topic_defaults]` in the config file) as they are at each start, as Kafka's topic
//! configs follow the broker's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{parse_number, Error, Result};
use crate::log::{CompactionPolicy, LogConfig, RetentionPolicy};

/// When a Produce that does not say is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the records are in the page cache.
    PageCache,
    /// After they are fsynced (shared with concurrent produces).
    Fsync,
}

/// What the cleaner does with a topic's old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Delete whole old segments (`retention.ms`, `retention.bytes`).
    Delete,
    /// Keep the newest record of each key (log compaction).
    Compact,
    /// Both.
    CompactDelete,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
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
    /// Sealed segments whose newest record is older than this are deleted; -1: never.
    pub retention_ms: i64,
    /// The oldest sealed segments are deleted while a partition is over this; -1: no limit.
    pub retention_bytes: i64,
    pub cleanup_policy: CleanupPolicy,
    /// Compaction keeps a tombstone (a keyed record with an empty value) this long.
    pub delete_retention_ms: u64,
    /// Compaction leaves records alone until their segment's newest is this old.
    pub min_compaction_lag_ms: u64,
    /// A partition forgets an idempotent producer this long after its last write.
    pub producer_id_expiration_ms: u64,
}

/// Configuration keys, as the API and `strom topic` name them.
pub const KEYS: [&str; 11] = [
    "durability",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "delete.retention.ms",
    "min.compaction.lag.ms",
    "producer.id.expiration.ms",
];

/// The keys a topic had before topics recorded which keys were set for them: a
/// `topic.json` without that record had every one of these set, and `retention.ms`
/// counts as set to -1 (such topics kept everything, and keep doing so).
const KEYS_BEFORE_OVERRIDES: [&str; 6] = [
    "durability",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "retention.ms",
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
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            producer_id_expiration_ms: log.producer_expiration.as_millis() as u64,
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
                parse_number::<u64>(value)
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| bad(format!("use a whole number from {min} to {max}")))
            };
            let or_unlimited = |what: &str| {
                parse_number::<i64>(value)
                    .filter(|&n| n == -1 || n >= 1)
                    .ok_or_else(|| {
                        bad(format!(
                            "use -1 ({what}) or a whole number from 1 to {}",
                            i64::MAX
                        ))
                    })
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
                "retention.ms" => next.retention_ms = or_unlimited("keep forever")?,
                "retention.bytes" => next.retention_bytes = or_unlimited("no size limit")?,
                "cleanup.policy" => {
                    next.cleanup_policy = match value.as_str() {
                        "delete" => CleanupPolicy::Delete,
                        "compact" => CleanupPolicy::Compact,
                        "compact,delete" | "delete,compact" => CleanupPolicy::CompactDelete,
                        _ => {
                            return Err(bad(
                                "use \"delete\", \"compact\" or \"compact,delete\"".into()
                            ))
                        }
                    }
                }
                "delete.retention.ms" => next.delete_retention_ms = number(0, i64::MAX as u64)?,
                "min.compaction.lag.ms" => next.min_compaction_lag_ms = number(0, i64::MAX as u64)?,
                "producer.id.expiration.ms" => {
                    next.producer_id_expiration_ms = number(1, i64::MAX as u64)?
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
        KEYS.iter()
            .map(|&key| (key.to_string(), self.value(key)))
            .collect()
    }

    /// One key's value, as `apply` takes it.
    fn value(&self, key: &str) -> String {
        match key {
            "durability" => match self.durability {
                Durability::Fsync => "fsync".into(),
                Durability::PageCache => "page_cache".into(),
            },
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "cleanup.policy" => match self.cleanup_policy {
                CleanupPolicy::Delete => "delete".into(),
                CleanupPolicy::Compact => "compact".into(),
                CleanupPolicy::CompactDelete => "compact,delete".into(),
            },
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "producer.id.expiration.ms" => self.producer_id_expiration_ms.to_string(),
            _ => unreachable!("every key in KEYS has a value"),
        }
    }

    /// Sets `key` to `from`'s value, unchecked (a stored value made under older, looser
    /// ranges must still load).
    fn copy_key(&mut self, from: &TopicConfig, key: &str) {
        match key {
            "durability" => self.durability = from.durability,
            "segment.bytes" => self.segment_bytes = from.segment_bytes,
            "segment.ms" => self.segment_ms = from.segment_ms,
            "max.message.bytes" => self.max_message_bytes = from.max_message_bytes,
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = from.message_timestamp_after_max_ms
            }
            "retention.ms" => self.retention_ms = from.retention_ms,
            "retention.bytes" => self.retention_bytes = from.retention_bytes,
            "cleanup.policy" => self.cleanup_policy = from.cleanup_policy,
            "delete.retention.ms" => self.delete_retention_ms = from.delete_retention_ms,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = from.min_compaction_lag_ms,
            "producer.id.expiration.ms" => {
                self.producer_id_expiration_ms = from.producer_id_expiration_ms
            }
            _ => {}
        }
    }

    /// The server's defaults with the keys in `overrides` taken from `stored`.
    pub fn merged(
        defaults: &TopicConfig,
        stored: &TopicConfig,
        overrides: &BTreeSet<String>,
    ) -> TopicConfig {
        let mut config = defaults.clone();
        for key in overrides {
            config.copy_key(stored, key);
        }
        config
    }

    /// The log settings of this topic's partitions. The broker decides when to fsync
    /// (per request, shared between requests), so the log itself never does on append.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_ms.max(1)),
            producer_expiration: Duration::from_millis(self.producer_id_expiration_ms.max(1)),
            flush: crate::log::FlushPolicy::Os,
            ..LogConfig::default()
        }
    }

    /// How the cleaner compacts this topic's partitions, if it does; the key map holds
    /// at most `max_keys` keys a pass.
    pub fn compaction(&self, max_keys: usize) -> Option<CompactionPolicy> {
        self.cleanup_policy.compacts().then_some(CompactionPolicy {
            min_lag_ms: self.min_compaction_lag_ms,
            delete_retention_ms: self.delete_retention_ms,
            timestamp_after_max_ms: self.message_timestamp_after_max_ms,
            max_keys,
            segment_bytes: self.segment_bytes,
        })
    }

    /// What the cleaner applies to this topic's partitions (nothing is deleted by age
    /// or size unless the policy includes `delete`).
    pub fn retention(&self) -> RetentionPolicy {
        if !self.cleanup_policy.deletes() {
            return RetentionPolicy {
                retention_ms: None,
                retention_bytes: None,
                timestamp_after_max_ms: self.message_timestamp_after_max_ms,
                keep_from: None,
            };
        }
        let limit = |v: i64| u64::try_from(v).ok();
        RetentionPolicy {
            retention_ms: limit(self.retention_ms),
            retention_bytes: limit(self.retention_bytes),
            timestamp_after_max_ms: self.message_timestamp_after_max_ms,
            keep_from: None,
        }
    }
}

/// The keys a topic's own settings name: those given at creation or by AlterTopicConfig.
/// In AlterTopicConfig an empty value removes a key, which then follows the server's
/// default again.
pub fn update_overrides(
    overrides: &mut BTreeSet<String>,
    changes: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut set = BTreeMap::new();
    for (key, value) in changes {
        if value.is_empty() && KEYS.contains(&key.as_str()) {
            overrides.remove(key);
        } else {
            overrides.insert(key.clone());
            set.insert(key.clone(), value.clone());
        }
    }
    set
}

/// Overrides of a `topic.json` written before they were recorded.
pub fn legacy_overrides() -> BTreeSet<String> {
    KEYS_BEFORE_OVERRIDES
        .iter()
        .map(|k| k.to_string())
        .collect()
}

#[cfg(test)]
#[path = "topic_config_tests.rs"]
mod tests;
