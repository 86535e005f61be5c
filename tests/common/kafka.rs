//! A raw Kafka client for tests: requests encoded and responses decoded by
//! `kafka-protocol`, one frame at a time on a plain TCP connection, so that a test
//! chooses each request's version and can send what no client library would.

#![allow(dead_code)] // not every test binary uses every helper

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every read a test makes is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's bytes: a TCP socket, or TLS over one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

pub struct KafkaConn {
    pub stream: Box<dyn Stream>,
    correlation: i32,
}

impl KafkaConn {
    pub async fn connect(addr: SocketAddr) -> KafkaConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        KafkaConn {
            stream: Box::new(stream),
            correlation: 0,
        }
    }

    /// A TLS connection trusting the CA of `ca_pem`, showing `identity` (a certificate
    /// chain and key, PEM) if given; Err if the handshake fails.
    pub async fn connect_tls(
        addr: SocketAddr,
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> std::io::Result<KafkaConn> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)] // ring, as the server uses
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let socket = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tokio::time::timeout(TIMEOUT, connector.connect(name, socket))
            .await
            .expect("the handshake ends in time")?;
        Ok(KafkaConn {
            stream: Box::new(stream),
            correlation: 0,
        })
    }

    /// SaslHandshake for PLAIN, then SaslAuthenticate (version 2) with `user` and
    /// `password`: the authentication's error code.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> i16 {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str("PLAIN");
        let answer = self.call(&handshake, 1).await;
        assert_eq!(answer.error_code, 0, "PLAIN is taken");
        let mut authenticate = SaslAuthenticateRequest::default();
        authenticate.auth_bytes = Bytes::from(format!("\0{user}\0{password}"));
        self.call(&authenticate, 2).await.error_code
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

/// A topic's name as kafka-protocol takes it.
/// A consumer's JoinGroup of `group` (protocol "range"), with session and rebalance
/// timeouts of `timeout_ms`.
#[allow(dead_code)] // not every test binary uses it
pub fn join_group(group: &str, member: &str, timeout_ms: i32) -> JoinGroupRequest {
    let text = |s: &str| StrBytes::from_string(s.to_string());
    let mut request = JoinGroupRequest::default();
    request.group_id = text(group).into();
    request.session_timeout_ms = timeout_ms;
    request.rebalance_timeout_ms = timeout_ms;
    request.member_id = text(member);
    request.protocol_type = text("consumer");
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = Bytes::from_static(b"subscription");
    request.protocols.push(protocol);
    request
}

pub fn name(s: &str) -> TopicName {
    StrBytes::from_string(s.to_string()).into()
}

/// A Produce of `partitions`' record batches to one topic.
pub fn produce(topic: &str, partitions: &[(i32, Option<Bytes>)], acks: i16) -> ProduceRequest {
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 5000;
    let mut data = TopicProduceData::default();
    data.name = name(topic);
    for (index, records) in partitions {
        let mut p = PartitionProduceData::default();
        p.index = *index;
        p.records = records.clone();
        data.partition_data.push(p);
    }
    request.topic_data.push(data);
    request
}

/// A Fetch of one partition from `offset`, waiting up to `max_wait_ms`.
pub fn fetch(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut request = FetchRequest::default();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions.push(p);
    request.topics.push(t);
    request
}

/// A ListOffsets of one partition at `timestamp` (-1 latest, -2 earliest).
pub fn list_offsets(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    let mut request = ListOffsetsRequest::default();
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions.push(p);
    request.topics.push(t);
    request
}
