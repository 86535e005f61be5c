//! What group requests carry, checked: group names, subscriptions, session timeouts,
//! commits.

use super::coordinator::{
    Membership, Subscription, DEFAULT_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
};
use super::offsets::Committed;
use super::{topic_id, Groups, Tp};
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::broker::now_ms;
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

/// Topics one subscription may name (a pattern covers any number).
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;
/// Longest topic pattern, and the most its compiled form and its matching cache may take.
const MAX_PATTERN: usize = 1024;
const MAX_PATTERN_MEMORY: usize = 64 << 10;
/// Longest instance_id.
pub const MAX_INSTANCE_ID: usize = 255;

/// Compiled patterns by their text, shared by every member that subscribes with one:
/// a thousand members of one pattern hold one compiled regex, not a thousand.
static PATTERNS: Mutex<BTreeMap<String, regex::bytes::Regex>> = Mutex::new(BTreeMap::new());
/// Patterns kept compiled; past it the cache starts again (members keep theirs).
const MAX_CACHED_PATTERNS: usize = 1024;

fn compile(pattern: &str) -> Result<regex::bytes::Regex> {
    let mut cache = PATTERNS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(regex) = cache.get(pattern) {
        return Ok(regex.clone());
    }
    // Topic names are ASCII, so Unicode classes are not needed: without them `\w` takes
    // kilobytes instead of hundreds. Anchored: the whole name must match, as in Kafka.
    let regex = regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .unicode(false)
        .size_limit(MAX_PATTERN_MEMORY)
        .dfa_size_limit(MAX_PATTERN_MEMORY)
        .build()
        .map_err(|err| {
            Error::InvalidArgument(format!(
                "topic_pattern {} is not a valid regular expression (or is too complex): {err}",
                quote(pattern)
            ))
        })?;
    if cache.len() >= MAX_CACHED_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

/// An instance_id from a heartbeat: empty for none.
pub fn instance_id(id: String) -> Result<Option<String>> {
    if id.len() > MAX_INSTANCE_ID {
        return Err(Error::InvalidArgument(format!(
            "instance_id is {} bytes; at most {MAX_INSTANCE_ID}",
            id.len()
        )));
    }
    Ok(Some(id).filter(|id| !id.is_empty()))
}

/// A subscription from a heartbeat's `topics` and `topic_pattern`.
pub fn subscription(topics: Vec<String>, pattern: &str) -> Result<Subscription> {
    match (topics.is_empty(), pattern.is_empty()) {
        (true, true) | (false, false) => Err(Error::InvalidArgument(
            "a heartbeat subscribes with topics or with topic_pattern: give exactly one".into(),
        )),
        (false, true) => {
            if topics.len() > MAX_SUBSCRIBED_TOPICS {
                return Err(Error::InvalidArgument(format!(
                    "{} topics named; at most {MAX_SUBSCRIBED_TOPICS} (subscribe with topic_pattern for more)",
                    topics.len()
                )));
            }
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
            Ok(Subscription::Pattern(
                pattern.to_string(),
                compile(pattern)?,
                None,
            ))
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

impl Groups {
    /// A commit's offsets as entries, once its committer, topics, ownership and offsets
    /// are checked (see `commit`).
    pub(super) fn checked(
        &self,
        membership: &Membership,
        member_id: &str,
        member_epoch: i64,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> Result<Vec<(Tp, Committed)>> {
        membership.check_commit(member_id, member_epoch, &[])?;
        let now = now_ms();
        let mut entries = Vec::with_capacity(offsets.len());
        let mut ranges = Vec::with_capacity(offsets.len());
        for (topic, partition, offset, metadata) in offsets {
            let t = self.broker.topic(&topic)?;
            ranges.push((t.partition(partition)?, topic));
            let committed = Committed {
                offset,
                metadata,
                commit_ms: now,
            };
            entries.push(((topic_id(&t.id)?, partition), committed));
        }
        let tps: Vec<(Tp, &str)> = entries
            .iter()
            .zip(&ranges)
            .map(|((tp, _), (_, topic))| (*tp, topic.as_str()))
            .collect();
        membership.check_commit(member_id, member_epoch, &tps)?;
        for ((tp, committed), (partition, topic)) in entries.iter().zip(ranges) {
            let bounds = partition.offsets()?;
            // Below the log start is accepted (as Kafka does): retention may overtake a
            // slow member between its fetch and its commit, and refusing would fail the
            // whole commit; the member resumes with its reset policy.
            if committed.offset > bounds.high_watermark {
                return Err(Error::CommitOutOfRange {
                    topic,
                    partition: tp.1,
                    offset: committed.offset,
                    start: bounds.log_start,
                    end: bounds.high_watermark,
                });
            }
        }
        Ok(entries)
    }
}
