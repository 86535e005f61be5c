//! `ProduceRequest`, decoded by hand.
//!
//! prost's generated decoder would turn every record into a struct of its own (about a
//! hundred bytes for a record that is two bytes on the wire), and a 10 MB request of
//! five million empty records into more than a gigabyte. Here each record stays as it
//! arrived: a record of 32 bytes or more is kept as a slice of the receive buffer (no
//! copy; the slice's handle is 32 bytes), a smaller one is copied into one buffer shared
//! by the request (cheaper than a handle), and either way the request keeps four bytes
//! of bookkeeping per record. Records are parsed only when their batch is built,
//! straight into the batch.
//!
//! The same type encodes requests for the Rust client from `records`, as prost's would.
//!
//! - `received.rs`: `Received`, the records as they arrived;
//! - `record.rs`: parsing each record's fields into the batch (`write_records`);
//! - `publish.rs`: `PublishRequest`, records for an exchange, decoded the same way,
//!   and their appends to the topics it routes them to.

mod publish;
mod received;
mod record;
#[cfg(test)]
mod tests;

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::pb;
use crate::broker::{self, Broker, Durability};
use crate::error::{Error, Result};
use crate::log::ProducerInfo;
pub use publish::{publish, PublishRequest};
pub use received::Received;
pub use record::write_records;

/// `strom.v1.ProduceRequest`. The fields are those of the generated type, plus
/// `received`, which a decoded request fills instead of `records`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: Option<u32>,
    /// Records to send: what a client fills in.
    pub records: Vec<pb::Record>,
    pub durability: i32,
    pub producer_id: Option<i64>,
    pub producer_epoch: Option<i32>,
    pub base_sequence: Option<i32>,
    /// Records as a server received them.
    pub received: Received,
}

impl ProduceRequest {
    /// A request of one record to `topic` as the server receives it (for tests).
    #[cfg(test)]
    pub fn decode_from(topic: &str, record: &pb::Record) -> ProduceRequest {
        use prost::Message;
        let sent = ProduceRequest {
            topic: topic.into(),
            records: vec![record.clone()],
            ..Default::default()
        };
        ProduceRequest::decode(bytes::Bytes::from(sent.encode_to_vec())).expect("our own encoding")
    }

    /// The `durability` field as its enum (unknown values are refused by the server).
    pub fn durability(&self) -> pb::Durability {
        pb::Durability::try_from(self.durability).unwrap_or_default()
    }
}

impl prost::Message for ProduceRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::string::encode(1, &self.topic, buf);
        }
        if let Some(p) = self.partition {
            encoding::uint32::encode(2, &p, buf);
        }
        for record in &self.records {
            encoding::message::encode(3, record, buf);
        }
        encode_received(&self.received, buf);
        if self.durability != 0 {
            encoding::int32::encode(4, &self.durability, buf);
        }
        if let Some(id) = self.producer_id {
            encoding::int64::encode(5, &id, buf);
        }
        if let Some(epoch) = self.producer_epoch {
            encoding::int32::encode(6, &epoch, buf);
        }
        if let Some(sequence) = self.base_sequence {
            encoding::int32::encode(7, &sequence, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.topic, buf, ctx),
            2 => encoding::uint32::merge(wire_type, self.partition.get_or_insert(0), buf, ctx),
            3 => self.received.merge(wire_type, buf, ctx),
            4 => encoding::int32::merge(wire_type, &mut self.durability, buf, ctx),
            5 => encoding::int64::merge(wire_type, self.producer_id.get_or_insert(0), buf, ctx),
            6 => encoding::int32::merge(wire_type, self.producer_epoch.get_or_insert(0), buf, ctx),
            7 => encoding::int32::merge(wire_type, self.base_sequence.get_or_insert(0), buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let received = received_len(&self.received);
        (if self.topic.is_empty() {
            0
        } else {
            encoding::string::encoded_len(1, &self.topic)
        }) + self
            .partition
            .map_or(0, |p| encoding::uint32::encoded_len(2, &p))
            + encoding::message::encoded_len_repeated(3, &self.records)
            + received
            + if self.durability != 0 {
                encoding::int32::encoded_len(4, &self.durability)
            } else {
                0
            }
            + self
                .producer_id
                .map_or(0, |v| encoding::int64::encoded_len(5, &v))
            + self
                .producer_epoch
                .map_or(0, |v| encoding::int32::encoded_len(6, &v))
            + self
                .base_sequence
                .map_or(0, |v| encoding::int32::encoded_len(7, &v))
    }

    fn clear(&mut self) {
        *self = ProduceRequest::default();
    }
}

