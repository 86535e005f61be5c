//! `strom bench queue`: fills a topic, then workers of a new share group take every
//! record and accept it, over `ShareStream` one acknowledgement per record (the Rust
//! `Worker`), or with `--unary` one `ShareFetch` of `--batch` records and one
//! `ShareAcknowledge` per batch. Reports records accepted per second over all workers,
//! and checks with `DescribeShareGroup` that every record was accepted once. (`strom
//! bench queue-expiry` is in `queue_expiry.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{describe, ensure_topic, Connect, Report, Stop};
use crate::cli::progress::Progress;
use crate::client::{Client, Worker, WorkerConfig};
use crate::grpc::pb::{self, AckType};

#[derive(clap::Args, Clone, Debug)]
pub struct QueueArgs {
    #[arg(long, short = 't', default_value = "bench-queue")]
    topic: String,
    /// Partitions of the topic, if the bench creates it.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Records to produce, then to take and accept.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Concurrent workers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// ShareFetch and ShareAcknowledge per batch instead of the stream.
    #[arg(long)]
    unary: bool,
    /// Records per ShareFetch with --unary.
    #[arg(long, default_value_t = 500)]
    batch: u32,
    /// Records each streaming worker lets the server send ahead.
    #[arg(long, default_value_t = 1000)]
    prefetch: u32,
    /// Use (and keep) this share group instead of a new one deleted at the end.
    #[arg(long)]
    group: Option<String>,
    /// After the run, add this many records and lock them to a member that never
    /// acknowledges them (records in flight, for `scripts/queue-state.sh`).
    #[arg(long, default_value_t = 0)]
    hold: u32,
    #[arg(long)]
    json: bool,
}

pub(super) async fn configure(
    client: &Client,
    group: &str,
    pairs: &[(&str, String)],
) -> Result<(), String> {
    let config = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: group.into(),
            config,
        })
        .await
        .map_err(describe)?;
    Ok(())
}

/// Appends `records` records of `size` bytes, spread over the partitions.
pub(super) async fn fill(
    client: &Client,
    topic: &str,
    partitions: u32,
    records: u64,
    size: usize,
) -> Result<(), String> {
    let value = Bytes::from(vec![b'q'; size]);
    let mut log = client.log();
    let mut sent = 0u64;
    let mut partition = 0;
    while sent < records {
        let n = (records - sent).min(1000);
        let request = pb::ProduceRequest {
            topic: topic.into(),
            partition: Some(partition),
            records: (0..n)
                .map(|_| pb::Record {
                    value: value.clone(),
                    ..Default::default()
                })
                .collect(),
            durability: pb::Durability::PageCache as i32,
            ..Default::default()
        };
        log.produce(request).await.map_err(describe)?;
        sent += n;
        partition = (partition + 1) % partitions;
    }
    Ok(())
}

