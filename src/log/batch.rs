//! Building a batch from records, and the batch as the log writes it.
//!
//! A batch is kept as a small buffer of everything strom encodes itself (the header,
//! tags, lengths, offsets, timestamps, small keys and values) plus references to the
//! `Bytes` of large values (and of large keys, from `push`; `push_owned`, the produce
//! path, copies keys), which are never copied: the log hands the pieces to
//! one vectored positioned write (`pwritev`), so a produced value goes from the request
//! buffer to the page cache in the kernel's one copy. The bytes on disk are exactly as if
//! the batch had been one buffer (see `record.rs` and `storage-format.md`).

use std::io::IoSlice;

use bytes::Bytes;

use super::format::{
    BatchHeader, ProducerInfo, ATTR_IDEMPOTENT, CRC_AT, FORMAT_VERSION, HEADER_LEN, NO_PRODUCER,
};
use super::record::*;
use crate::error::{Error, Result};

/// Keys and values at least this long are referenced, not copied; below it a copy is
/// cheaper than another piece in the vectored write.
pub const BORROW_AT_LEAST: usize = 256;

/// A key or value: borrowed slices are copied; shared `Bytes` may be referenced (a
/// clone of the handle), owned ones moved in (no reference count touched).
enum Field<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
    Owned(Bytes),
}

impl Field<'_> {
    fn len(&self) -> usize {
        match self {
            Field::Slice(s) => s.len(),
            Field::Shared(b) => b.len(),
            Field::Owned(b) => b.len(),
        }
    }
}

/// Bytes of one header's entry body: the name and the value, each with its tag and length.
fn header_body_len(name: &str, value: &[u8]) -> usize {
    delimited_len(name.len()) + delimited_len(value.len())
}

/// Bytes one header takes in a record's stored encoding: its entry's tag, length and
/// body.
pub fn stored_header_len(name: &str, value: &[u8]) -> usize {
    delimited_len(header_body_len(name, value))
}

fn delimited_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Appends `len` as a varint. prost encodes into a stack buffer, then one copy: its
/// byte-at-a-time writes straight into a `Vec` (a capacity check per byte) were 10% of
/// the server's produce profile.
fn put_len(buf: &mut Vec<u8>, len: usize) {
    let mut scratch = [0u8; 10];
    let mut slot = &mut scratch[..];
    prost::encoding::encode_varint(len as u64, &mut slot);
    let used = 10 - slot.len();
    buf.extend_from_slice(&scratch[..used]);
}

