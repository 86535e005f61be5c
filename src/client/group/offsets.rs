//! Where a group consumer's partitions start, and committing their positions.

use std::collections::{BTreeSet, HashMap};

use futures_util::future::join_all;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::{lock, GroupConsumer, Key, Start};
use crate::client::consumer::{bounds, reset_position};
use crate::grpc::pb::{self, list_offsets_request::Spec};

impl GroupConsumer {
    /// Commits the position of every owned partition (what `poll` returned). A position
    /// past its partition's end (a start offset or seek beyond it, not yet reset, or
    /// kept under `OffsetReset::Error`), or in a topic deleted since, is left out, with
    /// a warning: the server refuses such a commit whole. Fails with
    /// FAILED_PRECONDITION, committing nothing, if the group fenced the member since
    /// its last poll.
    pub async fn commit(&mut self) -> Result<(), Status> {
        if self.drop_if_fenced() {
            return Err(Status::failed_precondition(
                "the group removed this member (its session ended) and gave its partitions \
                 out again: nothing committed; what it polled since its last commit will be \
                 read again",
            ));
        }
        let keys: Vec<Key> = self.owned.keys().cloned().collect();
        self.last_commit = Instant::now();
        self.commit_keys(&keys).await
    }

    pub(super) async fn commit_keys(&mut self, keys: &[Key]) -> Result<(), Status> {
        let offsets: Vec<pb::OffsetCommit> = keys
            .iter()
            .filter_map(|key| {
                let owned = self.owned.get(key)?;
                (owned.committed != Some(owned.position)).then(|| pb::OffsetCommit {
                    topic: key.0.clone(),
                    partition: key.1,
                    offset: owned.position,
                    metadata: String::new(),
                })
            })
            .collect();
        let offsets = match self.send_commit(offsets.clone()).await {
            Err(refused) if matches!(refused.code(), Code::OutOfRange | Code::NotFound) => {
                // Whether a position is past its partition's end, or its topic gone, is
                // known only now: the log may have grown to it since the fetcher last
                // looked, a seek may have gone past it since, and the heartbeat may not
                // have told of the deletion yet. Ask, leave those out, send the rest once.
                let committable = self.committable(&offsets).await?;
                self.send_commit(committable.clone()).await?;
                committable
            }
            sent => sent.map(|()| offsets)?,
        };
        for o in offsets {
            if let Some(owned) = self.owned.get_mut(&(o.topic, o.partition)) {
                owned.committed = Some(o.offset);
            }
        }
        Ok(())
    }

