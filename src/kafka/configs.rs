//! Topic configs over Kafka's protocol: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs, on strom's topic keys (`broker::topic_config::KEYS`,
//! Kafka's names where Kafka has the setting). Describing needs any grant on the
//! topic, altering admin (`authorize.rs`), as the gRPC calls do.
//!
//! A broker (resource type 4) is described with no configs: strom's server settings
//! are not Kafka's, and tools that look at a broker's configs get an empty answer
//! rather than a refusal; they cannot be altered. AlterConfigs replaces a topic's
//! whole set (keys it does not give go back to the server's defaults), as in Kafka;
//! IncrementalAlterConfigs sets or deletes (back to the default) one key at a time;
//! APPEND and SUBTRACT, for list-valued configs, are refused: strom has none.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::IncrementalAlterConfigsResponse;

use super::authorize;
use super::errors::code::{INVALID_CONFIG, INVALID_REQUEST};
use super::errors::Refusal;
use super::requests::admin::{ConfigChange, ConfigResource};
use super::text;
use crate::broker::Broker;
use crate::error::Error;
use crate::grpc::auth::{Access, Operation};

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's config sources: set for the topic, or the default.
const TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

pub fn describe_configs(
    broker: &Broker,
    resources: Vec<ConfigResource<Option<Vec<String>>>>,
    version: i16,
    access: &Access,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    // A resource named twice is answered once: each answer is some hundred bytes, and
    // a small request repeating one name could make one of megabytes.
    let mut seen = std::collections::HashSet::new();
    let resources = resources
        .into_iter()
        .filter(|r| seen.insert((r.kind, r.name.clone())));
    for resource in resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.kind;
        result.resource_name = text(resource.name.clone());
        match describe(broker, &resource, version, access) {
            Ok(configs) => result.configs = configs,
            Err(refusal) => {
                refusal.log_about(&resource.name);
                result.error_code = refusal.code;
                result.error_message = Some(text(refusal.message));
            }
        }
        response.results.push(result);
    }
    response
}

fn describe(
    broker: &Broker,
    resource: &ConfigResource<Option<Vec<String>>>,
    version: i16,
    access: &Access,
) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
    match resource.kind {
        TOPIC => {}
        BROKER => return Ok(Vec::new()),
        kind => return Err(unsupported(kind)),
    }
    authorize::topic(access, None, &resource.name)?;
    let topic = broker.topic(&resource.name)?;
    let (config, overrides) = topic.config_and_overrides();
    let all = config.to_map();
    // Null or empty asks for every key, as Kafka reads it (kafka-python sends empty).
    let asked = |key: &str| {
        let keys = resource.configs.as_ref().filter(|keys| !keys.is_empty());
        keys.is_none_or(|keys| keys.iter().any(|k| k == key))
    };
    let configs = all
        .into_iter()
        .filter(|(key, _)| asked(key))
        .map(|(key, value)| {
            let mut config = DescribeConfigsResourceResult::default();
            config.config_source = match overrides.contains(&key) {
                true => TOPIC_CONFIG,
                false => DEFAULT_CONFIG,
            };
            if version >= 3 {
                config.config_type = match key.as_str() {
                    "durability" => 2,     // STRING
                    "cleanup.policy" => 7, // LIST
                    _ => 5,                // LONG
                };
            }
            config.name = text(key);
            config.value = Some(text(value));
            config
        });
    Ok(configs.collect())
}

/// Alters each resource (AlterConfigs when not `incremental`), or with
/// `validate_only` checks that it could; the answers, resource by resource.
pub async fn alter_configs(
    broker: &Arc<Broker>,
    resources: Vec<ConfigResource<Vec<ConfigChange>>>,
    validate_only: bool,
    incremental: bool,
    access: &Access,
) -> Vec<(i8, String, Result<(), Refusal>)> {
    let mut answers = Vec::with_capacity(resources.len());
    for resource in resources {
        let altered = alter(broker, &resource, validate_only, incremental, access).await;
        if let Err(refusal) = &altered {
            refusal.log_about(&resource.name);
        }
        answers.push((resource.kind, resource.name, altered));
    }
    answers
}

async fn alter(
    broker: &Arc<Broker>,
    resource: &ConfigResource<Vec<ConfigChange>>,
    validate_only: bool,
    incremental: bool,
    access: &Access,
) -> Result<(), Refusal> {
    if resource.kind != TOPIC {
        return Err(unsupported(resource.kind));
    }
    authorize::topic(access, Some(Operation::Admin), &resource.name)?;
    broker.topic(&resource.name)?;
    // An empty value gives a key back to the server's default. AlterConfigs gives
    // back every key it does not set (`replace_topic_config`, under the topic's lock).
    let mut changes = BTreeMap::new();
    for (key, operation, value) in &resource.configs {
        if changes.contains_key(key) {
            return Err(Refusal::new(
                INVALID_REQUEST,
                format!("config {key} is given twice"),
            ));
        }
        let value = match (operation, value) {
            (0, Some(value)) => value.clone(),
            (0, None) | (1, _) => String::new(),
            (2 | 3, _) => {
                return Err(Refusal::new(
                    INVALID_CONFIG,
                    format!(
                    "{key}: APPEND and SUBTRACT are for list configs, and strom has none: SET it"
                ),
                ))
            }
            (op, _) => {
                return Err(Refusal::new(
                    INVALID_REQUEST,
                    format!("config operation {op}: Kafka's are 0 (SET) to 3 (SUBTRACT)"),
                ))
            }
        };
        changes.insert(key.clone(), value);
    }
    let refused = |err: Error| match &err {
        Error::InvalidArgument(_) => Refusal::new(INVALID_CONFIG, err.to_string()),
        _ => Refusal::from(err),
    };
    match validate_only {
        true => broker
            .check_topic_config(&resource.name, &changes, !incremental)
            .map_err(refused),
        false => {
            let altered = match incremental {
                true => broker.alter_topic_config(&resource.name, changes).await,
                false => broker.replace_topic_config(&resource.name, changes).await,
            };
            altered.map_err(refused)?;
            tracing::info!(topic = resource.name, incremental, "kafka AlterConfigs");
            Ok(())
        }
    }
}

fn unsupported(kind: i8) -> Refusal {
    Refusal::new(
        INVALID_REQUEST,
        format!("resource type {kind}: strom's configs are topics' (2), and a broker's (4) are described empty"),
    )
}

/// AlterConfigs' response.
pub fn altered(answers: Vec<(i8, String, Result<(), Refusal>)>) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as Answer;
    let mut response = AlterConfigsResponse::default();
    for (kind, name, outcome) in answers {
        let mut answer = Answer::default();
        answer.resource_type = kind;
        answer.resource_name = text(name);
        if let Err(refusal) = outcome {
            answer.error_code = refusal.code;
            answer.error_message = Some(text(refusal.message));
        }
        response.responses.push(answer);
    }
    response
}

/// IncrementalAlterConfigs' response (the same fields, another type).
pub fn altered_incrementally(
    answers: Vec<(i8, String, Result<(), Refusal>)>,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as Answer;
    let mut response = IncrementalAlterConfigsResponse::default();
    for (kind, name, outcome) in answers {
        let mut answer = Answer::default();
        answer.resource_type = kind;
        answer.resource_name = text(name);
        if let Err(refusal) = outcome {
            answer.error_code = refusal.code;
            answer.error_message = Some(text(refusal.message));
        }
        response.responses.push(answer);
    }
    response
}
