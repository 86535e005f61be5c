//! The limits that protect the server from requests it should not try to serve, and
//! their defaults.

use std::time::Duration;

use super::{producer_ids, DiskFloor, TopicConfig};

/// Limits that protect the server from requests it should not try to serve.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_partitions: u32,
    /// Largest Fetch or Subscribe message the server builds.
    pub max_fetch_bytes: usize,
    /// Longest a Fetch may wait for data.
    pub max_wait: Duration,
    /// Sealed segments kept open (mapped) at once, over all partitions.
    pub max_open_segments: usize,
    /// Records one produce request may carry.
    pub max_records_per_request: usize,
    /// Headers one record may carry.
    pub max_headers_per_record: usize,
    /// The configuration of topics, for keys a topic does not set itself.
    pub topic_defaults: TopicConfig,
    /// Produce is refused while the data directory's disk has less free space.
    pub min_free_disk: DiskFloor,
    /// Memory a compaction pass may give its key map (see `cleaner::max_map_keys`).
    pub compaction_map_bytes: usize,
    /// Named producers kept, and for how long unused (see `producer_ids/`).
    pub producer_names: producer_ids::NameLimits,
    /// Idempotent producers remembered over every partition, about (see
    /// `log/producers/tally.rs`).
    pub max_idempotent_producers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_partitions: 1024,
            max_fetch_bytes: 16 << 20,
            max_wait: Duration::from_secs(30),
            max_open_segments: crate::log::cache::DEFAULT_OPEN_SEGMENTS,
            // Enough for 10 MB of 100-byte records; a request of millions of empty
            // records would otherwise cost tens of bytes of bookkeeping per record.
            max_records_per_request: 100_000,
            max_headers_per_record: 1_000,
            topic_defaults: TopicConfig::default(),
            min_free_disk: DiskFloor::default(),
            compaction_map_bytes: 32 << 20,
            producer_names: producer_ids::NameLimits::default(),
            // About 240 bytes each: 120 MB.
            max_idempotent_producers: 500_000,
        }
    }
}
