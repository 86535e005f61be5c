//! `strom bench produce|consume|e2e`: load against a running server from a separate
//! process, in the spirit of kafka-producer-perf-test and iggy-bench.
//!
//! - `produce.rs`: producers (streamed or unary requests, paced or flat out); `produce`
//!   reports their throughput and acknowledgement latency. `requests.rs` builds their
//!   requests.
//! - `through_producer.rs`: `produce --through-producer`, every record through the Rust
//!   client's `Producer`, for what the client library costs.
//! - `consume.rs`: consumers read a topic from its start to its end over `Subscribe`.
//! - `e2e.rs`: producers at a fixed rate, consumers following the topic; the latency is
//!   from the moment a record was due to be produced to its receipt by a consumer.
//! - `groups.rs`: consumer groups: durable commits per second, rebalance time, a group
//!   member's read throughput beside a plain consumer's, and many groups for start-up.
//! - `queue.rs`: share groups: workers accepting records, and how soon an ended lock
//!   hands its record to a waiting worker.
//! - `slow.rs`: `e2e --slow-log`, the records slower than a threshold with their times
//!   on the clock a scheduler trace uses.
//! - `jitter.rs`: no server; how late a sleeping thread wakes on this machine, the
//!   floor under the tail latencies above.
//! - `steal.rs`: how much CPU time the hypervisor took from this machine during the run,
//!   printed beside every bench's figures.
//!
//! Latencies go into HDR histograms (microsecond resolution); results print as a table
//! or, with `--json`, one JSON object per run (what `scripts/bench.sh` reads).
//! Throughput counts record payload (key + value bytes), not protocol overhead.

mod consume;
mod e2e;
mod groups;
mod jitter;
mod produce;
mod producer;
mod queue;
mod queue_expiry;
mod rebalance;
mod requests;
mod slow;
mod steal;
mod through_producer;

use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::output::write_out;
use super::progress::Progress;
use super::{describe, parse_duration_ms, Connect, Stop};
use crate::client::Client;
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Produce records as fast as the server takes them (or at --rate).
    Produce(produce::ProduceArgs),
    /// Read a topic from its start to its current end.
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate while consumers follow; measure produce-to-receipt latency.
    E2e(e2e::E2eArgs),
    /// Measure this machine's scheduling stalls (no server): the floor under tail latency.
    Jitter(jitter::JitterArgs),
    /// Durable offset commits per second on one consumer group.
    Commit(groups::CommitArgs),
    /// How long partitions take to move when a group member leaves and when one joins.
    Rebalance(rebalance::RebalanceArgs),
    /// A group member's read throughput beside a plain partition consumer's, alternated.
    GroupConsume(groups::GroupConsumeArgs),
    /// Create many groups with an offset for every partition of a topic (for start-up).
    FillGroups(groups::FillGroupsArgs),
    /// Workers of a share group taking and accepting every record of a filled topic.
    Queue(queue::QueueArgs),
    /// How soon after its lock ends a record reaches another, waiting worker.
    QueueExpiry(queue_expiry::ExpiryArgs),
}

