//! Tests of `records.rs`.

use super::*;
use crate::grpc::pb;
use crate::log::{BatchBuilder, FlushPolicy, Log, LogConfig, Record};
use prost::Message;

/// What Python or Go clients see: our hand-encoded response decodes with a
/// generated decoder of the same message (here prost's, for `Record`).
#[derive(Clone, PartialEq, Message)]
struct GeneratedFetchResponse {
    #[prost(message, repeated, tag = "1")]
    records: Vec<pb::Record>,
    #[prost(uint64, tag = "2")]
    high_watermark: u64,
    #[prost(uint64, tag = "3")]
    log_start_offset: u64,
    #[prost(uint64, tag = "4")]
    next_offset: u64,
}

/// A log of these batches of values (the directory goes with it).
fn log_of(batches: impl IntoIterator<Item = Vec<Bytes>>) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    for values in batches {
        let mut builder = BatchBuilder::default();
        for value in values {
            let record = Record {
                value,
                timestamp_ms: 7,
                ..Record::default()
            };
            builder.push(&record).unwrap();
        }
        log.append(&mut builder.build().unwrap()).unwrap();
    }
    (dir, log)
}

#[test]
fn response_is_standard_protobuf_and_skips_records_below_the_offset() {
    let (_dir, log) = log_of((0..3).map(|batch| {
        (0..4)
            .map(|i| Bytes::from(format!("{batch}-{i}")))
            .collect()
    }));
    let read = log.read(2, 1 << 20).unwrap();
    let (records, next_offset) = RecordSet::from_batches(&read, 2, 1 << 20);
    assert_eq!(next_offset, read.next_offset);
    let response = FetchResponse {
        records,
        high_watermark: 12,
        log_start_offset: 0,
        next_offset,
    };
    let bytes = response.encode_to_vec();
    let decoded = GeneratedFetchResponse::decode(&bytes[..]).unwrap();
    let offsets: Vec<u64> = decoded.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (2..12).collect::<Vec<_>>());
    assert_eq!(decoded.records[0].value, Bytes::from("0-2"));
    assert_eq!((decoded.high_watermark, decoded.next_offset), (12, 12));
    // And back through our own decoder.
    let ours = FetchResponse::decode(&bytes[..]).unwrap();
    assert_eq!(
        ours.records
            .iter()
            .map(|r| r.unwrap().offset)
            .collect::<Vec<_>>(),
        offsets
    );
    assert_eq!(ours.encode_to_vec(), bytes);
}

/// A response's long runs of records go out as slices of the log's map (no copy);
/// short ones, and the other fields, are gathered; together they are the message.
#[test]
fn long_runs_of_records_are_sent_as_slices_of_the_map() {
    // Batches of 1, 100 and 1 records of 1000 bytes: 1 KB, 100 KB and 1 KB runs.
    let (_dir, log) = log_of([1, 100, 1].map(|n| vec![Bytes::from(vec![5u8; 1000]); n]));
    let read = log.read(0, 1 << 20).unwrap();
    let map = read.chunks[0].as_ptr_range();
    let (records, next_offset) = RecordSet::from_batches(&read, 0, 1 << 20);
    let response = FetchResponse {
        records,
        high_watermark: 102,
        log_start_offset: 0,
        next_offset,
    };
    let whole = response.encode_to_vec();
    let mut head = BytesMut::from(&[9u8][..]);
    let mut pieces = VecDeque::new();
    response.write_pieces(head.split(), &mut pieces);
    let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
    assert_eq!(
        pieces.len(),
        3,
        "head and first run, the long run, the rest: {lens:?}"
    );
    assert!(map.contains(&pieces[1].as_ptr()), "the long run was copied");
    assert!(!map.contains(&pieces[0].as_ptr()) && !map.contains(&pieces[2].as_ptr()));
    let sent: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(sent[0], 9);
    assert_eq!(&sent[1..], &whole[..]);
}

/// Whole batches taken without walking their records give what walking every
/// record gives: the records at or after `from` that fit `max_bytes` (at least one).
#[test]
fn whole_batches_and_cut_batches_take_the_same_records_as_a_walk_of_each() {
    let batches = [3, 1, 5, 2, 4].into_iter().enumerate().map(|(batch, n)| {
        (0..n)
            .map(|i| Bytes::from(vec![b'v'; 10 + 7 * batch + i]))
            .collect()
    });
    let (_dir, log) = log_of(batches);
    let mut sizes = Vec::new(); // each record's entry length, by offset
    let read = log.read(0, 1 << 20).unwrap();
    let (all, _) = RecordSet::from_batches(&read, 0, 1 << 20);
    for chunk in &all.chunks {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let before = rest.len();
            parse_record(&mut rest).unwrap();
            sizes.push(before - rest.len());
        }
    }
    assert_eq!(sizes.len(), 15);
    for from in 0..15u64 {
        for max_bytes in [1, 20, 31, 60, 100, 150, 250, 1 << 20] {
            let read = log.read(from, 1 << 20).unwrap();
            let (set, next) = RecordSet::from_batches(&read, from, max_bytes);
            let offsets: Vec<u64> = set.iter().map(|r| r.unwrap().offset).collect();
            let mut expected = Vec::new();
            let mut used = 0;
            for offset in from..15 {
                let len = sizes[offset as usize];
                if used + len > max_bytes && !expected.is_empty() {
                    break;
                }
                used += len;
                expected.push(offset);
            }
            assert_eq!(offsets, expected, "from {from}, max_bytes {max_bytes}");
            assert_eq!(next, expected.last().unwrap() + 1);
        }
    }
}

/// A client decodes a response however its bytes are split: runs of whole entries
/// inside a piece are taken as slices, an entry cut by the split is copied.
#[test]
fn a_response_decodes_the_same_wherever_its_frames_split_it() {
    let values = (0..6).map(|i| Bytes::from(vec![b'a' + i as u8; 20 + 30 * i]));
    let (_dir, log) = log_of([values.collect()]);
    let read = log.read(0, 1 << 20).unwrap();
    let (records, next_offset) = RecordSet::from_batches(&read, 0, 1 << 20);
    let response = FetchResponse {
        records,
        high_watermark: 6,
        log_start_offset: 0,
        next_offset,
    };
    let wire = Bytes::from(response.encode_to_vec());
    for at in 0..=wire.len() {
        let pieces = wire.slice(..at).chain(wire.slice(at..));
        let decoded = FetchResponse::decode(pieces).unwrap();
        assert_eq!(decoded.encode_to_vec(), wire, "split at {at}");
        assert_eq!(decoded.records.iter().count(), 6);
        assert_eq!((decoded.high_watermark, decoded.next_offset), (6, 6));
    }
    // Whole in one piece, the records are one slice of it.
    let decoded = FetchResponse::decode(wire.clone()).unwrap();
    assert_eq!(decoded.records.chunks.len(), 1);
    assert!(wire
        .as_ptr_range()
        .contains(&decoded.records.chunks[0].as_ptr()));
}
