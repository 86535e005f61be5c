//! Topic administration: CreateTopics and DeleteTopics (CreatePartitions is in
//! `add_partitions.rs`), so that Kafka's admin clients and tools (`kafka-topics.sh`,
//! `AdminClient.create_topics`) make and remove strom's topics. Each needs admin on
//! the topic (`authorize.rs`), as the gRPC calls do.
//!
//! strom is one node: a replication factor other than 1 (or -1, the default) is
//! refused, and so is a replica assignment that names a broker other than 0. Topic
//! configs are strom's keys (`broker::topic_config::KEYS`, Kafka's names where Kafka
//! has the setting); another key is refused with INVALID_CONFIG, naming them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::authorize;
use super::errors::code::{
    self, INVALID_CONFIG, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
    INVALID_REPLICA_ASSIGNMENT, INVALID_TOPIC_EXCEPTION,
};
use super::errors::Refusal;
use super::requests::admin::{CreateTopics, Doomed, NewTopic};
use crate::broker::Broker;
use crate::error::Error;
use crate::grpc::auth::{Access, Kind, Operation};

/// The one broker id strom answers as (`metadata.rs`).
pub(super) const NODE: i32 = 0;

/// Creates each topic (or, with `validate_only`, checks that it could), each answered
/// with its own code. A name given twice is answered once, INVALID_REQUEST, as Kafka
/// does.
pub async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopics,
    version: i16,
    access: &Access,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let twice = named_twice(request.topics.iter().map(|t| t.name.as_str()));
    let mut answered = HashSet::new();
    for topic in request.topics {
        if !answered.insert(topic.name.clone()) {
            continue;
        }
        let mut result = CreatableTopicResult::default();
        result.name = StrBytes::from_string(topic.name.clone()).into();
        let created = match twice.contains(&topic.name) {
            true => Err(named_twice_refusal()),
            false => create(broker, &topic, request.validate_only, access).await,
        };
        match created {
            Ok((partitions, config, id)) => {
                tracing::info!(
                    topic = topic.name,
                    partitions,
                    validate_only = request.validate_only,
                    "kafka CreateTopics"
                );
                if version >= 7 {
                    result.topic_id = id.unwrap_or_default();
                }
                if version >= 5 {
                    result.num_partitions = partitions as i32;
                    result.replication_factor = 1;
                    let set = |key: &str| {
                        topic
                            .configs
                            .iter()
                            .any(|(k, v)| k == key && v.as_deref().is_some_and(|v| !v.is_empty()))
                    };
                    let configs = config.into_iter().map(|(key, value)| {
                        let mut entry = CreatableTopicConfigs::default();
                        // Kafka's config sources: the topic's own, or the default.
                        entry.config_source = if set(&key) { 1 } else { 5 };
                        entry.name = StrBytes::from_string(key);
                        entry.value = Some(StrBytes::from_string(value));
                        entry
                    });
                    result.configs = Some(configs.collect());
                }
            }
            Err(refusal) => {
                refusal.log_about(&topic.name);
                result.error_code = refusal.code;
                result.error_message = Some(StrBytes::from_string(refusal.message));
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
        }
        response.topics.push(result);
    }
    response
}

/// The names given more than once among `names`: Kafka answers each such topic once,
/// INVALID_REQUEST (`named_twice_refusal`), and does nothing with it.
pub(super) fn named_twice<'a>(names: impl Iterator<Item = &'a str>) -> HashSet<String> {
    let mut seen = HashSet::new();
    names
        .filter(|n| !seen.insert(*n))
        .map(str::to_string)
        .collect()
}

pub(super) fn named_twice_refusal() -> Refusal {
    Refusal::new(
        code::INVALID_REQUEST,
        "the topic is named more than once in the request",
    )
}

/// Checks, then creates: the partitions, the topic's whole config and its id (with
/// `validate_only`, the keys given, and no id).
async fn create(
    broker: &Arc<Broker>,
    topic: &NewTopic,
    validate_only: bool,
    access: &Access,
) -> Result<(u32, BTreeMap<String, String>, Option<uuid::Uuid>), Refusal> {
    authorize::topic(access, Some(Operation::Admin), &topic.name)?;
    let partitions = partitions(broker, topic)?;
    let mut config = BTreeMap::new();
    for (key, value) in &topic.configs {
        // Null is the default: nothing to set.
        // Null (or empty, as strom reads an empty value) is the default: nothing to
        // set.
        let Some(value) = value.as_ref().filter(|v| !v.is_empty()) else {
            continue;
        };
        if config.insert(key.clone(), value.clone()).is_some() {
            return Err(Refusal::new(
                INVALID_CONFIG,
                format!("config {key} is given twice"),
            ));
        }
    }
    // The name first (and whether it is free), then the config: each its own code.
    let as_code = |invalid: i16| move |err: Error| refused(err, invalid);
    broker
        .check_new_topic(&topic.name, partitions, &BTreeMap::new())
        .map_err(as_code(INVALID_TOPIC_EXCEPTION))?;
    broker
        .check_new_topic(&topic.name, partitions, &config)
        .map_err(as_code(INVALID_CONFIG))?;
    if validate_only {
        return Ok((partitions, config, None));
    }
    let info = broker
        .create_topic(&topic.name, partitions, &config)
        .await
        .map_err(as_code(INVALID_CONFIG))?;
    Ok((
        partitions,
        info.config,
        uuid::Uuid::parse_str(&info.id).ok(),
    ))
}

