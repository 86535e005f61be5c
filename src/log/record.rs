//! Records inside a batch: their stored encoding, and reading them back. Building a
//! batch from records is in `batch.rs`.
//!
//! A batch's records section is stored in the exact protobuf wire encoding of a
//! `repeated Record records = 1` field of the message below, so a Fetch response is a
//! concatenation of stored bytes and nothing is decoded or re-encoded on the way out:
//!
//! ```text
//! message Record {
//!   fixed64  offset       = 1;  // absolute offset, written by the log on append
//!   sfixed64 timestamp_ms = 2;
//!   optional bytes key    = 3;  // present only when the record has a key
//!   bytes    value        = 4;  // always present, possibly empty
//!   repeated Header headers = 5;  // Header { string name = 1; bytes value = 2; }
//! }
//! ```
//! Each record is `0x0A <varint body length> <body>`. The body always begins with the
//! offset (tag `0x09`, 8 bytes) and the timestamp (tag `0x11`, 8 bytes), fixed-width so the
//! log can write offsets into an encoded batch in place. Fields then follow in field
//! order; the parser accepts only this canonical layout.

use bytes::Bytes;

use super::format::{BatchHeader, HEADER_LEN};

/// Tag of a record entry in the records section: field 1, wire type 2 (length-delimited).
pub const RECORD_TAG: u8 = 0x0A;
/// Tag of `Record.offset`: field 1, wire type 1 (64-bit).
pub const OFFSET_TAG: u8 = 0x09;
/// Tag of `Record.timestamp_ms`: field 2, wire type 1.
pub const TIMESTAMP_TAG: u8 = 0x11;
/// Tag of `Record.key`: field 3, wire type 2.
pub const KEY_TAG: u8 = 0x1A;
/// Tag of `Record.value`: field 4, wire type 2.
pub const VALUE_TAG: u8 = 0x22;
/// Tag of one `Record.headers` entry: field 5, wire type 2.
pub const HEADER_TAG: u8 = 0x2A;
/// Tags inside a `Header`: name (field 1) and value (field 2), both length-delimited.
pub const HEADER_NAME_TAG: u8 = 0x0A;
pub const HEADER_VALUE_TAG: u8 = 0x12;
/// Bytes from a record body's start to the end of its timestamp.
pub const FIXED_BODY_LEN: usize = 18;

/// A header of a record: a name and bytes. Names may repeat; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

/// A record as a producer hands it to the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; never negative.
    pub timestamp_ms: i64,
}

/// A record read back from a batch, borrowing the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's headers in order, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut rest = self.headers;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut entry = take_delimited(&mut rest, HEADER_TAG).ok()?;
            let name = take_delimited(&mut entry, HEADER_NAME_TAG).ok()?;
            let value = take_delimited(&mut entry, HEADER_VALUE_TAG).ok()?;
            Some((std::str::from_utf8(name).ok()?, value))
        })
    }
}

fn take_delimited<'a>(buf: &mut &'a [u8], tag: u8) -> std::result::Result<&'a [u8], String> {
    if buf.first() != Some(&tag) {
        return Err(format!("expected tag {tag:#04x}, found {:?}", buf.first()));
    }
    let mut rest = &buf[1..];
    let len = prost::decode_length_delimiter(&mut rest).map_err(|e| e.to_string())?;
    if len > rest.len() {
        return Err(format!("field of {len} bytes runs past its record"));
    }
    let (field, after) = rest.split_at(len);
    *buf = after;
    Ok(field)
}

fn take_fixed64(buf: &mut &[u8], tag: u8) -> std::result::Result<[u8; 8], String> {
    if buf.len() < 9 || buf[0] != tag {
        return Err(format!("expected 64-bit field with tag {tag:#04x}"));
    }
    let value = buf[1..9].try_into().expect("8 bytes");
    *buf = &buf[9..];
    Ok(value)
}

/// Parses the next record from a records section, advancing `buf` past it.
pub fn parse_record<'a>(buf: &mut &'a [u8]) -> std::result::Result<RecordView<'a>, String> {
    parse_record_body(take_delimited(buf, RECORD_TAG)?)
}

