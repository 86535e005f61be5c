//! The group consumer's background tasks: one heartbeating for the member, one fetching
//! each owned partition. Both run until aborted by the consumer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::Channel;
use tokio::sync::{mpsc, Notify};
use tonic::Code;

use super::{lock, Fetch, Fetched, GroupConfig, Key, Shared};
use crate::client::consumer::{bounds, pause_after_early_empty, reset_position, to_owned};
use crate::client::transient;
use crate::client::Client;
use crate::client::OffsetReset;
use crate::grpc::pb::{self, groups_client::GroupsClient};

/// Fetches one partition from `next` on, long-polling, until aborted or an error it
/// passes on. Where retention removed what it was about to read, it goes on where
/// `on_out_of_range` says, itself: `poll` then never awaits between taking a message
/// and acting on it, so a poll dropped halfway (in a `select!`) loses nothing.
pub(super) async fn fetch_loop(
    client: Client,
    key: Key,
    mut next: u64,
    max_bytes: u32,
    on_out_of_range: OffsetReset,
    generation: u64,
    tx: mpsc::Sender<Fetched>,
) {
    const MAX_WAIT: Duration = Duration::from_millis(500);
    loop {
        let request = pb::FetchRequest {
            topic: key.0.clone(),
            partition: key.1,
            offset: next,
            max_bytes: crate::client::fetch_ask(max_bytes),
            max_wait_ms: MAX_WAIT.as_millis() as u32,
            min_bytes: 1,
        };
        let asked = tokio::time::Instant::now();
        let result = match client.fetch(request).await {
            Ok(response) => match to_owned(key.1, &response.records) {
                // An empty answer may still move on: past a gap compaction left at the
                // end of the log. The position must follow, or commits stop before it.
                Ok(records) if records.is_empty() && response.next_offset <= next => {
                    pause_after_early_empty(asked, MAX_WAIT).await;
                    continue;
                }
                Ok(records) => {
                    next = response.next_offset.max(next);
                    Ok(Fetch::Records(records, next))
                }
                Err(status) => Err(status),
            },
            Err(status) if status.code() == Code::OutOfRange => {
                let (topic, partition) = (&key.0, key.1);
                match bounds(&mut client.log(), topic, partition).await {
                    Ok(bounds) => {
                        match reset_position(topic, partition, next, bounds, on_out_of_range) {
                            Some(to) if to == next => continue, // back in range meanwhile
                            Some(to) => {
                                next = to;
                                Ok(Fetch::Reset(to))
                            }
                            None => Err(status),
                        }
                    }
                    // As for a fetch: the next round asks again (left from an earlier
                    // note: a connection broken here reached `poll` as an error).
                    Err(failed) if transient(&failed) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(failed) => Err(failed),
                }
            }
            Err(status) if transient(&status) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(status) => Err(status),
        };
        let stop = result.is_err();
        if tx
            .send(Fetched {
                key: key.clone(),
                generation,
                result,
            })
            .await
            .is_err()
            || stop
        {
            return;
        }
    }
}

/// Heartbeats until aborted: joins, reports what the consumer owns, and passes the
/// answers on.
pub(super) async fn heartbeat_loop(
    mut groups: GroupsClient<Channel>,
    config: GroupConfig,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    changed: Arc<Notify>,
) {
    loop {
        let interval;
        let joining;
        let request = {
            let shared = lock(&shared);
            joining = shared.member_id.is_empty();
            let mut owned: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (topic, partition) in &shared.owned {
                owned.entry(topic).or_default().push(*partition);
            }
            pb::HeartbeatRequest {
                group: config.group.clone(),
                member_id: shared.member_id.clone(),
                member_epoch: shared.epoch,
                topics: if config.topic_pattern.is_some() {
                    Vec::new()
                } else {
                    config.topics.clone()
                },
                topic_pattern: config.topic_pattern.clone().unwrap_or_default(),
                instance_id: config.instance_id.clone().unwrap_or_default(),
                session_timeout_ms: config.session_timeout.as_millis() as u32,
                owned: owned
                    .into_iter()
                    .map(|(topic, partitions)| pb::TopicPartitions {
                        topic: topic.to_string(),
                        partitions,
                        topic_id: String::new(),
                    })
                    .collect(),
            }
        };
        match groups.heartbeat(request).await {
            Ok(response) => {
                let r = response.into_inner();
                interval = Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(1)));
                let assignment = r
                    .assignment
                    .into_iter()
                    .flat_map(|t| {
                        let (topic, id) = (t.topic, t.topic_id);
                        t.partitions
                            .into_iter()
                            .map(move |p| ((topic.clone(), p), id.clone()))
                    })
                    .collect();
                let mut shared = lock(&shared);
                if r.server_time_ms > 0 {
                    shared.joined_ms.get_or_insert(r.server_time_ms);
                }
                shared.member_id = r.member_id;
                shared.epoch = r.member_epoch;
                if shared.assignment.as_ref() != Some(&assignment) {
                    shared.assignment = Some(assignment);
                    changed.notify_one();
                }
            }
            Err(status) if status.code() == Code::FailedPrecondition && joining => {
                // Refused a place (its instance_id still belongs to a live member):
                // try again later, not in a tight loop.
                tracing::warn!(%status, "cannot join the group yet");
                interval = Duration::from_secs(1);
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                tracing::warn!(%status, "fenced by the group; joining again");
                let mut shared = lock(&shared);
                shared.member_id.clear();
                shared.epoch = 0;
                shared.assignment = None;
                shared.fenced = true;
                changed.notify_one();
                continue;
            }
            // Nothing a retry mends: the caller's poll says why. A group at its
            // member limit refuses a join for as long as its members stay.
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::Unimplemented
                        | Code::PermissionDenied
                        | Code::Unauthenticated
                ) || (joining && status.code() == Code::ResourceExhausted) =>
            {
                lock(&shared).failed = Some(status);
                changed.notify_one();
                return;
            }
            Err(status) => {
                tracing::warn!(%status, "heartbeat failed; retrying");
                interval = Duration::from_millis(200);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
    }
}
