//! `strom topic create|list|describe|alter|delete`.

use clap::Subcommand;

use super::output::{noteln, outln};
use super::{describe, parse_pairs, Connect, Stop};
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
        /// Configuration, `key=value` (repeatable): durability, segment.bytes, segment.ms, max.message.bytes.
        #[arg(long = "config", short = 'c')]
        config: Vec<String>,
    },
    /// List topic names.
    List,
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Change configuration keys, `key=value` (repeatable).
    Alter {
        name: String,
        #[arg(long = "config", short = 'c', required = true)]
        config: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

fn print(topic: &pb::TopicDescription) -> Result<(), Stop> {
    let mut config: Vec<_> = topic.config.iter().collect();
    config.sort();
    outln!("topic {}", topic.name)?;
    for (k, v) in config {
        outln!("  {k} = {v}")?;
    }
    outln!(
        "  {:>9} {:>14} {:>14} {:>14} {:>8}",
        "partition",
        "start",
        "end",
        "bytes",
        "segments"
    )?;
    for p in &topic.partitions {
        outln!(
            "  {:>9} {:>14} {:>14} {:>14} {:>8}",
            p.partition,
            p.log_start_offset,
            p.high_watermark,
            p.size_bytes,
            p.segment_count
        )?;
    }
    Ok(())
}

pub async fn run(args: TopicArgs) -> Result<(), Stop> {
    let mut admin = args.connect.client().await?.admin();
    match args.action {
        Action::Create {
            name,
            partitions,
            config,
        } => {
            let topic = admin
                .create_topic(&name, partitions, parse_pairs(&config)?)
                .await
                .map_err(describe)?;
            print(&topic)?;
        }
        Action::List => {
            for name in admin.list_topics().await.map_err(describe)? {
                outln!("{name}")?;
            }
        }
        Action::Describe { name } => print(&admin.describe_topic(&name).await.map_err(describe)?)?,
        Action::Alter { name, config } => print(
            &admin
                .alter_topic_config(&name, parse_pairs(&config)?)
                .await
                .map_err(describe)?,
        )?,
        Action::Delete { name } => {
            admin.delete_topic(&name).await.map_err(describe)?;
            noteln!("deleted topic {name}");
        }
    }
    Ok(())
}
