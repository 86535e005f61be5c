//! Kafka's error codes, and the one mapping from strom's [`Error`] to them (as
//! `grpc::code` is to gRPC's). A Kafka client decides from the code alone whether to
//! retry, so the mapping follows what the client should do: retry a stopping server
//! or a full disk, give up on a bad record.

use crate::error::Error;

/// Kafka's error codes that strom answers with (Kafka's protocol guide, "Error Codes").
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// A refused request or partition: a Kafka error code and a message saying what to do
/// (sent where the version has a field for it, and logged at debug level otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    pub fn new(code: i16, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// Logs the refusal of one partition at debug level: a client's mistakes are its
    /// own, and the versions without a message field get only the code.
    pub fn log(&self, partition: i32) {
        tracing::debug!(partition, code = self.code, "{}", self.message);
    }

    /// Logs the refusal of a resource (a topic, group or config resource), as `log`
    /// does a partition's.
    pub fn log_about(&self, resource: &str) {
        tracing::debug!(resource, code = self.code, "{}", self.message);
    }
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Refusal {
        let code = kafka_code(&err);
        if code == code::UNKNOWN_SERVER_ERROR || code == code::KAFKA_STORAGE_ERROR {
            tracing::error!(%err, "kafka request failed");
        }
        let message = match err.limit_hint() {
            Some(hint) => format!("{err}; {hint}"),
            None => err.to_string(),
        };
        Refusal::new(code, message)
    }
}

/// The Kafka code for an error. Exhaustive on purpose: a new variant must choose one.
pub fn kafka_code(err: &Error) -> i16 {
    match err {
        Error::InPartition { source, .. } | Error::PublishedPartly { source, .. } => {
            kafka_code(source)
        }
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        Error::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        Error::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
        Error::InvalidArgument(_) => code::INVALID_RECORD,
        Error::PermissionDenied(_) => code::TOPIC_AUTHORIZATION_FAILED,
        Error::TopicExists { .. } => code::TOPIC_ALREADY_EXISTS,
        Error::ProducerFenced(_) => code::INVALID_PRODUCER_EPOCH,
        // The log's producer state words its refusals so (`log/producers`); a test
        // pins the wording.
        Error::FailedPrecondition(msg) if msg.starts_with("out of order sequence") => {
            code::OUT_OF_ORDER_SEQUENCE_NUMBER
        }
        Error::FailedPrecondition(msg) if msg.starts_with("producer") => code::UNKNOWN_PRODUCER_ID,
        Error::FailedPrecondition(_) => code::INVALID_REQUEST,
        Error::GroupSubscribed(_) => code::GROUP_SUBSCRIBED_TO_TOPIC,
        // Retriable: the client waits and sends again, as it would to a Kafka broker
        // whose log directory failed or filled.
        Error::DiskFull { .. } | Error::SyncFailed { .. } | Error::Io { .. } => {
            code::KAFKA_STORAGE_ERROR
        }
        // Retriable: the client asks for metadata again and retries, which finds the
        // server once it is back.
        Error::ShuttingDown | Error::Unavailable { .. } => code::NOT_LEADER_OR_FOLLOWER,
        Error::Corruption { .. } | Error::ChecksumMismatch { .. } | Error::DamagedRange { .. } => {
            code::UNKNOWN_SERVER_ERROR
        }
        Error::LimitReached(_) | Error::CommitOutOfRange { .. } => code::INVALID_REQUEST,
        Error::ExchangeExists { .. }
        | Error::ExchangeNotFound { .. }
        | Error::GroupNotFound { .. }
        | Error::ShareGroupNotFound { .. }
        | Error::DataDirInUse { .. } => code::UNKNOWN_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::producers::ProducerStates;
    use crate::log::ProducerInfo;

    /// The log's wording of an out-of-order sequence is what picks Kafka's code: if
    /// it changes, this fails rather than the client being told something else.
    #[test]
    fn an_out_of_order_sequence_is_kafkas_out_of_order_code() {
        let mut states = ProducerStates::default();
        let first = ProducerInfo {
            id: 7,
            epoch: 0,
            base_sequence: 0,
        };
        states.record(&first, 2, 0, 0, 10);
        let gap = ProducerInfo {
            base_sequence: 5,
            ..first
        };
        let err = states.check(&gap, 1).unwrap_err();
        assert_eq!(
            kafka_code(&err),
            code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            "{err}"
        );
    }
}