    async fn send_commit(&mut self, offsets: Vec<pb::OffsetCommit>) -> Result<(), Status> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = {
            let shared = lock(&self.shared);
            (shared.member_id.clone(), shared.epoch)
        };
        let request = pb::CommitOffsetsRequest {
            group: self.config.group.clone(),
            member_id,
            member_epoch,
            offsets,
        };
        self.groups.commit_offsets(request).await.map(|_| ())
    }

    /// The offsets at or below their partition's high watermark, in topics that still
    /// exist; logs the others.
    async fn committable(
        &self,
        offsets: &[pb::OffsetCommit],
    ) -> Result<Vec<pb::OffsetCommit>, Status> {
        let ends = offsets.iter().map(|o| {
            let mut log = self.client.log();
            async move { bounds(&mut log, &o.topic, o.partition).await }
        });
        let mut kept = Vec::with_capacity(offsets.len());
        for (o, b) in offsets.iter().zip(join_all(ends).await) {
            let high_watermark = match b {
                Ok((_, high_watermark)) => high_watermark,
                Err(status) if status.code() == Code::NotFound => {
                    tracing::warn!(
                        topic = o.topic,
                        partition = o.partition,
                        position = o.offset,
                        "not committing a position in a deleted topic"
                    );
                    continue;
                }
                Err(status) => return Err(status),
            };
            if o.offset <= high_watermark {
                kept.push(o.clone());
            } else {
                tracing::warn!(
                    topic = o.topic,
                    partition = o.partition,
                    position = o.offset,
                    high_watermark,
                    "not committing a position past the partition's end"
                );
            }
        }
        Ok(kept)
    }

    pub(super) async fn committed_offsets(
        &mut self,
        keys: &[Key],
    ) -> Result<HashMap<Key, u64>, Status> {
        let topics: Vec<String> = keys
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Page by page: a group's offsets with their metadata can pass what one answer
        // holds, and the server refuses those asked for all at once.
        let pages = crate::client::every_page(|page_token| {
            let mut groups = self.groups.clone();
            let request = pb::FetchOffsetsRequest {
                group: self.config.group.clone(),
                topics: topics.clone(),
                page_size: 10_000,
                page_token,
            };
            async move {
                let page = groups.fetch_offsets(request).await?.into_inner();
                Ok((page.offsets, page.next_page_token))
            }
        });
        match pages.await {
            Ok(pages) => Ok(pages
                .into_iter()
                .flatten()
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect()),
            Err(status) if status.code() == Code::NotFound => Ok(HashMap::new()),
            Err(status) => Err(status),
        }
    }

    /// Where a partition the group never committed starts. A start offset outside the
    /// partition goes where `on_out_of_range` says now, before anything could commit
    /// it; under `Error` it stays, and the first poll of it returns the error.
    ///
    /// Under `Latest`, a partition added to its topic since the group began reading it
    /// starts at its first offset: everything in it came after, and records produced
    /// to it before the group got round to assigning it would otherwise be skipped.
    /// Added since, by what the member can tell: made after the member joined, or made
    /// after another partition of the topic for which the group has committed an offset
    /// (`committed`: the group's offsets of the topic). The second makes a member that
    /// joins after an add (a consumer restarted or scaled out) read the new partitions
    /// whole; at worst it reads again records of a partition added before the group
    /// began, which is a redelivery, never a record skipped. `created` keeps each
    /// topic's partitions' creation times once described, for the other partitions
    /// started in the same pass.
    pub(super) async fn start_offset(
        &mut self,
        (topic, partition): &Key,
        committed: &HashMap<Key, u64>,
        created: &mut HashMap<String, HashMap<u32, i64>>,
    ) -> Result<u64, Status> {
        let spec = match self.config.start {
            Start::Latest => Spec::Latest(true),
            Start::Timestamp(ts) => Spec::TimestampMs(ts),
            Start::Earliest => Spec::Earliest(true),
            Start::Offset(offset) => {
                let bounds = bounds(&mut self.client.log(), topic, *partition).await?;
                let policy = self.config.on_out_of_range;
                return Ok(
                    reset_position(topic, *partition, offset, bounds, policy).unwrap_or(offset)
                );
            }
        };
        let request = pb::ListOffsetsRequest {
            topic: topic.clone(),
            partition: *partition,
            spec: Some(spec),
        };
        let offsets = self.client.log().list_offsets(request).await?.into_inner();
        if !matches!(self.config.start, Start::Latest) {
            return Ok(offsets.offset);
        }
        let made = offsets.partition_created_ms;
        let joined_ms = super::lock(&self.shared).joined_ms;
        let mut added = joined_ms.is_some_and(|joined| made >= joined);
        let others: Vec<u32> = committed
            .keys()
            .filter(|(t, p)| t == topic && p != partition)
            .map(|(_, p)| *p)
            .collect();
        if !added && made > 0 && !others.is_empty() {
            if !created.contains_key(topic) {
                let described = self.client.admin().describe_topic(topic).await?;
                let times = described
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.created_ms));
                created.insert(topic.clone(), times.collect());
            }
            let times = &created[topic];
            added = others
                .iter()
                .any(|p| times.get(p).is_some_and(|&at| at < made));
        }
        Ok(match added {
            true => offsets.log_start_offset,
            false => offsets.offset,
        })
    }
}
