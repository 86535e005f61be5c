//! `ProduceRequest`, decoded by hand.
//!
//! prost's generated decoder would turn every record into a struct of its own (about a
//! hundred bytes for a record that is two bytes on the wire), and a 10 MB request of
//! five million empty records into more than a gigabyte. Here each record stays as it
//! arrived: a record of 32 bytes or more is kept as a slice of the receive buffer (no
//! copy; the slice's handle is 32 bytes), a smaller one is copied into one buffer shared
//! by the request (cheaper than a handle), and either way the request keeps four bytes
//! of bookkeeping per record. Records are parsed only when their batch is built,
//! straight into the batch.
//!
//! The same type encodes requests for the Rust client from `records`, as prost's would.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::pb;
use crate::broker::{self, BatchWriter, Broker, Durability};
use crate::error::{Error, Result};
use crate::log::{ProducerInfo, BORROW_AT_LEAST};

/// Records at least this long are kept as slices of the receive buffer: a `Bytes`
/// handle is 32 bytes, so a shorter record costs less copied.
const SHARE_AT_LEAST: usize = 32;
/// Marks an entry of `Received::entries` that indexes `large` rather than `small`.
const LARGE: u32 = 1 << 31;

/// Records as received, in order: each one's encoded `Record` message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    /// Small records, back to back.
    small: Vec<u8>,
    /// Large records, each a slice of the receive buffer.
    large: Vec<Bytes>,
    /// Per record: the end of its bytes in `small`, or `LARGE | index` into `large`.
    entries: Vec<u32>,
    /// More records came than this type counts (never with the server's request-size
    /// limit): the request is refused.
    overflowed: bool,
}

/// Records a `Received` holds at most.
const MAX_ENTRIES: usize = (LARGE - 1) as usize;

impl Received {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records kept as slices of the buffer they were received in (for tests).
    #[cfg(test)]
    pub fn shared(&self) -> &[Bytes] {
        &self.large
    }

    /// Bytes the records take, as received.
    pub fn bytes(&self) -> usize {
        self.small.len() + self.large.iter().map(Bytes::len).sum::<usize>()
    }

    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // A slice of the receive buffer (tonic's buffer hands out slices, not copies).
        let mut record = Bytes::new();
        encoding::bytes::merge(wire_type, &mut record, buf, ctx)?;
        if self.entries.len() >= MAX_ENTRIES || self.small.len() + record.len() >= LARGE as usize {
            self.overflowed = true; // refused when the batch is built
        } else if record.len() >= SHARE_AT_LEAST {
            self.entries.push(LARGE | self.large.len() as u32);
            self.large.push(record);
        } else {
            self.small.extend_from_slice(&record);
            self.entries.push(self.small.len() as u32);
        }
        Ok(())
    }

    /// Each record's encoded message, in order, borrowed.
    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        spans(&self.entries).map(|span| match span {
            Span::Small(range) => &self.small[range],
            Span::Large(i) => &self.large[i][..],
        })
    }
}

/// Where one received record is: a range of `Received::small`, or an index into
/// `Received::large`.
enum Span {
    Small(std::ops::Range<usize>),
    Large(usize),
}

/// The records' places, in order, from `Received::entries`.
fn spans(entries: &[u32]) -> impl Iterator<Item = Span> + '_ {
    let mut start = 0usize;
    entries.iter().map(move |&entry| {
        if entry & LARGE != 0 {
            Span::Large((entry & !LARGE) as usize)
        } else {
            let end = entry as usize;
            let span = Span::Small(start..end);
            start = end;
            span
        }
    })
}

/// `strom.v1.ProduceRequest`. The fields are those of the generated type, plus
/// `received`, which a decoded request fills instead of `records`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: Option<u32>,
    /// Records to send: what a client fills in.
    pub records: Vec<pb::Record>,
    pub durability: i32,
    pub producer_id: Option<i64>,
    pub producer_epoch: Option<i32>,
    pub base_sequence: Option<i32>,
    /// Records as a server received them.
    pub received: Received,
}

