//! `strom bench produce|consume`: load against a running server, in the spirit of
//! kafka-producer-perf-test. Latencies go into HDR histograms; results print as a table
//! or, with `--json`, one JSON object.
//!
//! Throughput counts record payload (key + value bytes), not protocol overhead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{describe, Connect};
use crate::client::Client;
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Produce records as fast as the server takes them (or at --rate).
    Produce(ProduceBench),
    /// Read a topic from the start to its current end.
    Consume(ConsumeBench),
}

#[derive(clap::Args, Clone)]
struct ProduceBench {
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Partitions of the topic, created if missing.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Records to produce in all.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Requests each producer keeps in flight on its ProduceStream.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Use unary Produce calls, one at a time per producer, instead of a stream.
    #[arg(long)]
    unary: bool,
    /// Target requests per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// fsync or page_cache.
    #[arg(long, default_value = "page_cache")]
    durability: String,
    /// Keys: none, uniform (random over 10,000 keys) or hot (10 keys).
    #[arg(long, default_value = "none")]
    keys: String,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Clone)]
struct ConsumeBench {
    #[arg(long, short = 't', default_value = "bench")]
    topic: String,
    /// Bytes asked for per message.
    #[arg(long, default_value_t = 4 << 20)]
    max_bytes: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let client = args.connect.client().await?;
    match args.mode {
        Mode::Produce(bench) => produce(&args.connect, client, bench).await,
        Mode::Consume(bench) => consume(client, bench).await,
    }
}

struct Report {
    what: String,
    records: u64,
    payload_bytes: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Report {
    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64();
        let (rps, mbps) = (
            self.records as f64 / secs,
            self.payload_bytes as f64 / secs / 1e6,
        );
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        if json {
            println!(
                "{{\"bench\":\"{}\",\"records\":{},\"bytes\":{},\"seconds\":{secs:.3},\"records_per_sec\":{rps:.0},\"mb_per_sec\":{mbps:.1},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}}}}",
                self.what, self.records, self.payload_bytes, q(0.5), q(0.9), q(0.99), q(0.999), self.latency_us.max() as f64 / 1000.0
            );
        } else {
            println!(
                "{}: {} records, {:.1} MB in {secs:.2} s",
                self.what,
                self.records,
                self.payload_bytes as f64 / 1e6
            );
            println!("  {rps:>12.0} records/s  {mbps:>9.1} MB/s");
            println!(
                "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                self.latency_us.max() as f64 / 1000.0
            );
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn durability(text: &str) -> Result<pb::Durability, String> {
    match text {
        "fsync" => Ok(pb::Durability::Fsync),
        "page_cache" => Ok(pb::Durability::PageCache),
        other => Err(format!("--durability {other:?}: use fsync or page_cache")),
    }
}

/// One request's records; keys follow the chosen distribution.
fn batch_records(bench: &ProduceBench, seed: &mut u64) -> Result<Vec<pb::Record>, String> {
    let value = Bytes::from(vec![b'x'; bench.record_size]);
    (0..bench.batch)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = match bench.keys.as_str() {
                "none" => None,
                "uniform" => Some(Bytes::from(format!("key-{}", (*seed >> 33) % 10_000))),
                "hot" => Some(Bytes::from(format!("hot-{}", (*seed >> 33) % 10))),
                other => return Err(format!("--keys {other:?}: use none, uniform or hot")),
            };
            Ok(pb::Record {
                key,
                value: value.clone(),
                ..Default::default()
            })
        })
        .collect()
}

async fn produce(connect: &Connect, client: Client, bench: ProduceBench) -> Result<(), String> {
    let mut admin = client.admin();
    if admin.describe_topic(&bench.topic).await.is_err() {
        admin
            .create_topic(&bench.topic, bench.partitions, Default::default())
            .await
            .map_err(describe)?;
    }
    let durability = durability(&bench.durability)?;
    let requests = bench.records.div_ceil(bench.batch as u64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer in 0..bench.producers {
        let client = connect.client().await?;
        let (bench, next) = (bench.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            produce_one(client, bench, producer, durability, requests, next).await
        }));
    }
    let mut latency = histogram();
    let mut sent = 0;
    for task in tasks {
        let (h, n) = task.await.map_err(|e| e.to_string())??;
        latency.add(h).expect("same bounds");
        sent += n;
    }
    let elapsed = started.elapsed();
    let key_bytes = if bench.keys == "none" { 0 } else { 8 };
    let what = format!(
        "produce {} B x {} per request, {} producer(s), {} partition(s), {}{}",
        bench.record_size,
        bench.batch,
        bench.producers,
        bench.partitions,
        bench.durability,
        if bench.unary { ", unary" } else { ", stream" }
    );
    Report {
        what,
        records: sent,
        payload_bytes: sent * (bench.record_size + key_bytes) as u64,
        elapsed,
        latency_us: latency,
    }
    .print(bench.json);
    Ok(())
}

