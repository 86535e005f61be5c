//! What groups do with offsets: commit, fetch and reset. These need
//! the broker (topic ids, log bounds, timestamp lookups), which is asked before a group
//! is locked, so a slow lookup never holds up the group's heartbeats.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use super::offsets::{Committed, MAX_METADATA_BYTES};
use super::paging::{bad_token, partition_from, partition_token, Room};
use super::store::Durability;
use super::{loaded, topic_id, Groups, Slot, Store, TopicId, Tp};
use crate::broker::now_ms;
use crate::broker::page::{Page, Visible};
use crate::error::{quote, Error, Result};
use crate::log::files::write_atomically_unlocked;

/// About the most one page of FetchOffsets takes (metadata can be 4 KiB an offset).
pub const OFFSETS_PAGE_BYTES: usize = 1 << 20;
/// About the most FetchOffsets answers when asked for everything at once, as clients
/// from before pages ask: under the 4 MB that gRPC clients accept by default.
pub const UNPAGED_OFFSETS_BYTES: usize = 3 << 20;

/// A page of committed offsets: (topic, partition, offset), by topic and partition.
#[derive(Debug, Default)]
pub struct FetchedOffsets {
    pub offsets: Vec<(String, u32, Committed)>,
    /// Where the next page goes on from; `None` on the last.
    pub next_page_token: Option<String>,
}

/// Who commits: a gRPC client, or the Kafka listener, with the hold on the group's
/// joins that its check took, if it needed one.
enum Committer {
    Grpc,
    Kafka(Option<Box<dyn Send>>),
}

/// Offsets one CommitOffsets may carry.
pub const MAX_OFFSETS_PER_COMMIT: usize = 100_000;

/// Where ResetOffsets moves offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
    /// This many ms before now.
    Duration(u64),
    ShiftBy(i64),
}

/// What a reset set (or would set): per partition, the offset before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub topic: String,
    pub partitions: Vec<(u32, Option<u64>, u64)>,
}