/// Records as received, encoded again as field 3 (`repeated Record records`) of a
/// ProduceRequest or PublishRequest.
fn encode_received(received: &Received, buf: &mut impl BufMut) {
    for record in received.iter() {
        encoding::encode_key(3, WireType::LengthDelimited, buf);
        encoding::encode_varint(record.len() as u64, buf);
        buf.put_slice(record);
    }
}

/// The length of what `encode_received` writes.
fn received_len(received: &Received) -> usize {
    received
        .iter()
        .map(|r| encoding::key_len(3) + encoding::encoded_len_varint(r.len() as u64) + r.len())
        .sum()
}

/// Checks a produce request and builds its batch: its records go from the receive
/// buffer into the batch in one pass (see `record.rs`).
pub fn prepare(broker: &Broker, r: pb::ProduceRequest) -> Result<broker::Prepared, Error> {
    let bad = |msg: String| Error::InvalidArgument(msg);
    let durability = durability(r.durability)?;
    let producer = match (r.producer_id, r.producer_epoch, r.base_sequence) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(bad(
                "producer_epoch and base_sequence go with a producer_id (from InitProducer)".into(),
            ))
        }
        (Some(id), _, _) if id < 0 => {
            return Err(bad(format!(
                "producer_id {id} is negative; leave it unset, or use one InitProducer gave"
            )))
        }
        (Some(_), _, None) => {
            return Err(bad(
                "a produce with a producer_id needs base_sequence: the sequence of its first record in this partition, from 0".into(),
            ))
        }
        (Some(id), epoch, Some(sequence)) => {
            let epoch = epoch.unwrap_or(0);
            if !(0..=i32::from(i16::MAX)).contains(&epoch) {
                return Err(bad(format!(
                    "producer_epoch {epoch} is outside 0..=32767; use the epoch InitProducer gave"
                )));
            }
            if sequence < 0 {
                return Err(bad(format!(
                    "base_sequence {sequence} is negative; sequences run from 0 to 2147483647 and then wrap to 0"
                )));
            }
            Some(ProducerInfo {
                id,
                epoch: epoch as i16,
                base_sequence: sequence,
            })
        }
    };
    let target = broker::ProduceTarget {
        topic: r.topic,
        partition: r.partition,
        durability,
        producer,
    };
    let mut writer = begin(broker, target, &r.received)?;
    write_records(r.received, &mut writer)?;
    writer.finish()
}

/// The `durability` field: None for the topic's default.
fn durability(value: i32) -> Result<Option<Durability>> {
    match pb::Durability::try_from(value) {
        Ok(pb::Durability::Unspecified) => Ok(None),
        Ok(pb::Durability::PageCache) => Ok(Some(Durability::PageCache)),
        Ok(pb::Durability::Fsync) => Ok(Some(Durability::Fsync)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "durability {value} is not a Durability value"
        ))),
    }
}

/// Starts the batch of `received` for `target`.
fn begin(
    broker: &Broker,
    target: broker::ProduceTarget,
    received: &Received,
) -> Result<broker::BatchWriter> {
    broker.begin_produce(target, received.len(), copied(received))
}

/// What a batch of `received` will copy: small records whole, and tags and lengths of
/// the rest.
fn copied(received: &Received) -> usize {
    received.bytes().min(received.len() * 300) + 32 * received.len()
}
