//! What the server's calls did, for the metrics endpoint (`server::metrics`): per
//! method, how many ended with each gRPC status, and how long each unary call took from
//! its arrival to the end of its response. `call_limit` keeps them, since it already
//! sees every call from its start to the end of its response.
//!
//! The methods are those of the services' descriptors, read once at start-up, so a
//! client inventing paths adds no series: its calls count under `method="other"`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

/// gRPC's status codes, by number, as the protocol names them.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: u8 = 1;
const UNKNOWN: u8 = 2;

/// Upper bounds of the latency buckets, in seconds: from a page-cache produce (tens of
/// µs) to a long poll that waited its 30 s.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// One method's counts.
#[derive(Debug)]
pub struct Method {
    /// `strom.v1.Log`, or "other" for paths no service has.
    pub service: String,
    /// `Produce`, or "other".
    pub name: String,
    /// Calls ended, by status code.
    pub ended: [AtomicU64; 17],
    /// Durations of a unary method's calls (streams have none: their length is the
    /// client's to choose).
    pub latency: Option<Histogram>,
}

/// Every method's counts.
#[derive(Debug)]
pub struct CallMetrics {
    index: HashMap<String, usize>,
    pub methods: Vec<Method>,
}

impl CallMetrics {
    /// Counts for the methods of the server's services (from their descriptor sets).
    pub fn new() -> CallMetrics {
        use prost::Message;
        let sets = [
            super::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut found = Vec::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(set)
                .expect("descriptor sets built into the binary are valid");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let unary = !method.client_streaming() && !method.server_streaming();
                        found.push((
                            format!("{}.{}", file.package(), service.name()),
                            method.name().to_string(),
                            unary,
                        ));
                    }
                }
            }
        }
        found.push(("other".into(), "other".into(), false));
        let mut index = HashMap::new();
        let methods = found
            .into_iter()
            .enumerate()
            .map(|(i, (service, name, unary))| {
                index.insert(format!("/{service}/{name}"), i);
                Method {
                    service,
                    name,
                    ended: Default::default(),
                    latency: unary.then(|| Histogram::new(LATENCY_BUCKETS)),
                }
            })
            .collect();
        CallMetrics { index, methods }
    }

    /// The index of the method a request's path names ("other" if none).
    pub fn method(&self, path: &str) -> usize {
        self.index
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1)
    }

    fn record(&self, method: usize, code: u8, started: Instant) {
        let method = &self.methods[method];
        method.ended[code.min(16) as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = &method.latency {
            latency.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Default for CallMetrics {
    fn default() -> Self {
        CallMetrics::new()
    }
}

/// One call, counted when it is dropped: with the status its response carried, or
/// CANCELLED if it went before its status was sent (the client hung up, or the server
/// closed the connection: a stalled reader, the end of a stop).
pub struct Call {
    metrics: std::sync::Arc<CallMetrics>,
    method: usize,
    started: Instant,
    code: Option<u8>,
}

impl Call {
    pub fn start(metrics: std::sync::Arc<CallMetrics>, path: &str) -> Call {
        let method = metrics.method(path);
        Call {
            metrics,
            method,
            started: Instant::now(),
            code: None,
        }
    }

    /// Notes the status in `headers` (a response's headers or its trailers), if any.
    pub fn saw(&mut self, headers: &http::HeaderMap) {
        if let Some(value) = headers.get("grpc-status") {
            let code = value.to_str().ok().and_then(|v| v.parse::<u8>().ok());
            self.code = Some(code.filter(|c| *c <= 16).unwrap_or(UNKNOWN));
        }
    }

    /// Notes a response that ended without a status.
    pub fn ended(&mut self) {
        self.code.get_or_insert(UNKNOWN);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(CANCELLED);
        self.metrics.record(self.method, code, self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_method_has_its_own_counts_and_invented_paths_share_one() {
        let metrics = CallMetrics::new();
        let produce = metrics.method("/strom.v1.Log/Produce");
        let fetch = metrics.method("/strom.v1.Log/Fetch");
        let subscribe = metrics.method("/strom.v1.Log/Subscribe");
        let other = metrics.method("/strom.v1.Log/Nope");
        assert_ne!(produce, fetch);
        assert_eq!(metrics.methods[produce].name, "Produce");
        assert_eq!(metrics.methods[produce].service, "strom.v1.Log");
        assert!(metrics.methods[produce].latency.is_some());
        assert!(metrics.methods[subscribe].latency.is_none(), "a stream");
        assert_eq!(metrics.methods[other].name, "other");
        assert_eq!(other, metrics.method("/x/y"));
        assert_eq!(
            metrics.methods[metrics.method("/grpc.health.v1.Health/Check")].name,
            "Check"
        );
    }

    #[test]
    fn a_call_counts_the_status_it_saw_or_cancelled_if_none() {
        let metrics = std::sync::Arc::new(CallMetrics::new());
        let path = "/strom.v1.Log/Produce";
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "8".parse().unwrap());
        let mut call = Call::start(metrics.clone(), path);
        call.saw(&headers);
        drop(call);
        drop(Call::start(metrics.clone(), path));
        let mut call = Call::start(metrics.clone(), path);
        call.saw(&http::HeaderMap::new());
        call.ended();
        drop(call);
        let ended = &metrics.methods[metrics.method(path)].ended;
        let count = |code: usize| ended[code].load(Ordering::Relaxed);
        assert_eq!(CODE_NAMES[8], "RESOURCE_EXHAUSTED");
        assert_eq!((count(8), count(1), count(2), count(0)), (1, 1, 1, 0));
    }
}
