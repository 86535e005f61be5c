//! A raw Kafka client for tests: requests encoded and responses decoded by
//! `kafka-protocol`, one frame at a time on a plain TCP connection, so that a test
//! chooses each request's version and can send what no client library would.

#![allow(dead_code)] // not every test binary uses every helper

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every read a test makes is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct KafkaConn {
    pub stream: TcpStream,
    correlation: i32,
}

impl KafkaConn {
    pub async fn connect(addr: SocketAddr) -> KafkaConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        KafkaConn {
            stream,
            correlation: 0,
        }
    }

    /// Sends `request` in `version` without waiting for the answer; its correlation id.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> i32 {
        self.try_send(request, version)
            .await
            .expect("the request is sent")
    }

    /// `send`, or None if the connection is gone.
    pub async fn try_send<R: Request>(&mut self, request: &R, version: i16) -> Option<i32> {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("strom-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.ok()?;
        Some(self.correlation)
    }

    /// Writes `body` with its size prefix.
    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next response frame's bytes, or None if the server closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let size = self.stream.read_i32().await.ok()?;
            let mut body = vec![0; size as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Bytes::from(body))
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("the server answers or closes in time")
    }

    /// Reads the response to the request sent as `correlation`.
    pub async fn receive<R: Request>(&mut self, correlation: i32, version: i16) -> R::Response {
        let mut frame = self
            .read_frame()
            .await
            .expect("a response, not a closed connection");
        assert_eq!(
            frame.get_i32(),
            correlation,
            "responses come in request order"
        );
        if R::Response::header_version(version) >= 1 {
            assert_eq!(frame.get_u8(), 0, "no tagged fields in the response header");
        }
        let response = R::Response::decode(&mut frame, version).unwrap();
        assert_eq!(frame.remaining(), 0, "the response is read to its end");
        response
    }

    pub async fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let correlation = self.send(request, version).await;
        self.receive::<R>(correlation, version).await
    }

    /// Whether the server closed the connection (reads end) within the timeout.
    pub async fn closed(&mut self) -> bool {
        self.read_frame().await.is_none()
    }
}

/// A record of `key`, `value` and `headers`, as `batch` takes them.
pub fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> Record {
    let mut map = IndexMap::new();
    for (name, value) in headers {
        map.insert(
            StrBytes::from_string(name.to_string()),
            Some(Bytes::copy_from_slice(value)),
        );
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: map,
    }
}

/// `records` as one v2 batch, offsets (and sequences, from the first record's) numbered
/// from 0.
pub fn batch(records: &[Record], compression: Compression) -> Bytes {
    let numbered: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: i as i64,
            // The encoder starts a new batch where offset minus sequence changes: a
            // record without a producer has sequence -1, and the batch base sequence -1.
            sequence: r.sequence + i as i32,
            ..r.clone()
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &numbered, &options).unwrap();
    buf.freeze()
}

/// The records of a fetch response's partition.
pub fn records_of(mut data: Bytes) -> Vec<Record> {
    RecordBatchDecoder::decode_all(&mut data)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}
