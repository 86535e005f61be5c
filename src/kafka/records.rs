//! Kafka's record batches (message format v2) to and from strom's.
//!
//! A produced Kafka batch is read record by record into the broker's `BatchWriter`, as
//! a gRPC Produce's records are: values are slices of the request frame (of its
//! decompressed records, for a compressed batch), never copied on the way to the page
//! cache. A fetch turns each stored batch into one Kafka batch: strom stores records in
//! the protobuf encoding its gRPC Fetch sends, so Kafka's varint encoding is written
//! here, one record at a time, and its CRC-32C computed. That copy is the price of
//! speaking Kafka's format from a log stored in strom's.
//!
//! The v2 layout (Kafka's "Record Batch" documentation): a 61-byte header (base offset,
//! length, leader epoch, magic, CRC-32C of what follows it, attributes, last offset
//! delta, base and max timestamps, producer id, epoch and base sequence, record count),
//! then records of varint-framed fields.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::compression;
use super::errors::{code, Refusal};
use crate::broker::BatchWriter;
use crate::log::record::parse_record;
use crate::log::{BatchHeader, ProducerInfo, ReadBatches, HEADER_LEN};

/// Bytes of a v2 batch's header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Where the CRC-32C's span starts: the attributes.
const CRC_FROM: usize = 21;
const MAGIC_AT: usize = 16;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
const ATTR_COMPRESSION: i16 = 0x07;

type Result<T> = std::result::Result<T, Refusal>;

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal::new(code::INVALID_RECORD, msg)
}

/// The header of a produced batch, checked.
#[derive(Debug)]
pub struct Produced {
    pub producer: Option<ProducerInfo>,
    pub count: usize,
    /// Kafka's codec number; 0 for none.
    pub compression: i16,
    base_timestamp: i64,
    records: Bytes,
}

/// Reads and checks a produced partition's records: exactly one v2 batch, its CRC
/// right, neither transactional nor a control batch.
pub fn parse_batch(mut data: Bytes) -> Result<Produced> {
    if data.len() < BATCH_HEADER_LEN {
        return Err(invalid(format!(
            "a record batch of {} bytes: the v2 header alone is {BATCH_HEADER_LEN}",
            data.len()
        )));
    }
    let length = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
    if length < 0 || length as usize + 12 != data.len() {
        return Err(invalid(
            "a produce request must hold exactly one record batch per partition, whole",
        ));
    }
    if data[MAGIC_AT] != 2 {
        return Err(invalid(format!(
            "record batch magic {}: strom takes message format v2 only (Kafka clients of 0.11 or later)",
            data[MAGIC_AT] as i8
        )));
    }
    let crc = u32::from_be_bytes(data[17..21].try_into().expect("4 bytes"));
    if crc32c::crc32c(&data[CRC_FROM..]) != crc {
        return Err(Refusal::new(
            code::CORRUPT_MESSAGE,
            "the record batch's CRC-32C does not match its bytes: it was damaged on the way",
        ));
    }
    data.advance(CRC_FROM);
    let attributes = data.get_i16();
    let last_offset_delta = data.get_i32();
    let base_timestamp = data.get_i64();
    let _max_timestamp = data.get_i64();
    let producer_id = data.get_i64();
    let producer_epoch = data.get_i16();
    let base_sequence = data.get_i32();
    let count = data.get_i32();
    if attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
        return Err(invalid(
            "a transactional or control batch: strom has no Kafka transactions (use an idempotent producer without transactional.id)",
        ));
    }
    let compression = attributes & ATTR_COMPRESSION;
    if compression > compression::ZSTD {
        return Err(Refusal::new(
            code::UNSUPPORTED_COMPRESSION_TYPE,
            format!(
                "compression codec {compression}: strom takes none, gzip, snappy, lz4 and zstd"
            ),
        ));
    }
    // Every record takes at least 7 bytes: a count the bytes cannot hold is refused
    // before anything is sized from it (checked again once decompressed).
    if count <= 0
        || last_offset_delta != count - 1
        || (compression == 0 && count as usize > data.len() / 7)
    {
        return Err(invalid(format!(
            "a batch of {count} records whose last offset delta is {last_offset_delta}"
        )));
    }
    let producer = (producer_id >= 0).then_some(ProducerInfo {
        id: producer_id,
        epoch: producer_epoch,
        base_sequence,
    });
    Ok(Produced {
        producer,
        count: count as usize,
        compression,
        base_timestamp,
        records: data,
    })
}

