//! The record-batch header: the fixed 56 bytes in front of every batch in a `.log` file.
//!
//! ```text
//!  0        8       12      16  17  18      20          24              32
//!  +--------+-------+-------+---+---+-------+-----------+---------------+
//!  | base   | length| crc   |ver|att| rsvd  | rec count | first ts      |
//!  | offset |  u32  |  u32  |u8 |u8 |  u16  |    u32    |    i64        |
//!  +--------+-------+-------+---+---+-------+-----------+---------------+
//!  32              40              48      50      52          56
//!  | max ts        | producer id   | epoch | rsvd  | base seq  | records...
//!  |    i64        |    i64        |  i16  |  u16  |   i32     |
//! ```
//! All integers are little-endian. `length` counts the whole batch, header included. The
//! CRC-32 (IEEE, as computed by `crc32fast`) covers bytes `[0, 12)` and `[16, length)`:
//! everything but itself, so a torn length or base offset is caught as surely as a
//! flipped bit in a value. `storage-format.md` holds the same table; a test keeps the
//! two in step.

use crate::error::{Error, Result};

/// Version byte of the batch format this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 56;
/// Attribute bit of a batch written by compaction: offsets between the batch before it
/// (or its segment's base) and its base offset may have been removed.
pub const ATTR_COMPACTED: u8 = 0x01;
/// Attribute bit of a batch whose producer id, epoch and sequence were checked by an
/// idempotent append (`log/producers`). Only such batches rebuild the producers' state
/// at open: a batch written before the server checked those fields carries whatever a
/// client put there.
pub const ATTR_IDEMPOTENT: u8 = 0x02;

/// `(name, byte offset, size)` of every header field, in order. The single source for the
/// accessors below and for the test against `storage-format.md`.
pub const HEADER_FIELDS: [(&str, usize, usize); 13] = [
    ("base_offset", BASE_OFFSET_AT, 8),
    ("length", LENGTH_AT, 4),
    ("crc", CRC_AT, 4),
    ("version", VERSION_AT, 1),
    ("attributes", ATTRIBUTES_AT, 1),
    ("reserved", 18, 2),
    ("record_count", RECORD_COUNT_AT, 4),
    ("first_timestamp", FIRST_TIMESTAMP_AT, 8),
    ("max_timestamp", MAX_TIMESTAMP_AT, 8),
    ("producer_id", PRODUCER_ID_AT, 8),
    ("producer_epoch", PRODUCER_EPOCH_AT, 2),
    ("reserved", 50, 2),
    ("base_sequence", BASE_SEQUENCE_AT, 4),
];
pub const BASE_OFFSET_AT: usize = 0;
pub const LENGTH_AT: usize = 8;
pub const CRC_AT: usize = 12;
pub const VERSION_AT: usize = 16;
pub const ATTRIBUTES_AT: usize = 17;
pub const RECORD_COUNT_AT: usize = 20;
pub const FIRST_TIMESTAMP_AT: usize = 24;
pub const MAX_TIMESTAMP_AT: usize = 32;
pub const PRODUCER_ID_AT: usize = 40;
pub const PRODUCER_EPOCH_AT: usize = 48;
pub const BASE_SEQUENCE_AT: usize = 52;

/// Producer id, epoch and sequence of the first record, for idempotent producers.
/// A batch from a producer that does not use idempotence carries `NO_PRODUCER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

pub const NO_PRODUCER: ProducerInfo = ProducerInfo {
    id: -1,
    epoch: -1,
    base_sequence: -1,
};

/// A parsed batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub version: u8,
    pub attributes: u8,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer: ProducerInfo,
}

fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N].try_into().expect("slice of N bytes")
}

impl BatchHeader {
    /// Reads the header at the start of `buf`, which must hold at least `HEADER_LEN` bytes.
    pub fn parse(buf: &[u8]) -> BatchHeader {
        BatchHeader {
            base_offset: u64::from_le_bytes(le(buf, BASE_OFFSET_AT)),
            length: u32::from_le_bytes(le(buf, LENGTH_AT)),
            crc: u32::from_le_bytes(le(buf, CRC_AT)),
            version: buf[VERSION_AT],
            attributes: buf[ATTRIBUTES_AT],
            record_count: u32::from_le_bytes(le(buf, RECORD_COUNT_AT)),
            first_timestamp: i64::from_le_bytes(le(buf, FIRST_TIMESTAMP_AT)),
            max_timestamp: i64::from_le_bytes(le(buf, MAX_TIMESTAMP_AT)),
            producer: ProducerInfo {
                id: i64::from_le_bytes(le(buf, PRODUCER_ID_AT)),
                epoch: i16::from_le_bytes(le(buf, PRODUCER_EPOCH_AT)),
                base_sequence: i32::from_le_bytes(le(buf, BASE_SEQUENCE_AT)),
            },
        }
    }