/// Builds one batch: header space, then records in their stored encoding. The log fills
/// in offsets and the CRC when it appends the batch.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Everything but the referenced payloads.
    meta: Vec<u8>,
    /// Referenced payloads and the position in `meta` they follow.
    shared: Vec<(usize, Bytes)>,
    shared_len: usize,
    /// Position in `meta` of each record's 8-byte offset field.
    offset_at: Vec<usize>,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerInfo,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    /// A builder whose buffer starts with room for `bytes` of copied data.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut meta = Vec::with_capacity(HEADER_LEN + bytes);
        meta.resize(HEADER_LEN, 0);
        BatchBuilder {
            meta,
            shared: Vec::new(),
            shared_len: 0,
            offset_at: Vec::new(),
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            producer: NO_PRODUCER,
        }
    }

    /// A builder sized for `push`ing these records: room for what it will copy (tags,
    /// lengths, offsets, timestamps, headers, small keys and values), not for what it
    /// will reference.
    pub fn for_records(records: &[Record]) -> BatchBuilder {
        let copied = |bytes: &Bytes| match bytes.len() {
            n if n < BORROW_AT_LEAST => n,
            _ => 0,
        };
        let bytes = records
            .iter()
            .map(|r| {
                32 + copied(&r.value)
                    + r.key.as_ref().map_or(0, copied)
                    + r.headers
                        .iter()
                        .map(|h| 8 + h.name.len() + h.value.len())
                        .sum::<usize>()
            })
            .sum();
        let mut builder = BatchBuilder::with_capacity(bytes);
        builder.offset_at.reserve(records.len());
        builder.shared.reserve(records.len());
        builder
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer: ProducerInfo) -> BatchBuilder {
        self.producer = producer;
        self
    }

    /// Appends a record; its large key and value are referenced, not copied. A negative
    /// timestamp is refused before anything is written.
    pub fn push(&mut self, record: &Record) -> Result<()> {
        self.push_with_timestamp(record, record.timestamp_ms)
    }

    /// `push` with the timestamp replaced (the server's time for records that have none).
    pub fn push_with_timestamp(&mut self, record: &Record, timestamp_ms: i64) -> Result<()> {
        let headers = record
            .headers
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]));
        self.push_fields(
            record.key.as_ref().map(Field::Shared),
            Field::Shared(&record.value),
            headers,
            timestamp_ms,
        )
    }

    /// A builder for `records` records that will copy about `copied` bytes.
    pub fn for_count(records: usize, copied: usize) -> BatchBuilder {
        let mut builder = BatchBuilder::with_capacity(copied);
        builder.offset_at.reserve(records);
        builder
    }

    /// Appends a record whose value is handed over: a large one is kept as it is (a
    /// slice of the request it arrived in) without cloning its handle, which costs a
    /// reference count each way; the key and headers are copied.
    pub fn push_owned<'a>(
        &mut self,
        key: Option<&[u8]>,
        value: Bytes,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.push_fields(
            key.map(Field::Slice),
            Field::Owned(value),
            headers,
            timestamp_ms,
        )
    }

    /// Appends a record from borrowed parts, which are copied.
    pub fn push_parts<'a>(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.push_fields(
            key.map(Field::Slice),
            Field::Slice(value),
            headers,
            timestamp_ms,
        )
    }

    fn push_fields<'a>(
        &mut self,
        key: Option<Field<'_>>,
        value: Field<'_>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
        timestamp_ms: i64,
    ) -> Result<()> {
        if timestamp_ms < 0 {
            return Err(Error::InvalidArgument(format!(
                "record timestamp {timestamp_ms} is negative; timestamps are milliseconds since the Unix epoch"
            )));
        }
        if self.offset_at.len() == u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "a batch holds at most 2^32-1 records".into(),
            ));
        }
        let body_len = FIXED_BODY_LEN
            + key.as_ref().map_or(0, |k| delimited_len(k.len()))
            + delimited_len(value.len())
            + headers
                .clone()
                .map(|(n, v)| stored_header_len(n, v))
                .sum::<usize>();
        self.meta.push(RECORD_TAG);
        put_len(&mut self.meta, body_len);
        self.meta.push(OFFSET_TAG);
        self.offset_at.push(self.meta.len());
        self.meta.extend_from_slice(&0u64.to_le_bytes()); // the log writes the offset
        self.meta.push(TIMESTAMP_TAG);
        self.meta.extend_from_slice(&timestamp_ms.to_le_bytes());
        if let Some(key) = key {
            self.put_field(KEY_TAG, key);
        }
        self.put_field(VALUE_TAG, value);
        for (name, value) in headers {
            self.meta.push(HEADER_TAG);
            put_len(&mut self.meta, header_body_len(name, value));
            self.put_field(HEADER_NAME_TAG, Field::Slice(name.as_bytes()));
            self.put_field(HEADER_VALUE_TAG, Field::Slice(value));
        }
        if self.offset_at.len() == 1 {
            self.first_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        Ok(())
    }

    fn put_field(&mut self, tag: u8, field: Field<'_>) {
        self.meta.push(tag);
        put_len(&mut self.meta, field.len());
        match field {
            Field::Shared(bytes) if bytes.len() >= BORROW_AT_LEAST => {
                self.shared.push((self.meta.len(), bytes.clone()));
                self.shared_len += bytes.len();
            }
            Field::Owned(bytes) if bytes.len() >= BORROW_AT_LEAST => {
                self.shared_len += bytes.len();
                self.shared.push((self.meta.len(), bytes));
            }
            Field::Shared(bytes) => self.meta.extend_from_slice(bytes),
            Field::Owned(bytes) => self.meta.extend_from_slice(&bytes),
            Field::Slice(slice) => self.meta.extend_from_slice(slice),
        }
    }

    pub fn len(&self) -> u32 {
        self.offset_at.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.offset_at.is_empty()
    }

    /// Encoded size of the batch so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.meta.len() + self.shared_len
    }

    /// Finishes the batch. An empty batch is refused.
    pub fn build(self) -> Result<PendingBatch> {
        if self.is_empty() {
            return Err(Error::InvalidArgument(
                "a batch needs at least one record".into(),
            ));
        }
        let size = self.size_bytes();
        let header = BatchHeader {
            base_offset: 0,
            length: u32::try_from(size).map_err(|_| Error::TooLarge {
                what: "batch",
                size: size as u64,
                limit: u64::from(u32::MAX),
            })?,
            crc: 0,
            version: FORMAT_VERSION,
            attributes: if self.producer.id >= 0 {
                ATTR_IDEMPOTENT
            } else {
                0
            },
            record_count: self.len(),
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer: self.producer,
        };
        let mut meta = self.meta;
        header.write(&mut meta);
        Ok(PendingBatch {
            meta,
            shared: self.shared,
            offset_at: self.offset_at,
            header,
            sync_owed: false,
        })
    }
}

