//! `strom bench consume`: consumers read every partition of a topic from its start to
//! the end it had when the bench began, over `Subscribe` (the server streams batches
//! back to back, flow-controlled by HTTP/2).

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{describe, histogram, record_latency, Progress, Report};
use crate::cli::{Connect, Stop};
use crate::client::Client;
use crate::grpc::pb;

#[derive(clap::Args, Clone)]
pub struct ConsumeArgs {
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Concurrent consumers, each with its own connection; partitions are dealt out to
    /// them in turn.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Bytes asked for per message.
    #[arg(long, default_value_t = 4 << 20)]
    max_bytes: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One partition to read: where it starts and where the bench stops.
#[derive(Clone, Copy)]
struct Range {
    partition: u32,
    start: u64,
    end: u64,
}

pub async fn run(connect: &Connect, args: ConsumeArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(describe)?;
    let consumers = args.consumers.max(1) as usize;
    let mut shares: Vec<Vec<Range>> = vec![Vec::new(); consumers];
    for (i, p) in topic.partitions.iter().enumerate() {
        shares[i % consumers].push(Range {
            partition: p.partition,
            start: p.log_start_offset,
            end: p.high_watermark,
        });
    }
    let progress = Arc::new(Progress::default());
    let line = progress.show("consumed");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in shares {
        let client = connect.client().await?;
        for range in share {
            let (client, args, progress) = (client.clone(), args.clone(), Arc::clone(&progress));
            tasks.push(tokio::spawn(async move {
                read_partition(&client, &args, range, &progress).await
            }));
        }
    }
    let (mut records, mut bytes, mut latency) = (0, 0, histogram());
    for task in tasks {
        let (r, b, h) = task.await.map_err(|e| e.to_string())??;
        records += r;
        bytes += b;
        latency.add(h).expect("same bounds");
    }
    let elapsed = started.elapsed();
    drop(line);
    Report {
        bench: "consume",
        what: format!(
            "{} ({} partition(s), {} consumer(s), Subscribe, {} B per message)",
            args.topic,
            topic.partitions.len(),
            consumers,
            args.max_bytes
        ),
        records,
        payload_bytes: bytes,
        elapsed,
        latencies: vec![("message", latency)],
    }
    .print(args.json)
}

/// Reads one partition's range; the latency is the wait for each message.
async fn read_partition(
    client: &Client,
    args: &ConsumeArgs,
    range: Range,
    progress: &Progress,
) -> Result<(u64, u64, Histogram<u64>), String> {
    let (mut records, mut bytes, mut latency) = (0u64, 0u64, histogram());
    if range.start >= range.end {
        return Ok((records, bytes, latency));
    }
    let request = pb::SubscribeRequest {
        topic: args.topic.clone(),
        partition: range.partition,
        start: Some(pb::subscribe_request::Start::Offset(range.start)),
        max_bytes: args.max_bytes,
    };
    let mut stream = client.subscribe(request).await.map_err(describe)?;
    let mut at = range.start;
    let mut waited = Instant::now();
    while at < range.end {
        let message = stream
            .next()
            .await
            .ok_or("the server ended the subscription early")?
            .map_err(describe)?;
        record_latency(&mut latency, waited.elapsed());
        let (mut n, mut b) = (0, 0);
        for record in message.records.iter() {
            let record = record.map_err(|e| format!("bad record: {e}"))?;
            if record.offset >= range.end {
                break;
            }
            b += (record.value.len() + record.key.map_or(0, <[u8]>::len)) as u64;
            n += 1;
        }
        progress.add(n, b);
        (records, bytes) = (records + n, bytes + b);
        at = message.next_offset;
        waited = Instant::now();
    }
    Ok((records, bytes, latency))
}
