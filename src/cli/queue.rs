//! `strom queue list|describe|config|reset|delete`: share groups (queues).

use std::collections::BTreeMap;

use clap::Subcommand;

use super::output::{noteln, outln};
use super::position::parse_position;
use super::{describe, Connect, Stop};
use crate::client::every_page;
use crate::client::Start;
use crate::grpc::pb::{self, reset_share_group_request::To};

#[derive(clap::Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// List share groups with their member count.
    List,
    /// Show a share group's config, members, and per partition its start offset and
    /// records available, in flight, accepted, dead-lettered and lost.
    Describe { group: String },
    /// Set config keys (creating the group): lock.ms, max.deliveries, max.in.flight,
    /// redelivery.backoff.ms, redelivery.backoff.max.ms, dead.letter.topic, start,
    /// key.ordered, session.timeout.ms. An empty value restores a default. To see them
    /// without creating the group: `strom queue describe`.
    Config {
        group: String,
        /// KEY=VALUE, repeatable; at least one (a bare `config` would create the group).
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Move the group's start offset in every partition of a topic (replay, or skip
    /// ahead), forgetting the state of the records in between. The group must have no
    /// members.
    Reset {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        /// Where to: earliest, latest, an OFFSET, @TIMESTAMP_MS, -DURATION (e.g. -1h) or
        /// an RFC 3339 time.
        #[arg(long, allow_hyphen_values = true)]
        to: String,
    },
    /// Delete a share group and its state (it must have no members).
    Delete { group: String },
}

pub async fn run(args: QueueArgs) -> Result<(), Stop> {
    let client = args.connect.client().await?;
    let mut queues = client.queues();
    match args.action {
        Action::List => {
            let pages = every_page(|page_token| {
                let mut queues = queues.clone();
                async move {
                    let page = pb::ListShareGroupsRequest {
                        page_size: 0,
                        page_token,
                    };
                    let list = queues.list_share_groups(page).await?.into_inner();
                    Ok((list.groups, list.next_page_token))
                }
            })
            .await
            .map_err(describe)?;
            outln!("{:<30} {:>7}", "GROUP", "MEMBERS")?;
            for g in pages.into_iter().flatten() {
                outln!("{:<30} {:>7}", g.group, g.members)?;
            }
        }
        Action::Describe { group } => {
            let d = queues
                .describe_share_group(pb::DescribeShareGroupRequest {
                    group: group.clone(),
                })
                .await
                .map_err(describe)?
                .into_inner();
            let config: BTreeMap<_, _> = d.config.into_iter().collect();
            let pairs: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!("share group {group}: {}", pairs.join(" "))?;
            outln!(
                "  {:<24} {:>9} {:>12} {:>10} {:>9} {:>10} {:>8} {:>6}",
                "TOPIC",
                "PARTITION",
                "START",
                "AVAILABLE",
                "IN-FLIGHT",
                "ACCEPTED",
                "DEAD",
                "LOST"
            )?;
            for p in &d.partitions {
                outln!(
                    "  {:<24} {:>9} {:>12} {:>10} {:>9} {:>10} {:>8} {:>6}",
                    p.topic,
                    p.partition,
                    p.start_offset,
                    p.available,
                    p.in_flight,
                    p.accepted,
                    p.dead_lettered,
                    p.lost
                )?;
            }
            outln!("  {:<36} {:>8}", "MEMBER", "HOLDING")?;
            for m in &d.members {
                outln!("  {:<36} {:>8}", m.member_id, m.records_held)?;
            }
        }
        Action::Config { group, set } => {
            let mut config = std::collections::HashMap::new();
            for pair in set {
                let (k, v) = super::parse_pair(&pair, "KEY=VALUE")?;
                config.insert(k, v);
            }
            let now = queues
                .alter_share_group_config(pb::AlterShareGroupConfigRequest { group, config })
                .await
                .map_err(describe)?
                .into_inner();
            let sorted: BTreeMap<_, _> = now.config.into_iter().collect();
            for (k, v) in sorted {
                outln!("{k}={v}")?;
            }
        }
        Action::Reset { group, topic, to } => {
            let to = match parse_position(&to).map_err(|e| format!("--to {e}"))? {
                Start::Earliest => To::Earliest(true),
                Start::Latest => To::Latest(true),
                Start::Offset(o) => To::Offset(o),
                Start::Timestamp(ts) => To::TimestampMs(ts),
            };
            let moved = queues
                .reset_share_group(pb::ResetShareGroupRequest {
                    group,
                    topic,
                    to: Some(to),
                })
                .await
                .map_err(describe)?
                .into_inner();
            outln!("{:>9} {:>14} {:>14}", "PARTITION", "BEFORE", "AFTER")?;
            for p in moved.partitions {
                outln!("{:>9} {:>14} {:>14}", p.partition, p.before, p.after)?;
            }
        }
        Action::Delete { group } => {
            queues
                .delete_share_group(pb::DeleteShareGroupRequest {
                    group: group.clone(),
                })
                .await
                .map_err(describe)?;
            noteln!("deleted share group {group}");
        }
    }
    Ok(())
}
