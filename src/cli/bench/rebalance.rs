//! `strom bench rebalance`: how long partitions take to move when a member of a
//! consumer group leaves or joins.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{describe, ensure_topic, parse_run_length, steal_line};
use crate::cli::output::write_out;
use crate::cli::{Connect, Stop};
use crate::client::{Client, GroupConfig, GroupConsumer, Start};
use crate::grpc::pb;

#[derive(clap::Args, Clone)]
pub struct RebalanceArgs {
    #[arg(long, short = 't', default_value = "bench-rebalance")]
    topic: String,
    #[arg(long, default_value_t = 30)]
    partitions: u32,
    /// Members of the group before one leaves.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Leave-and-join rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The members' session timeout; the heartbeat interval is the server's
    /// group_heartbeat_interval_ms, at most a third of this.
    #[arg(long, default_value = "10s")]
    session_timeout: String,
}

/// Polls every member until `done` holds of their assignments; returns how long it took.
async fn until(
    members: &mut [GroupConsumer],
    done: impl Fn(&[Vec<(String, u32)>]) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let owned: Vec<Vec<(String, u32)>> = members.iter().map(|m| m.assignment()).collect();
        if done(&owned) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "no settled assignment after 120 s: {:?}",
                owned.iter().map(Vec::len).collect::<Vec<_>>()
            ));
        }
        for m in members.iter_mut() {
            m.poll(Duration::from_millis(1)).await.map_err(describe)?;
        }
    }
}

/// Every partition owned by exactly one member, and no member more than one over another.
fn settled(owned: &[Vec<(String, u32)>], partitions: u32) -> bool {
    let all: BTreeSet<&(String, u32)> = owned.iter().flatten().collect();
    let total: usize = owned.iter().map(Vec::len).sum();
    let (min, max) = (
        owned.iter().map(Vec::len).min().unwrap_or(0),
        owned.iter().map(Vec::len).max().unwrap_or(0),
    );
    all.len() == partitions as usize && total == all.len() && max - min <= 1
}

pub async fn rebalance(connect: &Connect, args: RebalanceArgs) -> Result<(), Stop> {
    let client = connect.client().await?;
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let session = parse_run_length(&args.session_timeout)?;
    let group = format!("bench-rebalance-{}", std::process::id());
    let config = || {
        let mut c = GroupConfig::new(&group, &[&args.topic]);
        c.session_timeout = session;
        c.start = Start::Latest;
        c
    };
    let mut members = Vec::new();
    for _ in 0..args.members {
        members.push(
            GroupConsumer::join(&client, config())
                .await
                .map_err(describe)?,
        );
    }
    let p = args.partitions;
    until(&mut members, |o| settled(o, p)).await?;
    let interval = heartbeat_interval(&client, &group).await?;
    let mut text = format!(
        "rebalance: {} members, {} partitions, heartbeat interval {} ms\n",
        args.members,
        p,
        interval.as_millis()
    );
    for round in 0..args.rounds {
        let leaving = members.remove(round as usize % members.len());
        let started = Instant::now();
        leaving.close().await.map_err(describe)?;
        let left = started.elapsed() + until(&mut members, |o| settled(o, p)).await?;
        members.push(
            GroupConsumer::join(&client, config())
                .await
                .map_err(describe)?,
        );
        let joined = until(&mut members, |o| settled(o, p)).await?;
        let intervals = |d: Duration| d.as_secs_f64() / interval.as_secs_f64();
        text += &format!(
            "  round {round}: a member left: settled in {:>6} ms ({:.2} intervals); one joined: settled in {:>6} ms ({:.2} intervals)\n",
            left.as_millis(),
            intervals(left),
            joined.as_millis(),
            intervals(joined)
        );
    }
    for m in members {
        m.close().await.map_err(describe)?;
    }
    let _ = client
        .groups()
        .delete_group(pb::DeleteGroupRequest { group })
        .await;
    text += &steal_line();
    write_out(text.as_bytes())
}

async fn heartbeat_interval(client: &Client, group: &str) -> Result<Duration, String> {
    let described = client
        .groups()
        .describe_group(pb::DescribeGroupRequest {
            group: group.into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .map_err(describe)?
        .into_inner();
    // The server answers min(its interval, a third of the session); ask it directly.
    let member = described
        .members
        .first()
        .ok_or("the group has no members")?;
    let probe = pb::HeartbeatRequest {
        group: format!("{group}-probe"),
        topics: vec!["-probe-".into()],
        session_timeout_ms: member.session_timeout_ms,
        ..Default::default()
    };
    let answer = client
        .groups()
        .heartbeat(probe)
        .await
        .map_err(describe)?
        .into_inner();
    let _ = client
        .groups()
        .leave_group(pb::LeaveGroupRequest {
            group: format!("{group}-probe"),
            member_id: answer.member_id,
        })
        .await;
    let _ = client
        .groups()
        .delete_group(pb::DeleteGroupRequest {
            group: format!("{group}-probe"),
        })
        .await;
    Ok(Duration::from_millis(answer.heartbeat_interval_ms.into()))
}