impl BenchArgs {
    /// Runtime threads for this bench, if it wants a number of its own: `produce` runs
    /// its producers on one thread each, up to the cores, and `e2e` its producers or its
    /// consumers, whichever are more. One producer's requests are a pipeline that a
    /// second thread only slows: on one thread, one producer with one 1 MB request in
    /// flight ran 11-26% faster and used 0.15-0.2 fewer CPU seconds per GB; the e2e
    /// bench used a fifth less CPU at a p99 within the spread (BENCHMARKS.md, "One
    /// runtime thread per producer", "Server worker threads, and the e2e bench on one
    /// client thread").
    pub fn threads(&self) -> Option<usize> {
        match &self.mode {
            Mode::Produce(args) => Some(args.producers()),
            Mode::E2e(args) => Some(args.threads()),
            _ => None,
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<(), Stop> {
    steal::mark_start();
    match args.mode {
        Mode::Produce(bench) => produce::run(&args.connect, bench).await,
        Mode::Consume(bench) => consume::run(&args.connect, bench).await,
        Mode::E2e(bench) => e2e::run(&args.connect, bench).await,
        Mode::Jitter(bench) => jitter::run(bench),
        Mode::Commit(bench) => groups::commit(&args.connect, bench).await,
        Mode::Rebalance(bench) => rebalance::rebalance(&args.connect, bench).await,
        Mode::GroupConsume(bench) => groups::group_consume(&args.connect, bench).await,
        Mode::FillGroups(bench) => groups::fill_groups(&args.connect, bench).await,
        Mode::Queue(bench) => queue::queue(&args.connect, bench).await,
        Mode::QueueExpiry(bench) => queue_expiry::expiry(&args.connect, bench).await,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Durability {
    /// Acknowledged once in the page cache.
    #[value(name = "page_cache")]
    PageCache,
    /// Acknowledged once fsynced.
    Fsync,
}

impl Durability {
    fn proto(self) -> pb::Durability {
        match self {
            Durability::PageCache => pb::Durability::PageCache,
            Durability::Fsync => pb::Durability::Fsync,
        }
    }
}

/// How records are keyed. Each request's records share one key drawn from the
/// distribution, and the server routes the request by it (murmur2, as Kafka), so the
/// share of records per key follows the distribution (`--through-producer` draws one
/// for each record, and the `Producer` routes each).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Keys {
    /// No keys; requests go to the partitions in turn.
    None,
    /// Uniform over 10,000 keys.
    Uniform,
    /// Ten hot keys: at most ten partitions receive data.
    Hot,
}

impl Keys {
    /// The next key of the distribution, from a producer's own pseudo-random `seed`
    /// (a linear congruential step: the same sequence every run).
    pub fn draw(self, seed: &mut u64) -> Option<Bytes> {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let draw = (*seed >> 33) as usize;
        match self {
            Keys::None => None,
            Keys::Uniform => Some(Bytes::from(format!("key-{}", draw % 10_000))),
            Keys::Hot => Some(Bytes::from(format!("hot-{}", draw % 10))),
        }
    }
}

/// What producers send, shared by `produce` and `e2e`.
#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    #[arg(long, short = 't', default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic, if the bench creates it (it does when it is missing).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Records to produce in all (ignored with --duration).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Produce for this long instead of a number of records (e.g. 30s, 5m).
    #[arg(long)]
    pub duration: Option<String>,
    /// Target records per second over all producers (0: as fast as the server takes them).
    /// Latency is measured from the produce call, and from the schedule once the server
    /// has made a producer fall behind, so a slow server cannot hide it; how late the
    /// client's own timer woke is reported apart (`timer`).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, value_enum, default_value_t = Durability::PageCache)]
    pub durability: Durability,
    #[arg(long, value_enum, default_value_t = Keys::None)]
    pub keys: Keys,
    /// Requests each producer keeps in flight (pipelined on its ProduceStream, or as
    /// concurrent unary calls with --unary).
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Use unary Produce calls instead of a ProduceStream.
    #[arg(long)]
    pub unary: bool,
    /// Idempotent produce: each producer takes an id from InitProducer and numbers its
    /// requests per partition (what the Rust Producer does by default), so the server
    /// checks every request's sequence. Needs the ProduceStream (not --unary) unless
    /// --in-flight is 1, and at most 5 in flight to be what a retrying client may send.
    #[arg(long)]
    pub idempotent: bool,
    /// Publish each request to this exchange (with --routing-key) instead of producing
    /// to the topic: unary Publish calls (needs --unary). The exchange and its bindings
    /// must exist (`strom exchange`); records are counted once, whatever the number of
    /// topics they go to.
    #[arg(long, requires = "unary")]
    pub exchange: Option<String>,
    /// The routing key of --exchange's publishes.
    #[arg(long, default_value = "", requires = "exchange")]
    pub routing_key: String,
}

impl Load {
    /// Refuses a load that would send nothing.
    fn check_counts(&self) -> Result<(), String> {
        if self.batch == 0 || self.producers == 0 || self.partitions == 0 {
            return Err("--batch, --producers and --partitions must be at least 1".into());
        }
        Ok(())
    }

    fn duration(&self) -> Result<Option<Duration>, String> {
        self.duration.as_deref().map(parse_run_length).transpose()
    }

    fn describe(&self) -> String {
        format!(
            "{} B x {} per request, {} producer(s), {} partition(s), {}, {}{}{}",
            self.record_size,
            self.batch,
            self.producers,
            self.partitions,
            match self.durability {
                Durability::PageCache => "page_cache",
                Durability::Fsync => "fsync",
            },
            match &self.exchange {
                Some(exchange) => format!("unary Publish to exchange {exchange}"),
                None if self.unary => "unary".into(),
                None => "stream".into(),
            },
            if self.idempotent { ", idempotent" } else { "" },
            if self.rate > 0 {
                format!(", {} records/s", self.rate)
            } else {
                String::new()
            }
        )
    }
}

/// A `--duration` value: how long a bench runs.
fn parse_run_length(text: &str) -> Result<Duration, String> {
    parse_duration_ms(text)
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms as u64))
        .ok_or_else(|| format!("--duration {text:?}: use a duration like 30s or 5m"))
}

/// Creates the topic if it does not exist yet.
async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> Result<u32, String> {
    let mut admin = client.admin();
    match admin.describe_topic(topic).await {
        Ok(info) => Ok(info.partitions.len() as u32),
        Err(status) if status.code() == tonic::Code::NotFound => {
            let info = admin
                .create_topic(topic, partitions, Default::default())
                .await
                .map_err(describe)?;
            Ok(info.partitions.len() as u32)
        }
        Err(status) => Err(describe(status)),
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Records a duration in microseconds, clamped into the histogram's range.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    record_latencies(histogram, latency, 1);
}

/// Records `latency` for each of `n` records answered together.
pub fn record_latencies(histogram: &mut Histogram<u64>, latency: Duration, n: u64) {
    histogram.saturating_record_n(latency.as_micros().max(1) as u64, n);
}

/// One run's results.
pub struct Report {
    pub bench: &'static str,
    pub what: String,
    pub records: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Named latency distributions, the headline one first.
    pub latencies: Vec<(&'static str, Histogram<u64>)>,
}

/// The table line on steal time, or nothing where the system does not count it.
fn steal_line() -> String {
    match steal::since_start() {
        Some(percent) => format!(
            "  steal    {percent:.2}% of this machine's CPU time went to other guests of its host\n"
        ),
        None => String::new(),
    }
}

fn quantiles_ms(h: &Histogram<u64>) -> [(&'static str, f64); 6] {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    [
        ("p50", q(0.5)),
        ("p90", q(0.9)),
        ("p99", q(0.99)),
        ("p999", q(0.999)),
        ("max", h.max() as f64 / 1000.0),
        ("count", h.len() as f64),
    ]
}

/// The quantiles of `quantiles_ms` as one JSON object (what `--json` prints).
fn quantiles_json(h: &Histogram<u64>) -> serde_json::Value {
    quantiles_ms(h)
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl Report {
    pub fn print(&self, json: bool) -> Result<(), Stop> {
        let secs = self.elapsed.as_secs_f64();
        let rps = self.records as f64 / secs;
        let mbps = self.payload_bytes as f64 / secs / 1e6;
        if json {
            let mut out = serde_json::json!({
                "bench": self.bench,
                "what": self.what,
                "records": self.records,
                "bytes": self.payload_bytes,
                "seconds": secs,
                "records_per_sec": rps,
                "mb_per_sec": mbps,
            });
            for (name, h) in &self.latencies {
                out[format!("{name}_latency_ms")] = quantiles_json(h);
            }
            out["steal_percent"] = steal::since_start().into();
            return write_out(format!("{out}\n").as_bytes());
        }
        let mut text = format!(
            "{} {}: {} records, {:.1} MB in {secs:.2} s\n",
            self.bench,
            self.what,
            self.records,
            self.payload_bytes as f64 / 1e6
        );
        text += &format!("  {rps:>12.0} records/s  {mbps:>9.1} MB/s\n");
        for (name, h) in &self.latencies {
            let q = quantiles_ms(h);
            text += &format!(
                "  {name:<8} latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)\n",
                q[0].1, q[1].1, q[2].1, q[3].1, q[4].1, h.len()
            );
        }
        text += &steal_line();
        write_out(text.as_bytes())
    }
}
