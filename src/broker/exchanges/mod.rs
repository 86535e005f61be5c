//! Exchanges: routing in the spirit of RabbitMQ's. An exchange holds no records; a
//! publish to it is appended to every topic whose binding matches its routing key
//! (`routing.rs` decides the match). The exchanges and their bindings are one small
//! file, `exchanges.json` in the data directory, replaced whole (write, sync, rename)
//! at each change; a change is made on a copy and swapped in once the file is written,
//! so a publish reads the bindings without waiting for a change's fsync.
//!
//! A binding names its topic and the topic's id: a topic deleted takes its bindings
//! with it (`forget_topic`, and at start for any a crash left), and a binding made in
//! the moment its topic was deleted routes nowhere, even once a topic of the same name
//! is created again.

mod ops;
mod routing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

pub use routing::{check_routing_key, ExchangeType, MAX_KEY_LEN};

use super::page::{Listed, Page};
use super::topic::check_name;
use crate::error::{quote, Error, IoContext, Result};
use crate::log::files::write_atomically;

/// Name of the file, in the data directory.
pub const FILE: &str = "exchanges.json";

/// How many exchanges and bindings a server keeps at most.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub exchanges: usize,
    /// Bindings of one exchange.
    pub per_exchange: usize,
    /// Bindings over all exchanges.
    pub bindings: usize,
}

/// The server's capacity: the file stays a few megabytes, rewritten per change, and
/// a publish matches at most a thousand topics.
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

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    version: u32,
    exchanges: BTreeMap<String, Exchange>,
}

const VERSION: u32 = 1;

impl State {
    fn bindings(&self) -> usize {
        self.exchanges.values().map(|e| e.bindings.len()).sum()
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Exchange> {
        self.exchanges
            .get_mut(name)
            .ok_or_else(|| Error::ExchangeNotFound {
                exchange: name.to_string(),
            })
    }
}

/// The server's exchanges.
pub struct Exchanges {
    path: PathBuf,
    /// What publishes route by; replaced whole by a change.
    state: RwLock<Arc<State>>,
    /// Held across a change and its file write: one change at a time.
    changing: Mutex<()>,
    capacity: Capacity,
}

/// A page of the exchange listing: name, type and number of bindings.
pub type ExchangeListing = (String, ExchangeType, usize);

impl Exchanges {
    /// Reads `exchanges.json` in `dir` (none: no exchanges), dropping the bindings of
    /// topics that `live(name, id)` says are gone.
    pub fn open(dir: &Path, live: impl Fn(&str, &str) -> bool) -> Result<Exchanges> {
        Self::open_with(dir, live, CAPACITY)
    }

    /// `open`, holding at most `capacity`.
    pub fn open_with(
        dir: &Path,
        live: impl Fn(&str, &str) -> bool,
        capacity: Capacity,
    ) -> Result<Exchanges> {
        let path = dir.join(FILE);
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Corruption {
                        path: path.clone(),
                        position: e.column() as u64,
                        reason: format!("not the exchanges file: {e}"),
                    })?;
                if state.version != VERSION {
                    return Err(Error::Corruption {
                        path,
                        position: 0,
                        reason: format!(
                            "version {} of the exchanges file; this server reads version {VERSION}",
                            state.version
                        ),
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: VERSION,
                ..State::default()
            },
            Err(e) => return Err(e).at(&path),
        };
        let before = state.bindings();
        for exchange in state.exchanges.values_mut() {
            exchange.bindings.retain(|b| live(&b.topic, &b.topic_id));
        }
        if state.bindings() != before {
            tracing::info!(
                dropped = before - state.bindings(),
                "dropping the bindings of topics deleted before a crash"
            );
            write(&path, &state)?;
        }
        Ok(Exchanges {
            path,
            state: RwLock::new(Arc::new(state)),
            changing: Mutex::new(()),
            capacity,
        })
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies `change` to a copy of the state, writes it, and makes it the state.
    /// `change` returns false when it changed nothing: nothing is written. Writes a
    /// file: call on a blocking thread.
    fn change(&self, change: impl FnOnce(&mut State) -> Result<bool>) -> Result<bool> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = State::clone(&self.current());
        if !change(&mut state)? {
            return Ok(false);
        }
        write(&self.path, &state)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        Ok(true)
    }

