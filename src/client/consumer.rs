//! A consumer of one partition: long-polling Fetch calls from a starting point.

use std::time::Duration;

use crate::client::Channel;
use bytes::Bytes;
use tonic::Status;

use super::Client;
use crate::grpc::pb::{self, list_offsets_request::Spec, log_client::LogClient};
use crate::grpc::records::RecordSet;

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// What a consumer does when its position is no longer in the partition (retention or
/// DeleteRecords removed the records it was about to read): Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Go on from the first record still there (the default: as few records lost as
    /// retention forces).
    #[default]
    Earliest,
    /// Go on from the end: only records produced from now on.
    Latest,
    /// Return the OUT_OF_RANGE error from `poll`.
    Error,
}

/// A record as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

pub struct Consumer {
    client: Client,
    log: LogClient<Channel>,
    topic: String,
    partition: u32,
    next: u64,
    high_watermark: u64,
    pub max_bytes: u32,
    /// What `poll` does when its position has been deleted (logged when it resets).
    pub on_out_of_range: OffsetReset,
}

impl Consumer {
    /// A consumer of `topic`/`partition` positioned at `start`.
    pub async fn new(
        client: &Client,
        topic: &str,
        partition: u32,
        start: Start,
    ) -> Result<Consumer, Status> {
        let mut log = client.log();
        let spec = match start {
            Start::Offset(offset) => Err(offset), // no lookup needed
            Start::Earliest => Ok(Spec::Earliest(true)),
            Start::Latest => Ok(Spec::Latest(true)),
            Start::Timestamp(ts) => Ok(Spec::TimestampMs(ts)),
        };
        let next = match spec {
            Err(offset) => offset,
            Ok(spec) => {
                let request = pb::ListOffsetsRequest {
                    topic: topic.into(),
                    partition,
                    spec: Some(spec),
                };
                log.list_offsets(request).await?.into_inner().offset
            }
        };
        Ok(Consumer {
            client: client.clone(),
            log,
            topic: topic.into(),
            partition,
            next,
            high_watermark: 0,
            max_bytes: 1 << 20,
            on_out_of_range: OffsetReset::default(),
        })
    }

    /// The offset the next poll reads from.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The partition's end as of the last poll.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The next records, waiting up to `max_wait` if there are none yet.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, Status> {
        let asked = tokio::time::Instant::now();
        let request = pb::FetchRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.next,
            max_bytes: super::fetch_ask(self.max_bytes),
            max_wait_ms: max_wait.as_millis() as u32,
            min_bytes: 1,
        };
        let response = match self.client.fetch(request).await {
            Ok(response) => response,
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let bounds = self.bounds().await?;
                self.high_watermark = bounds.1;
                self.next = reset_position(
                    &self.topic,
                    self.partition,
                    self.next,
                    bounds,
                    self.on_out_of_range,
                )
                .ok_or(status)?;
                return Ok(Vec::new());
            }
            Err(status) => return Err(status),
        };
        self.high_watermark = response.high_watermark;
        let records = to_owned(self.partition, &response.records)?;
        if records.is_empty() && response.next_offset <= self.next {
            pause_after_early_empty(asked, max_wait).await;
        }
        self.next = response.next_offset.max(self.next);
        Ok(records)
    }
}

/// The longest pause after an answer with nothing new that came back before the wait
/// asked for. A server caps long polls (`--max-wait-ms`; 0 turns them off): asking
/// again at once would send a request per round trip for as long as the partition is
/// quiet, a core's worth between client and server. Ten a second is enough to notice
/// new records.
const EARLY_EMPTY_PAUSE: Duration = Duration::from_millis(100);

/// Waits out the rest of a poll sent at `asked` for up to `max_wait`, at most
/// `EARLY_EMPTY_PAUSE`: nothing when the server waited as long as asked.
pub(crate) async fn pause_after_early_empty(asked: tokio::time::Instant, max_wait: Duration) {
    let left = (asked + max_wait).saturating_duration_since(tokio::time::Instant::now());
    tokio::time::sleep(left.min(EARLY_EMPTY_PAUSE)).await;
}

impl Consumer {
    async fn bounds(&mut self) -> Result<(u64, u64), Status> {
        bounds(&mut self.log, &self.topic, self.partition).await
    }
}

/// A partition's log start offset and high watermark.
pub(crate) async fn bounds(
    log: &mut LogClient<Channel>,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), Status> {
    let request = pb::ListOffsetsRequest {
        topic: topic.to_string(),
        partition,
        spec: Some(Spec::Earliest(true)),
    };
    let r = log.list_offsets(request).await?.into_inner();
    Ok((r.log_start_offset, r.high_watermark))
}

/// Where a consumer at `position` goes on under `policy`, given the partition's
/// `(log start, high watermark)`; logs the reset. `None`: return the error (the policy
/// says so).
pub(crate) fn reset_position(
    topic: &str,
    partition: u32,
    position: u64,
    (start, end): (u64, u64),
    policy: OffsetReset,
) -> Option<u64> {
    if (start..=end).contains(&position) {
        return Some(position); // moved back in range meanwhile: try again
    }
    let to = match policy {
        OffsetReset::Earliest => start,
        OffsetReset::Latest => end,
        OffsetReset::Error => return None,
    };
    tracing::warn!(
        topic,
        partition,
        from = position,
        to,
        log_start = start,
        high_watermark = end,
        ?policy,
        "offset out of range (past the end, or deleted by retention or DeleteRecords): resetting"
    );
    Some(to)
}

/// Copies records out of a received set.
pub(crate) fn to_owned(partition: u32, set: &RecordSet) -> Result<Vec<ConsumedRecord>, Status> {
    set.iter()
        .map(|r| {
            let r =
                r.map_err(|e| Status::data_loss(format!("malformed record from the server: {e}")))?;
            Ok(ConsumedRecord {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value),
                headers: r
                    .headers()
                    .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
                    .collect(),
            })
        })
        .collect()
}
