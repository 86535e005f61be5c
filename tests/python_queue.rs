//! Queue workers written in Python from the protos alone: `examples/python/queue_worker.py`,
//! two at once in one share group against the real server. Every record is handled and
//! accepted once (a "fail" record twice: released, then accepted with its delivery
//! count up), and the "poison" record is dead-lettered. Needs grpcio, which
//! `scripts/test.sh` installs into `target/pyenv` (STROM_PYTHON).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::process::run_within;
use common::server::TestServer;
use strom::grpc::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_python_workers_share_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("jobs", 2).await;
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: "q".into(),
            config: [("start".to_string(), "earliest".to_string())].into(),
        })
        .await
        .unwrap();
    let mut values: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    values.push("fail-1".into());
    values.push("poison-1".into());
    for (i, v) in values.iter().enumerate() {
        let request = pb::ProduceRequest {
            topic: "jobs".into(),
            partition: Some(i as u32 % 2),
            records: vec![pb::Record {
                value: Bytes::from(v.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        client.log().produce(request).await.unwrap();
    }
    let python = std::env::var("STROM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/queue_worker.py"
    );
    let addr = server.addr.to_string();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (python, addr) = (python.clone(), addr.clone());
            tokio::task::spawn_blocking(move || {
                let mut command = Command::new(&python);
                command
                    .args([script, &addr, "q", "jobs", "--idle-exit-ms", "5000"])
                    .stderr(Stdio::piped());
                run_within(&mut command, b"", Duration::from_secs(60))
            })
        })
        .collect();
    let mut handled: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for w in workers {
        let out = w.await.unwrap();
        assert!(
            out.status.success(),
            "python worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            handled
                .entry(fields[3].to_string())
                .or_default()
                .push(fields[2].parse().unwrap());
        }
    }
    assert_eq!(handled.len(), 42);
    for (value, counts) in &mut handled {
        counts.sort();
        let expected: &[u32] = if value.starts_with("fail") {
            &[1, 2]
        } else {
            &[1]
        };
        assert_eq!(counts, expected, "{value}");
    }
    let d = client
        .queues()
        .describe_share_group(pb::DescribeShareGroupRequest { group: "q".into() })
        .await
        .unwrap()
        .into_inner();
    let accepted: u64 = d.partitions.iter().map(|p| p.accepted).sum();
    let dead: u64 = d.partitions.iter().map(|p| p.dead_lettered).sum();
    assert_eq!((accepted, dead), (41, 1));
    server.stop().await.unwrap();
}
