//! `strom bench queue-expiry`: how long after its lock ends a record is handed to a
//! waiting worker. The lock's end is taken as the send time of the fetch that took the
//! record plus `lock.ms`: the server locked it later than that, so the figure is an
//! upper bound of the true delay.

use std::time::{Duration, Instant};

use super::queue::{configure, fill};
use super::{describe, ensure_topic, histogram, record_latency, Connect, Report, Stop};
use crate::grpc::pb::{self, AckType};

#[derive(clap::Args, Clone, Debug)]
pub struct ExpiryArgs {
    #[arg(long, short = 't', default_value = "bench-expiry")]
    topic: String,
    /// Locks that end, one after another.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// The group's lock.ms.
    #[arg(long, default_value_t = 200)]
    lock_ms: u64,
    #[arg(long)]
    json: bool,
}

pub async fn expiry(connect: &Connect, args: ExpiryArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    ensure_topic(&client, &args.topic, 1).await?;
    let group = format!("bench-{}", uuid::Uuid::new_v4().simple());
    configure(
        &client,
        &group,
        &[
            ("start", "latest".into()),
            ("lock.ms", args.lock_ms.to_string()),
        ],
    )
    .await?;
    let mut queues = client.queues();
    let fetch = |member: &str, wait_ms: u32| pb::ShareFetchRequest {
        group: group.clone(),
        member_id: member.into(),
        topic: args.topic.clone(),
        max_records: 1,
        max_wait_ms: wait_ms,
    };
    // Joins both members and fixes the group's start before the first record.
    queues.share_fetch(fetch("a", 0)).await.map_err(describe)?;
    queues.share_fetch(fetch("b", 0)).await.map_err(describe)?;
    let mut delays = histogram();
    let started = Instant::now();
    for _ in 0..args.rounds {
        fill(&client, &args.topic, 1, 1, 16).await?;
        let sent = Instant::now();
        let taken = queues
            .share_fetch(fetch("a", 1000))
            .await
            .map_err(describe)?;
        if taken.into_inner().records.len() != 1 {
            return Err(Stop::Failed("worker a was not handed the record".into()));
        }
        let deadline = sent + Duration::from_millis(args.lock_ms);
        let again = queues
            .share_fetch(fetch("b", (args.lock_ms * 10) as u32))
            .await
            .map_err(describe)?
            .into_inner();
        let got = Instant::now();
        let Some(r) = again.records.first() else {
            return Err(Stop::Failed("the expired record never came back".into()));
        };
        if r.delivery_count != 2 {
            return Err(Stop::Failed(format!("delivery count {}", r.delivery_count)));
        }
        record_latency(&mut delays, got.saturating_duration_since(deadline));
        let offset = r.record.as_ref().map_or(0, |r| r.offset);
        queues
            .share_acknowledge(pb::ShareAcknowledgeRequest {
                group: group.clone(),
                member_id: "b".into(),
                topic: args.topic.clone(),
                acks: vec![pb::Acknowledgement {
                    partition: r.partition,
                    offsets: vec![offset],
                    r#type: AckType::Accept as i32,
                }],
            })
            .await
            .map_err(describe)?;
    }
    let elapsed = started.elapsed();
    let _ = queues
        .delete_share_group(pb::DeleteShareGroupRequest { group })
        .await;
    Report {
        bench: "queue-expiry",
        what: format!(
            "lock.ms {}: delay from the lock's end (upper bound) to the record in a waiting worker's hands",
            args.lock_ms
        ),
        records: args.rounds as u64,
        payload_bytes: 0,
        elapsed,
        latencies: vec![("redeliver", delays)],
    }
    .print(args.json)
}
