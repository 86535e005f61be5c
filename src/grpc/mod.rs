//! The gRPC surface: generated code, one adapter per service, and the one mapping from
//! `Error` to `tonic::Status`. Handlers decode, call one broker method, encode.

mod admin;
pub mod auth;
pub mod budget;
pub mod call_limit;
pub mod call_metrics;
pub mod codec;
pub mod connection;
pub mod direct;
mod exchanges;
mod groups;
mod log_service;
pub mod produce;
mod produce_stream;
mod queues;
pub mod quota;
pub mod records;
pub mod request_limits;
mod share_stream;
mod subscribe;

pub use admin::AdminService;
pub use exchanges::ExchangesService;
pub use groups::GroupsService;
pub use log_service::LogService;
pub use produce_stream::MAX_UNANSWERED;
pub use queues::QueuesService;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Code, Status};

use crate::broker;
use crate::error::Error;

/// A response stream of a server-streaming call.
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A Produce's answer, unary or in a stream.
fn produce_response(p: broker::Produced) -> pb::ProduceResponse {
    pb::ProduceResponse {
        partition: p.partition,
        base_offset: p.base_offset,
        last_offset: p.last_offset,
        log_append_time_ms: p.log_append_time_ms,
    }
}

/// What the auth layer lets a call do (see `auth::access`).
fn access<T>(request: &tonic::Request<T>) -> auth::Access {
    auth::Access::of(request.extensions())
}

/// Entries of a listing's page when the request asks for none in particular.
pub const DEFAULT_PAGE: usize = 1_000;
/// The most entries of a listing's page: 10,000 groups of the longest names (200
/// bytes) fit well within the 4 MB a default grpcio client accepts (unavailable
/// topics, with their reasons and paths, take more, but are few).
pub const MAX_PAGE: usize = 10_000;

/// The page a List request asks for (see `ListTopicsRequest` in the proto).
/// `only`: the names the caller may see (None: all).
fn page(
    page_size: u32,
    page_token: String,
    only: Option<broker::page::Visible>,
) -> broker::page::Page {
    let limit = match page_size as usize {
        0 => DEFAULT_PAGE,
        asked => asked.min(MAX_PAGE),
    };
    let after = (!page_token.is_empty()).then_some(page_token);
    broker::page::Page { after, limit, only }
}

/// Code generated from `proto/strom/v1/strom.proto`; the only place it is named.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strom.v1");
    /// Hand-written (see `grpc/produce/`), under the name the generated code would use.
    pub use super::produce::{ProduceRequest, PublishRequest};
}

/// The largest HTTP/2 frame the server accepts and the Rust client asks for, instead of
/// HTTP/2's 16 KiB: with 16 KiB frames a 1 MB message is sixty-four frames, each one a
/// trip through h2 and tonic (and tonic grows its buffer frame by frame). 1 MiB frames
/// cut the server's CPU per GB produced by a quarter and a consumer's by half (see
/// BENCHMARKS.md, "HTTP/2 frame size"). A small message on the same connection waits
/// behind at most one such frame, about 0.4 ms on loopback.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The encoded descriptor set of the protos, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strom_descriptor");

/// The gRPC code for an error. Exhaustive on purpose: a new variant must choose one.
pub fn code(err: &Error) -> Code {
    match err {
        Error::InPartition { source, .. } | Error::PublishedPartly { source, .. } => code(source),
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } => Code::NotFound,
        Error::GroupNotFound { .. } | Error::ShareGroupNotFound { .. } => Code::NotFound,
        Error::ExchangeNotFound { .. } => Code::NotFound,
        Error::ExchangeExists { .. } => Code::AlreadyExists,
        Error::FailedPrecondition(_) | Error::ProducerFenced(_) => Code::FailedPrecondition,
        Error::GroupSubscribed(_) => Code::FailedPrecondition,
        Error::CommitOutOfRange { .. } => Code::OutOfRange,
        Error::LimitReached(_) => Code::ResourceExhausted,
        Error::DiskFull { .. } => Code::ResourceExhausted,
        Error::TopicExists { .. } => Code::AlreadyExists,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::OffsetOutOfRange { .. } => Code::OutOfRange,
        Error::TooLarge { .. } => Code::ResourceExhausted,
        Error::Io { .. } if err.is_storage_full() || err.limit_hint().is_some() => {
            Code::ResourceExhausted
        }
        Error::Io { .. } => Code::Internal,
        Error::Corruption { .. } | Error::ChecksumMismatch { .. } => Code::DataLoss,
        Error::DamagedRange { .. } => Code::DataLoss,
        Error::SyncFailed { .. } | Error::Unavailable { .. } => Code::Unavailable,
        Error::DataDirInUse { .. } => Code::FailedPrecondition,
        Error::ShuttingDown => Code::Unavailable,
    }
}

/// The metadata key of a status's machine-readable reason (see `reason`).
pub const REASON_KEY: &str = "strom-reason";
/// The reason of a produce from a fenced instance of a named producer.
pub const PRODUCER_FENCED: &str = "PRODUCER_FENCED";
/// The reason of a publish that failed after some of its topics took its records.
pub const PUBLISHED_PARTLY: &str = "PUBLISHED_PARTLY";

