//! The metric families a scrape writes, by area. Names follow Prometheus' conventions:
//! a unit suffix, counters without `_total` (the encoder adds it).

use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType::{Counter, Gauge, Histogram};

use super::{one, Labels, Scrape, FLUSH_NANOS, TOPIC_COUNTERS};
use crate::grpc::call_metrics::CODE_NAMES;

type Result = std::result::Result<(), std::fmt::Error>;

/// One figure of a partition's extent.
type ExtentPart = fn(&crate::broker::partition::Extent) -> u64;

impl Scrape {
    /// The server's version and start time: shown while it starts too
    /// (`source.rs`).
    pub(super) fn encode_identity(e: &mut DescriptorEncoder, started: f64) -> Result {
        let version = vec![("version", env!("CARGO_PKG_VERSION").to_string())];
        gauge(e, "strom_build_info", "The server's version", version, 1u64)?;
        gauge(
            e,
            "process_start_time_seconds",
            "When the server started, in seconds since the Unix epoch",
            Vec::new(),
            started,
        )
    }

    /// Whether the server is still opening its data directory (`source.rs`).
    pub(super) fn encode_starting(e: &mut DescriptorEncoder, starting: bool) -> Result {
        gauge(
            e,
            "strom_starting",
            "1 while the server opens its data directory (recovering partitions not closed cleanly), 0 once it serves",
            Vec::new(),
            u64::from(starting),
        )
    }

    pub(super) fn encode_server(&self, e: &mut DescriptorEncoder) -> Result {
        Self::encode_identity(e, self.started)?;
        Self::encode_starting(e, false)?;
        let open = [
            (
                "strom_grpc_calls_open",
                "Calls open now (streams until they close), health checks aside",
                self.calls_open,
            ),
            (
                "strom_connections_open",
                "Client connections open now",
                self.connections_open,
            ),
            ("strom_exchanges", "Exchanges", self.exchanges.0),
            (
                "strom_exchange_bindings",
                "Bindings of topics to exchanges, over all exchanges",
                self.exchanges.1,
            ),
        ];
        for (name, help, value) in open {
            self.family(e, name, help, Gauge, one(value as f64))?;
        }
        let refused = self.refused.iter();
        self.family(
            e,
            "strom_connections_refused",
            "Connections closed as soon as they were accepted: the server had \
             max_connections open, their address max_connections_per_address, or (Kafka) \
             a quarter of max_connections had not authenticated yet",
            Counter,
            refused.map(|(why, n)| (vec![("reason", why.as_str().to_string())], *n as f64)),
        )?;
        if let Some(failed) = self.tls_failures {
            self.family(
                e,
                "strom_tls_handshake_failures",
                "TLS handshakes that failed: a plaintext client, a certificate refused, a \
                 client silent past the timeout",
                Counter,
                one(failed as f64),
            )?;
        }
        let budgets = |pick: fn(&(&str, usize, usize)) -> usize| {
            self.budgets
                .iter()
                .map(move |b| (vec![("budget", b.0.to_string())], pick(b) as u64))
        };
        self.family(
            e,
            "strom_budget_in_use_bytes",
            "Bytes charged to a budget now: the produce budget (produce_budget_bytes) or \
             the budget of other large requests (request_budget_bytes)",
            Gauge,
            budgets(|b| b.1),
        )?;
        self.family(
            e,
            "strom_budget_size_bytes",
            "A budget's size",
            Gauge,
            budgets(|b| b.2),
        )?;
        if let Some((waits, clients)) = &self.quotas {
            let kinds = |pick: fn(&(crate::grpc::quota::Flow, u64, f64)) -> f64| {
                waits
                    .iter()
                    .map(move |w| (vec![("kind", w.0.as_str().to_string())], pick(w)))
            };
            self.family(
                e,
                "strom_quota_throttled",
                "Requests that waited for their client's quota (quotas): produce messages \
                 and Kafka produce requests, fetches and Kafka fetch responses, Kafka \
                 requests past a request rate, and gRPC calls refused for it",
                Counter,
                kinds(|w| w.1 as f64),
            )?;
            self.family(
                e,
                "strom_quota_throttled_seconds",
                "How long requests waited for their client's quota, summed",
                Counter,
                kinds(|w| w.2),
            )?;
            self.family(
                e,
                "strom_quota_clients",
                "Clients whose quota use is kept now (principals, and addresses of clients \
                 without one)",
                Gauge,
                one(*clients as f64),
            )?;
        }
        if let Some((free, total, floor)) = self.disk {
            let disk = [
                (
                    "strom_disk_free_bytes",
                    "Free bytes of the data directory's file system",
                    free,
                ),
                (
                    "strom_disk_size_bytes",
                    "Size of the data directory's file system",
                    total,
                ),
                (
                    "strom_disk_floor_bytes",
                    "Free bytes below which produce is refused (min_free_disk)",
                    floor,
                ),
            ];
            for (name, help, value) in disk {
                self.family(e, name, help, Gauge, one(value as f64))?;
            }
        }
        Ok(())
    }

