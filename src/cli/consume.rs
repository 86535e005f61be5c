//! `strom consume` and `strom offsets`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::output::{outln, write_out};
use super::progress::Progress;
use super::{describe, parse_duration_ms, Connect, Stop};
use crate::broker::now_ms;
use crate::client::{ConsumedRecord, Consumer, Start};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// The value of each record (with `--print-key`, the key, a tab, the value).
    Text,
    /// One JSON object per record: partition, offset, timestamp_ms, key, value, headers.
    Json,
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// Where to start: earliest, latest, an OFFSET, @TIMESTAMP_MS, or -DURATION (e.g. -10m).
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    from: String,
    /// Where to stop (exclusive): an OFFSET, @TIMESTAMP_MS or -DURATION.
    #[arg(long, allow_hyphen_values = true)]
    until: Option<String>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short = 'F')]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// With text output, print the key and a tab before the value.
    #[arg(long)]
    print_key: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_records: Option<u64>,
}

#[derive(clap::Args)]
pub struct OffsetsArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to show.
    #[arg(long, short = 't')]
    topic: String,
}

/// `earliest`, `latest`, `OFFSET`, `@TIMESTAMP_MS` or `-DURATION`.
fn parse_position(text: &str) -> Result<Start, String> {
    let bad = || {
        format!(
            "{text:?} is not earliest, latest, an offset, @TIMESTAMP_MS or -DURATION (like -10m)"
        )
    };
    Ok(match text {
        "earliest" => Start::Earliest,
        "latest" => Start::Latest,
        t if t.starts_with('@') => Start::Timestamp(t[1..].parse().map_err(|_| bad())?),
        t if t.starts_with('-') => {
            Start::Timestamp(now_ms() - parse_duration_ms(&t[1..]).ok_or_else(bad)?)
        }
        t => Start::Offset(t.parse().map_err(|_| bad())?),
    })
}

fn json_string(bytes: &[u8]) -> String {
    serde_json::to_string(&String::from_utf8_lossy(bytes)).expect("strings serialize")
}

/// Appends one record's line to `out`.
fn print(out: &mut Vec<u8>, record: &ConsumedRecord, format: Format, print_key: bool) {
    let value = String::from_utf8_lossy(&record.value);
    let written = match format {
        Format::Text if print_key => {
            let key = record.key.as_deref().map(String::from_utf8_lossy);
            writeln!(out, "{}\t{value}", key.unwrap_or_default())
        }
        Format::Text => writeln!(out, "{value}"),
        Format::Json => {
            let key = record
                .key
                .as_deref()
                .map_or("null".to_string(), json_string);
            let headers: Vec<String> = record
                .headers
                .iter()
                .map(|(n, v)| format!("[{},{}]", json_string(n.as_bytes()), json_string(v)))
                .collect();
            writeln!(
                out,
                "{{\"partition\":{},\"offset\":{},\"timestamp_ms\":{},\"key\":{key},\"value\":{},\"headers\":[{}]}}",
                record.partition,
                record.offset,
                record.timestamp_ms,
                json_string(&record.value),
                headers.join(",")
            )
        }
    };
    written.expect("writing to a Vec cannot fail");
}

pub async fn run(args: ConsumeArgs) -> Result<(), Stop> {
    let client = args.connect.client().await?;
    let from = parse_position(&args.from)?;
    let until = args.until.as_deref().map(parse_position).transpose()?;
    if matches!(until, Some(Start::Earliest | Start::Latest)) {
        return Err("--until takes an OFFSET, @TIMESTAMP_MS or -DURATION".into());
    }
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..client
            .admin()
            .describe_topic(&args.topic)
            .await
            .map_err(describe)?
            .partitions
            .len() as u32)
            .collect(),
    };
    let (tx, mut rx) = mpsc::channel::<Result<Vec<ConsumedRecord>, String>>(16);
    for partition in partitions {
        let mut consumer = Consumer::new(&client, &args.topic, partition, from)
            .await
            .map_err(describe)?;
        let (tx, follow) = (tx.clone(), args.follow);
        tokio::spawn(async move {
            // Without --follow, stop at the end as it was when reading began.
            let mut end = None;
            loop {
                let wait = if follow {
                    Duration::from_secs(5)
                } else {
                    Duration::ZERO
                };
                let mut records = match consumer.poll(wait).await {
                    Ok(records) => records,
                    Err(status) => {
                        let _ = tx.send(Err(describe(status))).await;
                        return;
                    }
                };
                let end = *end.get_or_insert(consumer.high_watermark());
                let done = match until {
                    Some(Start::Offset(stop)) => {
                        records.retain(|r| r.offset < stop);
                        consumer.position() >= stop
                    }
                    Some(Start::Timestamp(stop)) => {
                        match records.iter().position(|r| r.timestamp_ms >= stop) {
                            Some(cut) => {
                                records.truncate(cut);
                                true
                            }
                            None => false,
                        }
                    }
                    _ => false,
                } || (!follow && consumer.position() >= end);
                if !records.is_empty() && tx.send(Ok(records)).await.is_err() {
                    return;
                }
                if done {
                    return;
                }
            }
        });
    }
    drop(tx);
    // A progress line only when the records go elsewhere (a file, a pipe); `show` adds
    // the condition that stderr is a terminal.
    let progress = Arc::new(Progress::default());
    let _line = (!std::io::stdout().is_terminal()).then(|| progress.show("printed"));
    let mut printed = 0u64;
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        let mut done = false;
        let batch_records = printed;
        for record in batch? {
            print(&mut out, &record, args.format, args.print_key);
            printed += 1;
            done = args.max_records.is_some_and(|max| printed >= max);
            if done {
                break;
            }
        }
        let batch_records = printed - batch_records;
        // One write per batch: a line-buffered stdout would make a syscall per record.
        write_out(&out)?;
        progress.add(batch_records, out.len() as u64);
        out.clear();
        if done {
            break;
        }
    }
    Ok(())
}

pub async fn offsets(args: OffsetsArgs) -> Result<(), Stop> {
    let topic = args
        .connect
        .client()
        .await?
        .admin()
        .describe_topic(&args.topic)
        .await
        .map_err(describe)?;
    outln!("{:>9} {:>14} {:>14}", "partition", "start", "end")?;
    for p in topic.partitions {
        outln!(
            "{:>9} {:>14} {:>14}",
            p.partition,
            p.log_start_offset,
            p.high_watermark
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(parse_position("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_position("42"), Ok(Start::Offset(42)));
        assert_eq!(
            parse_position("@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        let Ok(Start::Timestamp(ts)) = parse_position("-10m") else {
            panic!()
        };
        assert!((now_ms() - 600_000 - ts).abs() < 5_000);
        for bad in ["", "-10", "-10y", "@x", "soon"] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }
}
