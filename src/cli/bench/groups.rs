//! Consumer-group benches: `commit` (durable offset commits per second on one group),
//! `group-consume` (a group member's read throughput beside a plain partition
//! consumer's, alternated in one run) and `fill-groups` (many groups with many offsets,
//! for measuring start-up). `rebalance` is in `rebalance.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    describe, ensure_topic, histogram, parse_run_length, record_latency, steal_line, Progress,
    Report,
};
use crate::cli::output::write_out;
use crate::cli::{Connect, Stop};
use crate::client::{Client, Consumer, GroupConfig, GroupConsumer, Start};
use crate::grpc::pb;

#[derive(clap::Args, Clone)]
pub struct CommitArgs {
    #[arg(long, short = 't', default_value = "bench-commits")]
    topic: String,
    /// Partitions of the topic (created if missing); committers spread over them.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    #[arg(long, short = 'g', default_value = "bench-commits")]
    group: String,
    /// Concurrent committers, each waiting for its commit before the next.
    #[arg(long, default_value_t = 64)]
    committers: u32,
    /// Connections the committers share.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Offsets per CommitOffsets request.
    #[arg(long, default_value_t = 1)]
    offsets_per_commit: u32,
    #[arg(long, default_value = "10s")]
    duration: String,
    #[arg(long)]
    json: bool,
}

pub async fn commit(connect: &Connect, args: CommitArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    let partitions = ensure_topic(&client, &args.topic, args.partitions).await?;
    let run_for = parse_run_length(&args.duration)?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(connect.client().await?);
    }
    let progress = Arc::new(Progress::default());
    let line = progress.show("committed");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.committers.max(1) {
        let mut groups = clients[i as usize % clients.len()].groups();
        let (args, progress) = (args.clone(), Arc::clone(&progress));
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut commits = 0u64;
            while started.elapsed() < run_for {
                let offsets = (0..args.offsets_per_commit)
                    .map(|k| pb::OffsetCommit {
                        topic: args.topic.clone(),
                        partition: (i * args.offsets_per_commit + k) % partitions,
                        offset: 0,
                        metadata: String::new(),
                    })
                    .collect();
                let request = pb::CommitOffsetsRequest {
                    group: args.group.clone(),
                    member_id: String::new(),
                    member_epoch: 0,
                    offsets,
                };
                let sent = Instant::now();
                groups.commit_offsets(request).await.map_err(describe)?;
                record_latency(&mut latency, sent.elapsed());
                commits += 1;
                progress.add(1, 0);
            }
            Ok::<_, String>((commits, latency))
        }));
    }
    let (mut commits, mut latency) = (0, histogram());
    for task in tasks {
        let (c, h) = task.await.map_err(|e| e.to_string())??;
        commits += c;
        latency.add(h).expect("same bounds");
    }
    let elapsed = started.elapsed();
    drop(line);
    Report {
        bench: "commit",
        what: format!(
            "group {} ({} committer(s) on {} connection(s), {} offset(s) per commit, fsync)",
            args.group, args.committers, args.connections, args.offsets_per_commit
        ),
        records: commits,
        payload_bytes: 0,
        elapsed,
        latencies: vec![("commit", latency)],
    }
    .print(args.json)
}

#[derive(clap::Args, Clone)]
pub struct GroupConsumeArgs {
    /// A topic of one partition, already filled (e.g. by `strom bench produce`).
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Alternating rounds of each reader.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

/// Reads partition 0 of the topic to its end as a group member and as a plain consumer,
/// in turn (ABAB), and prints each run's throughput.
pub async fn group_consume(connect: &Connect, args: GroupConsumeArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(describe)?;
    let end = topic
        .partitions
        .first()
        .ok_or("the topic has no partitions")?
        .high_watermark;
    let mut text = String::new();
    for round in 0..args.rounds {
        for reader in ["plain", "group"] {
            let started = Instant::now();
            let bytes = match reader {
                "plain" => read_plain(&client, &args.topic, end).await?,
                _ => read_group(&client, &args.topic, end, round).await?,
            };
            let secs = started.elapsed().as_secs_f64();
            text += &format!(
                "  round {round} {reader:<5}: {end} records, {:.1} MB/s\n",
                bytes as f64 / secs / 1e6
            );
        }
    }
    write_out(
        format!(
            "group-consume {} (partition 0, 1 MiB fetches):\n{text}{}",
            args.topic,
            steal_line()
        )
        .as_bytes(),
    )
}

async fn read_plain(client: &Client, topic: &str, end: u64) -> Result<u64, String> {
    let mut consumer = Consumer::new(client, topic, 0, Start::Earliest)
        .await
        .map_err(describe)?;
    let mut bytes = 0;
    while consumer.position() < end {
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .map_err(describe)?
        {
            bytes += r.value.len() as u64;
        }
    }
    Ok(bytes)
}

async fn read_group(client: &Client, topic: &str, end: u64, round: u32) -> Result<u64, String> {
    let mut config = GroupConfig::new(
        &format!("bench-group-consume-{}-{round}", std::process::id()),
        &[topic],
    );
    config.auto_commit = Some(Duration::from_secs(1));
    let group = config.group.clone();
    let mut member = GroupConsumer::join(client, config)
        .await
        .map_err(describe)?;
    let (mut bytes, mut at) = (0, 0);
    while at < end {
        if let Some(batch) = member
            .poll(Duration::from_millis(500))
            .await
            .map_err(describe)?
        {
            for r in &batch.records {
                bytes += r.value.len() as u64;
                at = r.offset + 1;
            }
        }
    }
    member.close().await.map_err(describe)?;
    let _ = client
        .groups()
        .delete_group(pb::DeleteGroupRequest { group })
        .await;
    Ok(bytes)
}

#[derive(clap::Args, Clone)]
pub struct FillGroupsArgs {
    #[arg(long, short = 't', default_value = "bench-groups")]
    topic: String,
    /// Partitions of the topic (created if missing): each group commits an offset for each.
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    #[arg(long, default_value_t = 10_000)]
    groups: u32,
    /// Commits in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
}

/// Creates `groups` groups, each with a committed offset for every partition.
pub async fn fill_groups(connect: &Connect, args: FillGroupsArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    let partitions = ensure_topic(&client, &args.topic, args.partitions).await?;
    let progress = Arc::new(Progress::default());
    let line = progress.show("groups");
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (mut groups, args, next, progress) = (
            client.groups(),
            args.clone(),
            Arc::clone(&next),
            Arc::clone(&progress),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if g >= args.groups {
                    return Ok::<_, String>(());
                }
                let offsets = (0..partitions)
                    .map(|p| pb::OffsetCommit {
                        topic: args.topic.clone(),
                        partition: p,
                        offset: 0,
                        metadata: String::new(),
                    })
                    .collect();
                let request = pb::CommitOffsetsRequest {
                    group: format!("fill-{g:05}"),
                    member_id: String::new(),
                    member_epoch: 0,
                    offsets,
                };
                groups.commit_offsets(request).await.map_err(describe)?;
                progress.add(1, 0);
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    drop(line);
    let text = format!(
        "fill-groups: {} groups x {partitions} offsets in {:.1} s\n{}",
        args.groups,
        started.elapsed().as_secs_f64(),
        steal_line()
    );
    write_out(text.as_bytes())
}
