//! A consumer group across a server restart. Membership lives in memory only, so after
//! a restart the members of before are unknown, and each goes on consuming what it
//! owned until its next heartbeat is refused. A hostile sweep saw the first member to
//! heartbeat after a restart given every partition at once, and two members consume
//! one partition side by side for up to a heartbeat interval. A group found on disk
//! now hands out no partition for two heartbeat intervals after the start, by which
//! time every member of before has heartbeated, been refused and dropped its own.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::server::TestServer;
use strom::broker::Limits;
use strom::client::Client;
use strom::groups::GroupsConfig;
use strom::grpc::pb;
use strom::server::ServeOptions;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(30);
/// The server's heartbeat interval here: the hold after a start is twice it.
const INTERVAL: Duration = Duration::from_secs(2);

fn options() -> ServeOptions {
    ServeOptions {
        groups: GroupsConfig::new(INTERVAL, Duration::from_secs(600)),
        ..Default::default()
    }
}

/// A member's heartbeat: its id and epoch (empty and 0 to join), and what it owns.
async fn heartbeat(
    client: &Client,
    group: &str,
    member: (&str, i64),
    owned: &BTreeSet<u32>,
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    let owned = match owned.is_empty() {
        true => Vec::new(),
        false => vec![pb::TopicPartitions {
            topic: "t".into(),
            partitions: owned.iter().copied().collect(),
            ..Default::default()
        }],
    };
    let request = pb::HeartbeatRequest {
        group: group.into(),
        member_id: member.0.into(),
        member_epoch: member.1,
        topics: vec!["t".into()],
        session_timeout_ms: 10_000,
        owned,
        ..Default::default()
    };
    let mut groups = client.groups();
    let answer = tokio::time::timeout(LIMIT, groups.heartbeat(request));
    answer
        .await
        .expect("answered in time")
        .map(|r| r.into_inner())
}

/// A member as the test drives it.
struct Member {
    id: String,
    epoch: i64,
    owned: BTreeSet<u32>,
}

impl Member {
    async fn join(client: &Client) -> Member {
        let mut member = Member {
            id: String::new(),
            epoch: 0,
            owned: BTreeSet::new(),
        };
        member.beat(client).await.unwrap();
        member
    }

    /// One heartbeat; it owns what it is told from then on.
    async fn beat(&mut self, client: &Client) -> Result<(), tonic::Status> {
        let answer = heartbeat(client, "g", (&self.id, self.epoch), &self.owned).await?;
        self.id = answer.member_id;
        self.epoch = answer.member_epoch;
        self.owned = answer
            .assignment
            .iter()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        Ok(())
    }
}

/// Heartbeats both members until each owns one partition.
async fn settle(client: &Client, a: &mut Member, b: &mut Member) {
    let deadline = Instant::now() + LIMIT;
    while a.owned.len() != 1 || b.owned.len() != 1 {
        assert!(Instant::now() < deadline, "{:?} {:?}", a.owned, b.owned);
        a.beat(client).await.unwrap();
        b.beat(client).await.unwrap();
        assert!(a.owned.is_disjoint(&b.owned), "{:?} {:?}", a.owned, b.owned);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Members A and B of a group with committed offsets own a partition each; the server
/// restarts. A heartbeats first, is refused, and joins again: it gets nothing while B,
/// not heard from yet, may still be consuming its partition. B heartbeats, is refused,
/// drops its partition and joins again; once the hold is over they own one each, and at
/// no point did two members own one partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_no_partition_goes_to_a_member_while_another_may_own_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options()).await;
    let client = server.client_with_topic("t", 2).await;
    let mut a = Member::join(&client).await;
    let mut b = Member::join(&client).await;
    settle(&client, &mut a, &mut b).await;
    let commit = pb::CommitOffsetsRequest {
        group: "g".into(),
        member_id: a.id.clone(),
        member_epoch: a.epoch,
        offsets: vec![pb::OffsetCommit {
            topic: "t".into(),
            partition: *a.owned.first().unwrap(),
            offset: 0,
            metadata: String::new(),
        }],
    };
    client.groups().commit_offsets(commit).await.unwrap();
    server.stop().await.unwrap();

    // Before the start: the hold counts from when the server serves, later.
    let started = Instant::now();
    let server = TestServer::start_with_options(dir.path(), Limits::default(), options()).await;
    let client = server.client().await;
    let refused = a.beat(&client).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    // Refused, A drops its partition and joins again; B still consumes its own.
    let mut a = Member::join(&client).await;
    let mut checked = 0;
    for _ in 0..3 {
        if started.elapsed() < 2 * INTERVAL {
            checked += 1;
            assert!(
                a.owned.is_empty(),
                "A was given {:?} while B may still consume its partition",
                a.owned
            );
        }
        a.beat(&client).await.unwrap();
    }
    assert!(
        checked > 0,
        "the restart took longer than the hold: nothing was checked"
    );
    // A group made since the start had no members before it: not held.
    let fresh = heartbeat(&client, "new", ("", 0), &BTreeSet::new()).await;
    let given = &fresh.unwrap().assignment;
    assert_eq!(given.iter().map(|t| t.partitions.len()).sum::<usize>(), 2);
    let refused = b.beat(&client).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    let mut b = Member::join(&client).await;
    settle(&client, &mut a, &mut b).await;
    server.stop().await.unwrap();
}
