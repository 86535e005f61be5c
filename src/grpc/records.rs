//! `FetchResponse` and `SubscribeResponse`, encoded by hand from stored batches.
//!
//! A batch's records section on disk is already the protobuf encoding of `repeated
//! Record records = 1` (see `log/record.rs`), so a response is the records sections of
//! the batches read, concatenated, followed by a few varint fields. prost's generated
//! code would decode every record into a struct and encode it again; these types keep
//! the stored bytes as `Bytes` slices of the segment maps instead, and long runs of them
//! are sent as those slices (`grpc::direct`): the kernel's copy into the socket is the
//! only one. Decoding (in the Rust client) keeps the records as
//! encoded bytes too, to be read with `log::record::parse_record`.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::direct::Reply;
use crate::log::record::{parse_record, RECORD_TAG};
use crate::log::{BatchHeader, ReadBatches, RecordView, HEADER_LEN};

/// Runs of stored records at least this long are sent as the slices of the segment map
/// they are; shorter ones are copied together, as each slice costs a DATA frame and a
/// write of its own.
const SEND_AS_SLICE_BYTES: usize = 32 << 10;

/// Records in their encoded form, in offset order, as runs of whole entries
/// (`0x0A <len> <body>`): on the server, sliced from stored batches; in a client,
/// sliced from the frames the response arrived in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordSet {
    chunks: Vec<Bytes>,
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
                // A batch wholly wanted and within the budget goes as it is, without
                // walking its records (6% of the server's CPU while a consumer read).
                if header.base_offset >= from && end - start <= budget {
                    chunks.push(chunk.slice(start..end));
                    budget -= end - start;
                    next = header.next_offset();
                    if budget == 0 {
                        break 'batches;
                    }
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
        (RecordSet { chunks }, next.max(from))
    }

    pub fn encoded_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The records, decoded on demand.
    pub fn iter(&self) -> impl Iterator<Item = Result<RecordView<'_>, String>> {
        self.chunks.iter().flat_map(|chunk| {
            let mut rest = &chunk[..];
            std::iter::from_fn(move || (!rest.is_empty()).then(|| parse_record(&mut rest)))
        })
    }

    fn encode(&self, buf: &mut impl BufMut) {
        for chunk in &self.chunks {
            buf.put_slice(chunk);
        }
    }

    /// Appends the records to `head`, pushing long runs of stored records to `out` as
    /// their own pieces (after what `head` held) instead of copying them.
    fn write_pieces(&self, head: &mut BytesMut, out: &mut VecDeque<Bytes>) {
        for (i, chunk) in self.chunks.iter().enumerate() {
            if chunk.len() < SEND_AS_SLICE_BYTES {
                if head.capacity() - head.len() < chunk.len() {
                    // Room for this chunk and the short ones after it at once (and the
                    // response's other fields), rather than growing by doubling.
                    let short: usize = self.chunks[i..]
                        .iter()
                        .map(Bytes::len)
                        .take_while(|&len| len < SEND_AS_SLICE_BYTES)
                        .sum();
                    head.reserve(short + 40);
                }
                head.extend_from_slice(chunk);
                continue;
            }
            if !head.is_empty() {
                out.push_back(head.split().freeze());
            }
            out.push_back(chunk.clone());
        }
    }

    /// Takes the run of whole entries at the start of `buf`'s current chunk as one slice
    /// (no copy, and no `Bytes` per record); returns whether there was one. Each record's
    /// fields are checked when `iter` reads it.
    fn take_run(&mut self, buf: &mut impl Buf) -> bool {
        let chunk = buf.chunk();
        let mut rest = chunk;
        while rest.first() == Some(&RECORD_TAG) {
            let mut after_tag = &rest[1..];
            let Ok(len) = encoding::decode_varint(&mut after_tag) else {
                break;
            };
            if len > after_tag.len() as u64 {
                break; // cut by the end of the chunk
            }
            rest = &after_tag[len as usize..];
        }
        let run = chunk.len() - rest.len();
        if run > 0 {
            self.chunks.push(buf.copy_to_bytes(run));
        }
        run > 0
    }

    /// One entry that `take_run` could not take whole (a frame boundary cuts it): its
    /// body, copied behind its tag and length.
    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut body = Bytes::new();
        encoding::bytes::merge(wire_type, &mut body, buf, ctx)?;
        let mut entry = BytesMut::with_capacity(11 + body.len());
        entry.put_u8(RECORD_TAG);
        encoding::encode_varint(body.len() as u64, &mut entry);
        entry.extend_from_slice(&body);
        self.chunks.push(entry.freeze());
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

            /// prost's loop, but a run of whole record entries in one chunk of the
            /// buffer is taken at once, as a slice of it.
            fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
                let ctx = DecodeContext::default();
                while buf.has_remaining() {
                    if self.records.take_run(&mut buf) {
                        continue;
                    }
                    let (tag, wire_type) = encoding::decode_key(&mut buf)?;
                    self.merge_field(tag, wire_type, &mut buf, ctx.clone())?;
                }
                Ok(())
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

        impl Reply for $name {
            fn write_pieces(self, mut head: BytesMut, out: &mut VecDeque<Bytes>) {
                self.records.write_pieces(&mut head, out);
                $(if self.$field != 0 { encoding::uint64::encode($tag, &self.$field, &mut head); })*
                if !head.is_empty() {
                    out.push_back(head.freeze());
                }
            }
        }
    };
}

records_message!(FetchResponse { high_watermark = 2, log_start_offset = 3, next_offset = 4 });
records_message!(SubscribeResponse { high_watermark = 2, next_offset = 4 });

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