impl ProduceRequest {
    /// A request of one record to `topic` as the server receives it (for tests).
    #[cfg(test)]
    pub fn decode_from(topic: &str, record: &pb::Record) -> ProduceRequest {
        use prost::Message;
        let sent = ProduceRequest {
            topic: topic.into(),
            records: vec![record.clone()],
            ..Default::default()
        };
        ProduceRequest::decode(Bytes::from(sent.encode_to_vec())).expect("our own encoding")
    }

    /// The `durability` field as its enum (unknown values are refused by the server).
    pub fn durability(&self) -> pb::Durability {
        pb::Durability::try_from(self.durability).unwrap_or_default()
    }
}

impl prost::Message for ProduceRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::string::encode(1, &self.topic, buf);
        }
        if let Some(p) = self.partition {
            encoding::uint32::encode(2, &p, buf);
        }
        for record in &self.records {
            encoding::message::encode(3, record, buf);
        }
        for record in self.received.iter() {
            encoding::encode_key(3, WireType::LengthDelimited, buf);
            encoding::encode_varint(record.len() as u64, buf);
            buf.put_slice(record);
        }
        if self.durability != 0 {
            encoding::int32::encode(4, &self.durability, buf);
        }
        if let Some(id) = self.producer_id {
            encoding::int64::encode(5, &id, buf);
        }
        if let Some(epoch) = self.producer_epoch {
            encoding::int32::encode(6, &epoch, buf);
        }
        if let Some(sequence) = self.base_sequence {
            encoding::int32::encode(7, &sequence, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.topic, buf, ctx),
            2 => encoding::uint32::merge(wire_type, self.partition.get_or_insert(0), buf, ctx),
            3 => self.received.merge(wire_type, buf, ctx),
            4 => encoding::int32::merge(wire_type, &mut self.durability, buf, ctx),
            5 => encoding::int64::merge(wire_type, self.producer_id.get_or_insert(0), buf, ctx),
            6 => encoding::int32::merge(wire_type, self.producer_epoch.get_or_insert(0), buf, ctx),
            7 => encoding::int32::merge(wire_type, self.base_sequence.get_or_insert(0), buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let received: usize = self
            .received
            .iter()
            .map(|r| encoding::key_len(3) + encoding::encoded_len_varint(r.len() as u64) + r.len())
            .sum();
        (if self.topic.is_empty() {
            0
        } else {
            encoding::string::encoded_len(1, &self.topic)
        }) + self
            .partition
            .map_or(0, |p| encoding::uint32::encoded_len(2, &p))
            + encoding::message::encoded_len_repeated(3, &self.records)
            + received
            + if self.durability != 0 {
                encoding::int32::encoded_len(4, &self.durability)
            } else {
                0
            }
            + self
                .producer_id
                .map_or(0, |v| encoding::int64::encoded_len(5, &v))
            + self
                .producer_epoch
                .map_or(0, |v| encoding::int32::encoded_len(6, &v))
            + self
                .base_sequence
                .map_or(0, |v| encoding::int32::encoded_len(7, &v))
    }

    fn clear(&mut self) {
        *self = ProduceRequest::default();
    }
}

/// One received record's fields, as ranges of its bytes.
struct Fields {
    timestamp_ms: i64,
    key: Option<(usize, usize)>,
    value: (usize, usize),
    /// How many headers: none is the common case, and spares a second walk.
    headers: usize,
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
fn parse_fields(record: &[u8]) -> std::result::Result<Fields, String> {
    let whole = record.len();
    let mut rest = record;
    let mut fields = Fields {
        timestamp_ms: 0,
        key: None,
        value: (0, 0),
        headers: 0,
    };
    while !rest.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
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
                parse_header(&record[start..end])?;
                fields.headers += 1;
            }
            _ => encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                .map_err(|e| e.to_string())?,
        }
    }
    Ok(fields)
}

