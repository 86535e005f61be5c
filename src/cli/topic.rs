//! `strom topic create|list|describe|alter|delete|delete-records`.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::output::{noteln, outln};
use super::{describe, parse_pair, Connect, Stop};
use crate::broker::topic::KEYS;
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: u32,
        /// Configuration, `key=value` (repeatable): retention.ms, retention.bytes, durability,
        /// segment.bytes, segment.ms, ... (`strom topic describe` lists every key).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List topic names.
    List,
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Change configuration keys (`strom topic alter NAME key=value...`), or add
    /// partitions (`strom topic alter NAME --partitions 8`).
    Alter {
        name: String,
        /// Keys to change: retention.ms, retention.bytes, durability, segment.bytes, ...;
        /// `key=` (empty) returns a key to the server's default.
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// The same as a flag (repeatable).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// The partition count wanted, in all: partitions are added up to it (never
        /// removed). Keys move: a key's new records may go to another partition.
        #[arg(long, short = 'p', value_name = "COUNT")]
        partitions: Option<u32>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Delete a partition's records below an offset (the log start moves there).
    DeleteRecords {
        name: String,
        #[arg(long, short = 'p')]
        partition: u32,
        /// Records below this offset go; `latest` deletes up to the high watermark.
        #[arg(long, value_name = "OFFSET|latest")]
        before: String,
    },
}

fn print(topic: &pb::TopicDescription) -> Result<(), Stop> {
    let mut config: Vec<_> = topic.config.iter().collect();
    config.sort();
    outln!("topic {}", topic.name)?;
    for (k, v) in config {
        outln!("  {k} = {v}")?;
    }
    outln!(
        "  {:>9} {:>14} {:>14} {:>14} {:>8}  {:<24} {}",
        "partition",
        "start",
        "end",
        "bytes",
        "segments",
        "oldest record",
        "next deletion"
    )?;
    for p in &topic.partitions {
        outln!(
            "  {:>9} {:>14} {:>14} {:>14} {:>8}  {:<24} {}",
            p.partition,
            p.log_start_offset,
            p.high_watermark,
            p.size_bytes,
            p.segment_count,
            time(p.oldest_timestamp_ms),
            time(p.next_deletion_ms)
        )?;
    }
    // When partitions were made, for a topic that has had some added: each run of
    // partitions made together.
    let runs = topic
        .partitions
        .chunk_by(|a, b| a.created_ms == b.created_ms);
    let runs: Vec<_> = runs.collect();
    if runs.len() > 1 {
        for run in runs {
            let (first, last) = (run[0].partition, run[run.len() - 1].partition);
            let made = time((run[0].created_ms > 0).then_some(run[0].created_ms));
            match first == last {
                true => outln!("  partition {first} made {made}")?,
                false => outln!("  partitions {first} to {last} made {made}")?,
            }
        }
    }
    Ok(())
}

/// A time as RFC 3339 in UTC, to the millisecond; `-` when there is none.
fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or("-".into(), |t| format!("{t:.3}"))
}

/// Configuration pairs as typed, checked for the `key=value` shape only: which keys
/// and values are valid is the server's to say.
fn config(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| parse_pair(p, "key=value, e.g. segment.bytes=268435456"))
        .collect()
}

/// The server's refusal of a configuration, with a hint when a key as typed is a
/// near miss of a known one (`segment_bytes`, `Segment.Bytes`).
fn config_error(status: tonic::Status, config: &BTreeMap<String, String>) -> String {
    let message = describe(status);
    let hints: Vec<String> = config
        .keys()
        .filter(|key| !KEYS.contains(&key.as_str()))
        .filter_map(|key| {
            let folded = key.to_ascii_lowercase().replace(['_', '-'], ".");
            KEYS.iter()
                .find(|known| **known == folded)
                .map(|known| format!("{known} (not {key})"))
        })
        .collect();
    if hints.is_empty() {
        message
    } else {
        format!("{message}; did you mean {}?", hints.join(", "))
    }
}

pub async fn run(args: TopicArgs) -> Result<(), Stop> {
    let mut admin = args.connect.client().await?.admin();
    match args.action {
        Action::Create {
            name,
            partitions,
            config: pairs,
        } => {
            let config = config(&pairs)?;
            let topic = admin
                .create_topic(&name, partitions, config.clone())
                .await
                .map_err(|status| config_error(status, &config))?;
            print(&topic)?;
        }
        Action::List => {
            let listed = admin.list_all_topics().await.map_err(describe)?;
            for name in listed.names {
                outln!("{name}")?;
            }
            // On stderr: a pipeline reading names gets only topics it can use.
            for broken in listed.unavailable {
                noteln!(
                    "strom: topic {} is unavailable: {} (strom topic delete removes it)",
                    broken.name,
                    broken.reason
                );
            }
        }
        Action::Describe { name } => print(&admin.describe_topic(&name).await.map_err(describe)?)?,
        Action::Alter {
            name,
            mut pairs,
            config: flags,
            partitions,
        } => {
            pairs.extend(flags);
            if name.contains('=') {
                return Err(format!(
                    "{name:?} is not a topic name: write `strom topic alter NAME key=value`"
                )
                .into());
            }
            if pairs.is_empty() && partitions.is_none() {
                return Err(format!(
                    "nothing to change: name keys to set, e.g. `strom topic alter {name} segment.bytes=268435456`, or a partition count (`--partitions 8`)"
                )
                .into());
            }
            let config = config(&pairs)?;
            // The count is checked before the config changes and added after it: a
            // count the server refuses leaves nothing changed, and a key it refuses
            // leaves the partitions as they were.
            if let Some(count) = partitions {
                admin
                    .add_partitions(&name, count, true)
                    .await
                    .map_err(describe)?;
            }
            let mut topic = None;
            if !config.is_empty() {
                topic = Some(
                    admin
                        .alter_topic_config(&name, config.clone())
                        .await
                        .map_err(|status| config_error(status, &config))?,
                );
            }
            if let Some(count) = partitions {
                topic = Some(
                    admin
                        .add_partitions(&name, count, false)
                        .await
                        .map_err(describe)?,
                );
            }
            print(&topic.expect("one of the two was asked"))?;
        }
        Action::Delete { name } => {
            admin.delete_topic(&name).await.map_err(describe)?;
            noteln!("deleted topic {name}");
        }
        Action::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let before = match before.as_str() {
                "latest" => None,
                text => Some(text.parse::<u64>().map_err(|_| {
                    format!("--before {text:?}: give an offset (a whole number) or `latest`")
                })?),
            };
            let start = admin
                .delete_records(&name, partition, before)
                .await
                .map_err(describe)?;
            outln!("topic {name} partition {partition} now starts at offset {start}")?;
        }
    }
    Ok(())
}