/// Parses a record's body: the bytes after its tag and length.
pub fn parse_record_body(mut body: &[u8]) -> std::result::Result<RecordView<'_>, String> {
    let offset = u64::from_le_bytes(take_fixed64(&mut body, OFFSET_TAG)?);
    let timestamp_ms = i64::from_le_bytes(take_fixed64(&mut body, TIMESTAMP_TAG)?);
    let key = if body.first() == Some(&KEY_TAG) {
        Some(take_delimited(&mut body, KEY_TAG)?)
    } else {
        None
    };
    let value = take_delimited(&mut body, VALUE_TAG)?;
    let mut headers_check = body;
    while !headers_check.is_empty() {
        let mut entry = take_delimited(&mut headers_check, HEADER_TAG)?;
        let name = take_delimited(&mut entry, HEADER_NAME_TAG)?;
        std::str::from_utf8(name).map_err(|_| "header name is not UTF-8".to_string())?;
        take_delimited(&mut entry, HEADER_VALUE_TAG)?;
        if !entry.is_empty() {
            return Err("trailing bytes in a header".into());
        }
    }
    Ok(RecordView {
        offset,
        timestamp_ms,
        key,
        value,
        headers: body,
    })
}

/// The records of every batch in `chunk` (stored batches back to back, as a read
/// returns them), each batch checked as `records` checks it.
pub fn chunk_records(mut chunk: &[u8]) -> std::result::Result<Vec<RecordView<'_>>, String> {
    let mut out = Vec::new();
    while !chunk.is_empty() {
        if chunk.len() < HEADER_LEN {
            return Err(format!("{} bytes, too few for a batch header", chunk.len()));
        }
        let length = BatchHeader::parse(chunk).length as usize;
        if length < HEADER_LEN || length > chunk.len() {
            return Err(format!(
                "batch length {length} does not fit in {} bytes",
                chunk.len()
            ));
        }
        let (batch, rest) = chunk.split_at(length);
        out.extend(records(batch)?);
        chunk = rest;
    }
    Ok(out)
}

