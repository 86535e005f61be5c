//! `strom produce`: one record per input line, the way a log-shipping pipeline gets
//! lines in. Keys, headers and the partition are optional.
//!
//! Input may never end (`tail -F app.log | strom produce`), so nothing waits for its
//! end: acknowledgements are settled as they arrive, and the first refusal that no
//! retry can cure (unknown topic, a record over the size limit) ends the command at
//! once with status 1. Failures the producer retries (the server is unavailable) are
//! counted, the first one told at once, and the command goes on.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::output::{note, noteln};
use super::{describe, parse_pair, Connect, Stop};
use crate::client::{Ack, Producer, ProducerConfig};
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to produce to (it must exist).
    #[arg(long, short = 't')]
    topic: String,
    /// Send every record to this partition (default: by key, or spread evenly).
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// Split each line at the first SEP into key and value (lines without SEP have no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// Header `name=value` added to every record (repeatable, kept in order).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
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
    /// How long a line is retried (the server restarting, say) before it is reported as
    /// failed (it may or may not be stored then). A retry never stores a line twice.
    #[arg(long, default_value_t = 5000)]
    delivery_timeout_ms: u64,
}

/// Acks awaited at most at once, so memory stays bounded when the server falls behind.
const MAX_PENDING_ACKS: usize = 100_000;

/// Lines read ahead of the producer, at most; and their bytes, at most (beyond one
/// line). Counted in lines alone, 1,024 lines of 1 MB held a gigabyte while the server
/// was slow (a review found it).
const LINES_AHEAD: usize = 1024;
const LINES_AHEAD_BYTES: usize = 32 << 20;
/// Longest line read when the topic does not say (its max.message.bytes): the
/// server's largest batch.
pub(super) const MAX_LINE_BYTES: usize = 16 << 20;

type AckResult = Result<Result<Ack, Status>, oneshot::error::RecvError>;

/// Each record's line number and value bytes with its acknowledgement, in the order
/// sent.
type Pending = VecDeque<(u64, u64, oneshot::Receiver<Result<Ack, Status>>)>;

pub async fn run(args: ProduceArgs) -> Result<(), Stop> {
    let durability = durability(args.durability.as_deref())?;
    let headers = headers(&args.headers)?;
    // What a record's size counts besides its key and value, as the server does.
    let headers_bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let client = args.connect.client().await?;
    // Before reading any input: with `tail -F`, a mistyped topic would otherwise show
    // only when the next line comes, which may be hours away.
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(describe)?;
    // Checked here too, so that the message names the line: the server refuses the
    // whole batch, which holds other lines as well.
    let max_record_bytes = topic
        .config
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(p) = args.partition {
        let count = topic.partitions.len();
        if p as usize >= count {
            return Err(format!(
                "topic {:?} has partitions 0 to {}; --partition {p} does not exist",
                args.topic,
                count.saturating_sub(1)
            )
            .into());
        }
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let (tx, mut lines) = mpsc::channel(LINES_AHEAD);
    // A line longer than any record the topic takes (with room for a key separator) is
    // refused as it is read, not gathered whole first: a file without newlines would
    // otherwise be read into memory entire.
    let max_line = max_record_bytes.unwrap_or(MAX_LINE_BYTES) + 1024;
    tokio::spawn(read_lines(input, tx, max_line));
    let config = ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        durability,
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut pending: Pending = VecDeque::new();
    let mut tally = Tally::default();
    let progress = std::io::stderr().is_terminal();
    let mut last_report = tally.started;
    let mut input_open = true;
    // A refusal that ends the command: no more lines are read, and the records already
    // sent are still settled, so that the count it ends with is what the server holds.
    let mut stop: Option<String> = None;
    while (input_open && stop.is_none()) || !pending.is_empty() {
        tokio::select! {
            ack = next_ack(&mut pending) => {
                if let Some((line, bytes, _)) = pending.pop_front() {
                    if let Err(what) = tally.settle(line, bytes, ack) {
                        stop.get_or_insert(what);
                    }
                }
            }
            line = lines.recv(), if input_open && stop.is_none() && pending.len() < MAX_PENDING_ACKS => match line {
                Some(Ok((line, _room))) => {
                    let (key, value) = split(line, separator);
                    tally.sent += 1;
                    let size = key.as_ref().map_or(0, |k| k.len()) + value.len() + headers_bytes;
                    if let Some(max) = max_record_bytes.filter(|&max| size > max) {
                        tally.sent -= 1;
                        stop = Some(format!(
                            "line {}: a record of {size} bytes is over the topic's max.message.bytes ({max}); \
                             raise it with `strom topic alter {} max.message.bytes={size}`",
                            tally.sent + 1, args.topic
                        ));
                        continue;
                    }
                    let bytes = value.len() as u64;
                    let record = pb::Record {
                        key,
                        value,
                        headers: headers.clone(),
                        ..Default::default()
                    };
                    let ack = producer.send(&args.topic, args.partition, record).await;
                    pending.push_back((tally.sent, bytes, ack));
                }
                Some(Err(err)) => {
                    stop = Some(err);
                }
                None => input_open = false,
            },
        }
        if progress && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            tally.report("\r", pending.len());
        }
    }
    producer.close().await;
    tally.report(if progress { "\r" } else { "" }, 0);
    noteln!();
    if let Some(what) = stop {
        // Lines sent after the refused one, to other partitions or in later batches,
        // may have been stored: resending from the refused line would write them twice.
        return Err(format!(
            "{what}; stopped there: of the {} lines sent, {} were stored (lines after it \
             among them, in other partitions or batches) and {} were not",
            tally.sent,
            tally.acked,
            tally.sent - tally.acked
        )
        .into());
    }
    match tally.first_failure {
        Some(first) => Err(format!(
            "{} of {} records were not produced; first: {first}",
            tally.failed, tally.sent
        )
        .into()),
        None => Ok(()),
    }
}

