//! One request frame to its response: the header read, the session asked whether the
//! request may be answered now (`session.rs`), the body decoded (`requests/`) and
//! handed to its handler with what the caller may do (`authorize.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use tokio::sync::OwnedSemaphorePermit;

use super::connection::MAX_MUTE;
use super::fetch_frame::fetch_frame;
use super::requests::groups as groups_requests;
use super::requests::{self, key};
use super::session::Session;
use super::wire::{Decoded, Malformed, Reader};
use super::{
    add_partitions, admin, configs, delete_records, fetch, group_admin, groups, metadata,
    offset_delete, offsets, produce, Kafka,
};
use crate::grpc::quota::{Flow, Quota};

/// What a request comes to.
pub struct Answer {
    /// The response frame, in chunks (a Fetch's records are chunks of their own:
    /// `fetch_frame.rs`); None for a produce with acks=0.
    pub response: Option<Vec<Bytes>>,
    /// What the response holds of the server's pool until it is written.
    pub held: Option<OwnedSemaphorePermit>,
    /// Close the connection once the response is written (a failed authentication).
    pub close: bool,
    /// How long the connection is not read after the response: its client is over
    /// its quota (the response's `throttle_time_ms` says so too).
    pub mute: Duration,
}

impl Answer {
    fn of(response: Bytes) -> Answer {
        Answer {
            response: Some(vec![response]),
            held: None,
            close: false,
            mute: Duration::ZERO,
        }
    }
}

/// How long the client's connection must now wait, if it has a quota for `flow`;
/// counted as a wait of the mute it comes to (`MAX_MUTE` at most: past it the
/// connection closes).
fn throttle(quota: Option<&Quota>, flow: Flow) -> Duration {
    let throttle = quota.map_or(Duration::ZERO, |quota| quota.wait(flow, 0));
    if let (Some(quota), false) = (quota, throttle.is_zero()) {
        quota.note_wait(flow, throttle.min(MAX_MUTE));
    }
    throttle
}

/// A throttle as Kafka's `throttle_time_ms`.
fn millis(throttle: Duration) -> i32 {
    i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX)
}

/// The answer to a request frame. An error closes the connection, as Kafka does with
/// a request it cannot read (or, here, may not send).
pub async fn answer(
    kafka: &Kafka,
    session: &mut Session,
    frame: Bytes,
    (local, quota): (Option<SocketAddr>, Option<&Quota>),
) -> Decoded<Answer> {
    let (header, r) = requests::header(frame)?;
    let (key, version) = (header.api_key, header.version);
    // The log line of a refused request says which request it was.
    let answer = respond(kafka, session, header, r, (local, quota)).await;
    // A request may have waited (a long poll, a join) while its token was revoked.
    let answer = answer.and_then(|answer| session.recheck(&kafka.security).map(|()| answer));
    answer.map_err(|Malformed(why)| Malformed(format!("{why} (API key {key} version {version})")))
}