    /// Creates an exchange.
    pub fn create(&self, name: &str, kind: ExchangeType) -> Result<()> {
        check_name("exchange", name)?;
        let most = self.capacity.exchanges;
        self.change(|state| {
            if state.exchanges.contains_key(name) {
                return Err(Error::ExchangeExists {
                    exchange: name.to_string(),
                });
            }
            if state.exchanges.len() >= most {
                return Err(Error::LimitReached(format!(
                    "this server has {most} exchanges, its most; delete one first"
                )));
            }
            let bindings = Vec::new();
            state
                .exchanges
                .insert(name.to_string(), Exchange { kind, bindings });
            Ok(true)
        })?;
        Ok(())
    }

    /// Deletes an exchange and its bindings.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.change(|state| {
            state.get_mut(name)?;
            state.exchanges.remove(name);
            Ok(true)
        })?;
        Ok(())
    }

    /// Binds `topic` (whose id is `topic_id`) with `key`. True if the binding is new;
    /// binding the same topic with the same key again changes nothing.
    pub fn bind(&self, name: &str, topic: &str, topic_id: &str, key: &str) -> Result<bool> {
        let Capacity {
            per_exchange,
            bindings,
            ..
        } = self.capacity;
        self.change(|state| {
            let total = state.bindings();
            let exchange = state.get_mut(name)?;
            exchange.kind.check_binding_key(key)?;
            let binding = Binding {
                topic: topic.to_string(),
                key: key.to_string(),
                topic_id: topic_id.to_string(),
            };
            let at = exchange
                .bindings
                .partition_point(|b| (&b.topic, &b.key) < (&binding.topic, &binding.key));
            match exchange.bindings.get_mut(at) {
                Some(b) if b.topic == topic && b.key == key => {
                    // The same binding, or one to a topic since deleted and made again.
                    let stale = b.topic_id != topic_id;
                    b.topic_id = topic_id.to_string();
                    return Ok(stale);
                }
                _ => {}
            }
            if exchange.bindings.len() >= per_exchange || total >= bindings {
                return Err(Error::LimitReached(format!(
                    "exchange {} has {} bindings and the server {total}: at most {per_exchange} an exchange and {bindings} in all; unbind some first",
                    quote(name),
                    exchange.bindings.len()
                )));
            }
            exchange.bindings.insert(at, binding);
            Ok(true)
        })
    }

    /// Removes the binding of `topic` with `key`. True if there was one.
    pub fn unbind(&self, name: &str, topic: &str, key: &str) -> Result<bool> {
        self.change(|state| {
            let exchange = state.get_mut(name)?;
            let before = exchange.bindings.len();
            exchange
                .bindings
                .retain(|b| !(b.topic == topic && b.key == key));
            Ok(exchange.bindings.len() != before)
        })
    }

    /// Removes every binding of the topic with id `topic_id` (it was deleted).
    pub fn forget_topic(&self, topic_id: &str) -> Result<()> {
        self.change(|state| {
            let before = state.bindings();
            for exchange in state.exchanges.values_mut() {
                exchange.bindings.retain(|b| b.topic_id != topic_id);
            }
            Ok(state.bindings() != before)
        })?;
        Ok(())
    }

    /// The exchange called `name`.
    pub fn get(&self, name: &str) -> Result<Exchange> {
        self.current()
            .exchanges
            .get(name)
            .cloned()
            .ok_or_else(|| Error::ExchangeNotFound {
                exchange: name.to_string(),
            })
    }

    /// A page of the exchanges, by name.
    pub fn list(&self, page: &Page) -> Listed<ExchangeListing> {
        let state = self.current();
        let entries = page
            .range(&state.exchanges)
            .map(|(name, e)| (name.clone(), e.kind, e.bindings.len()));
        page.take(entries, |(name, _, _)| name)
    }

    /// The bindings a publish with `routing_key` matches, one per topic (a topic bound
    /// twice gets a publish once), in the order of topic names.
    pub fn route(&self, name: &str, routing_key: &str) -> Result<Vec<Binding>> {
        let state = self.current();
        let exchange = state
            .exchanges
            .get(name)
            .ok_or_else(|| Error::ExchangeNotFound {
                exchange: name.to_string(),
            })?;
        let mut matched: Vec<Binding> = Vec::new();
        for binding in &exchange.bindings {
            let seen = matched.last().is_some_and(|m| m.topic == binding.topic);
            if !seen && exchange.kind.matches(&binding.key, routing_key) {
                matched.push(binding.clone());
            }
        }
        Ok(matched)
    }
}

fn write(path: &Path, state: &State) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).expect("plain data serializes");
    write_atomically(path, &json)
}

#[cfg(test)]
mod tests;
