//! `FetchResponse` and `SubscribeResponse`, encoded by hand from stored batches.
//!
//! A batch's records section on disk is already the protobuf encoding of `repeated
//! Record records = 1` (see `log/record.rs`), so a response is the records sections of
//! the batches read, concatenated, followed by a few varint fields. prost's generated
//! code would decode every record into a struct and encode it again; these types keep
//! the stored bytes as `Bytes` slices of the segment maps instead, and the only copy is
//! the one into tonic's send buffer. Decoding (in the Rust client) keeps the records as
//! encoded bytes too, to be read with `log::record::parse_record`.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use crate::log::record::{parse_record, parse_record_body, RECORD_TAG};
use crate::log::{BatchHeader, ReadBatches, RecordView, HEADER_LEN};

/// Records in their encoded form, in offset order: on the server, runs of whole
/// entries (`0x0A <len> <body>`) sliced from stored batches; in a client, the bodies
/// of received entries, which prost hands over as slices of the receive buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordSet {
    chunks: Vec<Bytes>,
    bodies: Vec<Bytes>,
}

impl RecordSet {
    /// The records at or after `from` in `read`, as many whole records as fit in
    /// `max_bytes` (at least one): the records sections of its batches, with records below
    /// `from` skipped and a batch cut at a record boundary where the budget ends. Returns
    /// them and the offset after the last one. A response built from them is at most
    /// `max_bytes` plus its few other fields, unless its first record alone is larger:
    /// batches are stored whole, but records are self-delimited, so a client with a small
    /// receive limit still gets every record that fits it.
    pub fn from_batches(read: &ReadBatches, from: u64, max_bytes: usize) -> (RecordSet, u64) {
        let mut chunks = Vec::with_capacity(read.chunks.len());
        let mut budget = max_bytes;
        let mut next = from;
        'batches: for chunk in &read.chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let header = BatchHeader::parse(&chunk[pos..]);
                let end = pos + header.length as usize;
                let mut start = pos + HEADER_LEN;
                pos = end;
                if header.next_offset() <= from {
                    continue;
                }
                let mut offset = header.base_offset;
                let mut rest = &chunk[start..end];
                // Skip records below `from`, then take whole records while they fit.
                let mut taken = 0;
                while !rest.is_empty() {
                    let before = rest.len();
                    if parse_record(&mut rest).is_err() {
                        break; // checked by the read's CRC; cannot happen
                    }
                    let len = before - rest.len();
                    if offset < from {
                        start += len;
                    } else if taken + len <= budget || (chunks.is_empty() && taken == 0) {
                        taken += len;
                    } else {
                        break;
                    }
                    offset += 1;
                }
                if taken > 0 {
                    chunks.push(chunk.slice(start..start + taken));
                    budget = budget.saturating_sub(taken);
                    next = offset;
                }
                if offset < header.next_offset() || budget == 0 {
                    break 'batches; // the budget ended inside this batch
                }
            }
        }
        // Nothing at or after `from` in what was read (compaction left a gap there, up to
        // the end of the log): go on where the read ended, or a consumer would ask for
        // the same offset forever.
        if chunks.is_empty() {
            next = read.next_offset;
        }
        let set = RecordSet {
            chunks,
            bodies: Vec::new(),
        };
        (set, next.max(from))
    }

    pub fn encoded_len(&self) -> usize {
        let bodies: usize = self
            .bodies
            .iter()
            .map(|b| 1 + encoding::encoded_len_varint(b.len() as u64) + b.len())
            .sum();
        self.chunks.iter().map(Bytes::len).sum::<usize>() + bodies
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.bodies.is_empty()
    }

    /// The records, decoded on demand.
    pub fn iter(&self) -> impl Iterator<Item = Result<RecordView<'_>, String>> {
        let entries = self.chunks.iter().flat_map(|chunk| {
            let mut rest = &chunk[..];
            std::iter::from_fn(move || (!rest.is_empty()).then(|| parse_record(&mut rest)))
        });
        entries.chain(self.bodies.iter().map(|body| parse_record_body(body)))
    }

    fn encode(&self, buf: &mut impl BufMut) {
        for chunk in &self.chunks {
            buf.put_slice(chunk);
        }
        for body in &self.bodies {
            buf.put_u8(RECORD_TAG);
            encoding::encode_varint(body.len() as u64, buf);
            buf.put_slice(body);
        }
    }

    /// Keeps a received record's body as the slice of the receive buffer prost hands
    /// over (no copy); its fields are checked when `iter` reads it.
    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut body = Bytes::new();
        encoding::bytes::merge(wire_type, &mut body, buf, ctx)?;
        self.bodies.push(body);
        Ok(())
    }
}

/// Implements `prost::Message` for a response of `records = 1` and `u64` fields.
macro_rules! records_message {
    ($name:ident { $($field:ident = $tag:literal),* }) => {
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            pub records: RecordSet,
            $(pub $field: u64,)*
        }

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                self.records.encode(buf);
                $(if self.$field != 0 { encoding::uint64::encode($tag, &self.$field, buf); })*
            }

            fn merge_field(&mut self, tag: u32, wire_type: WireType, buf: &mut impl Buf, ctx: DecodeContext) -> Result<(), DecodeError> {
                match tag {
                    1 => self.records.merge(wire_type, buf, ctx),
                    $($tag => encoding::uint64::merge(wire_type, &mut self.$field, buf, ctx),)*
                    _ => encoding::skip_field(wire_type, tag, buf, ctx),
                }
            }

            fn encoded_len(&self) -> usize {
                self.records.encoded_len()
                    $(+ if self.$field != 0 { encoding::uint64::encoded_len($tag, &self.$field) } else { 0 })*
            }

            fn clear(&mut self) {
                *self = Self::default();
            }
        }
    };
}

records_message!(FetchResponse { high_watermark = 2, log_start_offset = 3, next_offset = 4 });
records_message!(SubscribeResponse { high_watermark = 2, next_offset = 4 });

#[cfg(test)]
mod tests {
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

    #[test]
    fn response_is_standard_protobuf_and_skips_records_below_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(
            dir.path(),
            LogConfig {
                flush: FlushPolicy::Os,
                ..LogConfig::default()
            },
        )
        .unwrap();
        for batch in 0..3 {
            let mut builder = BatchBuilder::default();
            for i in 0..4 {
                let value = Bytes::from(format!("{batch}-{i}"));
                builder
                    .push(&Record {
                        value,
                        timestamp_ms: 7,
                        ..Record::default()
                    })
                    .unwrap();
            }
            log.append(&mut builder.build().unwrap()).unwrap();
        }
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
}
