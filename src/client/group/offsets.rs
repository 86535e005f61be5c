//! Where a group consumer's partitions start, and committing their positions.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;
use tonic::{Code, Status};

use super::{lock, GroupConsumer, Key, Start};
use crate::client::consumer::{bounds, reset_position};
use crate::grpc::pb::{self, list_offsets_request::Spec};

impl GroupConsumer {
    /// Commits the position of every owned partition (what `poll` returned), but for
    /// one the server said is out of range under `OffsetReset::Error`. Fails
    /// with FAILED_PRECONDITION, committing nothing, if the group fenced the member
    /// since its last poll.
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
                (!owned.out_of_range && owned.committed != Some(owned.position)).then(|| {
                    pb::OffsetCommit {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset: owned.position,
                        metadata: String::new(),
                    }
                })
            })
            .collect();
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
            offsets: offsets.clone(),
        };
        self.groups.commit_offsets(request).await?;
        for o in offsets {
            if let Some(owned) = self.owned.get_mut(&(o.topic, o.partition)) {
                owned.committed = Some(o.offset);
            }
        }
        Ok(())
    }

    pub(super) async fn committed_offsets(
        &mut self,
        keys: &[Key],
    ) -> Result<HashMap<Key, u64>, Status> {
        let topics: BTreeSet<String> = keys.iter().map(|(t, _)| t.clone()).collect();
        let request = pb::FetchOffsetsRequest {
            group: self.config.group.clone(),
            topics: topics.into_iter().collect(),
        };
        match self.groups.fetch_offsets(request).await {
            Ok(response) => Ok(response
                .into_inner()
                .offsets
                .into_iter()
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect()),
            Err(status) if status.code() == Code::NotFound => Ok(HashMap::new()),
            Err(status) => Err(status),
        }
    }

    /// Where a partition the group never committed starts, and whether that is out of
    /// range. A start offset outside the partition goes where `on_out_of_range` says
    /// now, before anything could commit it; under `Error` it stays, out of range.
    pub(super) async fn start_offset(
        &mut self,
        (topic, partition): &Key,
    ) -> Result<(u64, bool), Status> {
        let spec = match self.config.start {
            Start::Latest => Spec::Latest(true),
            Start::Timestamp(ts) => Spec::TimestampMs(ts),
            Start::Earliest => Spec::Earliest(true),
            Start::Offset(offset) => {
                let bounds = bounds(&mut self.client.log(), topic, *partition).await?;
                let policy = self.config.on_out_of_range;
                return Ok(
                    match reset_position(topic, *partition, offset, bounds, policy) {
                        Some(to) => (to, false),
                        None => (offset, true),
                    },
                );
            }
        };
        let request = pb::ListOffsetsRequest {
            topic: topic.clone(),
            partition: *partition,
            spec: Some(spec),
        };
        Ok((
            self.client
                .log()
                .list_offsets(request)
                .await?
                .into_inner()
                .offset,
            false,
        ))
    }
}
