//! What group requests carry, checked: group names, subscriptions, session timeouts.

use super::coordinator::{
    Subscription, DEFAULT_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS,
};
use crate::error::{quote, Error, Result};

/// Checks a group name: the rules of topic names, as it names a directory too.
pub fn validate_group_name(name: &str) -> Result<()> {
    crate::broker::topic::validate_name(name)
        .map_err(|_| Error::InvalidArgument(format!(
            "group name {} is invalid: use 1 to {} characters of a-z, A-Z, 0-9, '.', '_' and '-', not \".\" or \"..\"",
            quote(name),
            crate::broker::topic::MAX_NAME_LEN
        )))
}

/// A subscription from a heartbeat's `topics` and `topic_pattern`.
pub fn subscription(topics: Vec<String>, pattern: &str) -> Result<Subscription> {
    const MAX_PATTERN: usize = 1024;
    match (topics.is_empty(), pattern.is_empty()) {
        (true, true) | (false, false) => Err(Error::InvalidArgument(
            "a heartbeat subscribes with topics or with topic_pattern: give exactly one".into(),
        )),
        (false, true) => {
            for topic in &topics {
                crate::broker::topic::validate_name(topic)?;
            }
            Ok(Subscription::Topics(topics.into_iter().collect()))
        }
        (true, false) => {
            if pattern.len() > MAX_PATTERN {
                return Err(Error::InvalidArgument(format!(
                    "topic_pattern is {} bytes; at most {MAX_PATTERN}",
                    pattern.len()
                )));
            }
            // Anchored: the pattern must match the whole name, as in Kafka.
            regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(256 << 10)
                .build()
                .map(|regex| Subscription::Pattern(pattern.to_string(), regex))
                .map_err(|err| {
                    Error::InvalidArgument(format!(
                        "topic_pattern {} is not a valid regular expression: {err}",
                        quote(pattern)
                    ))
                })
        }
    }
}

/// A session timeout from a heartbeat: 0 for the default, else within bounds.
pub fn session_timeout(ms: u32) -> Result<u64> {
    match u64::from(ms) {
        0 => Ok(DEFAULT_SESSION_TIMEOUT_MS),
        ms if (MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ms) => Ok(ms),
        ms => Err(Error::InvalidArgument(format!(
            "session_timeout_ms {ms} is out of bounds: use {MIN_SESSION_TIMEOUT_MS} to {MAX_SESSION_TIMEOUT_MS}, or 0 for {DEFAULT_SESSION_TIMEOUT_MS}"
        ))),
    }
}
