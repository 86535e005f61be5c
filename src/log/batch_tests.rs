//! Tests of `batch.rs`.

use super::*;
use crate::log::format::check_crc;
use crate::log::record::records;
use crate::log::{FlushPolicy, Log, LogConfig};

/// Records around the borrow threshold: tiny, just below, at and far above it, with
/// and without keys and headers.
fn mixed(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            let size = [0, 1, BORROW_AT_LEAST - 1, BORROW_AT_LEAST, 5000][i % 5];
            Record {
                key: (i % 3 != 0).then(|| Bytes::from(vec![b'k'; (i * 37) % 400])),
                value: Bytes::from(vec![(i % 251) as u8; size]),
                headers: (0..i % 3)
                    .map(|h| Header {
                        name: format!("h{h}"),
                        value: Bytes::from(vec![b'v'; h * 300]),
                    })
                    .collect(),
                timestamp_ms: 1_700_000_000_000 + i as i64,
            }
        })
        .collect()
}

fn referenced(records: &[Record]) -> PendingBatch {
    let mut builder = BatchBuilder::for_records(records);
    for r in records {
        builder.push(r).unwrap();
    }
    builder.build().unwrap()
}

fn copied(records: &[Record]) -> PendingBatch {
    let mut builder = BatchBuilder::default();
    for r in records {
        let headers = r.headers.iter().map(|h| (h.name.as_str(), &h.value[..]));
        builder
            .push_parts(r.key.as_deref(), &r.value, headers, r.timestamp_ms)
            .unwrap();
    }
    builder.build().unwrap()
}

#[test]
fn referenced_and_copied_payloads_store_the_same_bytes() {
    for count in [1, 5, 700] {
        let input = mixed(count);
        let (mut a, mut b) = (referenced(&input), copied(&input));
        assert!(
            !a.shared.is_empty() || count == 1,
            "large payloads are referenced"
        );
        let (_, header) = a.assign(42);
        let _ = b.assign(42);
        let stored = a.to_vec();
        assert_eq!(stored, b.to_vec(), "{count} records");
        assert_eq!(stored.len(), header.length as usize);
        check_crc(&stored, &header, std::path::Path::new("test"), 0).unwrap();
        let back = records(&stored).unwrap();
        assert_eq!(back.len(), count);
        for (i, (view, record)) in back.iter().zip(&input).enumerate() {
            assert_eq!(view.offset, 42 + i as u64);
            assert_eq!(view.value, &record.value[..]);
            assert_eq!(view.key, record.key.as_deref());
            assert_eq!(view.headers().count(), record.headers.len());
        }
    }
}

#[test]
fn a_log_writes_referenced_pieces_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    // More referenced payloads than Linux takes in one pwritev (IOV_MAX, 1,024).
    let records = mixed(3000);
    let mut batch = referenced(&records);
    assert!(batch.shared.len() > 1024, "{} pieces", batch.shared.len());
    let expected = {
        let mut b = copied(&records);
        let _ = b.assign(0);
        b.to_vec()
    };
    log.append(&mut batch).unwrap();
    let read = log.read(0, 16 << 20).unwrap();
    assert_eq!(read.chunks.len(), 1);
    assert_eq!(&read.chunks[0][..], &expected[..]);
}
