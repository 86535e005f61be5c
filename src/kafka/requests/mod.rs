//! The Kafka requests strom answers, decoded from a frame (`wire::Reader`), and the
//! versions of each it takes.
//!
//! Versions are the ones that name topics by name (Produce up to 12, Fetch up to 12),
//! from the oldest a Kafka 4 client still sends. Fields strom has no use for (leader
//! epochs, rack ids, replica ids) are read and dropped.

use bytes::Bytes;

pub mod admin;
mod apis;
pub mod groups;
pub mod sasl;

pub use apis::{api, key, Api, APIS};

use super::wire::{Decoded, Malformed, Reader};

/// Partitions one Produce, Fetch, ListOffsets, OffsetCommit or OffsetFetch may name,
/// over all its topics (and the entries of the other requests with arrays: topics to
/// create or delete, groups, configs): each costs the server far more than its few
/// bytes on the wire (an answer, a read, a lookup), so a request of millions is
/// refused (the connection closed) before any of them is looked at.
pub const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// Counts the partitions a request names as it is decoded.
pub(crate) struct Partitions(usize);

impl Partitions {
    pub(crate) fn new() -> Partitions {
        Partitions(0)
    }

    pub(crate) fn add(&mut self, n: usize) -> Decoded<()> {
        self.0 += n;
        match self.0 <= MAX_PARTITIONS_PER_REQUEST {
            true => Ok(()),
            false => Err(Malformed(format!(
                "a request naming more than {MAX_PARTITIONS_PER_REQUEST} partitions (or topics, groups, configs): send several"
            ))),
        }
    }
}

/// A topic of a request and its partitions' entries.
#[derive(Debug)]
pub struct Topic<T> {
    pub name: String,
    pub partitions: Vec<T>,
}

/// The array of topics most requests carry: each a name and an array of partition
/// entries, which `entry` reads (tagged fields after each, in flexible versions),
/// counted against `MAX_PARTITIONS_PER_REQUEST`.
pub(crate) fn topics<T>(
    r: &mut Reader,
    mut entry: impl FnMut(&mut Reader) -> Decoded<T>,
) -> Decoded<Vec<Topic<T>>> {
    let mut count = Partitions::new();
    r.array("topics", |r| {
        let name = r.string("a topic name")?;
        let partitions = r.array("partitions", |r| {
            count.add(1)?;
            let read = entry(r)?;
            r.tags()?;
            Ok(read)
        })?;
        if partitions.is_empty() {
            // Counted too: else a frame of topics without partitions was unbounded.
            count.add(1)?;
        }
        r.tags()?;
        Ok(Topic { name, partitions })
    })
}

