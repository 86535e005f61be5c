//! Exchanges: routing in the spirit of RabbitMQ's. An exchange holds no records; a
//! publish to it is appended to every topic whose binding matches its routing key
//! (`routing.rs` decides the match, `publish.rs` appends). The exchanges and their
//! bindings are one small file, `exchanges.json` in the data directory (`state.rs`),
//! replaced whole (write, sync, rename) when they change. Changes are group committed:
//! they queue, and whoever writes next applies every queued change to one copy and
//! writes the file once for them all, on one blocking thread. The copy is swapped in
//! once written, so a publish reads the bindings without waiting for a change's fsync,
//! and a burst of changes costs a few writes, not one each (a hostile client's thousand
//! concurrent unbinds had a thousand blocking threads each writing the file).
//!
//! A binding names its topic and the topic's id: a topic deleted takes its bindings
//! with it (`forget_topic`, and at start for any a crash left), and a binding made in
//! the moment its topic was deleted routes nowhere, even once a topic of the same name
//! is created again.

mod ops;
mod publish;
mod routing;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

pub use publish::{Publish, Published, MAX_FIELDS};
pub use routing::{check_routing_key, ExchangeType, MAX_KEY_LEN};
pub use state::{Binding, Capacity, Exchange, ExchangeListing, CAPACITY, FILE};

use super::page::{Listed, Page};
use super::topic::check_name;
use crate::error::{Error, IoContext, Result};
use state::State;

/// A change to the state: true if it changed something; refused, it changes nothing.
type Change = Box<dyn FnOnce(&mut State) -> Result<bool> + Send>;

/// A change waiting for the next write, and where its answer goes.
struct Queued {
    change: Change,
    answer: oneshot::Sender<Result<bool>>,
}

