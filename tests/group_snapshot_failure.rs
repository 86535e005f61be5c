//! A commit is applied if and only if it is answered OK. A group's commits go to its
//! journal, and every megabyte of journal is folded into a snapshot; on a full disk the
//! snapshot failed after the commit was journaled and applied, and the commit was
//! answered RESOURCE_EXHAUSTED all the same (hostile-client finding). Here the group's
//! directory is made immutable (`chattr +i`: no new file, even for root, while the
//! journal already open still takes writes), so every snapshot fails. Needs root and a
//! file system with the attribute (ext2/3/4, xfs, btrfs); skipped with a message
//! otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::requests::{produce, record};
use common::server::TestServer;
use strom::grpc::pb;

/// `chattr +i` on a directory, taken off when dropped (or the test's temporary
/// directory could not be removed).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

const PARTITIONS: u32 = 1024;

fn commit(n: usize) -> pb::CommitOffsetsRequest {
    pb::CommitOffsetsRequest {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: (0..PARTITIONS)
            .map(|partition| pb::OffsetCommit {
                topic: "t".into(),
                partition,
                offset: 0,
                metadata: format!("commit {n}"),
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_commit_whose_snapshot_fails_is_answered_as_it_is_applied() {
    // In the build's directory: /tmp may be a tmpfs, which has no immutable files.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", PARTITIONS).await;
    client.groups().commit_offsets(commit(0)).await.unwrap();
    let groups = dir.path().join("groups");
    let group_dir = std::fs::read_dir(&groups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("g."))
        .expect("the group's directory");
    let Some(_immutable) = Immutable::set(&group_dir) else {
        eprintln!("skipped: chattr +i failed (needs root and a file system with the attribute)");
        return;
    };
    // About 30 KB a commit: past a megabyte of journal, every commit tries a snapshot.
    let mut answered_ok = 0;
    for n in 1..=60 {
        let answer = client.groups().commit_offsets(commit(n)).await;
        let request = pb::FetchOffsetsRequest {
            group: "g".into(),
            topics: vec![],
            ..Default::default()
        };
        let stored = client
            .groups()
            .fetch_offsets(request)
            .await
            .unwrap()
            .into_inner();
        let applied = stored
            .offsets
            .iter()
            .all(|o| o.metadata == format!("commit {n}"));
        match answer {
            Ok(_) => {
                assert!(applied, "commit {n} answered OK and not applied");
                answered_ok += 1;
            }
            Err(status) => assert!(!applied, "commit {n} refused ({status:?}) and applied"),
        }
    }
    assert_eq!(
        answered_ok, 60,
        "a failed snapshot does not fail the commit"
    );
}

/// The same for a share group's acknowledgements.
#[tokio::test]
async fn an_acknowledgement_whose_snapshot_fails_is_answered_as_it_is_applied() {
    // In the build's directory: /tmp may be a tmpfs, which has no immutable files.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    for _ in 0..4 {
        let request = produce("t", Some(0), vec![record("x"); 25_000]);
        client.log().produce(request).await.unwrap();
    }
    let config = [
        ("start", "earliest"),
        ("max.in.flight", "100000"),
        ("lock.ms", "600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let alter = pb::AlterShareGroupConfigRequest {
        group: "s".into(),
        config,
    };
    client
        .queues()
        .alter_share_group_config(alter)
        .await
        .unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < 100_000 {
        let fetch = pb::ShareFetchRequest {
            group: "s".into(),
            member_id: "w".into(),
            topic: "t".into(),
            max_records: 10_000,
            max_wait_ms: 0,
        };
        let got = client
            .queues()
            .share_fetch(fetch)
            .await
            .unwrap()
            .into_inner();
        assert!(!got.records.is_empty());
        offsets.extend(
            got.records
                .iter()
                .map(|r| r.record.as_ref().unwrap().offset),
        );
    }
    let group_dir = std::fs::read_dir(dir.path().join("share-groups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("s."))
        .expect("the group's directory");
    let Some(_immutable) = Immutable::set(&group_dir) else {
        eprintln!("skipped: chattr +i failed (needs root and a file system with the attribute)");
        return;
    };
    // About 33 bytes of journal an offset: a megabyte within four acknowledgements.
    let mut answered_ok = 0;
    for (n, chunk) in offsets.chunks(10_000).enumerate() {
        let ack = pb::ShareAcknowledgeRequest {
            group: "s".into(),
            member_id: "w".into(),
            topic: "t".into(),
            acks: vec![pb::Acknowledgement {
                partition: 0,
                offsets: chunk.to_vec(),
                r#type: pb::AckType::Accept as i32,
            }],
        };
        let answer = client.queues().share_acknowledge(ack).await;
        let describe = pb::DescribeShareGroupRequest { group: "s".into() };
        let described = client
            .queues()
            .describe_share_group(describe)
            .await
            .unwrap()
            .into_inner();
        let accepted = described.partitions[0].accepted;
        let expected = 10_000 * (n as u64 + 1);
        match answer {
            Ok(_) => {
                assert_eq!(accepted, expected, "acknowledgement {n} answered OK");
                answered_ok += 1;
            }
            Err(status) => assert!(
                accepted < expected,
                "acknowledgement {n} refused ({status:?}) and applied"
            ),
        }
    }
    assert_eq!(
        answered_ok, 10,
        "a failed snapshot does not fail the acknowledgement"
    );
}

/// A delete of offsets is written as a snapshot: one that fails is refused, and the
/// offsets are still served, as a restart reads them.
#[tokio::test]
async fn a_delete_of_offsets_whose_snapshot_fails_deletes_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", PARTITIONS).await;
    client.groups().commit_offsets(commit(0)).await.unwrap();
    let group_dir = std::fs::read_dir(dir.path().join("groups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("g."))
        .expect("the group's directory");
    let stored = || async {
        let request = pb::FetchOffsetsRequest {
            group: "g".into(),
            ..Default::default()
        };
        let answer = client.groups().fetch_offsets(request).await.unwrap();
        answer.into_inner().offsets.len()
    };
    let delete = pb::DeleteOffsetsRequest {
        group: "g".into(),
        topic: "t".into(),
        partitions: vec![0, 1],
    };
    {
        let Some(_immutable) = Immutable::set(&group_dir) else {
            eprintln!(
                "skipped: chattr +i failed (needs root and a file system with the attribute)"
            );
            return;
        };
        let refused = client.groups().delete_offsets(delete.clone()).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(stored().await, PARTITIONS as usize);
    }
    server.stop().await.unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client().await;
    let request = pb::FetchOffsetsRequest {
        group: "g".into(),
        ..Default::default()
    };
    let answer = client.groups().fetch_offsets(request).await.unwrap();
    assert_eq!(answer.into_inner().offsets.len(), PARTITIONS as usize);
    // And with the directory writable again, the delete goes through.
    let deleted = client.groups().delete_offsets(delete).await.unwrap();
    assert_eq!(deleted.into_inner().deleted, [0, 1]);
    server.stop().await.unwrap();
}
