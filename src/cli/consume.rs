//! `strom consume` and `strom offsets`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::format::{Format, NULL_KEY, TOKENS};
use super::output::{noteln, outln, write_out};
use super::position::parse_position;
use super::progress::Progress;
use super::{describe, Connect, Stop};
use crate::client::{Client, ConsumedRecord, Consumer, Start};
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to read.
    #[arg(long, short = 't', required_unless_present = "topic_pattern")]
    topic: Option<String>,
    /// Read only this partition (default: all the topic's; with --follow and no
    /// --until, or with --group, also those added to it later).
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Option<u32>,
    /// Consume as a member of this consumer group: the group's members share the
    /// partitions, and the group's committed offsets say where to resume. Without
    /// --follow it stops after two seconds without records.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// With --group: every topic whose whole name matches this regular expression,
    /// including topics created later.
    #[arg(long, requires = "group", conflicts_with = "topic")]
    topic_pattern: Option<String>,
    /// Where to start: earliest, latest, an OFFSET, @TIMESTAMP_MS, -DURATION (e.g. -10m)
    /// or an RFC 3339 time (e.g. 2026-12-01T10:00:00Z). An offset past the end prints
    /// nothing; one before the log start starts there.
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    from: String,
    /// Where to stop (exclusive), in the same forms; `latest` is the end as it was when
    /// consuming began.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "group")]
    until: Option<String>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short = 'F')]
    follow: bool,
    /// text (values, one per line), json (one object per line) or a TEMPLATE like '%k=%s\n'.
    #[arg(long, default_value = "text", value_name = "text|json|TEMPLATE", long_help = format_help())]
    format: String,
    /// With --format text, print the key and a tab before the value (NULL when absent).
    #[arg(long)]
    print_key: bool,
    /// Stop after this many records (at least 1).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    max_records: Option<u64>,
}

fn format_help() -> String {
    format!(
        "How to print each record:\n\
         text: the value, one per line (with --print-key, the key, a tab, the value).\n\
         json: one object per line: topic, partition, offset, timestamp_ms, key (null when \
         absent), value, headers as [name, value] pairs; bytes that are not UTF-8 are base64, \
         marked by \"key_encoding\"/\"value_encoding\":\"base64\" (a third element \"base64\" \
         in a header).\n\
         TEMPLATE: printed for each record as written (add \\n to end lines), with {TOKENS}.\n\
         Text and templates print bytes as they are; an absent key prints as {}.",
        String::from_utf8_lossy(NULL_KEY)
    )
}

#[derive(clap::Args)]
pub struct OffsetsArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to show.
    #[arg(long, short = 't')]
    topic: String,
}

/// What to read of one partition.
struct Plan {
    partition: u32,
    /// Where the consumer starts.
    start: Start,
    /// Records below this offset are skipped (`--from` past the end, with `--follow`).
    skip_below: u64,
    /// Stop before this offset.
    stop_offset: Option<u64>,
    /// Stop before the first record at or after this time (ms).
    stop_time: Option<i64>,
}

/// Works out where to start and stop in one partition, or `None` when there is
/// nothing to read; tells on stderr when the range asked for is not all there.
fn plan(
    p: &pb::PartitionDescription,
    from: Start,
    until: Option<Start>,
    follow: bool,
) -> Option<Plan> {
    let (first, end) = (p.log_start_offset, p.high_watermark);
    let mut skip_below = 0;
    let start = match from {
        Start::Earliest => Start::Offset(first),
        Start::Latest => Start::Offset(end),
        Start::Offset(offset) if offset < first => {
            noteln!(
                "strom: partition {} starts at offset {first} (older records are gone); reading from there",
                p.partition
            );
            Start::Offset(first)
        }
        Start::Offset(offset) if offset > end && !follow => {
            noteln!(
                "strom: partition {} ends before offset {offset} (its next offset is {end}); nothing to print",
                p.partition
            );
            return None;
        }
        Start::Offset(offset) if offset > end => {
            // A fetch past the end is refused: wait at the end for the offset to come.
            skip_below = offset;
            Start::Offset(end)
        }
        other => other,
    };
    let until_offset = match until {
        Some(Start::Earliest) => Some(first),
        Some(Start::Latest) => Some(end),
        Some(Start::Offset(offset)) => Some(offset),
        _ => None,
    };
    // Without --follow, stop at the end as it was when reading began.
    let stop_offset = match (until_offset, follow) {
        (Some(stop), true) => Some(stop),
        (Some(stop), false) => Some(stop.min(end)),
        (None, true) => None,
        (None, false) => Some(end),
    };
    if let (Start::Offset(start), Some(stop)) = (start, stop_offset) {
        if start.max(skip_below) >= stop {
            return None;
        }
    }
    Some(Plan {
        partition: p.partition,
        start,
        skip_below,
        stop_offset,
        stop_time: match until {
            Some(Start::Timestamp(ts)) => Some(ts),
            _ => None,
        },
    })
}

type Batches = mpsc::Sender<Result<Vec<ConsumedRecord>, String>>;

