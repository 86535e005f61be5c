//! What the endpoint renders, from the moment its port is bound: while the server
//! opens its data directory, how far the start has got; once it is ready, the
//! server's figures (`Metrics`). The endpoint is served by one task throughout, so a
//! scraper's connection, and its place among the endpoint's 64, carry on across the
//! switch. (Before, the port was bound and nobody accepted on it until the server was
//! ready: a scrape during a long recovery timed out, and the target read as down.)
//!
//! While starting, a scrape shows `strom_starting 1`, the partitions opened so far and
//! how many there are (once every topic's file has been read), the version and the
//! start time; once ready, `strom_starting 0` among the rest. The switch comes just
//! after the ready line is logged, and a scrape may get the last starting render for
//! a second after it (`http.rs` shares a render with the requests of the next second;
//! with four renders unread, up to `STALE_AFTER`).

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Metrics, Scrape};
use crate::broker::Opening;

/// The endpoint's source of figures, switched once from starting to ready.
pub struct Source(RwLock<Stage>);

#[derive(Clone)]
enum Stage {
    Starting {
        opening: Arc<Opening>,
        /// When the endpoint began to answer, in seconds since the Unix epoch: the
        /// server's start time from then on.
        started: f64,
    },
    Ready(Arc<Metrics>),
}

impl Source {
    /// A server starting, counting its partitions in `opening`.
    pub fn starting(opening: Arc<Opening>, started: f64) -> Arc<Source> {
        Arc::new(Source(RwLock::new(Stage::Starting { opening, started })))
    }

    /// A server that is ready.
    pub fn ready(metrics: Arc<Metrics>) -> Arc<Source> {
        Arc::new(Source(RwLock::new(Stage::Ready(metrics))))
    }

    /// The server is ready: scrapes show its figures from now on.
    pub fn set_ready(&self, metrics: Arc<Metrics>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Stage::Ready(metrics);
    }

    /// When the server began to start, if it is still starting.
    pub fn started(&self) -> Option<f64> {
        match &*self.0.read().unwrap_or_else(|e| e.into_inner()) {
            Stage::Starting { started, .. } => Some(*started),
            Stage::Ready(_) => None,
        }
    }

    /// The figures now, as OpenMetrics text.
    pub async fn render(&self) -> String {
        let stage = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        match stage {
            Stage::Ready(metrics) => metrics.render().await,
            Stage::Starting { opening, started } => super::text(StartingScrape {
                partitions: opening.partitions(),
                started,
            }),
        }
    }
}

/// A scrape while the server starts.
#[derive(Debug)]
struct StartingScrape {
    /// Partitions opened, and how many there are; None until they are counted.
    partitions: Option<(usize, usize)>,
    started: f64,
}

impl Collector for StartingScrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Scrape::encode_identity(&mut e, self.started)?;
        Scrape::encode_starting(&mut e, true)?;
        let Some((opened, partitions)) = self.partitions else {
            return Ok(());
        };
        let rows: [(&str, &str, usize); 2] = [
            (
                "strom_starting_partitions_opened",
                "While the server starts: partitions opened (recovered if they were not closed cleanly)",
                opened,
            ),
            (
                "strom_starting_partitions",
                "While the server starts: partitions in its data directory",
                partitions,
            ),
        ];
        for (name, help, value) in rows {
            super::families::gauge(&mut e, name, help, Vec::new(), value as u64)?;
        }
        Ok(())
    }
}
