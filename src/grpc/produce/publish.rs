//! `strom.v1.PublishRequest`, decoded by hand as `ProduceRequest` is (records stay as
//! they arrived), and handed to `Broker::publish` (`broker/exchanges/publish.rs`),
//! which builds a batch of them for each topic the exchange routes them to.

use std::sync::Arc;

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::{durability, write_records, Received};
use crate::broker::exchanges::{Publish, Published};
use crate::broker::Broker;
use crate::error::Result;
use crate::grpc::pb;

/// `strom.v1.PublishRequest`: the generated type's fields, plus `received`, which a
/// decoded request fills instead of `records`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishRequest {
    pub exchange: String,
    pub routing_key: String,
    /// Records to send: what a client fills in.
    pub records: Vec<pb::Record>,
    pub durability: i32,
    pub drop_unroutable: bool,
    /// Records as a server received them.
    pub received: Received,
}

impl prost::Message for PublishRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.exchange.is_empty() {
            encoding::string::encode(1, &self.exchange, buf);
        }
        if !self.routing_key.is_empty() {
            encoding::string::encode(2, &self.routing_key, buf);
        }
        for record in &self.records {
            encoding::message::encode(3, record, buf);
        }
        super::encode_received(&self.received, buf);
        if self.durability != 0 {
            encoding::int32::encode(4, &self.durability, buf);
        }
        if self.drop_unroutable {
            encoding::bool::encode(5, &self.drop_unroutable, buf);
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
            1 => encoding::string::merge(wire_type, &mut self.exchange, buf, ctx),
            2 => encoding::string::merge(wire_type, &mut self.routing_key, buf, ctx),
            3 => self.received.merge(wire_type, buf, ctx),
            4 => encoding::int32::merge(wire_type, &mut self.durability, buf, ctx),
            5 => encoding::bool::merge(wire_type, &mut self.drop_unroutable, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let string = |tag, s: &String| match s.is_empty() {
            true => 0,
            false => encoding::string::encoded_len(tag, s),
        };
        string(1, &self.exchange)
            + string(2, &self.routing_key)
            + encoding::message::encoded_len_repeated(3, &self.records)
            + super::received_len(&self.received)
            + match self.durability {
                0 => 0,
                d => encoding::int32::encoded_len(4, &d),
            }
            + match self.drop_unroutable {
                false => 0,
                true => encoding::bool::encoded_len(5, &true),
            }
    }

    fn clear(&mut self) {
        *self = PublishRequest::default();
    }
}

/// Appends a publish's records to each topic its exchange routes them to.
pub async fn publish(broker: &Arc<Broker>, r: PublishRequest) -> Result<Vec<Published>> {
    let publish = Publish {
        durability: durability(r.durability)?,
        records: r.received.len(),
        bytes: r.received.bytes(),
        copied: super::copied(&r.received),
        exchange: r.exchange,
        routing_key: r.routing_key,
        drop_unroutable: r.drop_unroutable,
    };
    let received = Arc::new(r.received);
    // What building a batch walks, counted only for a publish to several topics: 100
    // records of 1,000 empty headers took 8.7 s of a core over 1,000 topics when only
    // records were counted, and unknown fields would do as well as headers.
    let counted = Arc::clone(&received);
    let fields = move || {
        let tags = |record: &[u8]| 1 + super::record::parse_fields(record).map_or(0, |f| f.tags);
        counted.iter().map(tags).sum()
    };
    // Called once or twice a topic: the records are handed over, so each call takes
    // its own copy (the handles of records of 32 bytes or more, whose bytes are
    // shared; the shorter records' bytes, which the batch copies anyway).
    let fill = move |writer: &mut _| write_records(Received::clone(&received), writer);
    broker.publish(publish, fill, fields).await
}
