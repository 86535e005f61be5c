//! Damage to a stopped server's files, then a restart: the server starts, logs what it
//! found (path, and what it did), serves every partition it can, and answers DATA_LOSS
//! for a damaged range instead of wrong records; nothing sealed is cut silently.
//!
//! One data directory takes every kind of damage at once, each in its own partition or
//! group, so the test also shows that one damaged file never takes the others down.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::cli::Serve;
use strom::client::Client;
use strom::grpc::pb;
use tonic::Code;

const PER_PARTITION: u64 = 3_000;
/// Records written to partition 3 after its idempotent batch: more than a segment.
const AFTER: u64 = 1_200;

fn value(partition: u32, n: u64) -> String {
    format!("p{partition}-n{n}-{}", "x".repeat(1000))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn block<T>(addr: &str, f: impl AsyncFnOnce(Client) -> T) -> T {
    runtime().block_on(async {
        let client = Client::connect(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), f(client))
            .await
            .expect("within a minute")
    })
}

/// The files of a partition directory, by suffix, in name (offset) order.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Reads partition `p` from offset 0 to the end; a damaged range is skipped where the
/// DATA_LOSS message says reading resumes. Returns (offset, value) and the skipped ranges.
async fn read(
    client: &Client,
    topic: &str,
    p: u32,
) -> (Vec<(u64, String)>, Vec<(u64, u64, String)>) {
    let (mut records, mut skipped, mut offset) = (Vec::new(), Vec::new(), 0);
    loop {
        let r = client
            .log()
            .fetch(pb::FetchRequest {
                topic: topic.into(),
                partition: p,
                offset,
                max_bytes: 1 << 20,
                ..Default::default()
            })
            .await;
        let r = match r {
            Ok(r) => r.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::DataLoss, "{status:?}");
                let resume: u64 = status
                    .message()
                    .split("fetch from ")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("DATA_LOSS says where to resume: {status:?}"));
                assert!(resume > offset, "{status:?}");
                skipped.push((offset, resume, status.message().to_string()));
                offset = resume;
                continue;
            }
        };
        for record in r.records.iter() {
            let record = record.unwrap();
            records.push((
                record.offset,
                String::from_utf8(record.value.to_vec()).unwrap(),
            ));
        }
        if r.next_offset >= r.high_watermark {
            return (records, skipped);
        }
        offset = r.next_offset;
    }
}

/// Every record read is the one written at its offset.
fn check_values(p: u32, records: &[(u64, String)]) {
    for (offset, v) in records {
        assert_eq!(v, &value(p, *offset), "partition {p} offset {offset}");
    }
}

