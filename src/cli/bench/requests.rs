//! The requests of `strom bench produce` and `e2e`, built whole by the bench itself.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::Load;
use crate::broker::partitioner::partition_for_key;
use crate::grpc::pb;
use crate::log::producers::sequence_after;

/// Builds the records of one request: one key drawn from the distribution for all of
/// them, values of `record_size` bytes (stamped with the due time when asked).
pub struct Requests {
    load: Load,
    template: Bytes,
    seed: u64,
    /// With --idempotent: the producer's id and epoch, and each partition's next sequence.
    producer: Option<(i64, i32)>,
    sequences: HashMap<u32, i32>,
}

impl Requests {
    /// Producer `id`'s requests (its key sequence starts from its id); `producer` is
    /// its id and epoch from InitProducer, with --idempotent.
    pub fn new(load: Load, id: u32, producer: Option<(i64, i32)>) -> Requests {
        Requests {
            template: Bytes::from(vec![b'x'; load.record_size]),
            seed: u64::from(id) + 1,
            load,
            producer,
            sequences: HashMap::new(),
        }
    }

    pub fn next(&mut self, n: u64, due: Instant, stamp: Option<Instant>) -> pb::ProduceRequest {
        let key = self.load.keys.draw(&mut self.seed);
        let value = match stamp {
            None => self.template.clone(),
            Some(base) => {
                let mut value = BytesMut::with_capacity(self.load.record_size);
                value.put_u64_le(due.duration_since(base).as_nanos() as u64);
                value.put_slice(&self.template[8..]);
                value.freeze()
            }
        };
        let record = pb::Record {
            key: key.clone(),
            value,
            ..Default::default()
        };
        let mut request = pb::ProduceRequest {
            topic: self.load.topic.clone(),
            partition: key
                .is_none()
                .then(|| (n % u64::from(self.load.partitions)) as u32),
            records: vec![record; self.load.batch],
            durability: self.load.durability.proto() as i32,
            ..Default::default()
        };
        if let Some((id, epoch)) = self.producer {
            // Sequences are per partition, so the partition is named, as the Rust
            // Producer does.
            let partition = match &key {
                Some(key) => partition_for_key(key, self.load.partitions),
                None => (n % u64::from(self.load.partitions)) as u32,
            };
            let sequence = self.sequences.entry(partition).or_insert(0);
            request.partition = Some(partition);
            request.producer_id = Some(id);
            request.producer_epoch = Some(epoch);
            request.base_sequence = Some(*sequence);
            *sequence = sequence_after(*sequence, self.load.batch as u64);
        }
        request
    }

    pub fn payload_bytes(&self, request: &pb::ProduceRequest) -> u64 {
        request
            .records
            .iter()
            .map(|r| (r.value.len() + r.key.as_ref().map_or(0, Bytes::len)) as u64)
            .sum()
    }
}
