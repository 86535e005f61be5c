//! The broker's side of exchanges: bindings name live topics, a deleted topic takes
//! its bindings, and a route resolves to the topics themselves.

use std::sync::Arc;

use super::{Binding, Exchange, ExchangeListing, ExchangeType};
use crate::broker::page::{Listed, Page};
use crate::broker::{Broker, Topic};
use crate::error::{quote, Error, Result};

impl Broker {
    pub async fn create_exchange(self: &Arc<Self>, name: &str, kind: ExchangeType) -> Result<()> {
        self.check_running()?;
        self.exchanges.create(name, kind).await
    }

    pub async fn delete_exchange(self: &Arc<Self>, name: &str) -> Result<()> {
        self.check_running()?;
        self.exchanges.delete(name).await
    }

    /// Binds the live topic `topic` to `exchange` with `key`: true if new.
    pub async fn bind(self: &Arc<Self>, exchange: &str, topic: &str, key: &str) -> Result<bool> {
        self.check_running()?;
        let binding = Binding {
            topic: topic.to_string(),
            key: key.to_string(),
            topic_id: self.topic(topic)?.id.clone(),
        };
        let (me, name, id) = (
            Arc::clone(self),
            binding.topic.clone(),
            binding.topic_id.clone(),
        );
        // Asked again as the binding is written: a delete takes the topic out of the
        // map before it queues the forgetting of the topic's bindings.
        let live = move || me.read_topics().live.get(&name).is_some_and(|t| t.id == id);
        self.exchanges.bind(exchange, binding, live).await
    }

    /// Removes a binding: true if there was one.
    pub async fn unbind(self: &Arc<Self>, exchange: &str, topic: &str, key: &str) -> Result<bool> {
        self.check_running()?;
        self.exchanges.unbind(exchange, topic, key).await
    }

    /// How many exchanges there are, and bindings over all of them (for the metrics).
    pub fn exchange_counts(&self) -> (usize, usize) {
        self.exchanges.counts()
    }

    pub fn exchange(&self, name: &str) -> Result<Exchange> {
        self.exchanges.get(name)
    }

    /// A page of the exchanges; each counts the bindings of the topics `shown` shows.
    pub fn list_exchanges(
        &self,
        page: &Page,
        shown: impl Fn(&str) -> bool,
    ) -> Listed<ExchangeListing> {
        self.exchanges.list(page, shown)
    }

    /// The topics a publish to `exchange` with `routing_key` goes to, each once, in
    /// the order of their names. A binding whose topic is gone (deleted as it was
    /// bound, or before a crash) routes nowhere; one whose topic is there but cannot be
    /// opened refuses the publish (UNAVAILABLE), as a produce to it would be.
    pub fn route(&self, exchange: &str, routing_key: &str) -> Result<Vec<Arc<Topic>>> {
        super::check_routing_key(routing_key)?;
        let bindings = self.exchanges.route(exchange, routing_key)?;
        let topics = self.read_topics();
        let mut routed: Vec<Arc<Topic>> = Vec::new();
        for b in bindings {
            if routed.last().is_some_and(|t| t.name == b.topic) {
                continue; // bound with another key that matched too
            }
            match (topics.live.get(&b.topic), topics.unavailable.get(&b.topic)) {
                (Some(topic), _) if topic.id == b.topic_id => routed.push(Arc::clone(topic)),
                // Not the directory's path or the cause, which the log has: the caller
                // may have no grant on the topic.
                (None, Some(broken)) if broken.may_be(&b.topic_id) => {
                    return Err(Error::Unavailable {
                        what: format!("topic {}, bound to the exchange,", quote(&b.topic)),
                        reason: "its files cannot be opened (the server's log says why)".into(),
                    })
                }
                _ => {}
            }
        }
        Ok(routed)
    }

    /// Drops the bindings of deleted topic `topic` (by its id if it has one). A
    /// failure is logged: the bindings route nowhere meanwhile (their topic is gone),
    /// and the next start drops them.
    pub(crate) async fn forget_bindings(&self, topic: &str, topic_id: Option<&str>) {
        if let Err(err) = self.exchanges.forget_topic(topic, topic_id).await {
            tracing::warn!(%err, topic, "could not drop the bindings of a deleted topic");
        }
    }
}
