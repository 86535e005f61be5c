//! Per-client quotas (`quotas`): how many bytes a second each client may produce and
//! fetch, and how many requests a second it may make, so that one client cannot take
//! the disk's or the network's bandwidth, or the server's CPU, from the others. The
//! file's format is in `file.rs`; each client's allowance is a bucket (`bucket.rs`).
//! A client is its principal (a token's name, or a client certificate's common name),
//! else its IP address (an IPv6 address's /64).
//!
//! A client over a byte quota is made to wait (one over its request rate is refused,
//! `layer.rs`), and waits while it holds nothing of the server's but its bytes in
//! HTTP/2's windows: a produce message waits for its turn
//! (at most 30 s, then it fails), and is charged then, before its bytes are read and
//! before the produce budget is charged (`grpc/budget/`: HTTP/2 flow control holds
//! the client back, as for the budget); a fetch waits, then takes its allowance before
//! it reads (`Taken`, settled after the read; a long poll gives it back while it
//! waits, `grpc/log_service.rs`). Kafka
//! connections are also muted after a throttled response, as Kafka's brokers do, and
//! wait for their client's turn before they read a Produce or Fetch
//! (`kafka/connection.rs`; any request, with a request rate). Every produce and fetch
//! call gets its client's `Quota` in its extensions, and a call past its client's
//! request rate is refused before it is read (`QuotaLayer`, after the auth layer). A rate is read again at each use, and a wait reads it again at least every
//! `SLICE`: a reload applies at once. A gRPC produce message's wait ends when the server
//! begins to stop (`Quota::ends_at`), so that a throttled client does not hold a
//! graceful stop.

pub mod bucket;
mod file;
mod layer;
mod owed;
mod reads;

pub use file::Rates;
pub use layer::QuotaLayer;
pub use owed::Owed;
pub use reads::{share_turn, Taken, SHARE_TURN};

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::auth::reloadable::Reloadable;
use super::auth::Principal;
use super::connection::network_of;
use crate::error::Result;
use bucket::Bucket;
use file::Table;

/// The kinds of traffic a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Bytes of produce messages, as they come on the wire, and what a message
    /// writes beyond that: what its batch is stored in (decompressed, in strom's
    /// framing), and a publish its size again for every topic past the first.
    Produce,
    /// Bytes of records read for a client.
    Fetch,
    /// Requests: gRPC calls (health checks and reflection aside) and Kafka requests,
    /// one each.
    Requests,
}

impl Flow {
    pub const ALL: [Flow; 3] = [Flow::Produce, Flow::Fetch, Flow::Requests];

    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Produce => "produce",
            Flow::Fetch => "fetch",
            Flow::Requests => "requests",
        }
    }
}

/// Per kind of traffic: requests that waited, and the seconds they waited.
pub type Waits = [(Flow, u64, f64); 3];

/// Who a bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Client {
    Principal(Arc<str>),
    Address(IpAddr),
    /// Neither (a socket whose peer address the system could not tell): one bucket.
    Unknown,
}

/// The quotas file, and the buckets of the clients that used it lately.
#[derive(Clone)]
pub struct Quotas(Arc<Shared>);

struct Shared {
    table: Reloadable<Table>,
    clients: Mutex<Clients>,
    /// Per `Flow`: requests that waited, and the nanoseconds they waited.
    waits: [AtomicU64; 3],
    waited_nanos: [AtomicU64; 3],
}

struct Clients {
    buckets: HashMap<Client, Arc<Mutex<[Bucket; 3]>>>,
    /// Past this many buckets, the full ones no call holds are dropped (a full bucket
    /// is no different from a new one, so nothing is forgotten).
    sweep_above: usize,
}

/// Buckets kept before the first sweep.
const FIRST_SWEEP: usize = 1024;

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("file", &self.0.table.file())
            .finish()
    }
}

impl Quotas {
    pub fn load(file: &Path) -> Result<Quotas> {
        Ok(Quotas(Arc::new(Shared {
            table: Reloadable::load(file, file::read)?,
            clients: Mutex::new(Clients {
                buckets: HashMap::new(),
                sweep_above: FIRST_SWEEP,
            }),
            waits: Default::default(),
            waited_nanos: Default::default(),
        })))
    }

    /// Reads the file again: the new rates hold at once, for calls already open too.
    /// On any error the rates in use stay, all of them.
    pub fn reload(&self) -> Result<()> {
        self.0.table.reload()
    }

