//! `strom bench e2e`: producers at a fixed rate, consumers following the topic from its
//! end. Every record's value starts with the moment its request was due (nanoseconds
//! since the bench began; producers and consumers share this process's clock), so the
//! latency is the whole trip: produce call, append, wake-up of the subscription, and
//! delivery, including any time the request waited because the server fell behind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::produce::run_load;
use super::slow::SlowLog;
use super::{describe, ensure_topic, histogram, record_latency, Load, Progress, Report};
use crate::cli::{Connect, Stop};
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    load: Load,
    /// Concurrent consumers, each with its own connection; partitions are dealt out to
    /// them in turn.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write every acknowledgement and receipt slower than --slow-ms to this file, one
    /// line each: `ack|e2e DUE_NS AT_NS ID` (request number, or PARTITION:OFFSET), times
    /// on CLOCK_MONOTONIC (the clock of `perf record -k CLOCK_MONOTONIC`), to line slow
    /// records up with a scheduler trace (`scripts/e2e-tail.sh`).
    #[arg(long)]
    slow_log: Option<PathBuf>,
    /// What --slow-log counts as slow, in milliseconds.
    #[arg(long, default_value_t = 1.0, requires = "slow_log")]
    slow_ms: f64,
}

impl E2eArgs {
    /// One runtime thread per producer or per consumer, whichever are more (see
    /// `BenchArgs::threads`).
    pub fn threads(&self) -> usize {
        self.load.producers.max(self.consumers).max(1) as usize
    }
}

/// How long consumers may take, after the last acknowledgement, to receive the rest.
const DRAIN: Duration = Duration::from_secs(30);

pub async fn run(connect: &Connect, args: E2eArgs) -> Result<(), Stop> {
    let load = &args.load;
    if load.rate == 0 {
        return Err(
            "e2e needs --rate (records per second): latency is measured at a fixed load".into(),
        );
    }
    let slow = match &args.slow_log {
        Some(path) => {
            let threshold = Duration::try_from_secs_f64(args.slow_ms / 1e3)
                .map_err(|_| "--slow-ms must be a number of milliseconds, 0 or more")?;
            Some(Arc::new(SlowLog::create(path, threshold)?))
        }
        None => None,
    };
    let client = connect.client().await?;
    let partitions = ensure_topic(&client, &load.topic, load.partitions).await?;
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let consumers = args.consumers.clamp(1, partitions);
    let mut tasks = Vec::new();
    for consumer in 0..consumers {
        let client = connect.client().await?;
        for partition in (consumer..partitions).step_by(consumers as usize) {
            let request = pb::SubscribeRequest {
                topic: load.topic.clone(),
                partition,
                start: Some(pb::subscribe_request::Start::Latest(true)),
                max_bytes: 0,
            };
            // Awaited here: when Subscribe answers, its start offset is fixed, so every
            // record produced from now on reaches a consumer.
            let stream = client.subscribe(request).await.map_err(describe)?;
            let (received, stopped, slow) = (Arc::clone(&received), stopped.clone(), slow.clone());
            tasks.push(tokio::spawn(follow(
                stream, partition, base, received, stopped, slow,
            )));
        }
    }
    let progress = Arc::new(Progress::default());
    let line = progress.show("produced");
    // An existing topic keeps its partition count; requests follow the real one.
    let load = &Load {
        partitions,
        ..load.clone()
    };
    let produced = run_load(connect, load, base, true, slow.clone(), &progress).await?;
    drop(line);
    let drain_until = Instant::now() + DRAIN;
    while received.load(Ordering::Relaxed) < produced.records {
        if Instant::now() >= drain_until || tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    let mut e2e = histogram();
    for task in tasks {
        e2e.add(task.await.map_err(|e| e.to_string())??)
            .expect("same bounds");
    }
    if let Some(slow) = &slow {
        slow.finish()?;
    }
    let got = received.load(Ordering::Relaxed);
    if got != produced.records {
        return Err(format!(
            "consumers received {got} of the {} records produced",
            produced.records
        )
        .into());
    }
    Report {
        bench: "e2e",
        what: load.describe(),
        records: produced.records,
        payload_bytes: produced.bytes,
        elapsed: produced.elapsed,
        latencies: vec![
            ("e2e", e2e),
            ("ack", produced.latency),
            ("timer", produced.timer_lateness),
        ],
    }
    .print(args.json)
}

/// Follows one subscription until told to stop; returns the latencies it saw.
async fn follow(
    mut stream: crate::client::Subscription,
    partition: u32,
    base: Instant,
    received: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
    slow: Option<Arc<SlowLog>>,
) -> Result<Histogram<u64>, String> {
    let mut latency = histogram();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = stopped.changed() => return Ok(latency),
        };
        let message = message
            .ok_or("the server ended a subscription")?
            .map_err(describe)?;
        let arrived = Instant::now();
        let now = arrived.duration_since(base);
        let mut n = 0;
        for record in message.records.iter() {
            let record = record.map_err(|e| format!("bad record: {e}"))?;
            let stamp: [u8; 8] = record
                .value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(
                    "a record without a send time: is another producer writing to this topic?",
                )?;
            let due = Duration::from_nanos(u64::from_le_bytes(stamp));
            record_latency(&mut latency, now.saturating_sub(due));
            if let Some(slow) = &slow {
                slow.note(
                    "e2e",
                    base + due,
                    arrived,
                    format_args!("{partition}:{}", record.offset),
                );
            }
            n += 1;
        }
        received.fetch_add(n, Ordering::Relaxed);
    }
}