    pub(super) fn encode_calls(&self, e: &mut DescriptorEncoder) -> Result {
        let methods = &self.calls.methods;
        let labels = |m: &crate::grpc::call_metrics::Method| -> Labels {
            vec![("service", m.service.clone()), ("method", m.name.clone())]
        };
        let rows = methods.iter().flat_map(|m| {
            m.ended.iter().enumerate().filter_map(move |(code, n)| {
                let n = n.load(Ordering::Relaxed);
                let mut labels = labels(m);
                labels.push(("code", CODE_NAMES[code].to_string()));
                (n > 0).then_some((labels, n))
            })
        });
        self.family(
            e,
            "strom_grpc_calls",
            "Calls ended, by method and gRPC status (CANCELLED: the call ended before its \
             status was sent, the client hanging up or the server closing the connection)",
            Counter,
            rows,
        )?;
        let mut metric = e.encode_descriptor(
            "strom_grpc_call_duration_seconds",
            "How long unary calls took, from their arrival to the end of their response \
             or their cancellation, whatever their status (a long-polling Fetch counts its \
             wait)",
            None,
            Histogram,
        )?;
        for m in methods {
            let called = m.ended.iter().any(|n| n.load(Ordering::Relaxed) > 0);
            if let Some(latency) = m.latency.as_ref().filter(|_| called) {
                let labels = labels(m);
                latency.encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    pub(super) fn encode_topics(&self, e: &mut DescriptorEncoder) -> Result {
        let topic = |name: &str| -> Labels { vec![("topic", name.to_string())] };
        for (i, (name, help)) in TOPIC_COUNTERS.iter().enumerate() {
            let rows = self
                .topics
                .iter()
                .map(move |t| (topic(&t.name), t.counts[i]));
            match i {
                // Kept in nanoseconds, shown in seconds.
                FLUSH_NANOS => {
                    let seconds = rows.map(|(labels, nanos)| (labels, nanos as f64 / 1e9));
                    self.family(e, name, help, Counter, seconds)?
                }
                _ => self.family(e, name, help, Counter, rows)?,
            }
        }
        let unavailable = self.topics.iter().map(|t| {
            let n = t.partitions.iter().filter(|(_, x)| x.is_none()).count();
            (topic(&t.name), n as u64)
        });
        self.family(
            e,
            "strom_topic_partitions_unavailable",
            "Partitions whose log is not open (see the server's log for why)",
            Gauge,
            unavailable,
        )?;
        let extents: [(&str, &str, ExtentPart); 4] = [
            (
                "strom_partition_log_start_offset",
                "The partition's first offset kept",
                |x| x.log_start,
            ),
            (
                "strom_partition_high_watermark",
                "The offset the partition's next record will take",
                |x| x.high_watermark,
            ),
            (
                "strom_partition_size_bytes",
                "Bytes of the partition's segments",
                |x| x.size_bytes,
            ),
            (
                "strom_partition_segments",
                "Segments of the partition",
                |x| x.segments,
            ),
        ];
        for (name, help, get) in extents {
            let rows = self.topics.iter().flat_map(|t| {
                t.partitions.iter().filter_map(move |(p, x)| {
                    let labels = vec![("topic", t.name.clone()), ("partition", p.to_string())];
                    Some((labels, get(x.as_ref()?)))
                })
            });
            self.family(e, name, help, Gauge, rows)?;
        }
        Ok(())
    }

    pub(super) fn encode_groups(&self, e: &mut DescriptorEncoder) -> Result {
        let group = |name: &str| -> Labels { vec![("group", name.to_string())] };
        let members = self
            .groups
            .iter()
            .map(|g| (group(&g.group), g.members as u64));
        self.family(
            e,
            "strom_group_members",
            "Members of a consumer group with members or with offsets in memory",
            Gauge,
            members,
        )?;
        let per_topic = |pick: fn(&crate::groups::gauges::TopicLag) -> u64| {
            self.groups.iter().flat_map(move |g| {
                g.topics.iter().map(move |t| {
                    let labels = vec![("group", g.group.clone()), ("topic", t.topic.clone())];
                    (labels, pick(t))
                })
            })
        };
        self.family(
            e,
            "strom_group_lag_records",
            "Records between a consumer group's committed offsets and the high watermarks, \
             over the topic's partitions with a committed offset",
            Gauge,
            per_topic(|t| t.lag),
        )?;
        self.family(
            e,
            "strom_group_committed_partitions",
            "Partitions of the topic with an offset the group committed",
            Gauge,
            per_topic(|t| t.partitions as u64),
        )?;
        let members = self
            .shares
            .iter()
            .map(|g| (group(&g.group), g.members as u64));
        self.family(
            e,
            "strom_share_group_members",
            "Members of a share group in memory",
            Gauge,
            members,
        )?;
        let share_rows = |label: &'static str, picks: &'static [(&'static str, Pick)]| {
            self.shares.iter().flat_map(move |g| {
                g.topics.iter().flat_map(move |(topic, counts)| {
                    picks.iter().map(move |(what, pick)| {
                        let labels = vec![
                            ("group", g.group.clone()),
                            ("topic", topic.clone()),
                            (label, what.to_string()),
                        ];
                        (labels, pick(counts))
                    })
                })
            })
        };
        self.family(
            e,
            "strom_share_group_records",
            "Records of a share group's topic waiting to be handed out (available) or \
             locked by a member (in_flight)",
            Gauge,
            share_rows("state", &STATES),
        )?;
        self.family(
            e,
            "strom_share_group_records_finished",
            "Records of a share group's topic finished: accepted, dead-lettered (rejected \
             or out of deliveries) or lost (deleted by retention or DeleteRecords first); \
             a gauge, as a reset of the group drops the finished records of its window",
            Gauge,
            share_rows("outcome", &ENDS),
        )
    }
}

type Pick = fn(&crate::groups::share::window::Counts) -> u64;
static STATES: [(&str, Pick); 2] = [
    ("available", |c| c.available),
    ("in_flight", |c| c.in_flight),
];
static ENDS: [(&str, Pick); 3] = [
    ("accepted", |c| c.accepted),
    ("dead_lettered", |c| c.dead_lettered),
    ("lost", |c| c.lost),
];

/// A family of one gauge sample (for the few families of fixed size, outside
/// `MAX_SERIES`' count).
pub(super) fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: Labels,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> Result {
    let mut metric = e.encode_descriptor(name, help, None, Gauge)?;
    metric.encode_family(&labels)?.encode_gauge(&value)
}