/// Reads one partition as planned, sending its records in batches.
async fn read(client: Client, topic: String, plan: Plan, follow: bool, tx: Batches) {
    let mut consumer = match Consumer::new(&client, &topic, plan.partition, plan.start).await {
        Ok(consumer) => consumer,
        Err(status) => {
            let _ = tx.send(Err(describe(status))).await;
            return;
        }
    };
    // Without --follow the records up to the stop are already there: the wait only
    // matters if the log was cut meanwhile.
    let wait = Duration::from_secs(if follow { 5 } else { 1 });
    loop {
        if plan
            .stop_offset
            .is_some_and(|stop| consumer.position() >= stop)
        {
            return;
        }
        let mut records = match consumer.poll(wait).await {
            Ok(records) => records,
            Err(status) => {
                let _ = tx.send(Err(describe(status))).await;
                return;
            }
        };
        let cut_short =
            !follow && records.is_empty() && consumer.high_watermark() <= consumer.position();
        records.retain(|r| r.offset >= plan.skip_below);
        if let Some(stop) = plan.stop_offset {
            records.retain(|r| r.offset < stop);
        }
        let mut done = cut_short;
        if let Some(stop) = plan.stop_time {
            if let Some(cut) = records.iter().position(|r| r.timestamp_ms >= stop) {
                records.truncate(cut);
                done = true;
            }
        }
        if !records.is_empty() && tx.send(Ok(records)).await.is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

/// How often `consume --follow` looks for partitions added to its topic.
const ADDED_CHECK: Duration = Duration::from_secs(2);

/// Reads the partitions added to the topic (`first` as described when reading began)
/// after its first `known`: every `ADDED_CHECK` asks for partition `known`'s offsets
/// (a call that reads nothing; describing the topic reads each partition's first
/// record), and once there is one, describes the topic and starts a reader for each
/// new partition. Every record of a partition added since reading began is newer than
/// where reading began, so `--from latest` reads it from its first record; the other
/// `--from`s say the same in it as in the others. A topic deleted and made again
/// under its name is another topic: not followed.
async fn read_added(client: Client, first: pb::TopicDescription, from: Start, tx: Batches) {
    let (topic, id) = (first.name, first.id);
    let mut known = first.partitions.len() as u32;
    let from = match from {
        Start::Latest => Start::Earliest,
        other => other,
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(ADDED_CHECK) => {}
            () = tx.closed() => return,
        }
        // A partition that is not there, a server restarting: looked at again next
        // time (the readers report what is wrong for good).
        if crate::client::bounds(&mut client.log(), &topic, known)
            .await
            .is_err()
        {
            continue;
        }
        let Ok(described) = client.admin().describe_topic(&topic).await else {
            continue;
        };
        if described.id != id {
            return;
        }
        for p in described.partitions.iter().filter(|p| p.partition >= known) {
            if let Some(plan) = plan(p, from, None, true) {
                tokio::spawn(read(client.clone(), topic.clone(), plan, true, tx.clone()));
            }
        }
        known = known.max(described.partitions.len() as u32);
    }
}

pub async fn run(args: ConsumeArgs) -> Result<(), Stop> {
    let format = Format::parse(&args.format, args.print_key)?;
    let from = parse_position(&args.from).map_err(|e| format!("--from {e}"))?;
    let until = args
        .until
        .as_deref()
        .map(parse_position)
        .transpose()
        .map_err(|e| format!("--until {e}"))?;
    let client = args.connect.client().await?;
    if let Some(group) = args.group {
        let consume = super::group::GroupConsume {
            group,
            topic: args.topic,
            topic_pattern: args.topic_pattern,
            from,
            follow: args.follow,
            max_records: args.max_records,
            format,
        };
        return super::group::consume(client, consume).await;
    }
    let name = args
        .topic
        .expect("clap requires --topic without --topic-pattern");
    let topic = client
        .admin()
        .describe_topic(&name)
        .await
        .map_err(describe)?;
    let partitions: Vec<&pb::PartitionDescription> = match args.partition {
        None => topic.partitions.iter().collect(),
        Some(p) => vec![topic
            .partitions
            .iter()
            .find(|d| d.partition == p)
            .ok_or_else(|| {
                format!(
                    "topic {:?} has partitions 0 to {}; --partition {p} does not exist",
                    name,
                    topic.partitions.len().saturating_sub(1)
                )
            })?],
    };
    let (tx, mut rx) = mpsc::channel(16);
    for p in partitions {
        if let Some(plan) = plan(p, from, until, args.follow) {
            let (client, topic) = (client.clone(), name.clone());
            tokio::spawn(read(client, topic, plan, args.follow, tx.clone()));
        }
    }
    // Following the whole topic, with no end: partitions added to it are read too.
    // (With --until, the command ends when its partitions reach it: one added later
    // would either keep it running or be cut off wherever it ended.)
    if args.follow && args.partition.is_none() && until.is_none() {
        let first = topic.clone();
        tokio::spawn(read_added(client.clone(), first, from, tx.clone()));
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
        let before = printed;
        for record in batch? {
            format.write(&mut out, &name, &record);
            printed += 1;
            done = args.max_records.is_some_and(|max| printed >= max);
            if done {
                break;
            }
        }
        // One write per batch: a line-buffered stdout would make a syscall per record.
        write_out(&out)?;
        progress.add(printed - before, out.len() as u64);
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
#[path = "consume_tests.rs"]
mod tests;