    /// The quota of a client: `who` if it has a principal, else its `address`.
    pub fn of(&self, who: Option<&Principal>, address: Option<IpAddr>) -> Quota {
        let client = match (who, address) {
            (Some(who), _) => Client::Principal(Arc::clone(&who.0)),
            (None, Some(address)) => Client::Address(network_of(address)),
            (None, None) => Client::Unknown,
        };
        let mut clients = self.0.clients.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = Arc::clone(clients.buckets.entry(client).or_default());
        if clients.buckets.len() > clients.sweep_above {
            let now = Instant::now();
            let table = self.0.table.current();
            clients.buckets.retain(|client, held| {
                let principal = match client {
                    Client::Principal(who) => Some(&**who),
                    _ => None,
                };
                let rates = table.rates(principal);
                let mut buckets = lock(held);
                let idle = Flow::ALL.iter().all(|&flow| match rates.of(flow) {
                    Some(rate) => buckets[flow as usize].full(now, rate),
                    None => true,
                });
                Arc::strong_count(held) > 1 || !idle
            });
            clients.sweep_above = (2 * clients.buckets.len()).max(FIRST_SWEEP);
        }
        Quota {
            quotas: self.clone(),
            principal: who.map(|who| Arc::clone(&who.0)),
            buckets,
            stop: None,
        }
    }

    /// Whether any client's requests are limited (`requests=`).
    pub fn requests_limited(&self) -> bool {
        self.0.table.current().requests_limited
    }

    /// Per kind of traffic: requests that waited for their client's quota, and the
    /// seconds they waited, since the server started.
    pub fn waits(&self) -> Waits {
        Flow::ALL.map(|flow| {
            let at = flow as usize;
            let nanos = self.0.waited_nanos[at].load(Ordering::Relaxed);
            (
                flow,
                self.0.waits[at].load(Ordering::Relaxed),
                nanos as f64 / 1e9,
            )
        })
    }

    /// Clients whose buckets are kept now.
    pub fn clients(&self) -> usize {
        lock(&self.0.clients).buckets.len()
    }

