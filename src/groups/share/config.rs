//! A share group's settings: the keys of `AlterShareGroupConfig`, their defaults, their
//! bounds, and their text form (the group's `config.json`).

use std::collections::BTreeMap;

use crate::error::{parse_number, quote, Error, Result};

/// Longest lock a group may set: a lock that outlives a day is a lost record.
pub const MAX_LOCK_MS: u64 = 24 * 3600 * 1000;
/// Shortest lock: below this a record would expire on its way to the worker.
pub const MIN_LOCK_MS: u64 = 100;
/// Most deliveries a group may allow (the count is kept in 16 bits).
pub const MAX_DELIVERIES: u16 = 1000;
/// Largest window of records a partition keeps state for.
pub const MAX_IN_FLIGHT: u32 = 100_000;

/// Where a new group starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConfig {
    /// How long a delivered record stays locked to its member.
    pub lock_ms: u64,
    /// Deliveries after which a record is dead-lettered instead of handed out again.
    pub max_deliveries: u16,
    /// The window of offsets after the start offset a partition keeps state for: at most
    /// this many records are locked at once, and no record further than this past the
    /// oldest unfinished one is handed out.
    pub max_in_flight: u32,
    /// Delay before a released or expired record is handed out again, doubled for each
    /// earlier delivery, capped at `backoff_max_ms`.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// Topic that rejected and exhausted records are appended to; none: they are only
    /// marked as archived.
    pub dead_letter_topic: Option<String>,
    pub start: Start,
    /// No two records of one key are in flight at once, and none is handed out before
    /// every earlier record of its key is finished.
    pub key_ordered: bool,
    /// A member that has neither fetched nor acknowledged for this long is removed, and
    /// its records return to the queue.
    pub session_timeout_ms: u64,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            lock_ms: 30_000,
            max_deliveries: 5,
            max_in_flight: 2_000,
            backoff_ms: 0,
            backoff_max_ms: 60_000,
            dead_letter_topic: None,
            start: Start::Latest,
            key_ordered: false,
            session_timeout_ms: 45_000,
        }
    }
}

fn number(key: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    parse_number::<u64>(value)
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "share group config {key}={} is not a whole number from {min} to {max}",
                quote(value)
            ))
        })
}

impl ShareConfig {
    /// Applies `changes` (an empty value restores a key's default); all or nothing.
    pub fn apply(&self, changes: &BTreeMap<String, String>) -> Result<ShareConfig> {
        let mut next = self.clone();
        let default = ShareConfig::default();
        for (key, value) in changes {
            let reset = value.is_empty();
            match key.as_str() {
                "lock.ms" if reset => next.lock_ms = default.lock_ms,
                "lock.ms" => next.lock_ms = number(key, value, MIN_LOCK_MS, MAX_LOCK_MS)?,
                "max.deliveries" if reset => next.max_deliveries = default.max_deliveries,
                "max.deliveries" => {
                    next.max_deliveries = number(key, value, 1, MAX_DELIVERIES as u64)? as u16
                }
                "max.in.flight" if reset => next.max_in_flight = default.max_in_flight,
                "max.in.flight" => {
                    next.max_in_flight = number(key, value, 1, MAX_IN_FLIGHT as u64)? as u32
                }
                "redelivery.backoff.ms" if reset => next.backoff_ms = default.backoff_ms,
                "redelivery.backoff.ms" => next.backoff_ms = number(key, value, 0, MAX_LOCK_MS)?,
                "redelivery.backoff.max.ms" if reset => {
                    next.backoff_max_ms = default.backoff_max_ms
                }
                "redelivery.backoff.max.ms" => {
                    next.backoff_max_ms = number(key, value, 0, MAX_LOCK_MS)?
                }
                "dead.letter.topic" if reset => next.dead_letter_topic = None,
                "dead.letter.topic" => {
                    crate::broker::topic::validate_name(value)?;
                    next.dead_letter_topic = Some(value.clone());
                }
                "start" => {
                    next.start = match value.as_str() {
                        "" | "latest" => Start::Latest,
                        "earliest" => Start::Earliest,
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "share group config start={} must be earliest or latest",
                                quote(other)
                            )))
                        }
                    }
                }
                "key.ordered" => {
                    next.key_ordered = match value.as_str() {
                        "" | "false" => false,
                        "true" => true,
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "share group config key.ordered={} must be true or false",
                                quote(other)
                            )))
                        }
                    }
                }
                "session.timeout.ms" if reset => {
                    next.session_timeout_ms = default.session_timeout_ms
                }
                "session.timeout.ms" => {
                    next.session_timeout_ms = number(key, value, 1_000, 3_600_000)?
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown share group config key {}; the keys are lock.ms, max.deliveries, max.in.flight, redelivery.backoff.ms, redelivery.backoff.max.ms, dead.letter.topic, start, key.ordered, session.timeout.ms",
                        quote(other)
                    )))
                }
            }
        }
        Ok(next)
    }

    /// Every key with its value, defaults included.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        map.insert("lock.ms".into(), self.lock_ms.to_string());
        map.insert("max.deliveries".into(), self.max_deliveries.to_string());
        map.insert("max.in.flight".into(), self.max_in_flight.to_string());
        map.insert("redelivery.backoff.ms".into(), self.backoff_ms.to_string());
        map.insert(
            "redelivery.backoff.max.ms".into(),
            self.backoff_max_ms.to_string(),
        );
        map.insert(
            "dead.letter.topic".into(),
            self.dead_letter_topic.clone().unwrap_or_default(),
        );
        map.insert(
            "start".into(),
            match self.start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            }
            .into(),
        );
        map.insert("key.ordered".into(), self.key_ordered.to_string());
        map.insert(
            "session.timeout.ms".into(),
            self.session_timeout_ms.to_string(),
        );
        map
    }

    /// The group's settings from the text `to_map` wrote.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<ShareConfig> {
        ShareConfig::default().apply(map)
    }

    /// How long after its `count`th delivery ended a record waits before it is handed out
    /// again: `backoff_ms` doubled per earlier delivery, capped.
    pub fn backoff(&self, count: u16) -> u64 {
        if self.backoff_ms == 0 {
            return 0;
        }
        let doublings = count.saturating_sub(1).min(40) as u32;
        self.backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms.max(self.backoff_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_round_trip_and_bad_values_change_nothing() {
        let c = ShareConfig::default()
            .apply(&map(&[("lock.ms", "5000"), ("key.ordered", "true")]))
            .unwrap();
        assert_eq!(ShareConfig::from_map(&c.to_map()).unwrap(), c);
        for bad in [
            ("max.deliveries", "0"),
            ("lock.ms", "99999999999"),
            ("lock.ms", "-1"),
            ("lock.ms", "+5000"),
            ("start", "middle"),
            ("nope", "1"),
            ("dead.letter.topic", "a/b"),
        ] {
            let err = c.apply(&map(&[("lock.ms", "7000"), bad])).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
        assert_eq!(c.apply(&map(&[("lock.ms", "")])).unwrap().lock_ms, 30_000);
    }

    #[test]
    fn backoff_doubles_per_delivery_up_to_its_cap() {
        let c = ShareConfig {
            backoff_ms: 100,
            backoff_max_ms: 1000,
            ..ShareConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| c.backoff(n)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(ShareConfig::default().backoff(3), 0);
    }
}
