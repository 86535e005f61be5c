//! Tests of `queues.rs`.

use bytes::Bytes;
use prost::Message;

use super::*;

/// `Delivered::size`, which share fetches budget with, is never below what the
/// record adds to an answer, whatever its shape: the answer must fit what the
/// server can send.
#[test]
fn a_delivered_records_size_covers_its_encoding() {
    let record =
        |key: Option<&'static [u8]>, value: usize, headers: Vec<(&str, usize)>| Delivered {
            partition: u32::MAX,
            delivery_count: u16::MAX,
            offset: u64::MAX,
            timestamp_ms: -1,
            key: key.map(Bytes::from_static),
            value: Bytes::from(vec![1; value]),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), Bytes::from(vec![2; v])))
                .collect(),
        };
    let empty_headers = vec![("", 0); 1_000];
    let one_byte_headers = vec![("h", 1); 1_000];
    for d in [
        record(None, 0, vec![]),
        record(Some(b""), 0, vec![]),
        record(Some(b"k"), 1, vec![("", 0)]),
        record(None, 0, empty_headers),
        record(Some(b"key"), 20_000_000, one_byte_headers),
    ] {
        let size = d.size();
        let answer = pb::ShareFetchResponse {
            member_id: String::new(),
            records: vec![shared(d)],
        };
        assert!(
            answer.encoded_len() <= size,
            "{} encoded, counted {size}",
            answer.encoded_len()
        );
    }
}