/// The partitions asked for, by count or by assignment; -1 is strom's default, 1.
fn partitions(broker: &Broker, topic: &NewTopic) -> Result<u32, Refusal> {
    if topic.replication_factor != -1 && topic.replication_factor != 1 {
        return Err(Refusal::new(
            INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {}: strom is a single node, so 1 (or -1, the default)",
                topic.replication_factor
            ),
        ));
    }
    let asked = match (topic.partitions, topic.assignments.len()) {
        (-1, 0) => 1,
        (n, 0) if n > 0 => n as u32,
        (n, 0) => {
            return Err(Refusal::new(
                INVALID_PARTITIONS,
                format!("{n} partitions: give at least 1 (or -1, the default)"),
            ))
        }
        (-1, n) => {
            let on_this_node = topic
                .assignments
                .iter()
                .enumerate()
                .all(|(i, (index, brokers))| *index as usize == i && brokers == &[NODE]);
            if !on_this_node {
                return Err(Refusal::new(
                    INVALID_REPLICA_ASSIGNMENT,
                    "strom is a single node: assign partitions 0, 1, ... each to broker 0 alone, or give a partition count",
                ));
            }
            n as u32
        }
        (_, _) => {
            return Err(Refusal::new(
                code::INVALID_REQUEST,
                "both a partition count and an assignment: give one",
            ))
        }
    };
    let max = broker.limits().max_partitions;
    match asked <= max {
        true => Ok(asked),
        false => Err(Refusal::new(
            INVALID_PARTITIONS,
            format!("{asked} partitions: this server allows at most {max} per topic"),
        )),
    }
}

/// An error of a topic's creation: an invalid argument gets `invalid` (the check that
/// failed decides), anything else its usual code.
fn refused(err: Error, invalid: i16) -> Refusal {
    match &err {
        Error::InvalidArgument(_) => Refusal::new(invalid, err.to_string()),
        _ => Refusal::from(err), // its usual code, and logged if it is the server's
    }
}

/// Deletes each topic, named or (version 6) by id, each answered with its own code.
pub async fn delete_topics(
    broker: &Arc<Broker>,
    doomed: Vec<Doomed>,
    version: i16,
    access: &Access,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    let mut seen = HashSet::new();
    // Topics by id, looked up once for the request (not once an id).
    let by_id: HashMap<uuid::Uuid, (String, String)> =
        match doomed.iter().any(|d| matches!(d, Doomed::Id(_))) {
            true => {
                let (_, metas) = broker.topic_metas();
                let ids = metas
                    .into_iter()
                    .filter_map(|m| Some((uuid::Uuid::parse_str(&m.id).ok()?, (m.name, m.id))));
                ids.collect()
            }
            false => HashMap::new(),
        };
    for topic in doomed.into_iter().filter(|d| seen.insert(d.clone())) {
        let mut result = DeletableTopicResult::default();
        // Null for an id not found or refused (version 6 is the one with ids).
        result.name = None;
        let (name, id) = match &topic {
            Doomed::Name(name) => (Some(name.clone()), None),
            // An id of a topic the caller has no grant on is as unknown as one of
            // none: a refusal would tell it the topic is there.
            Doomed::Id(id) => {
                result.topic_id = uuid::Uuid::from_bytes(*id);
                let found = by_id.get(&result.topic_id);
                match found.filter(|(name, _)| access.shows(Kind::Topic, name)) {
                    Some((name, id)) => (Some(name.clone()), Some(id.clone())),
                    None => (None, None),
                }
            }
        };
        let unknown_id = || Refusal::new(code::UNKNOWN_TOPIC_ID, "no topic has this id");
        let deleted = match &name {
            None => Err(unknown_id()),
            // By id, only the topic of that id: one deleted and made again under the
            // name since the lookup is left alone.
            Some(name) => match delete(broker, name, id.as_deref(), access).await {
                Err(refusal)
                    if id.is_some() && refusal.code == code::UNKNOWN_TOPIC_OR_PARTITION =>
                {
                    Err(unknown_id())
                }
                deleted => deleted,
            },
        };
        if let (Some(name), true) = (&name, matches!(topic, Doomed::Name(_)) || deleted.is_ok()) {
            result.name = Some(StrBytes::from_string(name.clone()).into());
        }
        // Version 6 answers a topic deleted by name with its id too, as Kafka does.
        if let (Ok(Some(id)), true) = (&deleted, version >= 6) {
            result.topic_id = uuid::Uuid::parse_str(id).unwrap_or_default();
        }
        if let Err(refusal) = deleted {
            refusal.log_about(name.as_deref().unwrap_or("(an unknown id)"));
            result.error_code = refusal.code;
            if version >= 5 {
                result.error_message = Some(StrBytes::from_string(refusal.message));
            }
        }
        response.responses.push(result);
    }
    response
}

async fn delete(
    broker: &Arc<Broker>,
    name: &str,
    id: Option<&str>,
    access: &Access,
) -> Result<Option<String>, Refusal> {
    authorize::topic(access, Some(Operation::Admin), name)?;
    // The id it had, for the answer (after the check: a refusal tells nothing).
    let had = broker.topic(name).ok().map(|t| t.id.clone());
    broker.delete_topic_of(name, id.or(had.as_deref())).await?;
    tracing::info!(topic = name, "kafka DeleteTopics");
    Ok(had)
}
