//! The broker's side of exchanges: changes run on blocking threads (each writes the
//! exchanges file), bindings name live topics, and a route resolves to the topics
//! themselves.

use std::sync::Arc;

use super::{Exchange, ExchangeListing, ExchangeType};
use crate::broker::page::{Listed, Page};
use crate::broker::{Broker, Topic};
use crate::error::Result;

impl Broker {
    /// Runs a change of the exchanges on a blocking thread (it syncs a file).
    async fn change_exchanges<T: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&super::Exchanges) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_running()?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || change(&me.exchanges))
            .await
            .expect("an exchange change does not panic")
    }

    pub async fn create_exchange(self: &Arc<Self>, name: &str, kind: ExchangeType) -> Result<()> {
        let name = name.to_string();
        self.change_exchanges(move |x| x.create(&name, kind))
            .await?;
        Ok(())
    }

    pub async fn delete_exchange(self: &Arc<Self>, name: &str) -> Result<()> {
        let name = name.to_string();
        self.change_exchanges(move |x| x.delete(&name)).await
    }

    /// Binds the live topic `topic` to `exchange` with `key`: true if new.
    pub async fn bind(self: &Arc<Self>, exchange: &str, topic: &str, key: &str) -> Result<bool> {
        let id = self.topic(topic)?.id.clone();
        let (exchange, topic, key) = (exchange.to_string(), topic.to_string(), key.to_string());
        self.change_exchanges(move |x| x.bind(&exchange, &topic, &id, &key))
            .await
    }

    /// Removes a binding: true if there was one.
    pub async fn unbind(self: &Arc<Self>, exchange: &str, topic: &str, key: &str) -> Result<bool> {
        let (exchange, topic, key) = (exchange.to_string(), topic.to_string(), key.to_string());
        self.change_exchanges(move |x| x.unbind(&exchange, &topic, &key))
            .await
    }

    pub fn exchange(&self, name: &str) -> Result<Exchange> {
        self.exchanges.get(name)
    }

    pub fn list_exchanges(&self, page: &Page) -> Listed<ExchangeListing> {
        self.exchanges.list(page)
    }

    /// The topics a publish to `exchange` with `routing_key` goes to, in the order of
    /// their names. A binding whose topic is gone (deleted as it was bound) routes
    /// nowhere.
    pub fn route(&self, exchange: &str, routing_key: &str) -> Result<Vec<Arc<Topic>>> {
        super::check_routing_key(routing_key)?;
        let bindings = self.exchanges.route(exchange, routing_key)?;
        let topics = self.read_topics();
        Ok(bindings
            .iter()
            .filter_map(|b| topics.live.get(&b.topic).filter(|t| t.id == b.topic_id))
            .map(Arc::clone)
            .collect())
    }

    /// Drops the bindings of a deleted topic. A failure is logged: the bindings route
    /// nowhere meanwhile (their topic id is gone), and the next start drops them.
    pub(crate) fn forget_bindings(&self, topic_id: &str) {
        if let Err(err) = self.exchanges.forget_topic(topic_id) {
            tracing::warn!(%err, topic_id, "could not drop the bindings of a deleted topic");
        }
    }
}
