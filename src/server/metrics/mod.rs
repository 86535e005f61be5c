//! The metrics endpoint: `GET /metrics` on its own port (`metrics_listen`), in the
//! OpenMetrics text format that Prometheus scrapes.
//!
//! Nothing here is counted on a request's path but by relaxed atomic adds where the
//! state already is, and for a unary call one histogram observation under its mutex:
//! calls in `grpc::call_limit` (`grpc::call_metrics`), appends, reads and flushes in
//! each partition (`broker::PartitionStats`). A scrape gathers the rest
//! from memory (`gather`): partitions' extents, groups' lag, share groups' counts,
//! budgets and free space. It never opens a file, so a scrape of a server with every
//! group on disk costs what the groups in memory cost. The HTTP side is `http.rs`.

mod guard;
mod http;
mod listener;
mod source;

pub use guard::Guard;
pub use http::serve_metrics;
pub use listener::{MetricsListener, StartingMetrics};
pub use source::Source;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::broker::disk::space_of;
use crate::broker::partition::{Extent, PartitionStats};
use crate::broker::Broker;
use crate::groups::gauges::GroupGauges;
use crate::groups::share::gauges::ShareGauges;
use crate::groups::share::ShareGroups;
use crate::groups::Groups;
use crate::grpc::budget::BudgetLayer;
use crate::grpc::call_limit::CallLimitLayer;
use crate::grpc::call_metrics::CallMetrics;