#[test]
fn damaged_files_are_reported_served_around_and_never_answered_with_wrong_records() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    serve.ok(
        &[
            "topic",
            "create",
            "a",
            "-p",
            "4",
            "--config",
            "segment.bytes=1048576",
        ],
        b"",
    );
    let producer = block(&serve.addr, async |client| {
        for p in 0..4u32 {
            for chunk in 0..PER_PARTITION / 100 {
                let records = (chunk * 100..(chunk + 1) * 100)
                    .map(|n| pb::Record {
                        value: Bytes::from(value(p, n)),
                        ..Default::default()
                    })
                    .collect();
                let r = pb::ProduceRequest {
                    topic: "a".into(),
                    partition: Some(p),
                    records,
                    ..Default::default()
                };
                client.log().produce(r).await.unwrap();
            }
        }
        // An idempotent producer's state in partition 3, and two groups' offsets.
        let id = client
            .log()
            .init_producer(pb::InitProducerRequest::default())
            .await
            .unwrap()
            .into_inner();
        let once = pb::ProduceRequest {
            topic: "a".into(),
            partition: Some(3),
            records: vec![pb::Record {
                value: Bytes::from(value(3, PER_PARTITION)),
                ..Default::default()
            }],
            producer_id: Some(id.producer_id),
            producer_epoch: Some(0),
            base_sequence: Some(0),
            ..Default::default()
        };
        client.log().produce(once.clone()).await.unwrap();
        // More after it, so that its batch is in a sealed segment: only the damaged
        // snapshots and the sealed segment's headers know of it.
        for chunk in 0..AFTER / 100 {
            let first = PER_PARTITION + 1 + chunk * 100;
            let records = (first..first + 100)
                .map(|n| pb::Record {
                    value: Bytes::from(value(3, n)),
                    ..Default::default()
                })
                .collect();
            let r = pb::ProduceRequest {
                topic: "a".into(),
                partition: Some(3),
                records,
                ..Default::default()
            };
            client.log().produce(r).await.unwrap();
        }
        for group in ["g", "h"] {
            let commit = pb::CommitOffsetsRequest {
                group: group.into(),
                offsets: vec![pb::OffsetCommit {
                    topic: "a".into(),
                    partition: 0,
                    offset: 42,
                    metadata: String::new(),
                }],
                ..Default::default()
            };
            client.groups().commit_offsets(commit).await.unwrap();
        }
        once
    });
    drop(serve); // SIGKILL: the next start recovers

    let topic = common::topic_dir(dir.path(), "a");
    let part = |p: u32| topic.join(p.to_string());
    // Partition 0: bytes flipped inside its first sealed segment.
    let sealed0 = files(&part(0), ".log")[0].clone();
    let mut bytes = fs::read(&sealed0).unwrap();
    for b in &mut bytes[300_000..300_064] {
        *b ^= 0xA5;
    }
    fs::write(&sealed0, bytes).unwrap();
    // Partition 1: its first sealed segment cut short.
    let sealed1 = files(&part(1), ".log")[0].clone();
    let len = fs::metadata(&sealed1).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&sealed1)
        .unwrap()
        .set_len(len - 5_000)
        .unwrap();
    // Partition 2: one sealed segment's offset index deleted, another's time index garbage.
    fs::remove_file(&files(&part(2), ".index")[0]).unwrap();
    fs::write(
        &files(&part(2), ".timeindex")[1],
        b"garbage garbage garbage!",
    )
    .unwrap();
    // Partition 3: garbage recovery checkpoint and producer snapshots.
    fs::write(part(3).join("recovery-checkpoint"), b"not a checkpoint").unwrap();
    for snapshot in files(&part(3), ".snapshot") {
        fs::write(snapshot, b"not a snapshot").unwrap();
    }
    // Group g: its offsets snapshot garbage.
    let groups = dir.path().join("groups");
    let g = fs::read_dir(&groups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("g."));
    let g_snapshot = files(&g.unwrap(), ".snap")
        .pop()
        .expect("group g has a snapshot");
    fs::write(&g_snapshot, b"not a group snapshot").unwrap();

    let serve = Serve::start(dir.path());
    block(&serve.addr, async |client| {
        // 0: the flipped range is DATA_LOSS naming the file; everything else is right.
        let (records, skipped) = read(&client, "a", 0).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0]
                .2
                .contains(&sealed0.file_name().unwrap().to_string_lossy().to_string()),
            "{skipped:?}"
        );
        check_values(0, &records);
        let lost = skipped[0].1 - skipped[0].0;
        assert_eq!(
            records.len() as u64 + lost,
            PER_PARTITION,
            "only the damaged range is missing"
        );
        // 1: the cut end of the sealed segment is DATA_LOSS; not cut further, not hidden.
        let (records, skipped) = read(&client, "a", 1).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        check_values(1, &records);
        assert_eq!(
            records.len() as u64 + skipped[0].1 - skipped[0].0,
            PER_PARTITION
        );
        // 2: indexes rebuilt; every record, and a lookup by time that uses them.
        let (records, skipped) = read(&client, "a", 2).await;
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(records.len() as u64, PER_PARTITION);
        check_values(2, &records);
        // 3: scanned whole; the idempotent producer's retry is still recognised.
        let (records, _) = read(&client, "a", 3).await;
        assert_eq!(records.len() as u64, PER_PARTITION + 1 + AFTER);
        check_values(3, &records);
        let retry = client
            .log()
            .produce(producer.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            retry.base_offset, PER_PARTITION,
            "answered, not written again"
        );
        // Group g says its file is damaged; group h is untouched.
        let fetch = |group: &str| pb::FetchOffsetsRequest {
            group: group.into(),
            topics: vec![],
            ..Default::default()
        };
        let err = client.groups().fetch_offsets(fetch("g")).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{err:?}");
        assert!(
            err.message().contains(&g_snapshot.display().to_string()),
            "{err:?}"
        );
        let h = client
            .groups()
            .fetch_offsets(fetch("h"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.offsets[0].offset, 42);
    });
    // What it found, said with the path.
    let log = serve.stderr.lock().unwrap().join("\n");
    let said = |what: &str, path: &Path| {
        let line = log
            .lines()
            .find(|l| l.contains(what) && l.contains(&path.display().to_string()));
        assert!(
            line.is_some(),
            "no {what:?} naming {}:\n{log}",
            path.display()
        );
    };
    said(
        "recovery checkpoint is damaged",
        &part(3).join("recovery-checkpoint"),
    );
    said("producer snapshot is damaged", &part(3));
    said("index of sealed segment is missing or damaged", &part(2));
    said(
        "time index of a sealed segment is missing or damaged",
        &part(2),
    );
    said("unreadable", &sealed0);
    said("unreadable", &sealed1);
    assert!(log.contains("producer snapshot is damaged"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