/// The records of one stored batch (header included in `batch`), checked as they are
/// read: the header's length must fit in `batch`, offsets must run from the header's
/// base offset, and there must be exactly as many records as the header says.
pub fn records(batch: &[u8]) -> std::result::Result<Vec<RecordView<'_>>, String> {
    if batch.len() < HEADER_LEN {
        return Err(format!("{} bytes, too few for a batch header", batch.len()));
    }
    let header = BatchHeader::parse(batch);
    let mut rest = batch
        .get(HEADER_LEN..header.length as usize)
        .ok_or_else(|| {
            format!(
                "batch length {} does not fit in {} bytes",
                header.length,
                batch.len()
            )
        })?;
    // The same rule as `check_header`: these bytes may not have been through it.
    if header.checked_next_offset().is_none() {
        return Err("the batch's offsets run past the largest offset".into());
    }
    // The header's count is not trusted with an allocation: every record holds at least
    // its fixed-width fields, so no more than this many fit in the section.
    let fit = rest.len() / FIXED_BODY_LEN;
    let mut out = Vec::with_capacity((header.record_count as usize).min(fit));
    while !rest.is_empty() {
        let record = parse_record(&mut rest)?;
        // Checked as well: the section may hold more records than the header's count.
        let expected = header
            .base_offset
            .checked_add(out.len() as u64)
            .ok_or("record offsets run past the largest offset")?;
        if record.offset != expected {
            return Err(format!(
                "record offset {} where {expected} was expected",
                record.offset
            ));
        }
        out.push(record);
    }
    if out.len() != header.record_count as usize {
        return Err(format!(
            "batch header says {} records, found {}",
            header.record_count,
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::BatchBuilder;
    use prost::Message;

    /// The Fetch-response shape, decoded by prost itself: proves the stored records
    /// section is valid protobuf of `repeated Record records = 1`.
    #[derive(Clone, PartialEq, Message)]
    struct Records {
        #[prost(message, repeated, tag = "1")]
        records: Vec<ProtoRecord>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ProtoRecord {
        #[prost(fixed64, tag = "1")]
        offset: u64,
        #[prost(sfixed64, tag = "2")]
        timestamp_ms: i64,
        #[prost(bytes = "vec", optional, tag = "3")]
        key: Option<Vec<u8>>,
        #[prost(bytes = "vec", tag = "4")]
        value: Vec<u8>,
        #[prost(message, repeated, tag = "5")]
        headers: Vec<ProtoHeader>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ProtoHeader {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }

    fn sample() -> Vec<Record> {
        vec![
            Record {
                key: Some(Bytes::from_static(b"user-1")),
                value: Bytes::from(vec![7u8; 300]),
                headers: vec![],
                timestamp_ms: 5,
            },
            Record {
                key: None,
                value: Bytes::new(),
                headers: vec![
                    Header {
                        name: "trace".into(),
                        value: Bytes::from_static(b"abc"),
                    },
                    Header {
                        name: "trace".into(),
                        value: Bytes::new(),
                    },
                ],
                timestamp_ms: 1_700_000_000_000,
            },
            Record {
                key: Some(Bytes::new()),
                value: Bytes::from_static(b"v"),
                headers: vec![],
                timestamp_ms: 0,
            },
        ]
    }

    fn stored(records: &[Record], base: u64) -> Vec<u8> {
        let mut builder = BatchBuilder::default();
        for r in records {
            builder.push(r).unwrap();
        }
        let mut batch = builder.build().unwrap();
        let _ = batch.assign(base);
        batch.to_vec()
    }

    #[test]
    fn records_section_is_protobuf_of_repeated_record() {
        let bytes = stored(&sample(), 1000);
        let decoded = Records::decode(&bytes[HEADER_LEN..]).unwrap();
        let expected: Vec<ProtoRecord> = sample()
            .iter()
            .enumerate()
            .map(|(i, r)| ProtoRecord {
                offset: 1000 + i as u64,
                timestamp_ms: r.timestamp_ms,
                key: r.key.as_ref().map(|k| k.to_vec()),
                value: r.value.to_vec(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| ProtoHeader {
                        name: h.name.clone(),
                        value: h.value.to_vec(),
                    })
                    .collect(),
            })
            .collect();
        assert_eq!(decoded.records, expected);
        // And prost's own encoding of the same message parses with ours.
        let reencoded = decoded.encode_to_vec();
        let mut rest = &reencoded[..];
        let first = parse_record(&mut rest).unwrap();
        assert_eq!((first.offset, first.key), (1000, Some(&b"user-1"[..])));
    }

    #[test]
    fn header_carries_counts_timestamps_and_a_valid_crc() {
        let bytes = stored(&sample(), 7);
        let header = BatchHeader::parse(&bytes);
        assert_eq!(header.length as usize, bytes.len());
        assert_eq!(
            (
                header.base_offset,
                header.record_count,
                header.last_offset()
            ),
            (7, 3, 9)
        );
        assert_eq!(
            (header.first_timestamp, header.max_timestamp),
            (5, 1_700_000_000_000)
        );
        assert_eq!(header.crc, crate::log::format::batch_crc(&bytes));
        let views = records(&bytes).unwrap();
        assert_eq!(
            views[1].headers().collect::<Vec<_>>(),
            vec![("trace", &b"abc"[..]), ("trace", &b""[..])]
        );
        assert_eq!(
            views[2].key,
            Some(&b""[..]),
            "an empty key is not a missing key"
        );
    }

    #[test]
    fn the_parser_rejects_every_truncation_and_never_panics() {
        let bytes = stored(&sample(), 0);
        let section = &bytes[HEADER_LEN..];
        for cut in 0..section.len() {
            let mut rest = &section[..cut];
            let mut parsed = 0;
            while !rest.is_empty() {
                if parse_record(&mut rest).is_err() {
                    break;
                }
                parsed += 1;
            }
            assert!(parsed < 3, "a cut at {cut} cannot hold all three records");
        }
        for i in 0..section.len() {
            let mut damaged = section.to_vec();
            damaged[i] ^= 0xFF;
            let mut rest = &damaged[..];
            while !rest.is_empty() && parse_record(&mut rest).is_ok() {}
        }
    }
}