/// The server's exchanges.
pub struct Exchanges {
    path: PathBuf,
    /// What publishes route by; replaced whole by a write.
    state: RwLock<Arc<State>>,
    queued: Mutex<Vec<Queued>>,
    /// Held by whoever applies the queued changes and writes them.
    writing: tokio::sync::Mutex<()>,
    capacity: Capacity,
}

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
            Ok(bytes) => State::parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).at(&path),
        };
        if state.retain_live(live) {
            tracing::info!("dropped the bindings of topics deleted before a crash");
            // Publishes skip them anyway (their topic ids are gone): a file that
            // cannot be written now keeps them until a later change.
            if let Err(err) = state.write(&path) {
                tracing::warn!(%err, "could not write the exchanges file without them");
            }
        }
        Ok(Exchanges {
            path,
            state: RwLock::new(Arc::new(state)),
            queued: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
            capacity,
        })
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `change` and writes it, with whatever other changes are queued: true if
    /// it changed something. Spawned, so that a caller that goes away cannot leave its
    /// change queued until some later change happens to write it.
    async fn change(
        self: &Arc<Self>,
        change: impl FnOnce(&mut State) -> Result<bool> + Send + 'static,
    ) -> Result<bool> {
        let me = Arc::clone(self);
        let change = Box::new(change);
        tokio::spawn(async move {
            let (answer, answered) = oneshot::channel();
            me.queued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Queued { change, answer });
            let writing = me.writing.lock().await;
            let batch = std::mem::take(&mut *me.queued.lock().unwrap_or_else(|e| e.into_inner()));
            // Empty if the writer before took ours with its own.
            if !batch.is_empty() {
                let writer = Arc::clone(&me);
                tokio::task::spawn_blocking(move || writer.apply(batch))
                    .await
                    .expect("writing the exchanges does not panic");
            }
            drop(writing);
            answered.await.expect("every queued change is answered")
        })
        .await
        .expect("an exchange change does not panic")
    }

    /// Applies `batch` to a copy of the state in order, writes the copy once, and
    /// answers each change. A change refused leaves the copy as it was. If the write
    /// fails, every change from the first that changed something on fails with it
    /// (each later one was checked against a state that now never was); and if the
    /// file turns out to hold the new state after all (the rename happened, only the
    /// directory's sync failed), that state is used, so that no later change undoes
    /// it on disk unseen: a failed change may have taken effect.
    fn apply(&self, batch: Vec<Queued>) {
        let before = self.current();
        let mut state = State::clone(&before);
        let answers: Vec<_> = batch
            .into_iter()
            .map(|q| ((q.change)(&mut state), q.answer))
            .collect();
        let Some(first) = answers
            .iter()
            .position(|(done, _)| matches!(done, Ok(true)))
        else {
            answers
                .into_iter()
                .for_each(|(done, to)| drop(to.send(done)));
            return;
        };
        let written = state.write(&self.path);
        let renamed = written.is_ok()
            || std::fs::read(&self.path)
                .ok()
                .and_then(|bytes| State::parse(&self.path, &bytes).ok())
                .is_some_and(|on_disk| on_disk == state);
        if renamed {
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        }
        for (i, (done, to)) in answers.into_iter().enumerate() {
            let done = match &written {
                Err(err) if i >= first => Err(again(err)),
                _ => done,
            };
            let _ = to.send(done);
        }
    }

    pub async fn create(self: &Arc<Self>, name: &str, kind: ExchangeType) -> Result<()> {
        check_name("exchange", name)?;
        let (name, most) = (name.to_string(), self.capacity.exchanges);
        self.change(move |state| state.create(&name, kind, most))
            .await?;
        Ok(())
    }

    /// Deletes an exchange and its bindings.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let name = name.to_string();
        self.change(move |state| state.delete(&name)).await?;
        Ok(())
    }

    /// Binds `binding.topic` with `binding.key`. True if the binding is new; binding
    /// the same topic with the same key again changes nothing. `live` says whether the
    /// topic is still there, asked in the write that `forget_topic`'s change also
    /// waits for: a topic deleted as it is bound is either refused here or has its
    /// binding forgotten after.
    pub async fn bind(
        self: &Arc<Self>,
        name: &str,
        binding: Binding,
        live: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool> {
        let (name, capacity) = (name.to_string(), self.capacity);
        self.change(move |state| {
            state.get(&name)?;
            if !live() {
                return Err(Error::TopicNotFound {
                    topic: binding.topic,
                });
            }
            state.bind(&name, binding, capacity)
        })
        .await
    }

    /// Removes the binding of `topic` with `key`. True if there was one.
    pub async fn unbind(self: &Arc<Self>, name: &str, topic: &str, key: &str) -> Result<bool> {
        let (name, topic, key) = (name.to_string(), topic.to_string(), key.to_string());
        self.change(move |state| state.unbind(&name, &topic, &key))
            .await
    }

    /// Removes every binding of the topic with id `topic_id` (it was deleted), or
    /// with None, of the topic called `topic`.
    pub async fn forget_topic(self: &Arc<Self>, topic: &str, topic_id: Option<&str>) -> Result<()> {
        let (topic, id) = (topic.to_string(), topic_id.map(str::to_string));
        self.change(move |state| state.forget_topic(&topic, id.as_deref()))
            .await?;
        Ok(())
    }

    /// How many exchanges there are, and bindings over all of them.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.current();
        (state.len(), state.bindings())
    }

    /// The exchange called `name`.
    pub fn get(&self, name: &str) -> Result<Exchange> {
        self.current().get(name).cloned()
    }

    /// A page of the exchanges, by name, counting the bindings of topics `shown` shows.
    pub fn list(&self, page: &Page, shown: impl Fn(&str) -> bool) -> Listed<ExchangeListing> {
        self.current().list(page, shown)
    }

    /// Every binding a publish with `routing_key` matches, in the order of topic names
    /// (a topic bound with several matching keys comes once per key: which of them are
    /// live is for the caller to say).
    pub fn route(&self, name: &str, routing_key: &str) -> Result<Vec<Binding>> {
        let state = self.current();
        let exchange = state.get(name)?;
        Ok(exchange
            .bindings
            .iter()
            .filter(|b| exchange.kind.matches(&b.key, routing_key))
            .cloned()
            .collect())
    }
}

/// A failed write's error again, for each change it held (errors are not `Clone`): the
/// same path and kind, so that a full disk still reads as one.
fn again(err: &Error) -> Error {
    match err {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            // The OS's code where there is one: what `Error::limit_hint` reads.
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => Error::Unavailable {
            what: "the exchanges file".into(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
