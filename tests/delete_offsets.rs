//! Deleting a group's committed offsets of a topic (gRPC DeleteOffsets, `strom group
//! delete-offsets`): what is deleted stays deleted across restarts while commits
//! before and after it are kept, and a topic a member consumes is refused.

mod common;

use std::collections::BTreeMap;

use common::cli::Serve;
use common::requests::{produce, record};
use common::server::TestServer;
use strom::client::Client;
use strom::grpc::pb;
use tonic::Code;

async fn commit(client: &Client, group: &str, offsets: &[(&str, u32, u64)]) {
    let request = pb::CommitOffsetsRequest {
        group: group.into(),
        offsets: offsets
            .iter()
            .map(|&(topic, partition, offset)| pb::OffsetCommit {
                topic: topic.into(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    client.groups().commit_offsets(request).await.unwrap();
}

async fn delete(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: &[u32],
) -> Result<Vec<u32>, tonic::Status> {
    let request = pb::DeleteOffsetsRequest {
        group: group.into(),
        topic: topic.into(),
        partitions: partitions.to_vec(),
    };
    let answer = client.groups().delete_offsets(request).await?;
    Ok(answer.into_inner().deleted)
}

fn expect(entries: &[(&str, u32, u64)]) -> BTreeMap<(String, u32), u64> {
    (entries.iter())
        .map(|&(t, p, o)| ((t.to_string(), p), o))
        .collect()
}

#[tokio::test]
async fn deleted_offsets_stay_deleted_and_the_rest_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 3).await;
    let mut admin = client.admin();
    admin
        .create_topic("u", 1, Default::default())
        .await
        .unwrap();
    for (topic, partition) in [("t", 0), ("t", 1), ("t", 2), ("u", 0)] {
        let request = produce(topic, Some(partition), vec![record("x"); 10]);
        client.log().produce(request).await.unwrap();
    }
    commit(&client, "g", &[("t", 0, 5), ("t", 1, 3), ("u", 0, 1)]).await;

    assert_eq!(delete(&client, "g", "t", &[0]).await.unwrap(), [0]);
    assert_eq!(
        common::committed(&client, "g").await,
        expect(&[("t", 1, 3), ("u", 0, 1)])
    );
    // Again, and a partition never committed: nothing to delete, not an error.
    assert_eq!(
        delete(&client, "g", "t", &[0, 2]).await.unwrap(),
        [] as [u32; 0]
    );
    // What does not exist.
    for (group, topic, partitions, what) in [
        ("g", "t", vec![3], "partition"),
        ("g", "nope", vec![], "nope"),
        ("nobody", "t", vec![], "nobody"),
    ] {
        let err = delete(&client, group, topic, &partitions)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(err.message().contains(what), "{}", err.message());
    }
    // A commit after the delete goes on from the snapshot the delete wrote.
    commit(&client, "g", &[("t", 2, 7)]).await;
    server.stop().await.unwrap();

    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let kept = expect(&[("t", 1, 3), ("t", 2, 7), ("u", 0, 1)]);
    assert_eq!(
        common::committed(&client, "g").await,
        kept,
        "after a restart"
    );
    // Every partition of the topic (the CLI), then a restart again.
    server.stop().await.unwrap();
    let serve = Serve::start(dir.path());
    let out = serve.run(&["group", "delete-offsets", "g", "-t", "t"], b"");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("partitions 1,2"), "{said}");
    drop(serve);
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    assert_eq!(
        common::committed(&client, "g").await,
        expect(&[("u", 0, 1)])
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn offsets_of_a_topic_a_member_consumes_are_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 2).await;
    let mut admin = client.admin();
    admin
        .create_topic("u", 1, Default::default())
        .await
        .unwrap();
    for topic in ["t", "u"] {
        let request = produce(topic, Some(0), vec![record("x"); 4]);
        client.log().produce(request).await.unwrap();
    }
    commit(&client, "g", &[("t", 0, 2), ("u", 0, 2)]).await;
    // A member joins, subscribed to t by a pattern.
    let join = pb::HeartbeatRequest {
        group: "g".into(),
        topic_pattern: "t".into(),
        ..Default::default()
    };
    let joined = client.groups().heartbeat(join).await.unwrap().into_inner();
    let refused = |err: tonic::Status, topic: &str| {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let says = format!("consume topic \"{topic}\"");
        assert!(err.message().contains(&says), "{}", err.message());
    };
    refused(delete(&client, "g", "t", &[]).await.unwrap_err(), "t");
    // It moves to u, and has not given t's partitions back yet: still refused.
    let owning = |partitions: Vec<u32>| pb::TopicPartitions {
        topic: "t".into(),
        partitions,
        ..Default::default()
    };
    let moved = pb::HeartbeatRequest {
        group: "g".into(),
        member_id: joined.member_id.clone(),
        member_epoch: joined.member_epoch,
        topics: vec!["u".into()],
        owned: vec![owning(vec![0, 1])],
        ..Default::default()
    };
    let moved = client.groups().heartbeat(moved).await.unwrap().into_inner();
    refused(delete(&client, "g", "t", &[1]).await.unwrap_err(), "t");
    refused(delete(&client, "g", "u", &[]).await.unwrap_err(), "u");
    // Once it has given them back, t's offsets can go, and u's cannot.
    let given_back = pb::HeartbeatRequest {
        group: "g".into(),
        member_id: joined.member_id,
        member_epoch: moved.member_epoch,
        topics: vec!["u".into()],
        ..Default::default()
    };
    client.groups().heartbeat(given_back).await.unwrap();
    assert_eq!(delete(&client, "g", "t", &[]).await.unwrap(), [0]);
    assert_eq!(
        common::committed(&client, "g").await,
        expect(&[("u", 0, 2)])
    );
    server.stop().await.unwrap();
}