    /// Writes every field but the CRC (which covers the rest, so it is computed last).
    pub fn write(&self, buf: &mut [u8]) {
        buf[BASE_OFFSET_AT..][..8].copy_from_slice(&self.base_offset.to_le_bytes());
        buf[LENGTH_AT..][..4].copy_from_slice(&self.length.to_le_bytes());
        buf[VERSION_AT] = self.version;
        buf[ATTRIBUTES_AT] = self.attributes;
        buf[18..20].fill(0);
        buf[RECORD_COUNT_AT..][..4].copy_from_slice(&self.record_count.to_le_bytes());
        buf[FIRST_TIMESTAMP_AT..][..8].copy_from_slice(&self.first_timestamp.to_le_bytes());
        buf[MAX_TIMESTAMP_AT..][..8].copy_from_slice(&self.max_timestamp.to_le_bytes());
        buf[PRODUCER_ID_AT..][..8].copy_from_slice(&self.producer.id.to_le_bytes());
        buf[PRODUCER_EPOCH_AT..][..2].copy_from_slice(&self.producer.epoch.to_le_bytes());
        buf[50..52].fill(0);
        buf[BASE_SEQUENCE_AT..][..4].copy_from_slice(&self.producer.base_sequence.to_le_bytes());
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// `next_offset`, or None for a batch whose offsets would pass the largest one
    /// (damage, which `check_header` refuses).
    pub fn checked_next_offset(&self) -> Option<u64> {
        self.base_offset.checked_add(u64::from(self.record_count))
    }
}

/// CRC of a whole batch as stored: every byte but the CRC field itself.
pub fn batch_crc(batch: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&batch[..CRC_AT]);
    hasher.update(&batch[CRC_AT + 4..]);
    hasher.finalize()
}

/// Stores the CRC of `batch` in its header.
pub fn seal_crc(batch: &mut [u8]) {
    let crc = batch_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks what can be checked of a batch's header without its records: the caller has
/// `available` bytes from the batch start, expects `expected_offset` as its base offset
/// (or `None` when any is fine) and allows at most `max_len` bytes. Returns the header.
pub fn check_header(
    buf: &[u8],
    expected_offset: Option<u64>,
    max_len: usize,
) -> std::result::Result<BatchHeader, String> {
    if buf.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes left, too few for a {HEADER_LEN}-byte batch header",
            buf.len()
        ));
    }
    let header = BatchHeader::parse(buf);
    let length = header.length as usize;
    if length <= HEADER_LEN || length > max_len {
        return Err(format!(
            "batch length {length} is outside ({HEADER_LEN}, {max_len}]"
        ));
    }
    if length > buf.len() {
        return Err(format!(
            "batch length {length} runs past the end of the data ({} bytes left)",
            buf.len()
        ));
    }
    if header.version != FORMAT_VERSION {
        return Err(format!(
            "batch format version {} is not {FORMAT_VERSION}",
            header.version
        ));
    }
    if header.record_count == 0 {
        return Err("batch holds no records".to_string());
    }
    if header.checked_next_offset().is_none() {
        return Err(format!(
            "batch of {} records at base offset {} runs past the largest offset",
            header.record_count, header.base_offset
        ));
    }
    if let Some(expected) = expected_offset {
        let after_gap = header.attributes & ATTR_COMPACTED != 0 && header.base_offset > expected;
        if header.base_offset != expected && !after_gap {
            return Err(format!(
                "batch base offset {} where {expected} was expected",
                header.base_offset
            ));
        }
    }
    Ok(header)
}

/// Verifies the CRC of the whole batch at the start of `buf` (whose header has already
/// passed `check_header`).
pub fn check_crc(
    buf: &[u8],
    header: &BatchHeader,
    path: &std::path::Path,
    position: u64,
) -> Result<()> {
    let actual = batch_crc(&buf[..header.length as usize]);
    if actual != header.crc {
        return Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            position,
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}
