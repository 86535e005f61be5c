//! What `exchanges.json` holds, how it is read and written, and the changes made to it
//! (pure: they touch a copy in memory, and `mod.rs` writes it).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::routing::ExchangeType;
use crate::broker::page::{Listed, Page};
use crate::error::{quote, Error, Result};
use crate::log::files::write_atomically;

/// Name of the file, in the data directory.
pub const FILE: &str = "exchanges.json";
const VERSION: u32 = 1;

/// How many exchanges and bindings a server keeps at most.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub exchanges: usize,
    /// Bindings of one exchange.
    pub per_exchange: usize,
    /// Bindings over all exchanges.
    pub bindings: usize,
}

/// The server's capacity: the file stays a few megabytes, and a publish matches at
/// most a thousand topics.
pub const CAPACITY: Capacity = Capacity {
    exchanges: 1_000,
    per_exchange: 1_000,
    bindings: 10_000,
};

/// One exchange: its type and its bindings, sorted by topic and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    #[serde(rename = "type")]
    pub kind: ExchangeType,
    pub bindings: Vec<Binding>,
}

/// A binding: publishes whose routing key matches `key` go to `topic`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub topic: String,
    pub key: String,
    /// The id of the topic bound (`topic.json`'s).
    pub topic_id: String,
}

/// A page of the exchange listing: name, type and number of bindings shown.
pub type ExchangeListing = (String, ExchangeType, usize);

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    version: u32,
    exchanges: BTreeMap<String, Exchange>,
}

impl Default for State {
    fn default() -> State {
        State {
            version: VERSION,
            exchanges: BTreeMap::new(),
        }
    }
}

impl State {
    /// Reads the file's bytes; bindings come sorted and once each, whatever the file
    /// had, as `bind` and `route` expect.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<State> {
        let corrupt = |reason: String| Error::Corruption {
            path: path.to_path_buf(),
            position: 0,
            reason,
        };
        let mut state: State = serde_json::from_slice(bytes).map_err(|e| {
            corrupt(format!(
                "not the exchanges file (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?;
        if state.version != VERSION {
            return Err(corrupt(format!(
                "version {} of the exchanges file; this server reads version {VERSION}",
                state.version
            )));
        }
        for exchange in state.exchanges.values_mut() {
            exchange.bindings.sort();
            exchange
                .bindings
                .dedup_by(|a, b| (&a.topic, &a.key) == (&b.topic, &b.key));
        }
        Ok(state)
    }

    /// Replaces the file with this state (see `write_atomically`).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("plain data serializes");
        write_atomically(path, &json)
    }

    /// How many exchanges.
    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    pub fn bindings(&self) -> usize {
        self.exchanges.values().map(|e| e.bindings.len()).sum()
    }

    /// Drops the bindings `live(topic, topic_id)` says are of topics gone. True if any.
    pub fn retain_live(&mut self, live: impl Fn(&str, &str) -> bool) -> bool {
        let before = self.bindings();
        for exchange in self.exchanges.values_mut() {
            exchange.bindings.retain(|b| live(&b.topic, &b.topic_id));
        }
        self.bindings() != before
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Exchange> {
        self.exchanges.get_mut(name).ok_or_else(|| not_found(name))
    }

    pub fn get(&self, name: &str) -> Result<&Exchange> {
        self.exchanges.get(name).ok_or_else(|| not_found(name))
    }

    pub fn create(&mut self, name: &str, kind: ExchangeType, most: usize) -> Result<bool> {
        if self.exchanges.contains_key(name) {
            return Err(Error::ExchangeExists {
                exchange: name.to_string(),
            });
        }
        if self.exchanges.len() >= most {
            return Err(Error::LimitReached(format!(
                "this server has {most} exchanges, its most; delete one first"
            )));
        }
        let bindings = Vec::new();
        self.exchanges
            .insert(name.to_string(), Exchange { kind, bindings });
        Ok(true)
    }

    pub fn delete(&mut self, name: &str) -> Result<bool> {
        match self.exchanges.remove(name) {
            Some(_) => Ok(true),
            None => Err(not_found(name)),
        }
    }

    /// Adds `binding` unless there (with its topic's id brought up to date). Checks
    /// everything before it changes anything, as every change here does: a refused
    /// change leaves the state as it was.
    pub fn bind(&mut self, name: &str, binding: Binding, capacity: Capacity) -> Result<bool> {
        let total = self.bindings();
        let exchange = self.get_mut(name)?;
        exchange.kind.check_binding_key(&binding.key)?;
        let at = exchange
            .bindings
            .partition_point(|b| (&b.topic, &b.key) < (&binding.topic, &binding.key));
        if let Some(b) = exchange.bindings.get_mut(at) {
            if (&b.topic, &b.key) == (&binding.topic, &binding.key) {
                // The same binding, or one to a topic since deleted and made again.
                let stale = b.topic_id != binding.topic_id;
                b.topic_id = binding.topic_id;
                return Ok(stale);
            }
        }
        // The counts are not told: a caller may not see every binding.
        let most = capacity.per_exchange;
        if exchange.bindings.len() >= most {
            return Err(Error::LimitReached(format!(
                "exchange {} has {most} bindings, the most an exchange has; unbind some first",
                quote(name)
            )));
        }
        if total >= capacity.bindings {
            return Err(Error::LimitReached(format!(
                "the server has {} bindings, its most over all exchanges; unbind some first",
                capacity.bindings
            )));
        }
        exchange.bindings.insert(at, binding);
        Ok(true)
    }

    pub fn unbind(&mut self, name: &str, topic: &str, key: &str) -> Result<bool> {
        let exchange = self.get_mut(name)?;
        let before = exchange.bindings.len();
        exchange
            .bindings
            .retain(|b| !(b.topic == topic && b.key == key));
        Ok(exchange.bindings.len() != before)
    }

    /// Drops every binding of the topic with id `topic_id`, or with None (a topic made
    /// before topics had ids), of the topic called `topic`.
    pub fn forget_topic(&mut self, topic: &str, topic_id: Option<&str>) -> Result<bool> {
        Ok(match topic_id {
            Some(gone) => self.retain_live(|_, id| id != gone),
            None => self.retain_live(|name, _| name != topic),
        })
    }

    /// A page of the exchanges, by name, counting the bindings of topics `shown` shows.
    pub fn list(&self, page: &Page, shown: impl Fn(&str) -> bool) -> Listed<ExchangeListing> {
        let entries = page.range(&self.exchanges).map(|(name, e)| {
            let count = e.bindings.iter().filter(|b| shown(&b.topic)).count();
            (name.clone(), e.kind, count)
        });
        page.take(entries, |(name, _, _)| name)
    }
}

fn not_found(name: &str) -> Error {
    Error::ExchangeNotFound {
        exchange: name.to_string(),
    }
}