/// Reads a zigzag varint of at most 64 bits.
fn varlong(buf: &mut Bytes) -> Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        if !buf.has_remaining() {
            return Err(invalid("a record ends inside a varint"));
        }
        let byte = buf.get_u8();
        if shift == 63 && byte > 1 {
            break;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(invalid("a varint longer than 64 bits in a record"))
}

/// A varint length: -1 (null) as None, never more than what is left.
fn field(buf: &mut Bytes, what: &str) -> Result<Option<Bytes>> {
    match varlong(buf)? {
        -1 => Ok(None),
        n if n < 0 || n as u64 > buf.len() as u64 => Err(invalid(format!(
            "a record's {what} of {n} bytes, with {} left in the batch",
            buf.len()
        ))),
        n => Ok(Some(buf.split_to(n as usize))),
    }
}

impl Produced {
    /// The records section, as sent (compressed if `compression` is not 0).
    pub fn records(&self) -> &Bytes {
        &self.records
    }

    /// Pushes every record of `records` (the records section, decompressed) into
    /// `writer`. A record whose value is null is stored with an empty value (a
    /// tombstone on a compacted topic); a header whose value is null, with an empty one.
    pub fn push_all(&self, mut records: Bytes, writer: &mut BatchWriter) -> Result<()> {
        if self.count > records.len() / 7 {
            return Err(invalid(format!(
                "a batch of {} records in {} bytes: a record takes at least 7",
                self.count,
                records.len()
            )));
        }
        let mut headers: Vec<(Bytes, Bytes)> = Vec::new();
        for i in 0..self.count {
            let len = varlong(&mut records)?;
            if len < 0 || len as u64 > records.len() as u64 {
                return Err(invalid(format!("record {i}: a length of {len}")));
            }
            let mut record = records.split_to(len as usize);
            let _attributes = record.has_remaining().then(|| record.get_u8());
            let timestamp_delta = varlong(&mut record)?;
            let offset_delta = varlong(&mut record)?;
            if offset_delta != i as i64 {
                return Err(invalid(format!(
                    "record {i} has offset delta {offset_delta}: records of a produced batch are numbered from 0"
                )));
            }
            let key = field(&mut record, "key")?;
            let value = field(&mut record, "value")?.unwrap_or_default();
            let count = varlong(&mut record)?;
            if count < 0 || count as u64 > record.len() as u64 {
                return Err(invalid(format!("record {i}: {count} headers")));
            }
            headers.clear();
            for _ in 0..count {
                let name = field(&mut record, "header name")?.unwrap_or_default();
                if std::str::from_utf8(&name).is_err() {
                    return Err(invalid(format!("record {i}: a header name is not UTF-8")));
                }
                let value = field(&mut record, "header value")?.unwrap_or_default();
                headers.push((name, value));
            }
            if record.has_remaining() {
                return Err(invalid(format!(
                    "record {i}: {} bytes after its headers",
                    record.len()
                )));
            }
            let timestamp = match self.base_timestamp {
                -1 => 0, // none given: the server's time
                base => base.saturating_add(timestamp_delta),
            };
            let named = headers.iter().map(|(name, value)| {
                // Checked as UTF-8 above.
                let name = std::str::from_utf8(name).unwrap_or_default();
                (name, &value[..])
            });
            writer.push(key.as_deref(), value, named, timestamp)?;
        }
        if records.has_remaining() {
            return Err(invalid(format!(
                "{} bytes after the batch's {} records",
                records.len(),
                self.count
            )));
        }
        Ok(())
    }
}