/// One producer: takes request numbers from `next` until `requests` are sent.
async fn produce_one(
    client: Client,
    bench: ProduceBench,
    id: u32,
    durability: pb::Durability,
    requests: u64,
    next: Arc<AtomicU64>,
) -> Result<(Histogram<u64>, u64), String> {
    let mut seed = u64::from(id) + 1;
    let partition = |n: u64| {
        if bench.keys == "none" {
            Some((n % u64::from(bench.partitions)) as u32)
        } else {
            None
        }
    };
    let template = batch_records(&bench, &mut seed)?;
    let request = |n: u64| pb::ProduceRequest {
        topic: bench.topic.clone(),
        partition: partition(n),
        records: template.clone(),
        durability: durability as i32,
        ..Default::default()
    };
    let pace = (bench.rate > 0)
        .then(|| Duration::from_secs_f64(f64::from(bench.producers) / bench.rate as f64));
    let started = Instant::now();
    let mut latency = histogram();
    let mut records = 0u64;
    let mut log = client.log();
    if bench.unary {
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= requests {
                break;
            }
            if let Some(pace) = pace {
                tokio::time::sleep_until(
                    (started + pace * (n / u64::from(bench.producers)) as u32).into(),
                )
                .await;
            }
            let sent = Instant::now();
            log.produce(request(n)).await.map_err(describe)?;
            latency
                .record(sent.elapsed().as_micros().max(1) as u64)
                .expect("in bounds");
            records += bench.batch as u64;
        }
        return Ok((latency, records));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(bench.in_flight.max(1));
    let mut replies = log
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(describe)?
        .into_inner();
    let mut sent_at = std::collections::HashMap::new();
    let mut outstanding = 0usize;
    let mut done = false;
    loop {
        while !done && outstanding < bench.in_flight.max(1) {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= requests {
                done = true;
                break;
            }
            if let Some(pace) = pace {
                tokio::time::sleep_until(
                    (started + pace * (n / u64::from(bench.producers)) as u32).into(),
                )
                .await;
            }
            sent_at.insert(n, Instant::now());
            tx.send(pb::ProduceStreamRequest {
                correlation_id: n,
                request: Some(request(n)),
            })
            .await
            .map_err(|_| "stream closed")?;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        let reply = replies
            .next()
            .await
            .ok_or("server closed the stream")?
            .map_err(describe)?;
        if let Some(pb::produce_stream_response::Result::Error(e)) = reply.result {
            return Err(format!("produce failed: {}", e.message));
        }
        let at = sent_at
            .remove(&reply.correlation_id)
            .ok_or("reply with an unknown correlation id")?;
        latency
            .record(at.elapsed().as_micros().max(1) as u64)
            .expect("in bounds");
        records += bench.batch as u64;
        outstanding -= 1;
    }
    Ok((latency, records))
}

async fn consume(client: Client, bench: ConsumeBench) -> Result<(), String> {
    let topic = client
        .admin()
        .describe_topic(&bench.topic)
        .await
        .map_err(describe)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in topic.partitions {
        let (mut log, bench) = (client.log(), bench.clone());
        tasks.push(tokio::spawn(async move {
            let request = pb::SubscribeRequest {
                topic: bench.topic.clone(),
                partition: p.partition,
                start: Some(pb::subscribe_request::Start::Offset(p.log_start_offset)),
                max_bytes: bench.max_bytes,
            };
            let mut stream = log.subscribe(request).await.map_err(describe)?.into_inner();
            let (mut records, mut bytes, mut latency) = (0u64, 0u64, histogram());
            let mut at = p.log_start_offset;
            let mut waited = Instant::now();
            while at < p.high_watermark {
                let message = stream
                    .next()
                    .await
                    .ok_or("stream ended early")?
                    .map_err(describe)?;
                latency
                    .record(waited.elapsed().as_micros().max(1) as u64)
                    .expect("in bounds");
                for record in message.records.iter() {
                    let record = record.map_err(|e| format!("bad record: {e}"))?;
                    bytes += (record.value.len() + record.key.map_or(0, <[u8]>::len)) as u64;
                    records += 1;
                }
                at = message.next_offset;
                waited = Instant::now();
            }
            Ok::<_, String>((records, bytes, latency))
        }));
    }
    let (mut records, mut bytes, mut latency) = (0, 0, histogram());
    for task in tasks {
        let (r, b, h) = task.await.map_err(|e| e.to_string())??;
        records += r;
        bytes += b;
        latency.add(h).expect("same bounds");
    }
    let what = format!(
        "consume {} (Subscribe, {} B per message)",
        bench.topic, bench.max_bytes
    );
    Report {
        what,
        records,
        payload_bytes: bytes,
        elapsed: started.elapsed(),
        latency_us: latency,
    }
    .print(bench.json);
    Ok(())
}
