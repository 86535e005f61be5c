//! Parsing a received record's fields, straight into the batch that stores it.

use bytes::{Buf, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use super::received::{spans, Received, Span};
use crate::broker::BatchWriter;
use crate::error::{Error, Result};
use crate::log::BORROW_AT_LEAST;

/// One received record's fields, as ranges of its bytes.
pub(super) struct Fields {
    pub(super) timestamp_ms: i64,
    pub(super) key: Option<(usize, usize)>,
    pub(super) value: (usize, usize),
    /// How many headers: none is the common case, and spares a second walk.
    pub(super) headers: usize,
    /// Fields decoded, the headers' own included: what building the record's batch
    /// walks (a publish's work over many topics is capped by it).
    pub(super) tags: usize,
}

/// Reads a varint-delimited field's bounds at `rest`, advancing past it.
fn delimited(rest: &mut &[u8], whole: usize) -> std::result::Result<(usize, usize), String> {
    let len = encoding::decode_varint(rest).map_err(|e| e.to_string())? as usize;
    if len > rest.len() {
        return Err("a field runs past the end of its record".into());
    }
    let start = whole - rest.len();
    rest.advance(len);
    Ok((start, start + len))
}

/// Parses a `Record` as any protobuf encoder may have written it: fields in any order,
/// repeated ones (the last wins, as in protobuf), unknown ones skipped. The offset is
/// ignored (the log assigns it). Header names must be UTF-8, as for any `string`.
pub(super) fn parse_fields(record: &[u8]) -> std::result::Result<Fields, String> {
    let whole = record.len();
    let mut rest = record;
    let mut fields = Fields {
        timestamp_ms: 0,
        key: None,
        value: (0, 0),
        headers: 0,
        tags: 0,
    };
    while !rest.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
        fields.tags += 1;
        let expect = |wanted: WireType| {
            if wire_type == wanted {
                Ok(())
            } else {
                Err(format!(
                    "field {tag} has wire type {wire_type:?}, not {wanted:?}"
                ))
            }
        };
        match tag {
            2 => {
                expect(WireType::SixtyFourBit)?;
                if rest.len() < 8 {
                    return Err("timestamp_ms runs past the end of its record".into());
                }
                fields.timestamp_ms = rest.get_i64_le();
            }
            3 => {
                expect(WireType::LengthDelimited)?;
                fields.key = Some(delimited(&mut rest, whole)?);
            }
            4 => {
                expect(WireType::LengthDelimited)?;
                fields.value = delimited(&mut rest, whole)?;
            }
            5 => {
                expect(WireType::LengthDelimited)?;
                let (start, end) = delimited(&mut rest, whole)?;
                fields.tags += parse_header(&record[start..end])?.2;
                fields.headers += 1;
            }
            _ => encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                .map_err(|e| e.to_string())?,
        }
    }
    Ok(fields)
}

/// A `Header` message's name and value (fields in any order, unknown ones skipped),
/// and how many fields it has.
fn parse_header(header: &[u8]) -> std::result::Result<(&str, &[u8], usize), String> {
    let whole = header.len();
    let mut rest = header;
    let (mut name, mut value, mut tags) = ((0, 0), (0, 0), 0);
    while !rest.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
        tags += 1;
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => name = delimited(&mut rest, whole)?,
            (2, WireType::LengthDelimited) => value = delimited(&mut rest, whole)?,
            (1 | 2, other) => return Err(format!("header field {tag} has wire type {other:?}")),
            _ => encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                .map_err(|e| e.to_string())?,
        }
    }
    let name = std::str::from_utf8(&header[name.0..name.1])
        .map_err(|_| "a header name is not UTF-8".to_string())?;
    Ok((name, &header[value.0..value.1], tags))
}

/// A record's headers, in order, from its checked bytes.
#[derive(Clone)]
pub(super) struct Headers<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let whole = self.rest.len();
            let all = self.rest;
            let (tag, wire_type) = encoding::decode_key(&mut self.rest).ok()?;
            if tag == 5 {
                let (start, end) = delimited(&mut self.rest, whole).ok()?;
                return parse_header(&all[start..end]).ok().map(|(n, v, _)| (n, v));
            }
            encoding::skip_field(wire_type, tag, &mut self.rest, DecodeContext::default()).ok()?;
        }
        None
    }
}

/// Parses each received record and adds it to `writer`: the only pass over the records,
/// straight from the receive buffer into the batch.
pub fn write_records(received: Received, writer: &mut BatchWriter) -> Result<()> {
    if received.overflowed {
        return Err(Error::InvalidArgument(
            "too many records in one request".into(),
        ));
    }
    // Frozen, not copied.
    let small = Bytes::from(received.small);
    // Large records are taken over, not cloned: a record without headers and with a
    // short key (the usual one) touches its handle's reference count once when it is
    // decoded and once when the batch is dropped.
    let mut large = received.large.into_iter().enumerate();
    let mut key = Vec::new();
    for (i, span) in spans(&received.entries).enumerate() {
        // Slices of the request's buffers: no copy.
        let mut record = match span {
            Span::Small(range) => small.slice(range),
            Span::Large(at) => {
                let (index, record) = large.next().expect("one entry for each large record");
                debug_assert_eq!(index, at, "entries name large records in order");
                record
            }
        };
        let fields = parse_fields(&record)
            .map_err(|e| Error::InvalidArgument(format!("record {i} is malformed: {e}")))?;
        let (start, end) = fields.value;
        let key_len = fields.key.map_or(0, |(s, e)| e - s);
        if fields.headers == 0 && key_len < BORROW_AT_LEAST {
            // The record becomes its value; the key is copied out of it first.
            key.clear();
            if let Some((s, e)) = fields.key {
                key.extend_from_slice(&record[s..e]);
            }
            record.truncate(end);
            record.advance(start);
            let key = fields.key.map(|_| &key[..]);
            writer.push(key, record, std::iter::empty(), fields.timestamp_ms)?;
        } else {
            // The headers and a long key are read from the record as the batch is built
            // (copied once), beside a slice of the value.
            let value = record.slice(start..end);
            let key = fields.key.map(|(s, e)| &record[s..e]);
            let headers = Headers { rest: &record };
            writer.push(key, value, headers, fields.timestamp_ms)?;
        }
    }
    Ok(())
}
