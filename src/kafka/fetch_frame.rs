//! A Fetch response as a frame of chunks: the fields encoded here, each partition's
//! records handed on as the `Bytes` the read made, not copied into one buffer, and
//! the chunks written with vectored writes (`connection.rs`). kafka-protocol's encoder
//! would copy every record once more; a test pins this encoding to its, byte for byte,
//! in every version strom answers.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::FetchResponse;

/// The frame: its size, the response header, and the body, in chunks.
pub fn fetch_frame(correlation: i32, response: &FetchResponse, version: i16) -> Vec<Bytes> {
    let flexible = version >= 12;
    let mut out = Chunks {
        chunks: Vec::new(),
        head: BytesMut::with_capacity(256),
        flexible,
    };
    out.head.put_i32(correlation);
    if flexible {
        out.head.put_u8(0); // the response header's tagged fields
    }
    out.head.put_i32(response.throttle_time_ms);
    if version >= 7 {
        out.head.put_i16(response.error_code);
        out.head.put_i32(response.session_id);
    }
    out.length(response.responses.len());
    for topic in &response.responses {
        out.string(&topic.topic);
        out.length(topic.partitions.len());
        for p in &topic.partitions {
            out.head.put_i32(p.partition_index);
            out.head.put_i16(p.error_code);
            out.head.put_i64(p.high_watermark);
            out.head.put_i64(p.last_stable_offset);
            if version >= 5 {
                out.head.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None => out.null(),
                Some(aborted) => {
                    out.length(aborted.len());
                    for a in aborted {
                        out.head.put_i64(a.producer_id.0);
                        out.head.put_i64(a.first_offset);
                        out.tags();
                    }
                }
            }
            if version >= 11 {
                out.head.put_i32(p.preferred_read_replica.0);
            }
            match &p.records {
                None => out.null(),
                Some(records) => out.records(records),
            }
            out.tags(); // strom sets none of a partition's tagged fields
        }
        out.tags();
    }
    out.tags();
    let mut chunks = out.finish();
    let size: usize = chunks.iter().map(Bytes::len).sum();
    chunks.insert(0, Bytes::copy_from_slice(&(size as i32).to_be_bytes()));
    chunks
}

struct Chunks {
    chunks: Vec<Bytes>,
    /// The fields since the last records.
    head: BytesMut,
    flexible: bool,
}

impl Chunks {
    /// An array's or a byte string's length, as the version encodes it.
    fn length(&mut self, n: usize) {
        match self.flexible {
            true => self.uvarint(n as u32 + 1),
            false => self.head.put_i32(n as i32),
        }
    }

    fn null(&mut self) {
        match self.flexible {
            true => self.uvarint(0),
            false => self.head.put_i32(-1),
        }
    }

    fn string(&mut self, s: &str) {
        match self.flexible {
            true => self.uvarint(s.len() as u32 + 1),
            false => self.head.put_i16(s.len() as i16),
        }
        self.head.put_slice(s.as_bytes());
    }

    fn tags(&mut self) {
        if self.flexible {
            self.head.put_u8(0);
        }
    }

    fn records(&mut self, records: &Bytes) {
        self.length(records.len());
        if !records.is_empty() {
            self.chunks.push(self.head.split().freeze());
            self.chunks.push(records.clone());
        }
    }

    fn uvarint(&mut self, mut n: u32) {
        while n >= 0x80 {
            self.head.put_u8((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.head.put_u8(n as u8);
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.chunks.push(self.head.freeze());
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    /// A response of the shapes `fetch.rs` makes: records, none, and a refusal, over
    /// two topics, one of a name long enough for a two-byte varint.
    fn response() -> FetchResponse {
        let mut response = FetchResponse::default();
        for (name, partitions) in [("events", 3), (&*"t".repeat(200), 1)] {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = StrBytes::from_string(name.to_string()).into();
            for index in 0..partitions {
                let mut p = PartitionData::default();
                p.partition_index = index;
                p.high_watermark = 1000 + i64::from(index);
                p.last_stable_offset = 1000;
                p.log_start_offset = 7;
                p.aborted_transactions = Some(Vec::new());
                p.records = Some(match index {
                    0 => Bytes::from(vec![b'r'; 300]),
                    1 => Bytes::new(),
                    _ => {
                        p.error_code = 3;
                        p.high_watermark = -1;
                        Bytes::new()
                    }
                });
                topic.partitions.push(p);
            }
            response.responses.push(topic);
        }
        response
    }

    #[test]
    fn the_frame_is_kafka_protocols_encoding_byte_for_byte() {
        let response = response();
        for version in 4..=12 {
            let mut expected = BytesMut::new();
            expected.put_i32(0);
            expected.put_i32(42);
            if version >= 12 {
                expected.put_u8(0);
            }
            response.encode(&mut expected, version).unwrap();
            let size = (expected.len() - 4) as i32;
            expected[..4].copy_from_slice(&size.to_be_bytes());
            let chunks = fetch_frame(42, &response, version);
            assert_eq!(chunks.concat(), expected.to_vec(), "version {version}");
            let records = chunks.iter().filter(|c| c.len() == 300).count();
            assert_eq!(
                records, 2,
                "each partition's records are a chunk of their own"
            );
        }
    }
}
