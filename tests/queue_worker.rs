//! The Rust `Worker` against a real server: accept, release and reject over one stream,
//! delivery counts, a long job kept by renewing its lock, and a worker that goes away
//! giving its records back at once.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use strom::client::{Client, Worker, WorkerConfig};
use strom::grpc::pb;

async fn setup(client: &Client, pairs: &[(&str, &str)], n: usize) {
    let config = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client
        .queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: "g".into(),
            config,
        })
        .await
        .unwrap();
    let request = pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: (0..n)
            .map(|i| pb::Record {
                value: Bytes::from(format!("v{i}")),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    client.log().produce(request).await.unwrap();
}

async fn counts(client: &Client) -> pb::SharePartitionState {
    let d = client
        .queues()
        .describe_share_group(pb::DescribeShareGroupRequest { group: "g".into() })
        .await
        .unwrap()
        .into_inner();
    d.partitions[0].clone()
}

async fn eventually(client: &Client, done: impl Fn(&pb::SharePartitionState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = counts(client).await;
        if done(&c) {
            return;
        }
        assert!(Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_accepts_releases_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    setup(&client, &[("start", "earliest")], 3).await;
    let mut worker = Worker::connect(&client, WorkerConfig::new("g", "t"))
        .await
        .unwrap();
    let wait = Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let job = worker.next(wait).await.unwrap().expect("a job");
        seen.push((job.offset, job.delivery_count));
        match (job.offset, job.delivery_count) {
            (0, _) => worker.accept(&job).await.unwrap(),
            (1, 1) => worker.release(&job).await.unwrap(),
            (1, _) => worker.accept(&job).await.unwrap(),
            _ => worker.reject(&job).await.unwrap(),
        }
    }
    seen.sort();
    assert_eq!(seen, [(0, 1), (1, 1), (1, 2), (2, 1)]);
    worker.close().await;
    eventually(&client, |c| c.accepted == 2 && c.dead_lettered == 1).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_job_keeps_its_record_by_renewing_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    // A 1 s lock renewed every 200 ms: a slow machine has 800 ms of slack per renewal.
    setup(&client, &[("start", "earliest"), ("lock.ms", "1000")], 1).await;
    let mut config = WorkerConfig::new("g", "t");
    config.renew_every = Some(Duration::from_millis(200));
    let mut worker = Worker::connect(&client, config).await.unwrap();
    let job = worker.next(Duration::from_secs(10)).await.unwrap().unwrap();
    // Three lock lengths of work: without renewal the lock ends and the record goes
    // back (the second worker below would get it).
    let mut other = Worker::connect(&client, WorkerConfig::new("g", "t"))
        .await
        .unwrap();
    assert!(other
        .next(Duration::from_millis(3000))
        .await
        .unwrap()
        .is_none());
    worker.accept(&job).await.unwrap();
    worker.close().await;
    eventually(&client, |c| c.accepted == 1).await;
    other.close().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_that_goes_away_gives_its_records_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = server.client_with_topic("t", 1).await;
    setup(&client, &[("start", "earliest")], 5).await;
    let mut first = Worker::connect(&client, WorkerConfig::new("g", "t"))
        .await
        .unwrap();
    let job = first.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(job.delivery_count, 1);
    eventually(&client, |c| c.in_flight == 5).await; // all prefetched
    drop(first); // no close: the connection's stream just ends
    let mut second = Worker::connect(&client, WorkerConfig::new("g", "t"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut offsets = Vec::new();
    while offsets.len() < 5 {
        let job = second.next(Duration::from_secs(10)).await.unwrap().unwrap();
        assert_eq!(job.delivery_count, 2);
        offsets.push(job.offset);
        second.accept(&job).await.unwrap();
    }
    // Well before the 30 s lock would have ended.
    assert!(started.elapsed() < Duration::from_secs(10));
    second.close().await;
    server.stop().await.unwrap();
}