/// Why a request failed, for a client that must act on it rather than on the code
/// alone: sent as the status's `strom-reason` metadata, and as `Error.reason` inside a
/// stream. `PRODUCER_FENCED`: a newer instance of the producer's name took over, and
/// this one must stop (not take the name back with InitProducer, which would fence the
/// newer one in turn). `PUBLISHED_PARTLY`: a publish failed after some of its topics
/// took its records, so sending it again appends it to them again.
pub fn reason(err: &Error) -> Option<&'static str> {
    match err {
        Error::InPartition { source, .. } => reason(source),
        Error::ProducerFenced(_) => Some(PRODUCER_FENCED),
        Error::PublishedPartly { .. } => Some(PUBLISHED_PARTLY),
        _ => None,
    }
}

/// The status for an error: its code and its message, which names what went wrong.
pub fn status(err: Error) -> Status {
    let (code, message, reason) = described(err);
    let mut status = Status::new(code, message);
    if let Some(reason) = reason {
        status.metadata_mut().insert(
            REASON_KEY,
            tonic::metadata::MetadataValue::from_static(reason),
        );
    }
    status
}

/// An error inside a stream (ProduceStream's replies): as `status` gives it.
pub fn stream_error(err: Error) -> pb::Error {
    let (code, message, reason) = described(err);
    pb::Error {
        code: code as i32,
        message,
        reason: reason.unwrap_or_default().to_string(),
    }
}

/// An error's code, message (with its limit hint) and reason; logged if it is the
/// server's to log.
fn described(err: Error) -> (Code, String, Option<&'static str>) {
    if logged(&err) {
        tracing::error!(%err, "request failed");
    }
    let mut message = err.to_string();
    if let Some(hint) = err.limit_hint() {
        message = format!("{message}; {hint}");
    }
    (code(&err), clamp(message), reason(&err))
}

/// Whether a failed request is the server's to log: its faults and damage are, a
/// client's own doing is not, or any client could fill the log at will.
fn logged(err: &Error) -> bool {
    match err {
        Error::InPartition { source, .. } | Error::PublishedPartly { source, .. } => logged(source),
        // A refusal below the disk floor is logged once, when space runs low.
        Error::DiskFull { .. } => false,
        // A client at a limit the server keeps (members, groups), or sending a record
        // over max.message.bytes, is the client's business.
        Error::LimitReached(_) | Error::TooLarge { .. } => false,
        _ => matches!(
            code(err),
            Code::Internal | Code::DataLoss | Code::ResourceExhausted
        ),
    }
}

/// A status message travels in an HTTP/2 header: past a few kilobytes a client refuses
/// the whole response. Names in messages are already cut (`error::quote`); this is the
/// backstop.
fn clamp(mut message: String) -> String {
    const MAX: usize = 2048;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_maps_says_what_to_raise() {
        for (errno, raise) in [(24, "ulimit -n"), (12, "vm.max_map_count")] {
            let err = Error::InPartition {
                topic: "t".into(),
                partition: 0,
                source: Box::new(Error::Io {
                    path: "/data/t/0/00000000000000000000.log".into(),
                    source: std::io::Error::from_raw_os_error(errno),
                }),
            };
            let status = status(err);
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains(raise), "{}", status.message());
        }
    }

    #[test]
    fn a_publish_stored_in_part_says_so_with_its_sources_code() {
        let err = Error::PublishedPartly {
            detail: "2 of the 3 topics".into(),
            source: Box::new(Error::DiskFull {
                free: 1,
                floor: 2,
                path: "/d".into(),
            }),
        };
        assert_eq!(reason(&err), Some(PUBLISHED_PARTLY));
        let status = status(err);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get(REASON_KEY).unwrap(), PUBLISHED_PARTLY);
        assert!(
            status.message().contains("2 of the 3"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_clients_own_doing_is_not_logged_as_the_servers_failure() {
        let in_partition = |source| Error::InPartition {
            topic: "t".into(),
            partition: 0,
            source: Box::new(source),
        };
        let too_large = || Error::TooLarge {
            what: "record",
            size: 2,
            limit: 1,
        };
        assert!(!logged(&too_large()));
        assert!(!logged(&in_partition(too_large())));
        assert!(!logged(&Error::LimitReached("members".into())));
        let io = || Error::Io {
            path: "/data/t/0/00000000000000000000.log".into(),
            source: std::io::Error::from_raw_os_error(5),
        };
        assert!(logged(&io()));
        assert!(logged(&in_partition(io())));
        assert!(!logged(&Error::InvalidArgument("bad".into())));
    }

    #[test]
    fn messages_quote_at_most_a_few_hundred_characters_of_a_name() {
        let name = "n".repeat(100_000);
        let status = status(Error::TopicNotFound { topic: name });
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < 400, "{}", status.message().len());
        assert!(status.message().contains("100000 characters"));
    }
}
