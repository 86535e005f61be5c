//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod exchanges;
pub mod kafka;
pub mod principals;
pub mod process;
pub mod proxy;
pub mod requests;
pub mod server;
pub mod tls;

use std::path::Path;

use bytes::Bytes;
use strom::log::{records, BatchBuilder, BatchHeader, Log, PendingBatch, Record};

/// A number from the environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads until the server closes `socket`, up to `within`: whether it did.
pub fn closed_within(socket: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    while std::time::Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {} // nothing yet
        }
    }
    false
}

/// A loopback address nothing listens on now.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// splitmix64: a tiny deterministic generator, so a failing run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value stored at `offset`: derived from the offset alone, so any record can be
/// checked without knowing how the log was written.
pub fn value_for(offset: u64) -> Vec<u8> {
    let len = (Rng(offset).next() % 1500) as usize;
    let tag = format!("{offset};");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

/// A batch of `n` records for offsets starting at `first`.
pub fn batch_at(first: u64, n: u64) -> PendingBatch {
    let mut builder = BatchBuilder::default();
    for offset in first..first + n {
        let record = Record {
            value: Bytes::from(value_for(offset)),
            timestamp_ms: offset as i64,
            ..Record::default()
        };
        builder.push(&record).unwrap();
    }
    builder.build().unwrap()
}

/// Reads the whole log and checks every record: contiguous offsets from the log start,
/// each with its derived value. Returns the number of records.
pub fn verify_log(log: &Log) -> u64 {
    let mut expected = log.log_start_offset();
    while expected < log.next_offset() {
        let read = log
            .read(expected, 1 << 20)
            .unwrap_or_else(|e| panic!("offset {expected} unreadable: {e}"));
        for chunk in &read.chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (batch, after) = rest.split_at(BatchHeader::parse(rest).length as usize);
                for r in records(batch).unwrap() {
                    if r.offset < expected {
                        continue;
                    }
                    assert_eq!(r.offset, expected, "gap or reordering");
                    assert_eq!(
                        r.value,
                        &value_for(r.offset)[..],
                        "wrong value at {}",
                        r.offset
                    );
                    expected += 1;
                }
                rest = after;
            }
        }
    }
    expected - log.log_start_offset()
}

pub fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// The directory of topic `name` under a data directory: `topics/<name>.<id>`.
pub fn topic_dir(data_dir: &Path, name: &str) -> std::path::PathBuf {
    let topics = data_dir.join("topics");
    let found: Vec<_> = std::fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            file.rsplit_once('.')
                .is_some_and(|(n, id)| n == name && id.len() == 32)
        })
        .collect();
    assert_eq!(found.len(), 1, "one directory for topic {name}: {found:?}");
    found.into_iter().next().unwrap()
}

/// A group's committed offsets, by (topic, partition).
#[allow(dead_code)] // not every test binary uses it
pub async fn committed(
    client: &strom::client::Client,
    group: &str,
) -> std::collections::BTreeMap<(String, u32), u64> {
    let request = strom::grpc::pb::FetchOffsetsRequest {
        group: group.into(),
        ..Default::default()
    };
    let answer = client.groups().fetch_offsets(request).await.unwrap();
    let offsets = answer.into_inner().offsets.into_iter();
    offsets
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect()
}

/// Every record of a partition from its start to its end, as (offset, value as text),
/// read with the client's `Consumer`.
pub async fn fetch_all(
    client: &strom::client::Client,
    topic: &str,
    partition: u32,
) -> Vec<(u64, String)> {
    let mut consumer =
        strom::client::Consumer::new(client, topic, partition, strom::client::Start::Earliest)
            .await
            .unwrap();
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(std::time::Duration::ZERO).await.unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(
            records
                .into_iter()
                .map(|r| (r.offset, String::from_utf8(r.value.to_vec()).unwrap())),
        );
    }
}

/// `GET /metrics` from `at`, over HTTP/1.0 (the reply ends with the connection).
pub fn scrape(at: &str) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(at).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: strom\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    reply
}