pub async fn queue(connect: &Connect, args: QueueArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    let partitions = ensure_topic(&client, &args.topic, args.partitions).await?;
    // A new group, started at the topic's end before it is filled (its first fetch
    // fixes where it starts): it takes exactly the records of this run.
    let keep = args.group.is_some();
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("bench-{}", uuid::Uuid::new_v4().simple()));
    configure(&client, &group, &[("start", "latest".into())]).await?;
    client
        .queues()
        .share_fetch(pb::ShareFetchRequest {
            group: group.clone(),
            member_id: "bench-start".into(),
            topic: args.topic.clone(),
            max_records: 1,
            max_wait_ms: 0,
        })
        .await
        .map_err(describe)?;
    fill(
        &client,
        &args.topic,
        partitions,
        args.records,
        args.record_size,
    )
    .await?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let line = progress.show("accepted");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.workers.max(1) {
        let client = connect.client().await?;
        let (args, group, done, progress) = (
            args.clone(),
            group.clone(),
            Arc::clone(&done),
            Arc::clone(&progress),
        );
        tasks.push(tokio::spawn(async move {
            if args.unary {
                unary_worker(&client, &group, &args, &done, &progress).await
            } else {
                stream_worker(&client, &group, &args, &done, &progress).await
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed();
    drop(line);
    let d = client
        .queues()
        .describe_share_group(pb::DescribeShareGroupRequest {
            group: group.clone(),
        })
        .await
        .map_err(describe)?
        .into_inner();
    let accepted: u64 = d.partitions.iter().map(|p| p.accepted).sum();
    if accepted != args.records {
        return Err(Stop::Failed(format!(
            "the group accepted {accepted} records, not {}",
            args.records
        )));
    }
    if args.hold > 0 {
        fill(
            &client,
            &args.topic,
            partitions,
            args.hold as u64,
            args.record_size,
        )
        .await?;
        let mut held = 0;
        while held < args.hold {
            let r = client
                .queues()
                .share_fetch(pb::ShareFetchRequest {
                    group: group.clone(),
                    member_id: "bench-holder".into(),
                    topic: args.topic.clone(),
                    max_records: args.hold - held,
                    max_wait_ms: 1000,
                })
                .await
                .map_err(describe)?;
            held += r.into_inner().records.len() as u32;
        }
    }
    if !keep {
        let _ = client
            .queues()
            .delete_share_group(pb::DeleteShareGroupRequest { group })
            .await;
    }
    Report {
        bench: "queue",
        what: format!(
            "{} B records, {} worker(s), {}, {} partition(s)",
            args.record_size,
            args.workers,
            if args.unary {
                format!("unary fetch of {} + one ack per batch", args.batch)
            } else {
                format!(
                    "ShareStream, one ack per record, prefetch {}",
                    args.prefetch
                )
            },
            partitions
        ),
        records: accepted,
        payload_bytes: accepted * args.record_size as u64,
        elapsed,
        latencies: Vec::new(),
    }
    .print(args.json)
}

async fn stream_worker(
    client: &Client,
    group: &str,
    args: &QueueArgs,
    done: &AtomicU64,
    progress: &Progress,
) -> Result<(), String> {
    let mut config = WorkerConfig::new(group, &args.topic);
    config.prefetch = args.prefetch;
    let mut worker = Worker::connect(client, config).await.map_err(describe)?;
    while done.load(Ordering::Relaxed) < args.records {
        let Some(job) = worker
            .next(Duration::from_millis(200))
            .await
            .map_err(describe)?
        else {
            continue;
        };
        worker.accept(&job).await.map_err(describe)?;
        done.fetch_add(1, Ordering::Relaxed);
        progress.add(1, job.value.len() as u64);
    }
    worker.close().await;
    Ok(())
}

async fn unary_worker(
    client: &Client,
    group: &str,
    args: &QueueArgs,
    done: &AtomicU64,
    progress: &Progress,
) -> Result<(), String> {
    let mut queues = client.queues();
    let member = uuid::Uuid::new_v4().simple().to_string();
    while done.load(Ordering::Relaxed) < args.records {
        let fetched = queues
            .share_fetch(pb::ShareFetchRequest {
                group: group.into(),
                member_id: member.clone(),
                topic: args.topic.clone(),
                max_records: args.batch,
                max_wait_ms: 200,
            })
            .await
            .map_err(describe)?
            .into_inner();
        if fetched.records.is_empty() {
            continue;
        }
        let mut by_partition: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
        let mut bytes = 0;
        for r in &fetched.records {
            let record = r.record.as_ref().expect("records carry their record");
            by_partition
                .entry(r.partition)
                .or_default()
                .push(record.offset);
            bytes += record.value.len() as u64;
        }
        let acks = by_partition
            .into_iter()
            .map(|(partition, offsets)| pb::Acknowledgement {
                partition,
                offsets,
                r#type: AckType::Accept as i32,
            })
            .collect();
        let refused = queues
            .share_acknowledge(pb::ShareAcknowledgeRequest {
                group: group.into(),
                member_id: member.clone(),
                topic: args.topic.clone(),
                acks,
            })
            .await
            .map_err(describe)?
            .into_inner()
            .refused;
        if !refused.is_empty() {
            return Err(format!("{} acknowledgements refused", refused.len()));
        }
        let n = fetched.records.len() as u64;
        done.fetch_add(n, Ordering::Relaxed);
        progress.add(n, bytes);
    }
    Ok(())
}
