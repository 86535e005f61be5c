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
    #[error(
        "topic {} does not exist; create it first (strom topic create)",
        quote(topic)
    )]
    TopicNotFound { topic: String },

    /// A partition number past the topic's partition count.
    #[error(
        "topic {} has partitions 0 to {}; partition {partition} does not exist",
        quote(topic),
        .count.saturating_sub(1)
    )]
    PartitionNotFound {
        topic: String,
        partition: u32,
        count: u32,
    },

    /// CreateTopic of a name already taken.
    #[error("topic {} already exists", quote(topic))]
    TopicExists { topic: String },

    /// CreateExchange of a name already taken.
    #[error("exchange {} already exists", quote(exchange))]
    ExchangeExists { exchange: String },

    /// No exchange of that name.
    #[error(
        "exchange {} does not exist; create it with CreateExchange (strom exchange create)",
        quote(exchange)
    )]
    ExchangeNotFound { exchange: String },

    /// The access control list grants the caller nothing of the kind (`grpc/auth/acl.rs`).
    #[error("{0}")]
    PermissionDenied(String),

    /// The server is stopping and takes no new work.
    #[error("the server is shutting down; retry against a running server")]
    ShuttingDown,

    /// An error from one partition's log, with the topic and partition it concerns.
    #[error("topic {} partition {partition}: {source}", quote(topic))]
    InPartition {
        topic: String,
        partition: u32,
        #[source]
        source: Box<Error>,
    },

    /// A publish that failed after some of its topics took its records: `detail` says
    /// which (by count and name order: a thousand names would not fit a status).
    #[error("{source}; {detail} (a publish sent again is appended to them again)")]
    PublishedPartly {
        detail: String,
        #[source]
        source: Box<Error>,
    },

    /// A range of a sealed segment that cannot be read; reading resumes at `resume_at`.
    #[error(
        "records from offset {from} to {resume_at} are unreadable ({source}); fetch from {resume_at} to skip them"
    )]
    DamagedRange {
        from: u64,
        resume_at: u64,
        #[source]
        source: Box<Error>,
    },

    /// An fsync of a log's files failed earlier, so what is on disk is unknown.
    #[error(
        "an fsync in {} failed ({reason}): records since the last successful fsync may not be on disk, so the partition refuses writes until it has been reopened and recovered from disk, which the server retries at its next upkeep",
        dir.display()
    )]
    SyncFailed { dir: PathBuf, reason: String },

    /// Another process serves this data directory.
    #[error("data directory {} is in use by {holder}; stop that server or choose another --data-dir", path.display())]
    DataDirInUse { path: PathBuf, holder: String },

    /// A topic or partition whose files could not be opened; the rest of the server runs.
    #[error("{what} is unavailable: {reason}")]
    Unavailable { what: String, reason: String },

    /// No consumer group of that name.
    #[error(
        "group {} does not exist; a group is created by its first Heartbeat, CommitOffsets or ResetOffsets (strom group list shows the groups)",
        quote(group)
    )]
    GroupNotFound { group: String },

    /// No share group of that name.
    #[error(
        "share group {} does not exist; a share group is created by its first ShareFetch or AlterShareGroupConfig (strom queue list shows them)",
        quote(group)
    )]
    ShareGroupNotFound { group: String },

    /// The request is well formed, but the state of what it concerns does not allow it
    /// (a fenced group member, a reset of a group that has members); the message says
    /// what to do.
    #[error("{0}")]
    FailedPrecondition(String),

    /// Offsets of a topic that members of the group consume cannot be deleted
    /// (`groups/delete_offsets.rs`). FAILED_PRECONDITION; Kafka's
    /// GROUP_SUBSCRIBED_TO_TOPIC.
    #[error("{0}")]
    GroupSubscribed(String),

    /// A produce from an instance of a named producer that a newer instance has fenced
    /// (InitProducer gave the name a newer epoch or a new id). FAILED_PRECONDITION like
    /// the others, with the reason `PRODUCER_FENCED` (`grpc::reason`), since the client
    /// must stop rather than take the name back.
    #[error("{0}")]
    ProducerFenced(String),

    /// The data directory's file system is below its free-space floor.
    #[error(
        "the disk of {} has {} bytes free, below the server's min_free_disk floor of {floor} bytes: produce is refused until space is freed (delete topics or records, lower retention.ms or retention.bytes, or lower min_free_disk); reads, commits and deletes still work",
        path.display(), free
    )]
    DiskFull {
        path: PathBuf,
        free: u64,
        floor: u64,
    },

    /// A count the server bounds (members of a group, groups) is at its limit.
    #[error("{0}")]
    LimitReached(String),

    /// A committed offset past the end of its partition (or a reset outside it).
    #[error(
        "offset {offset} cannot be committed for topic {} partition {partition}: it is {} (the partition holds offsets [{start}, {end}))",
        quote(topic),
        outside(*.offset, *.start, *.end)
    )]
    CommitOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        start: u64,
        end: u64,
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
            Error::InPartition { source, .. } | Error::PublishedPartly { source, .. } => {
                source.is_storage_full()
            }
            Error::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::FileTooLarge
                    || source.kind() == io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }
}

impl Error {
    /// What to raise when the process ran out of a limit the operator sets: descriptors
    /// (EMFILE, ENFILE) or map space (ENOMEM from mmap, which is what
    /// `vm.max_map_count` gives). `None` for anything else.
    pub fn limit_hint(&self) -> Option<&'static str> {
        match self {
            Error::InPartition { source, .. }
            | Error::DamagedRange { source, .. }
            | Error::PublishedPartly { source, .. } => {
                source.limit_hint()
            }
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(24) | Some(23) => Some(
                    "the server is out of file descriptors: raise its open-file limit (ulimit -n, LimitNOFILE=), or lower max_open_segments",
                ),
                Some(12) => Some(
                    "the server is out of memory maps: raise vm.max_map_count (sysctl), or lower max_open_segments",
                ),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Longest part of a name an error message quotes: a message travels in an HTTP/2
/// header, and a 100,000-character name would push it past the client's limit.
pub const MAX_QUOTED: usize = 200;

/// A configured whole number as written in a config value: digits, with a leading `-`
/// for a negative one. `str::parse` also takes a leading `+`, which no config key
/// documents, so `"+5"` is refused as any other stray character would be.
pub fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.starts_with('+') {
        return None;
    }
    text.parse().ok()
}

/// `name` in double quotes, cut to `MAX_QUOTED` characters (saying how long it was).
pub fn quote(name: &str) -> String {
    match name.char_indices().nth(MAX_QUOTED) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &name[..cut],
            name.chars().count()
        ),
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

/// Where an offset outside `[start, end)` lies, for `CommitOutOfRange`.
fn outside(offset: u64, start: u64, end: u64) -> String {
    match offset < start {
        true => format!("below the log start {start} (records before it were deleted)"),
        false => format!("past the high watermark {end}"),
    }
}
