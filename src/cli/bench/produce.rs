//! Producers for `strom bench produce` and `e2e`.
//!
//! Each producer has its own connection. A sender paces requests (when a rate is set)
//! and keeps up to `in_flight` of them outstanding, on one `ProduceStream` or as
//! concurrent unary calls; acknowledgements are timed from when each request was due,
//! not from when it could finally be sent, so a slow server cannot hide its queueing
//! (no coordinated omission).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::producer::{producer, Plan};
use super::slow::SlowLog;
use super::{ensure_topic, histogram, Load, Progress, Report};
use crate::cli::{Connect, Stop};

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    load: Load,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Send every record through the Rust client's `Producer` (one `send` each, batches
    /// of --batch records' bytes, --in-flight of them unanswered) instead of whole
    /// requests, to measure what the client library costs.
    #[arg(long)]
    through_producer: bool,
    /// With --through-producer: hand the `Producer` --batch records a `send_many` call,
    /// with one answer for them all, instead of one `send` each.
    #[arg(long, requires = "through_producer")]
    send_many: bool,
}

impl ProduceArgs {
    pub fn producers(&self) -> usize {
        self.load.producers.max(1) as usize
    }
}

pub async fn run(connect: &Connect, args: ProduceArgs) -> Result<(), Stop> {
    if args.through_producer && (args.load.rate > 0 || args.load.unary) {
        return Err(Stop::Failed("--through-producer sends as fast as it can, on the Producer's stream: leave out --rate and --unary".into()));
    }
    let client = connect.client().await?;
    // An existing topic keeps its partition count; requests follow the real one.
    let load = Load {
        partitions: ensure_topic(&client, &args.load.topic, args.load.partitions).await?,
        ..args.load
    };
    let progress = Arc::new(Progress::default());
    let line = progress.show("produced");
    let outcome = if args.through_producer {
        super::through_producer::run_load(connect, &load, args.send_many, &progress).await?
    } else {
        run_load(connect, &load, Instant::now(), false, None, &progress).await?
    };
    drop(line);
    let mut latencies = vec![("ack", outcome.latency)];
    if load.rate > 0 {
        latencies.push(("timer", outcome.timer_lateness));
    }
    let mut what = load.describe();
    if args.send_many {
        what.push_str(", through the Rust Producer's send_many");
    } else if args.through_producer {
        what.push_str(", through the Rust Producer");
    }
    Report {
        bench: "produce",
        what,
        records: outcome.records,
        payload_bytes: outcome.bytes,
        elapsed: outcome.elapsed,
        latencies,
    }
    .print(args.json)
}

/// What the producers did.
pub struct Outcome {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Acknowledgement latency of each request, from its produce call (see `producer`
    /// for when a paced request's clock starts).
    pub latency: Histogram<u64>,
    /// Paced runs: how late this client's timer woke for a request that was due, which
    /// is not charged to the server (reported so that nothing is hidden).
    pub timer_lateness: Histogram<u64>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            records: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            timer_lateness: histogram(),
        }
    }
}

impl Outcome {
    /// Adds one producer's figures.
    pub fn add(
        &mut self,
        latency: &Histogram<u64>,
        late: &Histogram<u64>,
        records: u64,
        bytes: u64,
    ) {
        self.latency.add(latency).expect("same bounds");
        self.timer_lateness.add(late).expect("same bounds");
        self.records += records;
        self.bytes += bytes;
    }
}

/// Runs `load` to the end. With `stamp`, every record's value begins with the due time
/// of its request as nanoseconds since `base` (for `e2e`); with `slow`, acknowledgements
/// slower than its threshold are written to it.
pub async fn run_load(
    connect: &Connect,
    load: &Load,
    base: Instant,
    stamp: bool,
    slow: Option<Arc<SlowLog>>,
    progress: &Arc<Progress>,
) -> Result<Outcome, String> {
    load.check_counts()?;
    if load.idempotent && load.unary && load.in_flight > 1 {
        return Err("--idempotent with --unary needs --in-flight 1: concurrent unary calls can arrive out of order, which an idempotent producer's sequences refuse".into());
    }
    if stamp && load.record_size < 8 {
        return Err("--record-size must be at least 8 to carry the send time".into());
    }
    let duration = load.duration()?;
    let interval = (load.rate > 0).then(|| {
        Duration::from_secs_f64(load.batch as f64 * f64::from(load.producers) / load.rate as f64)
    });
    let started = Instant::now();
    let plan = Arc::new(Plan {
        next: AtomicU64::new(0),
        requests: match duration {
            Some(_) => u64::MAX,
            None => load.records.div_ceil(load.batch as u64),
        },
        deadline: duration.map(|d| started + d),
        interval,
        stamp: stamp.then_some(base),
        slow,
    });
    let mut tasks = Vec::new();
    for id in 0..load.producers {
        let client = connect.client().await?;
        let (load, plan, progress) = (load.clone(), Arc::clone(&plan), Arc::clone(progress));
        tasks.push(tokio::spawn(async move {
            producer(client, load, id, plan, progress).await
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        let (h, late, records, bytes) = task.await.map_err(|e| e.to_string())??;
        outcome.add(&h, &late, records, bytes);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}
