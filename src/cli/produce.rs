//! `strom produce`: one record per input line, the way a log-shipping pipeline gets
//! lines in. Keys, headers and the partition are optional.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::output::{note, noteln};
use super::{describe, parse_pairs, Connect, Stop};
use crate::client::{Producer, ProducerConfig};
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to produce to.
    #[arg(long, short = 't')]
    topic: String,
    /// Send every record to this partition (default: by key, or spread evenly).
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// Split each line at the first SEP into key and value (lines without SEP have no key).
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// Header `name=value` added to every record (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// `fsync` or `page_cache` (default: the topic's setting).
    #[arg(long)]
    durability: Option<String>,
    /// How long a batch waits for more lines.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

/// Acks awaited at most at once, so memory stays bounded on endless input.
const MAX_PENDING_ACKS: usize = 100_000;

pub async fn run(args: ProduceArgs) -> Result<(), Stop> {
    let durability = match args.durability.as_deref() {
        None => pb::Durability::Unspecified,
        Some("fsync") => pb::Durability::Fsync,
        Some("page_cache") => pb::Durability::PageCache,
        Some(other) => {
            return Err(format!("--durability {other:?}: use fsync or page_cache").into())
        }
    };
    let headers: Vec<pb::Header> = parse_pairs(&args.headers)?
        .into_iter()
        .map(|(name, value)| pb::Header {
            name,
            value: Bytes::from(value),
        })
        .collect();
    let client = args.connect.client().await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        durability,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let mut lines = BufReader::new(input).lines();
    let mut pending = VecDeque::new();
    let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = started;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading input: {e}"))?
    {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => (None, Bytes::from(line)),
            },
            None => (None, Bytes::from(line)),
        };
        bytes += value.len() as u64;
        let record = pb::Record {
            key,
            value,
            headers: headers.clone(),
            ..Default::default()
        };
        pending.push_back(producer.send(&args.topic, args.partition, record).await);
        sent += 1;
        while pending.len() > MAX_PENDING_ACKS {
            count(
                pending.pop_front().expect("not empty").await,
                &mut failed,
                &mut first_error,
            );
        }
        if progress && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            report(sent, bytes, started, "\r");
        }
    }
    producer.flush().await;
    for ack in pending {
        count(ack.await, &mut failed, &mut first_error);
    }
    producer.close().await;
    report(
        sent - failed,
        bytes,
        started,
        if progress { "\r" } else { "" },
    );
    noteln!();
    match first_error {
        Some(err) => Err(format!("{failed} of {sent} records failed; first error: {err}").into()),
        None => Ok(()),
    }
}

fn count(
    ack: Result<Result<crate::client::Ack, tonic::Status>, tokio::sync::oneshot::error::RecvError>,
    failed: &mut u64,
    first: &mut Option<String>,
) {
    let err = match ack {
        Ok(Ok(_)) => return,
        Ok(Err(status)) => describe(status),
        Err(_) => "producer stopped".to_string(),
    };
    *failed += 1;
    first.get_or_insert(err);
}

fn report(records: u64, bytes: u64, started: Instant, prefix: &str) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    note!(
        "{prefix}produced {records} records, {:.1} MB, {:.0} records/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}
