//! `strom.v1.PublishRequest`, decoded by hand as `ProduceRequest` is (records stay as
//! they arrived), and its appends: one batch to each topic the exchange routes it to.
//!
//! Every topic's batch is built and checked before any is appended, then dropped, and
//! built again just before its append: a refused request writes nothing, and the
//! server holds one batch of the request at a time, however many topics it goes to
//! (up to an exchange's thousand bindings). Building twice costs the encoding again
//! for publishes to two topics or more (BENCHMARKS.md, "Exchanges").

use std::sync::Arc;

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::{begin, durability, write_records, Received};
use crate::broker::{self, Broker, Topic};
use crate::error::{quote, Error, Result};
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

    /// The length of what `encode_raw` writes: a client's request (`records`).
    fn encoded_len(&self) -> usize {
        let string = |tag, s: &String| match s.is_empty() {
            true => 0,
            false => encoding::string::encoded_len(tag, s),
        };
        string(1, &self.exchange)
            + string(2, &self.routing_key)
            + encoding::message::encoded_len_repeated(3, &self.records)
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
pub async fn publish(broker: &Arc<Broker>, r: PublishRequest) -> Result<pb::PublishResponse> {
    let durability = durability(r.durability)?;
    if r.received.is_empty() {
        return Err(Error::InvalidArgument(
            "a publish needs at least one record".into(),
        ));
    }
    let topics = broker.route(&r.exchange, &r.routing_key)?;
    if topics.is_empty() {
        if r.drop_unroutable {
            return Ok(pb::PublishResponse {
                topics: Vec::new(),
                log_append_time_ms: broker::now_ms(),
            });
        }
        return Err(Error::FailedPrecondition(format!(
            "no binding of exchange {} takes the routing key {}; nothing was stored (bind a topic with a key that takes it, or set drop_unroutable to have such publishes dropped)",
            quote(&r.exchange),
            quote(&r.routing_key)
        )));
    }
    let batch = |topic: &Topic| {
        let target = broker::ProduceTarget {
            topic: topic.name.clone(),
            partition: None,
            durability,
            producer: None,
        };
        let mut writer = begin(broker, target, &r.received)?;
        write_records(r.received.clone(), &mut writer)?;
        Ok::<_, Error>(writer)
    };
    if topics.len() > 1 {
        for topic in &topics {
            batch(topic)?; // checked, then dropped unfinished (no partition taken)
        }
    }
    let mut appended = Vec::with_capacity(topics.len());
    for topic in &topics {
        let append = async { batch(topic)?.finish()?.append().await };
        match append.await {
            Ok(done) => appended.push((topic.name.clone(), done)),
            Err(err) => return Err(partly(err, appended.iter().map(|(t, _)| t.as_str()))),
        }
    }
    let mut published = Vec::with_capacity(appended.len());
    let mut time = 0;
    // Durable ones wait together: their fsyncs overlap.
    let synced = futures_util::future::join_all(
        appended
            .into_iter()
            .map(|(topic, done)| async move { (topic, done.durable().await) }),
    )
    .await;
    let mut failed = None;
    for (topic, result) in synced {
        match result {
            Ok(p) => {
                time = p.log_append_time_ms;
                published.push(pb::Published {
                    topic,
                    partition: p.partition,
                    base_offset: p.base_offset,
                    last_offset: p.last_offset,
                });
            }
            Err(err) => failed = Some(err),
        }
    }
    match failed {
        // The others' records are on disk as asked.
        Some(err) => Err(partly(err, published.iter().map(|p| p.topic.as_str()))),
        None => Ok(pb::PublishResponse {
            topics: published,
            log_append_time_ms: time,
        }),
    }
}

/// A failure after some topics took the records: says which.
fn partly<'a>(err: Error, appended: impl Iterator<Item = &'a str>) -> Error {
    let took: Vec<String> = appended.map(quote).collect();
    if took.is_empty() {
        return err;
    }
    Error::PublishedPartly {
        appended: took.join(", "),
        source: Box::new(err),
    }
}
