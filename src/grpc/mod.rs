//! The gRPC surface: generated code, one adapter per service, and the one mapping from
//! `Error` to `tonic::Status`. Handlers decode, call one broker method, encode.

mod admin;
mod log_service;
pub mod records;

pub use admin::AdminService;
pub use log_service::LogService;

use tonic::{Code, Status};

use crate::error::Error;

/// Code generated from `proto/strom/v1/strom.proto`; the only place it is named.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strom.v1");
}

/// The encoded descriptor set of the protos, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strom_descriptor");

/// The gRPC code for an error. Exhaustive on purpose: a new variant must choose one.
pub fn code(err: &Error) -> Code {
    match err {
        Error::InPartition { source, .. } => code(source),
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } => Code::NotFound,
        Error::TopicExists { .. } => Code::AlreadyExists,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::OffsetOutOfRange { .. } => Code::OutOfRange,
        Error::TooLarge { .. } => Code::ResourceExhausted,
        Error::Io { .. } if err.is_storage_full() => Code::ResourceExhausted,
        Error::Io { .. } => Code::Internal,
        Error::Corruption { .. } | Error::ChecksumMismatch { .. } => Code::DataLoss,
        Error::DamagedRange { .. } => Code::DataLoss,
        Error::SyncFailed { .. } | Error::Unavailable { .. } => Code::Unavailable,
        Error::DataDirInUse { .. } => Code::FailedPrecondition,
        Error::ShuttingDown => Code::Unavailable,
    }
}

/// The status for an error: its code and its message, which names what went wrong.
pub fn status(err: Error) -> Status {
    if matches!(code(&err), Code::Internal | Code::DataLoss) {
        tracing::error!(%err, "request failed");
    }
    Status::new(code(&err), err.to_string())
}
