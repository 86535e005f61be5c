//! The crate's one error type.
//!
//! Every variant carries the context an operator needs (path, offset, valid range,
//! expected and actual checksum). I/O errors keep their `io::Error` as the source, so a
//! full disk stays recognisable as a full disk all the way up to the gRPC status.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout strom.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call on a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The caller asked for something that can never succeed as asked.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An offset outside `[start, end]` of a log.
    #[error("offset {offset} is out of range: the log holds offsets [{start}, {end})")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },

    /// A batch, record or request over a configured limit.
    #[error("too large: {what} is {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },

    /// Bytes on disk that do not parse as what the format says must be there.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corruption {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// No topic of that name.
    #[error("topic {topic:?} does not exist; create it first (strom topic create)")]
    TopicNotFound { topic: String },

    /// A partition number past the topic's partition count.
    #[error("topic {topic:?} has partitions 0..{count}; partition {partition} does not exist")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        count: u32,
    },

    /// CreateTopic of a name already taken.
    #[error("topic {topic:?} already exists")]
    TopicExists { topic: String },

    /// The server is stopping and takes no new work.
    #[error("the server is shutting down; retry against a running server")]
    ShuttingDown,

    /// An error from one partition's log, with the topic and partition it concerns.
    #[error("topic {topic:?} partition {partition}: {source}")]
    InPartition {
        topic: String,
        partition: u32,
        #[source]
        source: Box<Error>,
    },

    /// A batch whose stored CRC does not match its bytes.
    #[error(
        "checksum mismatch in {} at byte {position}: stored {expected:#010x}, computed {actual:#010x}",
        path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        position: u64,
        expected: u32,
        actual: u32,
    },
}

impl Error {
    /// True when the underlying cause is a full disk or a file-size limit: the caller can
    /// retry once space is back.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::InPartition { source, .. } => source.is_storage_full(),
            Error::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::FileTooLarge
                    || source.kind() == io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }
}

/// Attaches a path to an `io::Result`, so no I/O error travels without its file.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
