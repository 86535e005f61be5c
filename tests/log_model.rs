//! Model test: random operations on a real `Log` in a temporary directory, compared
//! after every step with a plain in-memory list of records. Operations include clean
//! restarts and crashes that lose an arbitrary part of the unflushed tail.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use strom::log::{records, BatchBuilder, BatchHeader, FlushPolicy, Log, LogConfig, Record};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(Option<u8>, usize, i64)>),
    Read {
        at: u16,
        max_bytes: u16,
    },
    ReadByTime(i64),
    Roll,
    Flush,
    Restart,
    /// Drop without closing, then cut the last segment somewhere past the flushed point.
    Crash {
        cut: u16,
    },
    Truncate {
        batch: u16,
    },
    DeleteBelow {
        at: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let record = (proptest::option::of(0u8..4), 0usize..300, 0i64..1000);
    prop_oneof![
        6 => proptest::collection::vec(record, 1..6).prop_map(Op::Append),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (0i64..1100).prop_map(Op::ReadByTime),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
        1 => any::<u16>().prop_map(|cut| Op::Crash { cut }),
        1 => any::<u16>().prop_map(|batch| Op::Truncate { batch }),
        1 => any::<u16>().prop_map(|at| Op::DeleteBelow { at }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: i64,
}

#[derive(Default)]
struct Model {
    start: u64,
    records: Vec<Rec>,     // offsets start..next
    batch_bases: Vec<u64>, // base offsets of batches still in the log
}

impl Model {
    fn next(&self) -> u64 {
        self.records.last().map_or(self.start, |r| r.offset + 1)
    }
    fn truncate(&mut self, to: u64) {
        self.records.retain(|r| r.offset < to);
        self.batch_bases.retain(|&b| b < to);
    }
}

fn config(policy: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        flush: policy,
        ..LogConfig::default()
    }
}

fn decode(chunks: &[Bytes]) -> Vec<Rec> {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(BatchHeader::parse(rest).length as usize);
            for r in records(batch).unwrap() {
                out.push(Rec {
                    offset: r.offset,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.to_vec(),
                    ts: r.timestamp_ms,
                });
            }
            rest = after;
        }
    }
    out
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn check(log: &Log, model: &Model) {
    assert_eq!(log.next_offset(), model.next(), "next offset");
    assert_eq!(log.log_start_offset(), model.start, "log start");
    if model.records.is_empty() {
        return;
    }
    let all = decode(&log.read(model.start, usize::MAX).unwrap().chunks);
    assert_eq!(all, model.records);
}

fn run(ops: Vec<Op>, policy: FlushPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config(policy)).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(recs) => {
                let mut builder = BatchBuilder::default();
                for (key, len, ts) in &recs {
                    let record = Record {
                        key: key.map(|k| Bytes::from(vec![k; 3])),
                        value: Bytes::from(vec![(*len % 251) as u8; *len]),
                        headers: vec![],
                        timestamp_ms: *ts,
                    };
                    builder.push(&record).unwrap();
                }
                let info = log.append(&mut builder.build().unwrap()).unwrap();
                assert_eq!(info.base_offset, model.next());
                model.batch_bases.push(info.base_offset);
                for (i, (key, len, ts)) in recs.into_iter().enumerate() {
                    let value = vec![(len % 251) as u8; len];
                    model.records.push(Rec {
                        offset: info.base_offset + i as u64,
                        key: key.map(|k| vec![k; 3]),
                        value,
                        ts,
                    });
                }
                if policy == FlushPolicy::EveryAppend {
                    assert!(log.is_flushed());
                }
            }
            Op::Read { at, max_bytes } => {
                if model.records.is_empty() {
                    continue;
                }
                let offset = model.start + u64::from(at) % (model.next() - model.start + 1);
                let read = log.read(offset, usize::from(max_bytes)).unwrap();
                let got = decode(&read.chunks);
                if offset == model.next() {
                    assert!(got.is_empty());
                    continue;
                }
                let first = got.first().expect("at least one batch").offset;
                assert!(
                    first <= offset && model.batch_bases.contains(&first),
                    "starts at the batch holding {offset}"
                );
                assert!(read.size_bytes() <= usize::from(max_bytes) || read.chunks.len() == 1);
                let from = (first - model.start) as usize;
                assert_eq!(got, model.records[from..from + got.len()]);
                assert_eq!(read.next_offset, first + got.len() as u64);
            }
            Op::ReadByTime(ts) => {
                let expected = model
                    .records
                    .iter()
                    .find(|r| r.ts >= ts)
                    .map(|r| (r.offset, r.ts));
                assert_eq!(
                    log.offset_for_timestamp(ts).unwrap(),
                    expected,
                    "first record with ts >= {ts}: its offset and timestamp"
                );
            }
            Op::Roll => log.roll().unwrap(),
            Op::Flush => log.flush().unwrap(),
            Op::Restart => {
                log.close().unwrap();
                let (reopened, report) = Log::open(dir.path(), config(policy)).unwrap();
                assert!(report.clean && report.scanned_bytes == 0);
                log = reopened;
            }
            Op::Crash { cut } => {
                let flushed = log.flushed_offset();
                drop(log);
                // Walk the last segment's batches: the cut may fall anywhere past the
                // flushed ones, and the log must come back with exactly the batches
                // wholly before the cut.
                let path = last_segment(dir.path());
                let bytes = fs::read(&path).unwrap();
                let mut pos = 0usize;
                let mut min_cut = 0usize;
                let mut bounds = vec![];
                while pos < bytes.len() {
                    let header = BatchHeader::parse(&bytes[pos..]);
                    pos += header.length as usize;
                    bounds.push((pos, header.next_offset()));
                    if header.next_offset() <= flushed {
                        min_cut = pos;
                    }
                }
                let cut_at = min_cut + usize::from(cut) % (bytes.len() - min_cut + 1);
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(cut_at as u64)
                    .unwrap();
                let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                let survivors = bounds
                    .iter()
                    .take_while(|(end, _)| *end <= cut_at)
                    .last()
                    .map_or(base, |b| b.1);
                model.truncate(survivors);
                let (reopened, report) = Log::open(dir.path(), config(policy)).unwrap();
                assert!(!report.clean);
                log = reopened;
                assert!(log.next_offset() >= flushed, "flushed data survives");
            }
            Op::Truncate { batch } => {
                if model.batch_bases.is_empty() {
                    continue;
                }
                let to = model.batch_bases[usize::from(batch) % model.batch_bases.len()];
                log.truncate(to).unwrap();
                model.truncate(to);
            }
            Op::DeleteBelow { at } => {
                let offset = model.start + u64::from(at) % (model.next() - model.start + 1);
                log.delete_segments_below(offset).unwrap();
                let start = log.log_start_offset();
                assert!(
                    start >= model.start && start <= offset.max(model.start),
                    "deleted only below {offset}"
                );
                model.start = start;
                model.records.retain(|r| r.offset >= start);
                model.batch_bases.retain(|&b| b >= start);
            }
        }
        check(&log, &model);
    }
    log.close().unwrap();
}

proptest! {
    // PROPTEST_CASES raises the count for a soak run; the default keeps CI quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model_page_cache(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, FlushPolicy::Os);
    }

    #[test]
    fn log_matches_model_fsync_every_append(ops in proptest::collection::vec(op(), 1..30)) {
        run(ops, FlushPolicy::EveryAppend);
    }
}
