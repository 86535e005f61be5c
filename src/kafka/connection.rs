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
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::requests::groups as groups_requests;
use super::requests::{self, key};
use super::wire::{Decoded, Malformed};
use super::{fetch, groups, metadata, produce, Kafka};
use crate::grpc::budget::{FREE_BELOW, MESSAGE_DEADLINE, MESSAGE_IDLE};

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
        // Until the request is answered (not written): its decoded form and what it
        // copies are about three times its frame.
        let charge = async {
            match size >= FREE_BELOW {
                true => Some(kafka.budget.charge_produce(size).await),
                false => None,
            }
        };
        let charge = tokio::select! {
            charge = charge => charge,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let mut frame = BytesMut::zeroed(size);
        let read = tokio::select! {
            read = read_frame(&mut reader, &mut frame) => read,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        if let Err(why) = read {
            tracing::info!(?peer, size, "kafka request frame {why}: connection closed");
            return;
        }
        let (response, held) = match answer(&kafka, frame.freeze(), local).await {
            Ok((Some(response), held)) => (response, held),
            Ok((None, _)) => continue,
            Err(Malformed(why)) => {
                tracing::info!(?peer, "kafka request refused, connection closed: {why}");
                return;
            }
        };
        drop(charge);
        let write = writer.write_all(&response);
        let written = tokio::select! {
            written = tokio::time::timeout(kafka.stalled_reader_timeout, write) => written,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        drop(held); // the response's bytes, from the pool: written now
        match written {
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

/// Reads a frame's bytes: all within `MESSAGE_DEADLINE`, with no pause of
/// `MESSAGE_IDLE` (as a gRPC message's, whose budget it may hold).
async fn read_frame(reader: &mut OwnedReadHalf, frame: &mut [u8]) -> Result<(), &'static str> {
    let deadline = tokio::time::Instant::now() + MESSAGE_DEADLINE;
    let mut filled = 0;
    while filled < frame.len() {
        let read = reader.read(&mut frame[filled..]);
        let idle = tokio::time::Instant::now() + MESSAGE_IDLE;
        match tokio::time::timeout_at(idle.min(deadline), read).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err("cut short"),
            Ok(Ok(n)) => filled += n,
            Err(_) => return Err("not sent whole in time"),
        }
    }
    Ok(())
}

/// The response frame to a request frame; `None` for a produce with acks=0. An error
/// closes the connection, as Kafka does with a request it cannot read.
/// The answer, and what it holds of the server's pool until it is written.
type Answered = (Option<Bytes>, Option<OwnedSemaphorePermit>);

async fn answer(kafka: &Kafka, frame: Bytes, local: Option<SocketAddr>) -> Decoded<Answered> {
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
            return encode(correlation, &metadata::api_versions(version), 0)
                .map(|b| (Some(b), None));
        }
        requests::api_versions(&mut r, version)?;
        requests::finished(&r)?;
        return encode(correlation, &metadata::api_versions(version), version)
            .map(|b| (Some(b), None));
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
                    None => Ok((None, None)),
                };
            }
            encode(
                correlation,
                &produce::response(&broker, answers, version),
                version,
            )
            .map(|b| (Some(b), None))
        }
        key::FETCH => {
            let request = requests::fetch(&mut r, version)?;
            requests::finished(&r)?;
            let (response, held) = fetch::fetch(broker, &kafka.responses, request, version).await;
            encode(correlation, &response, version).map(|b| (Some(b), held))
        }
        key::LIST_OFFSETS => {
            let topics = requests::list_offsets(&mut r, version)?;
            requests::finished(&r)?;
            let response = metadata::list_offsets(broker, topics, version).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::METADATA => {
            let topics = requests::metadata(&mut r, version)?;
            requests::finished(&r)?;
            let address = advertised(kafka, local);
            let response = metadata::metadata(&broker, topics, (&address.0, address.1), version);
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::FIND_COORDINATOR => {
            let (_, key_type) = groups_requests::find_coordinator(&mut r, version)?;
            requests::finished(&r)?;
            let address = advertised(kafka, local);
            let response = groups::find_coordinator(key_type, (&address.0, address.1), version);
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::JOIN_GROUP => {
            let request = groups_requests::join_group(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::join_group(kafka, request, header.client_id, version).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::SYNC_GROUP => {
            let request = groups_requests::sync_group(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::sync_group(kafka, request, version).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::HEARTBEAT => {
            let (group, generation, member) = groups_requests::heartbeat(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::heartbeat(kafka, &group, generation, &member);
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::LEAVE_GROUP => {
            let (group, members) = groups_requests::leave_group(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::leave_group(kafka, &group, members, version);
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::OFFSET_COMMIT => {
            let request = groups_requests::offset_commit(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::offset_commit(kafka, request).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::OFFSET_FETCH => {
            let (group, topics) = groups_requests::offset_fetch(&mut r, version)?;
            requests::finished(&r)?;
            let response = groups::offset_fetch(kafka, &group, topics, version).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        key::INIT_PRODUCER_ID => {
            let transactional_id = requests::init_producer_id(&mut r, version)?;
            requests::finished(&r)?;
            let response = metadata::init_producer_id(broker, transactional_id).await;
            encode(correlation, &response, version).map(|b| (Some(b), None))
        }
        other => Err(Malformed(format!(
            "API key {other} listed but not answered"
        ))),
    }
}

/// The host and port clients are told to connect to.
fn advertised(kafka: &Kafka, local: Option<SocketAddr>) -> (String, u16) {
    match (&kafka.advertised, local) {
        (Some((host, port)), _) => (host.clone(), *port),
        (None, Some(local)) => (local.ip().to_string(), local.port()),
        (None, None) => ("localhost".to_string(), 9092),
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