/// A request's header.
#[derive(Debug, Clone)]
pub struct Header {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// Reads the header of a request frame. The key, version and correlation id come
/// first in every version, so an unknown API or version can still be answered.
pub fn header(frame: Bytes) -> Decoded<(Header, Reader)> {
    let mut r = Reader::new(frame, false);
    let api_key = r.i16()?;
    let version = r.i16()?;
    let correlation_id = r.i32()?;
    let client_id = r.nullable_string("the client id")?;
    let flexible = api(api_key).is_some_and(|api| version >= api.first_flexible);
    r.flexible = flexible;
    r.tags()?;
    let header = Header {
        api_key,
        version,
        correlation_id,
        client_id,
    };
    Ok((header, r))
}

#[derive(Debug)]
pub struct ProducePartition {
    pub index: i32,
    pub records: Option<Bytes>,
}

pub type ProduceTopic = Topic<ProducePartition>;

#[derive(Debug)]
pub struct Produce {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub topics: Vec<ProduceTopic>,
}

pub fn produce(r: &mut Reader) -> Decoded<Produce> {
    let transactional_id = r.nullable_string("the transactional id")?;
    let acks = r.i16()?;
    let _timeout_ms = r.i32()?;
    let topics = topics(r, |r| {
        let index = r.i32()?;
        let records = r.nullable_bytes("records")?;
        Ok(ProducePartition { index, records })
    })?;
    r.tags()?;
    Ok(Produce {
        transactional_id,
        acks,
        topics,
    })
}

#[derive(Debug)]
pub struct FetchPartition {
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
}

pub type FetchTopic = Topic<FetchPartition>;

#[derive(Debug)]
pub struct Fetch {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub session_id: i32,
    pub topics: Vec<FetchTopic>,
}

pub fn fetch(r: &mut Reader, version: i16) -> Decoded<Fetch> {
    let _replica_id = r.i32()?;
    let max_wait_ms = r.i32()?;
    let min_bytes = r.i32()?;
    let max_bytes = r.i32()?;
    // Every record is committed (no transactions), so isolation levels read alike.
    let _isolation_level = r.i8()?;
    let session_id = match version >= 7 {
        true => {
            let session_id = r.i32()?;
            let _session_epoch = r.i32()?;
            session_id
        }
        false => 0,
    };
    let topics = topics(r, |r| {
        let partition = r.i32()?;
        if version >= 9 {
            let _current_leader_epoch = r.i32()?;
        }
        let fetch_offset = r.i64()?;
        if version >= 12 {
            let _last_fetched_epoch = r.i32()?;
        }
        if version >= 5 {
            let _log_start_offset = r.i64()?;
        }
        let max_bytes = r.i32()?;
        Ok(FetchPartition {
            partition,
            fetch_offset,
            max_bytes,
        })
    })?;
    if version >= 7 {
        r.array("forgotten topics", |r| {
            r.string("a topic name")?;
            r.array("partitions", |r| r.i32())?;
            r.tags()
        })?;
    }
    if version >= 11 {
        r.string("the rack id")?;
    }
    r.tags()?;
    Ok(Fetch {
        max_wait_ms,
        min_bytes,
        max_bytes,
        session_id,
        topics,
    })
}

/// (partition, timestamp): -1 the latest offset, -2 the earliest.
pub type ListOffsetsTopic = Topic<(i32, i64)>;

pub fn list_offsets(r: &mut Reader, version: i16) -> Decoded<Vec<ListOffsetsTopic>> {
    let _replica_id = r.i32()?;
    if version >= 2 {
        let _isolation_level = r.i8()?;
    }
    let topics = topics(r, |r| {
        let partition = r.i32()?;
        if version >= 4 {
            let _current_leader_epoch = r.i32()?;
        }
        Ok((partition, r.i64()?))
    })?;
    r.tags()?;
    Ok(topics)
}

/// A Metadata request: `None` asks for every topic.
pub fn metadata(r: &mut Reader, version: i16) -> Decoded<Option<Vec<Option<String>>>> {
    let mut count = Partitions::new();
    let topics = r.nullable_array("topics", |r| {
        count.add(1)?;
        if version >= 10 {
            let _topic_id = r.uuid()?;
        }
        let name = r.nullable_string("a topic name")?;
        r.tags()?;
        Ok(name)
    })?;
    if version >= 4 {
        let _allow_auto_topic_creation = r.bool()?;
    }
    if version >= 8 {
        if version <= 10 {
            let _include_cluster_authorized_operations = r.bool()?;
        }
        let _include_topic_authorized_operations = r.bool()?;
    }
    r.tags()?;
    // Version 0 asks for every topic with an empty list; later ones with null.
    Ok(match (version, topics) {
        (0, Some(t)) if t.is_empty() => None,
        (_, topics) => topics,
    })
}

/// An InitProducerId request: its transactional id, if any.
pub fn init_producer_id(r: &mut Reader, version: i16) -> Decoded<Option<String>> {
    let transactional_id = r.nullable_string("the transactional id")?;
    let _transaction_timeout_ms = r.i32()?;
    if version >= 3 {
        let _producer_id = r.i64()?;
        let _producer_epoch = r.i16()?;
    }
    r.tags()?;
    Ok(transactional_id)
}

/// The end of a request: bytes left over are ignored, as Kafka's brokers ignore them.
/// Clients rely on it: librdkafka's Metadata for all topics in flexible versions
/// leaves the 4-byte placeholder of the topics' count in place of the 1-byte null,
/// so Kafka reads the fields after it shifted and never looks at the last 3 bytes.
/// Every field strom reads was checked against the frame as it was read.
pub fn finished(r: &Reader) {
    if r.remaining() > 0 {
        tracing::debug!(
            left = r.remaining(),
            "kafka request bytes after its last field ignored"
        );
    }
}

/// An ApiVersions request (its client's name and version, from version 3, are read and
/// dropped).
pub fn api_versions(r: &mut Reader, version: i16) -> Decoded<()> {
    if version >= 3 {
        r.string("the client software name")?;
        r.string("the client software version")?;
    }
    r.tags()
}
