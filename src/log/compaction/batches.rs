//! Reading the records of a sealed segment as spans of its bytes, and writing runs of
//! kept records as compacted batches.

use std::io::IoSlice;

use crate::error::{Error, Result};
use crate::log::format::{seal_crc, BatchHeader, ATTR_COMPACTED, FORMAT_VERSION, HEADER_LEN};
use crate::log::record::parse_record;
use crate::log::segment::Segment;

/// One record of a stored batch: its offset, key, whether it is a tombstone, its
/// timestamp, and its bytes (tag, length and body) within the batch.
pub(super) struct RecordSpan<'a> {
    pub(super) offset: u64,
    pub(super) key: Option<&'a [u8]>,
    pub(super) tombstone: bool,
    pub(super) timestamp_ms: i64,
    pub(super) bytes: &'a [u8],
}

/// The batches of a sealed segment, each with its records' spans.
pub(super) fn for_each_batch<'a>(
    segment: &'a Segment,
    mut f: impl FnMut(&BatchHeader, &[RecordSpan<'a>]) -> Result<()>,
) -> Result<()> {
    let bytes = segment.bytes();
    let mut pos = 0usize;
    let mut spans = Vec::new();
    while pos < bytes.len() {
        let header = segment.header_at(pos as u64, None)?;
        let batch = &bytes[pos..pos + header.length as usize];
        crate::log::format::check_crc(batch, &header, segment.log_path(), pos as u64)?;
        spans.clear();
        let mut rest = &batch[HEADER_LEN..];
        while !rest.is_empty() {
            let before = rest;
            let record = parse_record(&mut rest).map_err(|reason| Error::Corruption {
                path: segment.log_path().to_path_buf(),
                position: pos as u64,
                reason,
            })?;
            spans.push(RecordSpan {
                offset: record.offset,
                key: record.key,
                tombstone: record.key.is_some() && record.value.is_empty(),
                timestamp_ms: record.timestamp_ms,
                bytes: &before[..before.len() - rest.len()],
            });
        }
        f(&header, &spans)?;
        pos += header.length as usize;
    }
    Ok(())
}

/// Appends consecutive records of one input batch as one compacted batch.
pub(super) fn write_run(
    out: &mut Segment,
    from: &BatchHeader,
    run: &[&RecordSpan<'_>],
    now_ms: i64,
) -> Result<()> {
    let first = run[0];
    let records_len: usize = run.iter().map(|r| r.bytes.len()).sum();
    let header = BatchHeader {
        base_offset: first.offset,
        length: (HEADER_LEN + records_len) as u32,
        crc: 0,
        version: FORMAT_VERSION,
        attributes: from.attributes | ATTR_COMPACTED,
        record_count: run.len() as u32,
        first_timestamp: first.timestamp_ms,
        max_timestamp: run
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(first.timestamp_ms),
        producer: crate::log::format::ProducerInfo {
            base_sequence: if from.producer.base_sequence < 0 {
                from.producer.base_sequence
            } else {
                from.producer
                    .base_sequence
                    .wrapping_add((first.offset - from.base_offset) as i32)
            },
            ..from.producer
        },
    };
    // The CRC covers the records too: build the batch once, in one buffer.
    let mut batch = vec![0u8; HEADER_LEN + records_len];
    header.write(&mut batch);
    let mut at = HEADER_LEN;
    for r in run {
        batch[at..at + r.bytes.len()].copy_from_slice(r.bytes);
        at += r.bytes.len();
    }
    seal_crc(&mut batch);
    let header = BatchHeader::parse(&batch);
    out.append(&mut [IoSlice::new(&batch)], &header, now_ms, false)
}