/// What the endpoint reads from.
pub struct Metrics {
    pub calls: Arc<CallMetrics>,
    pub call_limit: CallLimitLayer,
    pub connections: Arc<AtomicUsize>,
    /// Connections per address, and those refused a place.
    pub admission: Arc<crate::grpc::connection::Admission>,
    /// The server's TLS, whose failed handshakes are counted; None when plaintext.
    pub tls: Option<crate::grpc::connection::ServerTls>,
    pub budget: BudgetLayer,
    /// The per-client quotas, whose waits are counted; None without a quotas file.
    pub quotas: Option<crate::grpc::quota::Quotas>,
    pub broker: Arc<Broker>,
    pub groups: Arc<Groups>,
    pub queues: Arc<ShareGroups>,
    /// When the server started, in seconds since the Unix epoch.
    pub started: f64,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One topic at a scrape: its partitions' counters summed, and each one's extent
/// (None: its log is not open).
#[derive(Debug)]
struct TopicRow {
    name: String,
    counts: [u64; 6],
    partitions: Vec<(u32, Option<Extent>)>,
}

/// Where `topic_counts` puts the flush time, in nanoseconds.
const FLUSH_NANOS: usize = 5;

/// The per-topic counters, in the order of `topic_counts`: name and help.
const TOPIC_COUNTERS: [(&str, &str); 6] = [
    (
        "strom_topic_appended_records",
        "Records appended to the topic",
    ),
    (
        "strom_topic_appended_bytes",
        "Bytes of record batches appended to the topic, as stored",
    ),
    (
        "strom_topic_duplicate_batches",
        "Batches an idempotent producer sent again, answered without being written",
    ),
    (
        "strom_topic_read_bytes",
        "Bytes of batches read for Fetch, Subscribe and ShareFetch",
    ),
    (
        "strom_topic_flushes",
        "Group-commit flushes (fsyncs) that made the topic's produces durable",
    ),
    (
        "strom_topic_flush_seconds",
        "Time spent in those flushes (divide by the flushes for the mean)",
    ),
];

fn topic_counts(stats: &PartitionStats) -> [u64; 6] {
    let get = PartitionStats::get;
    [
        get(&stats.appended_records),
        get(&stats.appended_bytes),
        get(&stats.duplicate_batches),
        get(&stats.read_bytes),
        get(&stats.fsyncs),
        get(&stats.fsync_nanos),
    ]
}

/// Everything one scrape shows.
#[derive(Debug)]
struct Scrape {
    calls: Arc<CallMetrics>,
    calls_open: usize,
    connections_open: usize,
    /// Connections closed as soon as they were accepted, for each reason.
    refused: [(crate::grpc::connection::Refused, u64); 3],
    /// Exchanges, and bindings over all of them.
    exchanges: (usize, usize),
    /// Failed TLS handshakes, with TLS.
    tls_failures: Option<u64>,
    /// (name, in use, size) of the produce and request budgets.
    budgets: [(&'static str, usize, usize); 2],
    /// With quotas: per kind, the waits and their seconds; and the clients kept.
    quotas: Option<(crate::grpc::quota::Waits, usize)>,
    topics: Vec<TopicRow>,
    /// Free and total bytes of the data directory's file system, and the floor.
    disk: Option<(u64, u64, u64)>,
    groups: Vec<GroupGauges>,
    shares: Vec<ShareGauges>,
    started: f64,
    /// Families cut at `MAX_SERIES`, and how many series each left out.
    left_out: std::sync::Mutex<Vec<(String, u64)>>,
}

impl Metrics {
    /// The metrics now, as OpenMetrics text.
    /// Gathered and written on a blocking thread: with 300 groups of 1,000 offsets it
    /// takes a tenth of a second, which on an async worker held up the requests queued
    /// behind it. Under a scraper in a loop, a unary produce's longest wait went from
    /// 43-46 ms to 11-13 ms (its p99, 2.5 ms, is the two cores shared, either way;
    /// BENCHMARKS.md, "Metrics").
    pub async fn render(self: &Arc<Self>) -> String {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || text(me.gather()))
            .await
            .expect("rendering a scrape does not panic")
    }

    /// Everything a scrape shows, now; waits for group locks (a blocking thread's).
    fn gather(&self) -> Scrape {
        let (_, metas) = self.broker.topic_metas();
        let mut topics = Vec::with_capacity(metas.len());
        for meta in metas {
            let Ok(topic) = self.broker.topic(&meta.name) else {
                continue; // deleted meanwhile
            };
            let mut counts = [0u64; 6];
            let all = topic.partitions();
            let mut partitions = Vec::with_capacity(all.len());
            for p in all.iter() {
                for (sum, n) in counts.iter_mut().zip(topic_counts(&p.stats)) {
                    *sum += n;
                }
                partitions.push((p.id, p.extent().ok()));
            }
            topics.push(TopicRow {
                name: meta.name,
                counts,
                partitions,
            });
        }
        let root = self.broker.data_dir().root();
        let disk = space_of(root).ok().map(|space| {
            let floor = self.broker.limits().min_free_disk.floor(space.total);
            (space.free, space.total, floor)
        });
        let (produce, produce_size) = self.budget.produce_in_use();
        let (requests, requests_size) = self.budget.requests_in_use();
        Scrape {
            calls: Arc::clone(&self.calls),
            calls_open: self.call_limit.open_calls(),
            connections_open: self.connections.load(Ordering::Relaxed),
            refused: self.admission.refused(),
            exchanges: self.broker.exchange_counts(),
            tls_failures: self.tls.as_ref().map(|tls| tls.failed_handshakes()),
            budgets: [
                ("produce", produce, produce_size),
                ("request", requests, requests_size),
            ],
            quotas: self.quotas.as_ref().map(|q| (q.waits(), q.clients())),
            topics,
            disk,
            groups: self.groups.gauges(),
            shares: self.queues.gauges(),
            started: self.started,
            left_out: Default::default(),
        }
    }
}

/// A collector's families as OpenMetrics text.
fn text(collector: impl Collector + 'static) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

type Labels = Vec<(&'static str, String)>;

/// The most series one family shows. Clients choose group names and topics, and a
/// hostile client made a scrape of 451 MB (1,000 groups × 500 topics of lag); past
/// this, a family's series are counted in `strom_metrics_series_left_out` instead.
pub const MAX_SERIES: usize = 10_000;

impl Scrape {
    /// Writes one metric family: its descriptor, then a sample per row, at most
    /// `MAX_SERIES`.
    fn family<V>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        rows: impl IntoIterator<Item = (Labels, V)>,
    ) -> Result<(), std::fmt::Error>
    where
        V: prometheus_client::encoding::EncodeGaugeValue
            + prometheus_client::encoding::EncodeCounterValue,
    {
        let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
        let mut rows = rows.into_iter();
        for (labels, value) in rows.by_ref().take(MAX_SERIES) {
            let mut sample = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                _ => sample.encode_gauge(&value)?,
            }
        }
        let left = rows.count();
        if left > 0 {
            let mut left_out = self.left_out.lock().unwrap_or_else(|e| e.into_inner());
            left_out.push((name.to_string(), left as u64));
        }
        Ok(())
    }
}

fn one(value: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), value)]
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_server(&mut e)?;
        self.encode_calls(&mut e)?;
        self.encode_topics(&mut e)?;
        self.encode_groups(&mut e)?;
        let left_out =
            std::mem::take(&mut *self.left_out.lock().unwrap_or_else(|e| e.into_inner()));
        let rows = left_out
            .into_iter()
            .map(|(family, n)| (vec![("family", family)], n));
        self.family(
            &mut e,
            "strom_metrics_series_left_out",
            "Series a family did not show, over its 10,000",
            MetricType::Gauge,
            rows,
        )
    }
}

mod families;

#[cfg(test)]
mod tests {
    use super::*;

    /// A family shows at most `MAX_SERIES` series and says how many it left out:
    /// clients choose group names and topics, and a scrape of every one they made
    /// reached 451 MB (hostile-client finding).
    #[test]
    fn a_family_past_its_series_cap_is_cut_and_says_so() {
        let topics = (0..MAX_SERIES + 5)
            .map(|i| TopicRow {
                name: format!("t{i}"),
                counts: [1; 6],
                partitions: Vec::new(),
            })
            .collect();
        let scrape = Scrape {
            calls: Arc::new(CallMetrics::new()),
            calls_open: 0,
            connections_open: 0,
            refused: crate::grpc::connection::Refused::ALL.map(|why| (why, 0)),
            exchanges: (0, 0),
            tls_failures: None,
            budgets: [("produce", 0, 1), ("request", 0, 1)],
            quotas: None,
            topics,
            disk: None,
            groups: Vec::new(),
            shares: Vec::new(),
            started: 0.0,
            left_out: Default::default(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let shown = text
            .lines()
            .filter(|l| l.starts_with("strom_topic_appended_records_total{"))
            .count();
        assert_eq!(shown, MAX_SERIES);
        let left = r#"strom_metrics_series_left_out{family="strom_topic_appended_records"} 5"#;
        assert!(text.lines().any(|l| l == left), "no {left}");
    }
}
