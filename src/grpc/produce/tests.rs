//! The hand-written ProduceRequest against prost's encoding, and records of every shape
//! stored as sent.

use bytes::Bytes;
use prost::Message;

use super::record::{parse_fields, Headers};
use super::*;

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
    let (v5000, v256, v255, k300) = (vec![5u8; 5000], vec![6u8; 256], vec![7u8; 255], [8u8; 300]);
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

/// prost's generated encoding of a PublishRequest, for comparison.
#[derive(Clone, PartialEq, Message)]
struct GeneratedPublish {
    #[prost(string, tag = "1")]
    exchange: String,
    #[prost(string, tag = "2")]
    routing_key: String,
    #[prost(message, repeated, tag = "3")]
    records: Vec<pb::Record>,
    #[prost(int32, tag = "4")]
    durability: i32,
    #[prost(bool, tag = "5")]
    drop_unroutable: bool,
}

/// A PublishRequest encodes as prost would, decodes into records as received, and a
/// decoded one encodes back to the same bytes.
#[test]
fn publish_requests_encode_and_decode_as_prost_does() {
    let records = vec![
        record(Some(b"k"), b"small", &[]),
        record(None, &[7u8; 300], &[("h", b"v")]),
    ];
    let sent = PublishRequest {
        exchange: "orders".into(),
        routing_key: "eu.created".into(),
        records: records.clone(),
        durability: 2,
        drop_unroutable: true,
        ..Default::default()
    };
    let generated = GeneratedPublish {
        exchange: "orders".into(),
        routing_key: "eu.created".into(),
        records,
        durability: 2,
        drop_unroutable: true,
    };
    let bytes = sent.encode_to_vec();
    assert_eq!(bytes, generated.encode_to_vec());
    assert_eq!(sent.encoded_len(), bytes.len());
    let received = PublishRequest::decode(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(received.received.len(), 2);
    assert_eq!(
        (received.exchange.as_str(), received.routing_key.as_str()),
        ("orders", "eu.created")
    );
    assert!(received.drop_unroutable);
    assert_eq!(received.encode_to_vec(), bytes);
    assert_eq!(received.encoded_len(), bytes.len());
}