fn put_varlong(buf: &mut impl BufMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Encodes the records at or after `from` of what the broker read as Kafka v2 batches
/// into `out`, one per stored batch, stopping once `max_bytes` more are written (into
/// an empty `out`, the first batch goes whole whatever its size, so that a consumer
/// always moves on). `null_empty` returns an empty value as null (a compacted topic's
/// tombstones). Returns the offset to read from next.
pub fn encode_batches(
    read: &ReadBatches,
    from: u64,
    max_bytes: usize,
    null_empty: bool,
    out: &mut BytesMut,
) -> u64 {
    let written_before = out.len();
    let mut next = from;
    // Kafka's encoding of a batch is about its stored size: room for all of it at
    // once, not grown (and copied) as it fills.
    out.reserve(read.size_bytes().min(max_bytes.saturating_add(1 << 20)));
    for chunk in &read.chunks {
        let mut pos = 0;
        while pos + HEADER_LEN <= chunk.len() {
            let header = BatchHeader::parse(&chunk[pos..]);
            let end = pos + header.length as usize;
            let mut rest = &chunk[pos + HEADER_LEN..end.min(chunk.len())];
            pos = end;
            if header.next_offset() <= from {
                continue;
            }
            if !out.is_empty() && out.len() - written_before >= max_bytes {
                return next;
            }
            let start = out.len();
            out.put_bytes(0, BATCH_HEADER_LEN);
            let (mut base, mut base_ts, mut max_ts, mut last, mut count) = (None, 0, 0, 0, 0i32);
            while !rest.is_empty() {
                let Ok(r) = parse_record(&mut rest) else {
                    break; // checked by the read's CRC; cannot happen
                };
                if r.offset < from {
                    continue;
                }
                let base = *base.get_or_insert_with(|| {
                    base_ts = r.timestamp_ms;
                    r.offset
                });
                max_ts = max_ts.max(r.timestamp_ms);
                last = r.offset;
                next = r.offset + 1;
                count += 1;
                // Written straight into `out`, its length first: a value is copied
                // once here (a record built apart and then copied in was a second
                // copy, in a profile where memmove took 46% of the server).
                let ts_delta = r.timestamp_ms - base_ts;
                let offset_delta = (r.offset - base) as i64;
                let null_value = r.value.is_empty() && null_empty;
                let field = |len: Option<usize>| match len {
                    Some(len) => varlong_len(len as i64) + len,
                    None => 1,
                };
                let (header_count, header_bytes) =
                    r.headers().fold((0, 0), |(n, b), (name, value)| {
                        (
                            n + 1,
                            b + field(Some(name.len())) + field(Some(value.len())),
                        )
                    });
                let len = 1
                    + varlong_len(ts_delta)
                    + varlong_len(offset_delta)
                    + field(r.key.map(<[u8]>::len))
                    + field((!null_value).then_some(r.value.len()))
                    + varlong_len(header_count as i64)
                    + header_bytes;
                out.reserve(varlong_len(len as i64) + len);
                put_varlong(out, len as i64);
                out.put_u8(0); // attributes
                put_varlong(out, ts_delta);
                put_varlong(out, offset_delta);
                match r.key {
                    Some(key) => {
                        put_varlong(out, key.len() as i64);
                        out.put_slice(key);
                    }
                    None => put_varlong(out, -1),
                }
                match null_value {
                    true => put_varlong(out, -1),
                    false => {
                        put_varlong(out, r.value.len() as i64);
                        out.put_slice(r.value);
                    }
                }
                put_varlong(out, header_count as i64);
                for (name, value) in r.headers() {
                    put_varlong(out, name.len() as i64);
                    out.put_slice(name.as_bytes());
                    put_varlong(out, value.len() as i64);
                    out.put_slice(value);
                }
            }
            let Some(base) = base else {
                out.truncate(start); // every record of it was below `from`
                continue;
            };
            let length = (out.len() - start - 12) as i32;
            let mut h = &mut out[start..start + BATCH_HEADER_LEN];
            h.put_i64(base as i64);
            h.put_i32(length);
            h.put_i32(0); // partition leader epoch
            h.put_i8(2); // magic
            h.put_u32(0); // the CRC, below
            h.put_i16(0); // attributes: no compression, create time
            h.put_i32((last - base) as i32);
            h.put_i64(base_ts);
            h.put_i64(max_ts);
            h.put_i64(-1); // producer id
            h.put_i16(-1); // producer epoch
            h.put_i32(-1); // base sequence
            h.put_i32(count);
            let crc = crc32c::crc32c(&out[start + CRC_FROM..]);
            out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        }
    }
    next.max(read.next_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlongs_round_trip() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::MAX,
            i64::MIN,
            i32::MAX as i64,
        ] {
            let mut buf = BytesMut::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v), "{v}");
            assert_eq!(varlong(&mut buf.freeze()).unwrap(), v);
        }
        let mut long = Bytes::from_static(&[0xff; 11]);
        assert!(varlong(&mut long).is_err());
    }
}
