//! `strom group list|describe|reset|delete|delete-offsets`, and `strom consume --group`.

use std::time::Duration;

use clap::Subcommand;

use super::format::Format;
use super::interrupt::Interrupts;
use super::output::{noteln, outln, write_out};
use super::position::parse_position;
use super::{describe, Connect, Stop};
use crate::client::{every_page, Client, GroupConfig, GroupConsumer, Start};
use crate::grpc::pb::{self, reset_offsets_request::To};

#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// List groups with their state and member count.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (replay, or skip ahead). Prints the plan; applies
    /// it only with --execute. The group must have no members.
    Reset {
        group: String,
        /// Topic whose offsets to move.
        #[arg(long, short = 't')]
        topic: String,
        /// Partitions to move, e.g. `0,2` (default: all).
        #[arg(long, short = 'p', value_delimiter = ',')]
        partitions: Vec<u32>,
        /// Where to: earliest, latest, an OFFSET, @TIMESTAMP_MS, -DURATION (e.g. -1h) or
        /// an RFC 3339 time.
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "shift_by",
            required_unless_present = "shift_by"
        )]
        to: Option<String>,
        /// Or: move each committed offset by this many records (negative: back).
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the plan (without it, nothing changes).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group and its committed offsets (it must have no members).
    Delete { group: String },
    /// Delete a group's committed offsets for a topic it no longer consumes (refused
    /// while a member subscribes to it).
    DeleteOffsets {
        group: String,
        /// Topic whose offsets to delete.
        #[arg(long, short = 't')]
        topic: String,
        /// Partitions whose offsets to delete, e.g. `0,2` (default: all).
        #[arg(long, short = 'p', value_delimiter = ',')]
        partitions: Vec<u32>,
    },
}

pub async fn run(args: GroupArgs) -> Result<(), Stop> {
    let client = args.connect.client().await?;
    let mut groups = client.groups();
    match args.action {
        Action::List => {
            let pages = every_page(|page_token| {
                let mut groups = groups.clone();
                async move {
                    let page = pb::ListGroupsRequest {
                        page_size: 0,
                        page_token,
                    };
                    let list = groups.list_groups(page).await?.into_inner();
                    Ok((list.groups, list.next_page_token))
                }
            })
            .await
            .map_err(describe)?;
            outln!("{:<30} {:<12} {:>7}", "GROUP", "STATE", "MEMBERS")?;
            for g in pages.into_iter().flatten() {
                outln!("{:<30} {:<12} {:>7}", g.group, g.state, g.members)?;
            }
        }
        Action::Describe { group } => {
            let g = client.describe_group(&group).await.map_err(describe)?;
            print_group(&g)?;
        }
        Action::Reset {
            group,
            topic,
            partitions,
            to,
            shift_by,
            execute,
        } => {
            let to = match (to, shift_by) {
                (_, Some(n)) => To::ShiftBy(n),
                (Some(text), None) => {
                    match parse_position(&text).map_err(|e| format!("--to {e}"))? {
                        Start::Earliest => To::Earliest(true),
                        Start::Latest => To::Latest(true),
                        Start::Offset(o) => To::Offset(o),
                        Start::Timestamp(ts) => To::TimestampMs(ts),
                    }
                }
                (None, None) => unreachable!("clap requires one of them"),
            };
            let request = pb::ResetOffsetsRequest {
                group: group.clone(),
                topic,
                partitions,
                to: Some(to),
                dry_run: !execute,
            };
            let plan = groups
                .reset_offsets(request)
                .await
                .map_err(describe)?
                .into_inner();
            outln!(
                "{:<30} {:>9} {:>14} {:>14}",
                "TOPIC",
                "PARTITION",
                "PREVIOUS",
                "NEW"
            )?;
            for o in &plan.offsets {
                let previous = if o.previous < 0 {
                    "-".to_string()
                } else {
                    o.previous.to_string()
                };
                outln!(
                    "{:<30} {:>9} {:>14} {:>14}",
                    plan.topic,
                    o.partition,
                    previous,
                    o.offset
                )?;
            }
            if execute {
                noteln!("reset {} offsets of group {group}", plan.offsets.len());
            } else {
                noteln!("dry run: nothing changed; add --execute to apply");
            }
        }
        Action::Delete { group } => {
            groups
                .delete_group(pb::DeleteGroupRequest {
                    group: group.clone(),
                })
                .await
                .map_err(describe)?;
            noteln!("deleted group {group}");
        }
        Action::DeleteOffsets {
            group,
            topic,
            partitions,
        } => {
            let request = pb::DeleteOffsetsRequest {
                group: group.clone(),
                topic: topic.clone(),
                partitions,
            };
            let answer = groups.delete_offsets(request).await.map_err(describe)?;
            let deleted = answer.into_inner().deleted;
            let list: Vec<String> = deleted.iter().map(u32::to_string).collect();
            match deleted.is_empty() {
                true => {
                    noteln!("group {group} had no committed offsets of topic {topic} to delete")
                }
                false => noteln!(
                    "deleted group {group}'s committed offsets of topic {topic}, partitions {}",
                    list.join(",")
                ),
            }
        }
    }
    Ok(())
}