    pub(crate) fn note_wait(&self, flow: Flow, wait: Duration) {
        let at = flow as usize;
        self.0.waits[at].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.0.waited_nanos[at].fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A wait under way, counted when it ends, however it ends (its turn came, it was cut
/// off by a deadline, its call went).
struct Waited<'a> {
    quotas: &'a Quotas,
    flow: Flow,
    began: Option<Instant>,
}

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        if let Some(began) = self.began {
            self.quotas.note_wait(self.flow, began.elapsed());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A wait re-reads its client's rate at least this often, so that a rate changed by a
/// reload applies to waits already under way.
pub const SLICE: Duration = Duration::from_secs(1);

/// One client's quota, as a call holds it.
#[derive(Clone)]
pub struct Quota {
    quotas: Quotas,
    principal: Option<Arc<str>>,
    buckets: Arc<Mutex<[Bucket; 3]>>,
    /// The server's stop, which a produce message's wait for its turn watches.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Quota {
    /// The quota, with the server's stop, which a produce message's wait for its turn
    /// watches (`grpc/budget/body.rs`): a graceful stop does not wait for a throttled
    /// client's turn.
    pub fn ends_at(self, stop: tokio::sync::watch::Receiver<bool>) -> Quota {
        Quota {
            stop: Some(stop),
            ..self
        }
    }

    /// Whether the server is stopping (never without `ends_at`).
    pub fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|stop| *stop.borrow())
    }

    /// The client's rate for `flow` now (the file may have been read again), if any.
    fn rate(&self, flow: Flow) -> Option<u64> {
        let rates = self
            .quotas
            .0
            .table
            .current()
            .rates(self.principal.as_deref());
        rates.of(flow)
    }

    /// Runs `f` on the client's bucket for `flow`, with its rate and the time; None
    /// without a limit.
    fn with<T>(&self, flow: Flow, f: impl FnOnce(&mut Bucket, Instant, u64) -> T) -> Option<T> {
        let rate = self.rate(flow)?;
        Some(f(
            &mut lock(&self.buckets)[flow as usize],
            Instant::now(),
            rate,
        ))
    }

    /// How long until the client holds `want` bytes of `flow` (at most a second's
    /// worth; 0: until it owes nothing); zero without a limit.
    pub fn wait(&self, flow: Flow, want: u64) -> Duration {
        self.with(flow, |bucket, now, rate| bucket.wait(now, rate, want))
            .unwrap_or_default()
    }

    /// If the client owes nothing for `flow`, charges it `bytes` and returns zero;
    /// else how long until it owes nothing. One step, under the bucket's lock: requests
    /// arriving together cannot all find the bucket in credit and all go.
    pub fn try_take(&self, flow: Flow, bytes: usize) -> Duration {
        self.with(flow, |bucket, now, rate| {
            let wait = bucket.wait(now, rate, 0);
            if wait.is_zero() {
                bucket.charge(now, bytes as u64, rate);
            }
            wait
        })
        .unwrap_or_default()
    }

    /// Waits until the client owes nothing for `flow`, and charges it `bytes` then
    /// (`try_take`). Cancel-safe: nothing is charged until it returns.
    pub async fn take_turn(&self, flow: Flow, bytes: usize) {
        self.sleep_while(flow, || self.try_take(flow, bytes)).await
    }

    /// Waits until the client may read: until it holds a tenth of a second's worth of
    /// `flow` (or `limit`, if less), so that a throttled reader reads that much at a
    /// time rather than a record a request. Cancel-safe.
    pub async fn ready_to_read(&self, flow: Flow, limit: usize) {
        if let Some(rate) = self.rate(flow) {
            self.turn_until(flow, (rate / 10).min(limit as u64)).await;
        }
    }

    /// Waits until the client holds `want` bytes of `flow` (see `wait`).
    async fn turn_until(&self, flow: Flow, want: u64) {
        self.sleep_while(flow, || self.wait(flow, want)).await
    }

    /// Sleeps for as long as `step` says, asking it again after each sleep of at most
    /// `SLICE` (so that a rate read again applies), until it says zero. Counted as one
    /// wait, of the time it took, if it waited (`Waited`). A caller that must not hold
    /// a stop selects on it (a Kafka connection, `log_service`'s fetches).
    async fn sleep_while(&self, flow: Flow, mut step: impl FnMut() -> Duration) {
        let mut waited = Waited {
            quotas: &self.quotas,
            flow,
            began: None,
        };
        loop {
            let wait = step();
            if wait.is_zero() {
                return;
            }
            waited.began.get_or_insert_with(Instant::now);
            tokio::time::sleep(wait.min(SLICE)).await;
        }
    }

    /// Counts a wait of about `wait` for `flow` (in the metrics).
    pub fn note_wait(&self, flow: Flow, wait: Duration) {
        self.quotas.note_wait(flow, wait);
    }

    /// Charges `bytes` that went, or are about to.
    pub fn charge(&self, flow: Flow, bytes: usize) {
        self.with(flow, |bucket, now, rate| {
            bucket.charge(now, bytes as u64, rate)
        });
    }

    /// Gives back `bytes` charged for what never went (a message given up before it
    /// was read).
    pub fn refund(&self, flow: Flow, bytes: usize) {
        self.with(flow, |bucket, now, rate| {
            bucket.refund(now, bytes as u64, rate)
        });
    }

    /// For a read of at most `limit` bytes of `flow`: waits until the client may read
    /// (`ready_to_read`), then takes its allowance (`take`). None without a limit.
    /// Cancel-safe.
    pub async fn read_turn(&self, flow: Flow, limit: usize) -> Option<Taken> {
        self.ready_to_read(flow, limit).await;
        self.take(flow, limit)
    }

    /// The bytes of `flow` the client may take now, at least 1 (a read gives at least
    /// one record), without taking them: for a read that waits first, charged after.
    /// None without a limit.
    pub fn allowance(&self, flow: Flow) -> Option<usize> {
        self.with(flow, |bucket, now, rate| {
            let held = usize::try_from(bucket.available(now, rate)).unwrap_or(usize::MAX);
            held.max(1)
        })
    }

    /// Takes, for a read about to be made, up to `limit` bytes of `flow`: what the
    /// client holds now, at least 1 (a read gives at least one record). Taken before
    /// the read, so that reads running at once share the allowance rather than each
    /// take all of it; `Taken::settle` charges what the read came to. None without a
    /// limit.
    pub fn take(&self, flow: Flow, limit: usize) -> Option<Taken> {
        let granted = self.with(flow, |bucket, now, rate| {
            let held = usize::try_from(bucket.available(now, rate)).unwrap_or(usize::MAX);
            let granted = limit.min(held).max(1);
            bucket.charge(now, granted as u64, rate);
            granted
        })?;
        Some(Taken {
            quota: self.clone(),
            flow,
            granted,
            settled: false,
        })
    }
}

/// The quota of a call (None without a quotas file).
pub fn of(extensions: &http::Extensions) -> Option<Quota> {
    extensions.get::<Quota>().cloned()
}

#[cfg(test)]
mod tests;