/// A `Header` message's name and value (fields in any order, unknown ones skipped).
fn parse_header(header: &[u8]) -> std::result::Result<(&str, &[u8]), String> {
    let whole = header.len();
    let mut rest = header;
    let (mut name, mut value) = ((0, 0), (0, 0));
    while !rest.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
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
    Ok((name, &header[value.0..value.1]))
}

/// A record's headers, in order, from its checked bytes.
#[derive(Clone)]
struct Headers<'a> {
    rest: &'a [u8],
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
                return parse_header(&all[start..end]).ok();
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

/// Checks a produce request and builds its batch: its records go from the receive
/// buffer into the batch in one pass (see `produce.rs`).
pub fn prepare(broker: &Broker, r: pb::ProduceRequest) -> Result<broker::Prepared, Error> {
    let bad = |msg: String| Error::InvalidArgument(msg);
    let durability = match pb::Durability::try_from(r.durability) {
        Ok(pb::Durability::Unspecified) => None,
        Ok(pb::Durability::PageCache) => Some(Durability::PageCache),
        Ok(pb::Durability::Fsync) => Some(Durability::Fsync),
        Err(_) => {
            return Err(bad(format!(
                "durability {} is not a Durability value",
                r.durability
            )))
        }
    };
    let producer = match (r.producer_id, r.producer_epoch, r.base_sequence) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(bad(
                "producer_epoch and base_sequence go with a producer_id (from InitProducer)".into(),
            ))
        }
        (Some(id), _, _) if id < 0 => {
            return Err(bad(format!(
                "producer_id {id} is negative; leave it unset, or use one InitProducer gave"
            )))
        }
        (Some(_), _, None) => {
            return Err(bad(
                "a produce with a producer_id needs base_sequence: the sequence of its first record in this partition, from 0".into(),
            ))
        }
        (Some(id), epoch, Some(sequence)) => {
            let epoch = epoch.unwrap_or(0);
            if !(0..=i32::from(i16::MAX)).contains(&epoch) {
                return Err(bad(format!(
                    "producer_epoch {epoch} is outside 0..=32767; use the epoch InitProducer gave"
                )));
            }
            if sequence < 0 {
                return Err(bad(format!(
                    "base_sequence {sequence} is negative; sequences run from 0 to 2147483647 and then wrap to 0"
                )));
            }
            Some(ProducerInfo {
                id,
                epoch: epoch as i16,
                base_sequence: sequence,
            })
        }
    };
    let target = broker::ProduceTarget {
        topic: r.topic,
        partition: r.partition,
        durability,
        producer,
    };
    // What the batch will copy: small records whole, and tags and lengths of the rest.
    let copied = r.received.bytes().min(r.received.len() * 300) + 32 * r.received.len();
    let mut writer = broker.begin_produce(target, r.received.len(), copied)?;
    write_records(r.received, &mut writer)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// prost's generated encoding of the same message, for comparison.
    #[derive(Clone, PartialEq, Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        topic: String,
        #[prost(uint32, optional, tag = "2")]
        partition: Option<u32>,
        #[prost(message, repeated, tag = "3")]
        records: Vec<pb::Record>,
        #[prost(int32, tag = "4")]
        durability: i32,
    }

    fn record(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> pb::Record {
        pb::Record {
            offset: 99,
            timestamp_ms: 1234,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            headers: headers
                .iter()
                .map(|(n, v)| pb::Header {
                    name: n.to_string(),
                    value: Bytes::copy_from_slice(v),
                })
                .collect(),
        }
    }

    /// What a record is stored as: timestamp, key, value, headers.
    type Stored = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    /// Decodes `request` (an encoded ProduceRequest to topic `t`, partition 0, on a new
    /// broker), appends it and reads back what was stored.
    async fn store(request: Vec<u8>) -> Vec<Stored> {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path(), crate::broker::Limits::default()).unwrap();
        let broker = std::sync::Arc::new(broker);
        broker
            .create_topic("t", 1, &Default::default())
            .await
            .unwrap();
        let decoded = ProduceRequest::decode(Bytes::from(request)).unwrap();
        let appended = prepare(&broker, decoded).unwrap().append().await.unwrap();
        appended.durable().await.unwrap();
        let (read, _) = broker
            .fetch("t", 0, 0, 1 << 20, std::time::Duration::ZERO, 1)
            .await
            .unwrap();
        read.chunks
            .iter()
            .flat_map(|chunk| {
                crate::log::records(chunk)
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        let headers = r.headers().map(|(n, v)| (n.into(), v.to_vec())).collect();
                        (
                            r.timestamp_ms,
                            r.key.map(<[u8]>::to_vec),
                            r.value.to_vec(),
                            headers,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every shape of record `write_records` handles (a value handed over whole, with or
    /// without a short key to copy out first; a value sliced beside headers or a long
    /// key; small records) is stored exactly as sent.
    #[tokio::test]
    async fn records_of_every_shape_are_stored_as_sent() {
        let big = vec![7u8; 5000];
        let records = vec![
            record(None, &big, &[]),
            record(Some(&[1u8; 255]), &big, &[]),
            record(Some(&[1u8; 300]), &big, &[]),
            record(Some(b"k"), &big, &[("h", b"v"), ("h", &[2u8; 400])]),
            record(Some(b"k"), b"tiny", &[]),
            record(Some(b""), b"", &[]),
            record(None, &[9u8; 256], &[("n", b"")]),
            record(Some(&[3u8; 700]), &[4u8; 255], &[]),
        ];
        let request = ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: records.clone(),
            ..Default::default()
        };
        let sent: Vec<Stored> = records
            .iter()
            .map(|r| {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.to_vec()))
                    .collect();
                (
                    r.timestamp_ms,
                    r.key.as_ref().map(|k| k.to_vec()),
                    r.value.to_vec(),
                    headers,
                )
            })
            .collect();
        assert_eq!(store(request.encode_to_vec()).await, sent);
    }

    /// Records in orders prost never writes (the value before the key, an unknown field
    /// after the value, the value twice) are stored as protobuf reads them: the last
    /// value counts, and nothing after it in the record becomes part of it.
    #[tokio::test]
    async fn records_in_any_field_order_are_stored_as_protobuf_reads_them() {
        let field = |tag: u32, bytes: &[u8], to: &mut Vec<u8>| {
            encoding::bytes::encode(tag, &Bytes::copy_from_slice(bytes), to)
        };
        let raw = |parts: &[(u32, &[u8])]| {
            let mut r = Vec::new();
            encoding::sfixed64::encode(2, &1234, &mut r);
            for (tag, bytes) in parts {
                field(*tag, bytes, &mut r);
            }
            r
        };
        let (v5000, v256, v255, k300) =
            (vec![5u8; 5000], vec![6u8; 256], vec![7u8; 255], [8u8; 300]);
        let records = [
            raw(&[(4, &v5000), (3, b"k"), (9, b"unknown")]),
            raw(&[(4, &v5000), (4, &v256), (9, b"unknown")]),
            raw(&[(4, &v255), (3, b"key after")]),
            raw(&[(3, &k300), (4, &v5000), (9, b"unknown")]),
        ];
        let mut request = Vec::new();
        field(1, b"t", &mut request);
        encoding::uint32::encode(2, &0, &mut request);
        for r in &records {
            field(3, r, &mut request);
        }
        let stored = store(request).await;
        let expected: Vec<Stored> = vec![
            (1234, Some(b"k".to_vec()), v5000.clone(), vec![]),
            (1234, None, v256, vec![]),
            (1234, Some(b"key after".to_vec()), v255, vec![]),
            (1234, Some(k300.to_vec()), v5000, vec![]),
        ];
        assert_eq!(stored, expected);
    }

    #[test]
    fn encodes_as_prost_does_and_decodes_records_as_sent() {
        let records = vec![
            record(Some(b"k"), b"small", &[("h", b"v"), ("h", b"w")]),
            record(None, &[7u8; 300], &[]),
            record(Some(b""), b"", &[]),
        ];
        let ours = ProduceRequest {
            topic: "t".into(),
            partition: Some(2),
            records: records.clone(),
            durability: 2,
            ..Default::default()
        };
        let generated = Generated {
            topic: "t".into(),
            partition: Some(2),
            records: records.clone(),
            durability: 2,
        };
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes, generated.encode_to_vec());
        assert_eq!(ours.encoded_len(), bytes.len());

        let decoded = ProduceRequest::decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!((decoded.topic.as_str(), decoded.partition), ("t", Some(2)));
        assert_eq!(decoded.received.len(), 3);
        assert_eq!(decoded.encode_to_vec(), bytes, "re-encodes the same");
        let got: Vec<_> = decoded
            .received
            .iter()
            .map(|r| {
                let f = parse_fields(r).unwrap();
                let headers: Vec<(String, Vec<u8>)> = Headers { rest: r }
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect();
                (
                    f.timestamp_ms,
                    f.key.map(|(s, e)| r[s..e].to_vec()),
                    r[f.value.0..f.value.1].to_vec(),
                    headers,
                )
            })
            .collect();
        assert_eq!(got[0].0, 1234);
        assert_eq!(got[0].1.as_deref(), Some(&b"k"[..]));
        assert_eq!(got[0].2, b"small");
        assert_eq!(
            got[0].3,
            [
                ("h".to_string(), b"v".to_vec()),
                ("h".to_string(), b"w".to_vec())
            ]
        );
        assert_eq!((got[1].1.clone(), got[1].2.len()), (None, 300));
        assert_eq!(
            (got[2].1.as_deref(), got[2].2.len()),
            (Some(&b""[..]), 0),
            "an empty key is a key"
        );
    }

    #[test]
    fn fields_in_any_order_repeated_and_unknown_are_read_as_protobuf_does() {
        let mut r = Vec::new();
        encoding::bytes::encode(4, &Bytes::from_static(b"first"), &mut r);
        encoding::uint64::encode(15, &7, &mut r); // unknown
        encoding::bytes::encode(3, &Bytes::from_static(b"key"), &mut r);
        encoding::bytes::encode(4, &Bytes::from_static(b"last"), &mut r);
        let f = parse_fields(&r).unwrap();
        assert_eq!(&r[f.value.0..f.value.1], b"last");
        assert_eq!(f.key.map(|(s, e)| &r[s..e]), Some(&b"key"[..]));
        for bad in [
            vec![0x22, 0x05, b'a'],             // value runs past the end
            vec![0x20, 0x01],                   // value with a varint wire type
            vec![0x2A, 0x03, 0x0A, 0x01, 0xFF], // header name not UTF-8
            vec![0x11, 0x01],                   // truncated timestamp
        ] {
            assert!(parse_fields(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_of_empty_records_costs_bytes_per_record_not_structs() {
        // Five hundred thousand empty records: two bytes each on the wire.
        let mut wire = Vec::new();
        encoding::string::encode(1, &"t".to_string(), &mut wire);
        for _ in 0..500_000 {
            wire.extend_from_slice(&[0x1A, 0x00]);
        }
        let decoded = ProduceRequest::decode(Bytes::from(wire.clone())).unwrap();
        assert_eq!(decoded.received.len(), 500_000);
        let held = decoded.received.small.capacity()
            + decoded.received.entries.capacity() * 4
            + decoded.received.large.capacity() * 32;
        assert!(
            held <= 3 * wire.len(),
            "{held} bytes held for {} on the wire",
            wire.len()
        );
    }
}