/// An encoded batch waiting for its offsets. Only the log turns it into stored bytes.
#[derive(Debug, Clone)]
pub struct PendingBatch {
    meta: Vec<u8>,
    shared: Vec<(usize, Bytes)>,
    offset_at: Vec<usize>,
    header: BatchHeader,
    /// An fsync will follow the append (the producer asked for one).
    sync_owed: bool,
}

impl PendingBatch {
    /// Tells the log that an fsync will follow this batch's append, so that a large one
    /// starts its writeback as it is written.
    pub fn owe_sync(&mut self) {
        self.sync_owed = true;
    }

    pub fn sync_owed(&self) -> bool {
        self.sync_owed
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn len_bytes(&self) -> usize {
        self.header.length as usize
    }

    /// The batch's bytes in order, as pieces of `meta` and referenced payloads.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        let mut shared = self.shared.iter();
        let mut pending: Option<&[u8]> = None;
        std::iter::from_fn(move || {
            if let Some(bytes) = pending.take() {
                return Some(bytes);
            }
            match shared.next() {
                Some((at, bytes)) => {
                    let piece = &self.meta[from..*at];
                    from = *at;
                    pending = Some(&bytes[..]);
                    Some(piece)
                }
                None if from <= self.meta.len() => {
                    let piece = &self.meta[from..];
                    from = self.meta.len() + 1;
                    Some(piece)
                }
                None => None,
            }
        })
        .filter(|piece| !piece.is_empty())
    }

    /// Writes `base_offset` into the header and each record, then the CRC; returns the
    /// pieces to write, in order, and the header.
    pub(crate) fn assign(&mut self, base_offset: u64) -> (Vec<IoSlice<'_>>, BatchHeader) {
        self.header.base_offset = base_offset;
        self.meta[..8].copy_from_slice(&base_offset.to_le_bytes());
        for (i, &at) in self.offset_at.iter().enumerate() {
            self.meta[at..at + 8].copy_from_slice(&(base_offset + i as u64).to_le_bytes());
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.meta[..CRC_AT]);
        let mut first = true;
        for piece in self.pieces() {
            // The first piece holds the header; the CRC field itself is not covered.
            hasher.update(if first { &piece[CRC_AT + 4..] } else { piece });
            first = false;
        }
        self.header.crc = hasher.finalize();
        self.meta[CRC_AT..CRC_AT + 4].copy_from_slice(&self.header.crc.to_le_bytes());
        (self.pieces().map(IoSlice::new).collect(), self.header)
    }

    /// The stored bytes after `assign`, as one buffer (for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