async fn respond(
    kafka: &Kafka,
    session: &mut Session,
    header: requests::Header,
    mut r: Reader,
    (local, quota): (Option<SocketAddr>, Option<&Quota>),
) -> Decoded<Answer> {
    let (version, correlation) = (header.version, header.correlation_id);
    let Some(api) = requests::api(header.api_key) else {
        return Err(Malformed(format!(
            "API key {} (from client {:?}), which strom does not answer",
            header.api_key, header.client_id
        )));
    };
    session.admit(&kafka.security, header.api_key)?;
    if header.api_key == key::API_VERSIONS {
        if version > api.max {
            // Answered in version 0, whatever was asked: the client asks again.
            return encode(correlation, &metadata::api_versions(version), 0).map(Answer::of);
        }
        requests::api_versions(&mut r, version)?;
        requests::finished(&r);
        return encode(correlation, &metadata::api_versions(version), version).map(Answer::of);
    }
    if version < api.min || version > api.max {
        return Err(Malformed(format!(
            "version {version} of API key {}, which strom takes in versions {} to {}",
            api.key, api.min, api.max
        )));
    }
    let broker = Arc::clone(&kafka.broker);
    let access = session.access(&kafka.security);
    match header.api_key {
        key::SASL_HANDSHAKE => {
            let mechanism = requests::sasl::handshake(&mut r)?;
            requests::finished(&r);
            let response = session.handshake(&kafka.security, &mechanism);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::SASL_AUTHENTICATE => {
            let bytes = requests::sasl::authenticate(&mut r)?;
            requests::finished(&r);
            let (response, close) = session.authenticate(&kafka.security, &bytes);
            if let (true, Some(also)) = (close, kafka.logs.authentications.allow()) {
                let why = response.error_message.as_deref().unwrap_or_default();
                tracing::info!(also_failed = also, "kafka SASL: {why}");
            }
            let response = encode(correlation, &response, version)?;
            Ok(Answer {
                close,
                ..Answer::of(response)
            })
        }
        key::PRODUCE => {
            let request = requests::produce(&mut r)?;
            requests::finished(&r);
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
                access,
            ));
            let produce::Done {
                answers,
                inflated_by,
            } = task
                .await
                .map_err(|e| Malformed(format!("produce failed: {e}")))?;
            // Charged by its size on the wire when the connection read it
            // (`connection.rs`), and now by what storing it added: the quota guards
            // the disk, and a compressed batch writes its decompressed size.
            if let Some(quota) = quota {
                quota.charge(Flow::Produce, inflated_by);
            }
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
                    None => Ok(Answer {
                        response: None,
                        mute: throttle(quota, Flow::Produce),
                        ..Answer::of(Bytes::new())
                    }),
                };
            }
            let mute = throttle(quota, Flow::Produce);
            let mut response = produce::response(&broker, answers, version);
            response.throttle_time_ms = millis(mute);
            let response = encode(correlation, &response, version)?;
            Ok(Answer {
                mute,
                ..Answer::of(response)
            })
        }
        key::FETCH => {
            let mut request = requests::fetch(&mut r, version)?;
            requests::finished(&r);
            // No more than the client's allowance (at least a batch comes anyway),
            // charged after: not taken before, as a fetch may wait for records and an
            // idle wait would hold it (the connection waited for the client's turn).
            if let Some(allowed) = quota.and_then(|q| q.allowance(Flow::Fetch)) {
                let allowed = i32::try_from(allowed).unwrap_or(i32::MAX);
                request.max_bytes = match request.max_bytes {
                    asked if asked > 0 => asked.min(allowed),
                    _ => allowed,
                };
            }
            let (mut response, held) =
                fetch::fetch(broker, &kafka.responses, request, version, &access).await;
            let records = response.responses.iter().flat_map(|t| &t.partitions);
            let bytes = records
                .filter_map(|p| p.records.as_ref())
                .map(Bytes::len)
                .sum();
            if let Some(quota) = quota {
                quota.charge(Flow::Fetch, bytes);
            }
            let mute = throttle(quota, Flow::Fetch);
            response.throttle_time_ms = millis(mute);
            Ok(Answer {
                response: Some(fetch_frame(correlation, &response, version)),
                held,
                close: false,
                mute,
            })
        }
        key::LIST_OFFSETS => {
            let topics = requests::list_offsets(&mut r, version)?;
            requests::finished(&r);
            let response = metadata::list_offsets(broker, topics, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::METADATA => {
            let topics = requests::metadata(&mut r, version)?;
            requests::finished(&r);
            let address = advertised(kafka, local);
            let response =
                metadata::metadata(&broker, topics, (&address.0, address.1), version, &access);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::FIND_COORDINATOR => {
            let (group, key_type) = groups_requests::find_coordinator(&mut r, version)?;
            requests::finished(&r);
            let address = advertised(kafka, local);
            let asked = (group.as_str(), key_type);
            let response =
                groups::find_coordinator(asked, (&address.0, address.1), version, &access);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::JOIN_GROUP => {
            let request = groups_requests::join_group(&mut r, version)?;
            requests::finished(&r);
            let response =
                groups::join_group(kafka, request, header.client_id, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::SYNC_GROUP => {
            let request = groups_requests::sync_group(&mut r, version)?;
            requests::finished(&r);
            let response = groups::sync_group(kafka, request, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::HEARTBEAT => {
            let (group, generation, member) = groups_requests::heartbeat(&mut r, version)?;
            requests::finished(&r);
            let response = groups::heartbeat(kafka, &group, generation, &member, &access);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::LEAVE_GROUP => {
            let (group, members) = groups_requests::leave_group(&mut r, version)?;
            requests::finished(&r);
            let response = groups::leave_group(kafka, &group, members, version, &access);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::OFFSET_COMMIT => {
            let request = groups_requests::offset_commit(&mut r, version)?;
            requests::finished(&r);
            let response = offsets::offset_commit(kafka, request, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::OFFSET_FETCH => {
            let (group, topics) = groups_requests::offset_fetch(&mut r, version)?;
            requests::finished(&r);
            let response = offsets::offset_fetch(kafka, &group, topics, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::CREATE_TOPICS => {
            let request = requests::admin::create_topics(&mut r)?;
            requests::finished(&r);
            let response = admin::create_topics(&broker, request, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::DELETE_TOPICS => {
            let doomed = requests::admin::delete_topics(&mut r, version)?;
            requests::finished(&r);
            let response = admin::delete_topics(&broker, doomed, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::CREATE_PARTITIONS => {
            let (topics, validate_only) = requests::admin::create_partitions(&mut r)?;
            requests::finished(&r);
            let response =
                add_partitions::create_partitions(&broker, topics, validate_only, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::DELETE_RECORDS => {
            let topics = requests::admin::delete_records(&mut r)?;
            requests::finished(&r);
            let response = delete_records::delete_records(&broker, topics, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::DESCRIBE_CONFIGS => {
            let resources = requests::admin::describe_configs(&mut r, version)?;
            requests::finished(&r);
            let response = configs::describe_configs(&broker, resources, version, &access);
            encode(correlation, &response, version).map(Answer::of)
        }
        key::ALTER_CONFIGS | key::INCREMENTAL_ALTER_CONFIGS => {
            let incremental = header.api_key == key::INCREMENTAL_ALTER_CONFIGS;
            let (resources, validate_only) = requests::admin::alter_configs(&mut r, incremental)?;
            requests::finished(&r);
            let answers =
                configs::alter_configs(&broker, resources, validate_only, incremental, &access)
                    .await;
            match incremental {
                true => encode(
                    correlation,
                    &configs::altered_incrementally(answers),
                    version,
                ),
                false => encode(correlation, &configs::altered(answers), version),
            }
            .map(Answer::of)
        }
        key::LIST_GROUPS => {
            let states = groups_requests::list_groups(&mut r, version)?;
            requests::finished(&r);
            let response = group_admin::list_groups(kafka, states, version, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::DESCRIBE_GROUPS => {
            let named = groups_requests::named_groups(&mut r, version, true)?;
            requests::finished(&r);
            let (response, held) =
                group_admin::describe_groups(kafka, named, version, &access).await;
            let response = encode(correlation, &response, version)?;
            Ok(Answer {
                held,
                ..Answer::of(response)
            })
        }
        key::DELETE_GROUPS => {
            let named = groups_requests::named_groups(&mut r, version, false)?;
            requests::finished(&r);
            let response = group_admin::delete_groups(kafka, named, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::OFFSET_DELETE => {
            let (group, topics) = groups_requests::offset_delete(&mut r)?;
            requests::finished(&r);
            let response = offset_delete::offset_delete(kafka, &group, topics, &access).await;
            encode(correlation, &response, version).map(Answer::of)
        }
        key::INIT_PRODUCER_ID => {
            let transactional_id = requests::init_producer_id(&mut r, version)?;
            requests::finished(&r);
            let response = metadata::init_producer_id(broker, transactional_id, &access).await;
            encode(correlation, &response, version).map(Answer::of)
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