fn partitions(list: &[pb::TopicPartitions]) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|t| {
            let ps: Vec<String> = t.partitions.iter().map(u32::to_string).collect();
            format!("{}[{}]", t.topic, ps.join(","))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn print_group(g: &pb::DescribeGroupResponse) -> Result<(), Stop> {
    outln!(
        "group {} state {} epoch {}",
        g.group,
        g.state,
        g.group_epoch
    )?;
    if !g.members.is_empty() {
        outln!(
            "  {:<32} {:<16} {:>6}  {}",
            "MEMBER",
            "INSTANCE",
            "EPOCH",
            "ASSIGNMENT"
        )?;
        for m in &g.members {
            let instance = if m.instance_id.is_empty() {
                "-"
            } else {
                &m.instance_id
            };
            let mut assignment = partitions(&m.assignment);
            if !m.revoking.is_empty() {
                assignment = format!("{assignment} (giving back {})", partitions(&m.revoking));
            }
            outln!(
                "  {:<32} {:<16} {:>6}  {}",
                m.member_id,
                instance,
                m.member_epoch,
                assignment
            )?;
        }
    }
    outln!(
        "  {:<24} {:>9} {:>14} {:>14} {:>10}  {}",
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "END",
        "LAG",
        "MEMBER"
    )?;
    for o in &g.offsets {
        let dash = |v: i64| {
            if v < 0 {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let member = if o.member_id.is_empty() {
            "-"
        } else {
            &o.member_id
        };
        outln!(
            "  {:<24} {:>9} {:>14} {:>14} {:>10}  {}",
            o.topic,
            o.partition,
            dash(o.committed),
            o.high_watermark,
            dash(o.lag),
            member
        )?;
    }
    Ok(())
}

/// What `strom consume --group` needs from `strom consume`'s arguments.
pub struct GroupConsume {
    pub group: String,
    pub topic: Option<String>,
    pub topic_pattern: Option<String>,
    pub from: Start,
    pub follow: bool,
    pub max_records: Option<u64>,
    pub format: Format,
}

/// Consumes as a member of a group: prints records of the partitions the group assigns
/// to this process, commits as it goes, and leaves the group at the end. Without
/// --follow it ends once no record has come for two seconds.
pub async fn consume(client: Client, args: GroupConsume) -> Result<(), Stop> {
    let mut config = GroupConfig::new(&args.group, &[]);
    config.topics = args.topic.iter().cloned().collect();
    config.topic_pattern = args.topic_pattern.clone();
    config.start = match args.from {
        Start::Latest => Start::Latest,
        Start::Earliest => Start::Earliest,
        _ => return Err(Stop::Failed("with --group, --from is earliest or latest: where to start in partitions the group has not committed (use `strom group reset` to move a group)".into())),
    };
    config.auto_commit = Some(Duration::from_secs(1));
    let unassigned_limit = config.session_timeout;
    // Ctrl-C or SIGTERM: commit what was printed and leave, so that the group's other
    // members (or this one run again) get its partitions at once, not after the
    // session timeout. Seen between polls (a poll stopped halfway could lose records it
    // had taken), so it waits for the poll in hand: against a server that does not
    // answer, until the connection's keep-alive gives up (about 20 s; see
    // `client::KEEPALIVE_INTERVAL`), and a second signal ends the process at once.
    let interrupts = Interrupts::watch()?;
    let mut consumer = GroupConsumer::join(&client, config)
        .await
        .map_err(describe)?;
    let idle = Duration::from_secs(2);
    // Without --follow, the idle time counts from when the member first has partitions:
    // a new member may wait a heartbeat or two for others to give some up (it exited
    // with nothing beside a member busy printing). One that gets none within a session
    // timeout will not get any.
    let started = tokio::time::Instant::now();
    let mut assigned = false;
    let mut printed = 0u64;
    let mut out = Vec::new();
    let mut last_record = started;
    let result = loop {
        if let Some(signal) = interrupts.seen() {
            break Err(Stop::Interrupted(signal));
        }
        let batch = match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) => batch,
            Err(status) => break Err(Stop::Failed(describe(status))),
        };
        if !assigned && !consumer.assignment().is_empty() {
            assigned = true;
            last_record = tokio::time::Instant::now();
        }
        let Some(batch) = batch else {
            let idle_over = match assigned {
                true => last_record.elapsed() >= idle,
                false => started.elapsed() >= unassigned_limit,
            };
            if !args.follow && idle_over {
                break Ok(());
            }
            continue;
        };
        last_record = tokio::time::Instant::now();
        let mut done = false;
        for record in &batch.records {
            args.format.write(&mut out, &batch.topic, record);
            printed += 1;
            done = args.max_records.is_some_and(|max| printed >= max);
            if done {
                // The rest of the batch is not printed: the commit at close must not
                // count it as consumed.
                consumer.seek(&batch.topic, record.partition, record.offset + 1);
                break;
            }
        }
        if let Err(stop) = write_out(&out) {
            if let Stop::Failed(_) = stop {
                // Not written (a full disk, say): not consumed. The batch goes back,
                // whole, as it may be partly written (printed again next time rather
                // than lost to the group). A closed output is an end the reader chose:
                // what it was sent counts as consumed.
                let first = batch.records.first().expect("a batch has records");
                consumer.seek(&batch.topic, first.partition, first.offset);
            }
            break Err(stop);
        }
        out.clear();
        if done {
            break Ok(());
        }
    };
    // Commits what was printed and gives the partitions back at once. A commit that
    // fails fails the command: the records printed will be printed again by the next
    // run, and a script must be able to tell.
    let closed = consumer.close().await.map_err(|status| {
        Stop::Failed(format!(
            "committing and leaving the group: {}; what was printed will be printed again",
            describe(status)
        ))
    });
    // A signal that came as the loop ended still sets the exit status.
    match (result, closed, interrupts.seen()) {
        (Err(stop), closed, _) => {
            if let Err(Stop::Failed(message)) = closed {
                noteln!("strom: {message}");
            }
            Err(stop)
        }
        (Ok(()), Err(stop), _) => Err(stop),
        (Ok(()), Ok(()), Some(signal)) => Err(Stop::Interrupted(signal)),
        (Ok(()), Ok(()), None) => Ok(()),
    }
}
