//! One Kafka client connection: size-prefixed request frames in, responses out, in
//! order, one request at a time (as a Kafka broker mutes a connection until it has
//! answered its request).
//!
//! Bounds: a frame over `max_request_bytes` closes the connection before anything is
//! read into memory; frames of 64 KiB or more are charged to the server's produce
//! budget, as a gRPC Produce is, before their bytes are read; a frame's bytes must all
//! arrive within `MESSAGE_DEADLINE`; a response its client has not read within
//! `stalled_reader_timeout` closes the connection; so does `idle_timeout` without a
//! request.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::requests::{self, key};
use super::wire::{Decoded, Malformed};
use super::{fetch, metadata, produce, Kafka};
use crate::grpc::budget::{FREE_BELOW, MESSAGE_DEADLINE};

/// The smallest request frame: API key, version, correlation id and client id length.
const MIN_FRAME: usize = 10;

pub async fn serve_connection(
    kafka: Arc<Kafka>,
    socket: TcpStream,
    mut stopping: watch::Receiver<bool>,
) {
    let peer = socket.peer_addr().ok();
    let local = socket.local_addr().ok();
    let (mut reader, mut writer) = socket.into_split();
    loop {
        let mut prefix = [0u8; 4];
        tokio::select! {
            read = reader.read_exact(&mut prefix) => if read.is_err() { return },
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(kafka.idle_timeout) => {
                tracing::debug!(?peer, "kafka connection idle: closed");
                return;
            }
        }
        let size = i32::from_be_bytes(prefix);
        if size < MIN_FRAME as i32 || size as usize > kafka.max_request_bytes {
            tracing::info!(
                ?peer,
                size,
                max = kafka.max_request_bytes,
                "kafka request frame of a size strom does not take (max_request_bytes): connection closed"
            );
            return;
        }
        let size = size as usize;
        let _charge = match size >= FREE_BELOW {
            true => Some(kafka.budget.charge_produce(size).await),
            false => None,
        };
        let mut frame = BytesMut::zeroed(size);
        match tokio::time::timeout(MESSAGE_DEADLINE, reader.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(
                    ?peer,
                    size,
                    "kafka request frame not sent whole in time: connection closed"
                );
                return;
            }
        }
        let response = match answer(&kafka, frame.freeze(), local).await {
            Ok(Some(response)) => response,
            Ok(None) => continue,
            Err(Malformed(why)) => {
                tracing::info!(?peer, "kafka request refused, connection closed: {why}");
                return;
            }
        };
        let write = writer.write_all(&response);
        match tokio::time::timeout(kafka.stalled_reader_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(
                    ?peer,
                    "kafka client did not read its response in time: connection closed"
                );
                return;
            }
        }
    }
}

/// The response frame to a request frame; `None` for a produce with acks=0. An error
/// closes the connection, as Kafka does with a request it cannot read.
async fn answer(kafka: &Kafka, frame: Bytes, local: Option<SocketAddr>) -> Decoded<Option<Bytes>> {
    let (header, mut r) = requests::header(frame)?;
    let (version, correlation) = (header.version, header.correlation_id);
    let Some(api) = requests::api(header.api_key) else {
        return Err(Malformed(format!(
            "API key {} (from client {:?}), which strom does not answer",
            header.api_key, header.client_id
        )));
    };
    if header.api_key == key::API_VERSIONS {
        if version > api.max {
            // Answered in version 0, whatever was asked: the client asks again.
            return encode(correlation, &metadata::api_versions(version), 0).map(Some);
        }
        requests::api_versions(&mut r, version)?;
        requests::finished(&r)?;
        return encode(correlation, &metadata::api_versions(version), version).map(Some);
    }
    if version < api.min || version > api.max {
        return Err(Malformed(format!(
            "version {version} of API key {}, which strom takes in versions {} to {}",
            api.key, api.min, api.max
        )));
    }
    let broker = Arc::clone(&kafka.broker);
    match header.api_key {
        key::PRODUCE => {
            let request = requests::produce(&mut r)?;
            requests::finished(&r)?;
            let acks = request.acks;
            // On a task of its own: a connection that goes away cannot cancel an
            // append halfway.
            let inflated = kafka.inflated.clone();
            let limit = kafka.max_request_bytes;
            let task = tokio::spawn(produce::produce(
                Arc::clone(&broker),
                inflated,
                limit,
                request,
            ));
            let answers = task
                .await
                .map_err(|e| Malformed(format!("produce failed: {e}")))?;
            if acks == 0 {
                // Nothing to answer; a refusal closes the connection, the one way to
                // tell a client that asked for no answer (Kafka does the same).
                let refused = answers
                    .iter()
                    .flat_map(|(_, p)| p)
                    .find_map(|(_, o)| o.as_ref().err());
                return match refused {
                    Some(refusal) => Err(Malformed(format!(
                        "an acks=0 produce refused: {}",
                        refusal.message
                    ))),
                    None => Ok(None),
                };
            }
            encode(
                correlation,
                &produce::response(&broker, answers, version),
                version,
            )
            .map(Some)
        }
        key::FETCH => {
            let request = requests::fetch(&mut r, version)?;
            requests::finished(&r)?;
            let response = fetch::fetch(broker, request, version).await;
            encode(correlation, &response, version).map(Some)
        }
        key::LIST_OFFSETS => {
            let topics = requests::list_offsets(&mut r, version)?;
            requests::finished(&r)?;
            let response = metadata::list_offsets(broker, topics, version).await;
            encode(correlation, &response, version).map(Some)
        }
        key::METADATA => {
            let topics = requests::metadata(&mut r, version)?;
            requests::finished(&r)?;
            let address = match (&kafka.advertised, local) {
                (Some((host, port)), _) => (host.clone(), *port),
                (None, Some(local)) => (local.ip().to_string(), local.port()),
                (None, None) => ("localhost".to_string(), 9092),
            };
            let response = metadata::metadata(&broker, topics, (&address.0, address.1), version);
            encode(correlation, &response, version).map(Some)
        }
        key::INIT_PRODUCER_ID => {
            let transactional_id = requests::init_producer_id(&mut r, version)?;
            requests::finished(&r)?;
            let response = metadata::init_producer_id(broker, transactional_id).await;
            encode(correlation, &response, version).map(Some)
        }
        other => Err(Malformed(format!(
            "API key {other} listed but not answered"
        ))),
    }
}

/// A response frame: size, the response header of the version's kind, the body.
fn encode<R: Encodable + HeaderVersion>(
    correlation: i32,
    response: &R,
    version: i16,
) -> Decoded<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0); // the size, below
    buf.put_i32(correlation);
    if R::header_version(version) >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    response.encode(&mut buf, version).map_err(|e| {
        Malformed(format!(
            "the response could not be encoded (a bug in strom): {e}"
        ))
    })?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