impl Groups {
    /// Stores offsets, all or none, and answers once they are on disk. After the
    /// request's shape, the committer is checked first (a member at its epoch): a fenced
    /// member must learn it is fenced whatever its offsets, or a client that leaves out
    /// those refused (past the end, in a deleted topic) and sends the rest would be told
    /// Ok for a commit of nothing. Then each topic, the member's ownership of each
    /// partition, and each offset (at most its partition's high watermark).
    /// A commit without a member id is refused while the group has Kafka members, as
    /// one while it has gRPC members is: Kafka's commits of a group's members come by
    /// `commit_for_kafka`, which the Kafka coordinator checked.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i64,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> Result<()> {
        let member = (member_id, member_epoch);
        self.commit_offsets(group, member, offsets, Committer::Grpc)
            .await
    }

    /// A Kafka member's commit (or a Kafka client's commit to an empty group), which
    /// the Kafka coordinator checked; `joins` is the hold on the group's joins that
    /// the check needed, if any, given back once the offsets are stored (before their
    /// fsync: a client committing back to back kept consumers out of the group).
    pub async fn commit_for_kafka(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64, String)>,
        joins: Option<Box<dyn Send>>,
    ) -> Result<()> {
        self.commit_offsets(group, ("", -1), offsets, Committer::Kafka(joins))
            .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        (member_id, member_epoch): (&str, i64),
        offsets: Vec<(String, u32, u64, String)>,
        committer: Committer,
    ) -> Result<()> {
        let for_kafka = matches!(committer, Committer::Kafka(_));
        if offsets.len() > MAX_OFFSETS_PER_COMMIT {
            return Err(Error::InvalidArgument(format!(
                "{} offsets in one commit; at most {MAX_OFFSETS_PER_COMMIT}",
                offsets.len()
            )));
        }
        if let Some((topic, partition, _, metadata)) = offsets
            .iter()
            .find(|(_, _, _, metadata)| metadata.len() > MAX_METADATA_BYTES)
        {
            return Err(Error::InvalidArgument(format!(
                "metadata of topic {} partition {partition} is {} bytes; at most {MAX_METADATA_BYTES}",
                quote(topic),
                metadata.len()
            )));
        }
        let (slot, mut guard) = self.lock(group, true).await?;
        // A gRPC commit without a member id is for a group without members: Kafka's
        // join without this group's lock, and wait until it is made. (The Kafka
        // listener holds them itself for its own.)
        let joins = match committer {
            Committer::Grpc if member_id.is_empty() => self.hold_foreign_joins(group),
            Committer::Grpc => None,
            Committer::Kafka(held) => held,
        };
        if !for_kafka && member_id.is_empty() && self.foreign_members(group) {
            self.forget_if_empty(&slot, &mut guard);
            return Err(Error::FailedPrecondition(format!(
                "group {} has Kafka members: a commit without a member id would move their offsets under them; use another group",
                quote(group)
            )));
        }
        let membership = &loaded(&mut guard).membership;
        let entries = match self.checked(membership, member_id, member_epoch, offsets) {
            Ok(entries) => entries,
            Err(err) => {
                self.forget_if_empty(&slot, &mut guard);
                return Err(err);
            }
        };
        let loaded = loaded(&mut guard);
        let store = self
            .store(&slot, loaded, true)
            .await?
            .expect("created if missing");
        let (durability, end) = self.append(&slot, store, entries).await?;
        drop(guard);
        drop(joins);
        durability.wait(end).await
    }

    /// Appends entries to a locked group's journal and applies them; returns what to
    /// wait on for their fsync, which the caller does after unlocking the group so that
    /// concurrent commits share fsyncs.
    async fn append(
        &self,
        slot: &Slot,
        store: &mut Store,
        entries: Vec<(Tp, Committed)>,
    ) -> Result<(Arc<Durability>, u64)> {
        let end = store.files.append(&entries)?;
        store.offsets.apply(entries);
        slot.last_active_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        let durability = store.files.durability();
        // The entries are in the journal and applied: a snapshot that fails now costs a
        // longer journal, not the commit, which must not be refused once applied
        // (hostile-client finding: on a full disk every commit was answered
        // RESOURCE_EXHAUSTED and applied all the same). The next commit tries again.
        if store.files.needs_snapshot() {
            if let Err(err) = self.snapshot(store).await {
                super::store::snapshot_failed(&err);
            }
        }
        Ok((durability, end))
    }

    /// Folds a group's journal into a new snapshot, dropping the offsets of deleted
    /// topics (unless some topic is unavailable, and might be one of them).
    pub(super) async fn snapshot(&self, store: &mut Store) -> Result<()> {
        let view = self.view();
        if !self.broker.any_topic_unavailable() {
            store.offsets.retain_topics(|id| view.name_of(id).is_some());
        }
        let (path, bytes) = store.files.snapshot(&store.offsets);
        tokio::task::spawn_blocking(move || write_atomically_unlocked(&path, &bytes))
            .await
            .expect("snapshot task does not panic")?;
        store.files.snapshot_written();
        Ok(())
    }

    /// A group's committed offsets for `topics` (all topics if empty), by topic name and
    /// partition. Offsets of deleted topics are not returned; a group that does not
    /// exist has none (as in Kafka: a new consumer asks before anything is committed).
    /// With a `page`, at most its entries and about `OFFSETS_PAGE_BYTES`, and the token
    /// of the next page; without one, all of them if they fit in `UNPAGED_OFFSETS_BYTES`,
    /// else refused: a client that does not follow pages must not take the first page
    /// for all its offsets, and start the others over from its reset policy.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
        page: Option<&Page>,
        only: Option<&Visible>,
    ) -> Result<FetchedOffsets> {
        let after = match page.and_then(|p| p.after.as_deref()) {
            Some(token) => {
                Some(partition_from(token).ok_or_else(|| bad_token("FetchOffsets", token))?)
            }
            None => None,
        };
        let none = FetchedOffsets::default();
        let (slot, mut guard) = match self.lock(group, false).await {
            Err(Error::GroupNotFound { .. }) => return Ok(none),
            locked => locked?,
        };
        let view = self.view();
        let wanted: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
        let Some(store) = self.store(&slot, loaded(&mut guard), false).await? else {
            return Ok(none);
        };
        let mut room = Room {
            entries: page.map_or(usize::MAX, |p| p.limit.max(1)),
            bytes: page.map_or(UNPAGED_OFFSETS_BYTES, |_| OFFSETS_PAGE_BYTES),
            taken: 0,
        };
        let from = after.as_ref().map_or(Bound::Unbounded, |(topic, _)| {
            Bound::Included(topic.as_str())
        });
        // The topics asked for, or every topic, by name from where the page starts.
        let named: Box<dyn Iterator<Item = (&str, TopicId)>> = if wanted.is_empty() {
            Box::new(view.topics_from(from).map(|(name, id, _)| (name, id)))
        } else {
            Box::new(
                wanted
                    .range::<str, _>((from, Bound::Unbounded))
                    .filter_map(|name| Some((*name, view.id_of(name)?))),
            )
        };
        let mut fetched = FetchedOffsets::default();
        // Topics the caller may not see are skipped here, so that they take no room
        // and no token names them.
        let shown = |name: &str| only.is_none_or(|only| only(name));
        let topics = named.filter(|(name, id)| store.offsets.has_topic(*id) && shown(name));
        'topics: for (name, id) in topics {
            let first = match &after {
                Some((topic, p)) if topic == name => match p.checked_add(1) {
                    Some(next) => next,
                    None => continue,
                },
                _ => 0,
            };
            for (partition, committed) in store.offsets.of_topic(id, first) {
                if !room.take(name.len() + committed.metadata.len() + 40) {
                    if page.is_none() {
                        return Err(Error::LimitReached(format!(
                            "group {}'s committed offsets take more than the {UNPAGED_OFFSETS_BYTES} bytes one answer holds: ask with a page_size and follow next_page_token",
                            quote(group)
                        )));
                    }
                    fetched.next_page_token = fetched
                        .offsets
                        .last()
                        .map(|(topic, p, _)| partition_token(topic, *p));
                    break 'topics;
                }
                fetched
                    .offsets
                    .push((name.to_string(), partition, committed));
            }
        }
        Ok(fetched)
    }

    /// Moves a group's offsets for `topic` (`partitions`, or all). Only while the group
    /// has no members; with `dry_run`, only says what it would do. A group that does
    /// not exist is created (not by a dry run).
    pub async fn reset(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
    ) -> Result<ResetPlan> {
        super::validate_group_name(group)?;
        let t = self.broker.topic(topic)?;
        let partitions: BTreeSet<u32> = if partitions.is_empty() {
            (0..t.partition_count()).collect()
        } else {
            partitions.iter().copied().collect()
        };
        // Look everything up before locking the group.
        let mut targets = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            let partition = t.partition(p)?;
            let bounds = partition.offsets()?;
            let lookup = |ts: i64| {
                let partition = Arc::clone(&partition);
                async move { Ok::<_, Error>(partition.offset_for_timestamp(ts).await?.map(|(o, _)| o)) }
            };
            let target = match to {
                ResetTo::Earliest | ResetTo::ShiftBy(_) => bounds.log_start,
                ResetTo::Latest => bounds.high_watermark,
                ResetTo::Offset(offset) => {
                    if offset < bounds.log_start || offset > bounds.high_watermark {
                        return Err(Error::CommitOutOfRange {
                            topic: topic.to_string(),
                            partition: p,
                            offset,
                            start: bounds.log_start,
                            end: bounds.high_watermark,
                        });
                    }
                    offset
                }
                ResetTo::Timestamp(ts) => lookup(ts).await?.unwrap_or(bounds.high_watermark),
                ResetTo::Duration(ms) => {
                    lookup(now_ms().saturating_sub(ms.min(i64::MAX as u64) as i64))
                        .await?
                        .unwrap_or(bounds.high_watermark)
                }
            };
            targets.push((p, target, bounds));
        }
        let mut locked = match self.lock(group, !dry_run).await {
            // A dry run of a group that does not exist: nothing committed yet.
            Err(Error::GroupNotFound { .. }) if dry_run => None,
            locked => Some(locked?),
        };
        let mut store = None;
        let mut slot = None;
        // Kafka's members join without this group's lock: their joins wait until the
        // reset is made.
        let _joins = (!dry_run).then(|| self.hold_foreign_joins(group));
        if let Some((locked_slot, guard)) = &mut locked {
            if self.foreign_members(group) {
                self.forget_if_empty(locked_slot, guard);
                return Err(Error::FailedPrecondition(format!(
                    "group {} has Kafka members; offsets can be reset only while a group has none: stop its consumers first",
                    quote(group)
                )));
            }
            let loaded = loaded(guard);
            let members = loaded.membership.members().count();
            if members > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "group {} has {members} active members; offsets can be reset only while a group has none: stop its consumers first",
                    quote(group)
                )));
            }
            store = self.store(locked_slot, loaded, !dry_run).await?;
            slot = Some(Arc::clone(locked_slot));
        }
        let mut plan = ResetPlan {
            topic: topic.to_string(),
            partitions: Vec::with_capacity(targets.len()),
        };
        let now = now_ms();
        let mut entries = Vec::new();
        for (p, target, bounds) in targets {
            let tp = (topic_id(&t.id)?, p);
            let previous = store
                .as_ref()
                .and_then(|s| s.offsets.get(&tp))
                .map(|c| c.offset);
            let offset = match to {
                ResetTo::ShiftBy(n) => {
                    let from = previous.unwrap_or(bounds.log_start) as i128;
                    (from + n as i128)
                        .clamp(bounds.log_start as i128, bounds.high_watermark as i128)
                        as u64
                }
                _ => target,
            };
            plan.partitions.push((p, previous, offset));
            let metadata = String::new();
            entries.push((
                tp,
                Committed {
                    offset,
                    metadata,
                    commit_ms: now,
                },
            ));
        }
        if let (false, Some(store), Some(slot)) = (dry_run, store, slot) {
            let (durability, end) = self.append(&slot, store, entries).await?;
            drop(locked);
            durability.wait(end).await?;
            tracing::info!(group, topic, ?to, "offsets reset");
        }
        Ok(plan)
    }
}