/// Reads `input` line by line into `lines`, in a task of its own so that
/// acknowledgements are settled while it waits for more input. Lines are bytes: a
/// record need not be UTF-8. Each line holds its bytes' share of `LINES_AHEAD_BYTES`
/// until the command has handed it to the producer; a line over `max_line` bytes ends
/// the reading with an error.
pub(super) async fn read_lines(
    input: Box<dyn AsyncRead + Unpin + Send>,
    lines: mpsc::Sender<Result<(Vec<u8>, OwnedSemaphorePermit), String>>,
    max_line: usize,
) {
    let mut input = BufReader::new(input);
    let room = Arc::new(Semaphore::new(LINES_AHEAD_BYTES));
    let mut number = 0u64;
    loop {
        let mut line = Vec::new();
        number += 1;
        let limit = max_line as u64 + 1;
        let sent = match (&mut input).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            // Cut at the limit with no newline in sight.
            Ok(_) if line.len() > max_line && line.last() != Some(&b'\n') => {
                let _ = lines
                    .send(Err(format!(
                        "line {number} is over {max_line} bytes, longer than any record \
                         the topic takes (its max.message.bytes); not read further"
                    )))
                    .await;
                return;
            }
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                let share = line.len().clamp(1, LINES_AHEAD_BYTES) as u32;
                let Ok(held) = Arc::clone(&room).acquire_many_owned(share).await else {
                    return;
                };
                lines.send(Ok((line, held))).await
            }
            Err(err) => lines.send(Err(format!("reading input: {err}"))).await,
        };
        if sent.is_err() {
            return; // the command ended
        }
    }
}

/// The `--durability` flag.
pub(super) fn durability(flag: Option<&str>) -> Result<pb::Durability, String> {
    match flag {
        None => Ok(pb::Durability::Unspecified),
        Some("fsync") => Ok(pb::Durability::Fsync),
        Some("page_cache") => Ok(pb::Durability::PageCache),
        Some(other) => Err(format!("--durability {other:?}: use fsync or page_cache")),
    }
}

/// The `--header name=value` flags, in order.
pub(super) fn headers(flags: &[String]) -> Result<Vec<pb::Header>, String> {
    flags
        .iter()
        .map(|h| {
            let (name, value) = parse_pair(h, "name=value, e.g. --header app=web")?;
            Ok(pb::Header {
                name,
                value: Bytes::from(value),
            })
        })
        .collect()
}

/// Splits a line at the first `separator` into key and value.
pub(super) fn split(line: Vec<u8>, separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let at = separator
        .filter(|sep| !sep.is_empty())
        .and_then(|sep| Some((line.windows(sep.len()).position(|w| w == sep)?, sep.len())));
    match at {
        Some((at, len)) => {
            let line = Bytes::from(line);
            (Some(line.slice(..at)), line.slice(at + len..))
        }
        None => (None, Bytes::from(line)),
    }
}

/// The acknowledgement of the oldest record still pending; never ready when none is.
async fn next_ack(pending: &mut Pending) -> AckResult {
    match pending.front_mut() {
        Some((_, _, ack)) => ack.await,
        None => std::future::pending().await,
    }
}

/// Refusals that the same record will meet again however often it is sent. Others
/// (UNAVAILABLE while the server restarts, a dropped connection) the producer has
/// already retried.
fn fatal(status: &Status) -> bool {
    !crate::client::retriable(status)
}

struct Tally {
    started: Instant,
    sent: u64,
    acked: u64,
    /// Value bytes of the records acknowledged.
    bytes: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            started: Instant::now(),
            sent: 0,
            acked: 0,
            bytes: 0,
            failed: 0,
            first_failure: None,
        }
    }
}

impl Tally {
    /// Counts the answer for input line `line` (`bytes` of value); a fatal refusal
    /// ends the command.
    fn settle(&mut self, line: u64, bytes: u64, ack: AckResult) -> Result<(), String> {
        let status = match ack {
            Ok(Ok(_)) => {
                self.acked += 1;
                self.bytes += bytes;
                return Ok(());
            }
            Ok(Err(status)) => status,
            Err(_) => return Err("the producer stopped unexpectedly".into()),
        };
        let what = format!(
            "line {line} (refused with the batch it went in): {}",
            describe(status.clone())
        );
        self.failed += 1;
        if fatal(&status) {
            return Err(what);
        }
        if self.first_failure.is_none() {
            noteln!("strom: {what}; not produced after retries, going on");
            self.first_failure = Some(what);
        }
        Ok(())
    }

    /// What the server has acknowledged so far, and how many records await an answer
    /// (none at the end, when every record sent has one). Records refused or not
    /// answered are not counted, nor their bytes.
    fn report(&self, prefix: &str, waiting: usize) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let records = self.acked;
        let waiting = match waiting {
            0 => String::new(),
            n => format!(", {n} waiting"),
        };
        note!(
            "{prefix}produced {records} records, {:.1} MB, {:.0} records/s, {:.1} MB/s{waiting}",
            self.bytes as f64 / 1e6,
            records as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let key = |k: &str| Some(Bytes::from(k.to_string()));
        assert_eq!(
            split(b"user-1::paid".to_vec(), Some(b"::")),
            (key("user-1"), Bytes::from("paid"))
        );
        assert_eq!(
            split(b":a:b".to_vec(), Some(b":")),
            (key(""), Bytes::from("a:b"))
        );
        assert_eq!(
            split(b"no key".to_vec(), Some(b":")),
            (None, Bytes::from("no key"))
        );
        assert_eq!(split(b"a:b".to_vec(), None), (None, Bytes::from("a:b")));
    }
}
