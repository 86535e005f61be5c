//! Per-client quotas (`quotas`): how many bytes a second each client may produce and
//! fetch, so that one client cannot take the disk's or the network's bandwidth from
//! the others. The file's format is in `file.rs`; each client's allowance is a bucket
//! (`bucket.rs`). A client is its principal (a token's name, or a client
//! certificate's common name), else its IP address.
//!
//! A throttled client is made to wait, never refused, and waits while it holds nothing
//! of the server's: a produce message waits before its bytes are read (before the
//! produce budget is charged: HTTP/2 flow control holds the client back, as for the
//! budget), a fetch before it reads. Kafka connections are muted instead, after the
//! response, as Kafka's brokers do (`kafka/connection.rs`). Every call gets its
//! client's `Quota` in its extensions (`QuotaLayer`, after the auth layer).

pub mod bucket;
mod file;

pub use file::Rates;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;

use super::auth::reloadable::Reloadable;
use super::auth::Principal;
use super::connection::ConnectionInfo;
use crate::error::Result;
use bucket::Bucket;
use file::Table;

/// The kinds of traffic a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Bytes of produce messages, as they come on the wire.
    Produce,
    /// Bytes of records read for a client.
    Fetch,
}

impl Flow {
    pub const ALL: [Flow; 2] = [Flow::Produce, Flow::Fetch];

    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Produce => "produce",
            Flow::Fetch => "fetch",
        }
    }
}

/// Per kind of traffic: requests that waited, and the seconds they waited.
pub type Waits = [(Flow, u64, f64); 2];

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
    waits: [AtomicU64; 2],
    waited_nanos: [AtomicU64; 2],
}

struct Clients {
    buckets: HashMap<Client, Arc<Mutex<[Bucket; 2]>>>,
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
            (None, Some(address)) => Client::Address(address),
            (None, None) => Client::Unknown,
        };
        let mut clients = self.0.clients.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = Arc::clone(clients.buckets.entry(client).or_default());
        if clients.buckets.len() > clients.sweep_above {
            let now = Instant::now();
            clients.buckets.retain(|_, held| {
                Arc::strong_count(held) > 1 || !lock(held).iter().all(|b| b.full(now))
            });
            clients.sweep_above = (2 * clients.buckets.len()).max(FIRST_SWEEP);
        }
        Quota {
            quotas: self.clone(),
            principal: who.map(|who| Arc::clone(&who.0)),
            buckets,
        }
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

    fn note_wait(&self, flow: Flow, wait: Duration) {
        let at = flow as usize;
        self.0.waits[at].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.0.waited_nanos[at].fetch_add(nanos, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client's quota, as a call holds it.
#[derive(Clone)]
pub struct Quota {
    quotas: Quotas,
    principal: Option<Arc<str>>,
    buckets: Arc<Mutex<[Bucket; 2]>>,
}

impl Quota {
    /// The client's rate for `flow` now (the file may have been read again), if any.
    fn rate(&self, flow: Flow) -> Option<u64> {
        let rates = self
            .quotas
            .0
            .table
            .current()
            .rates(self.principal.as_deref());
        match flow {
            Flow::Produce => rates.produce,
            Flow::Fetch => rates.fetch,
        }
    }

    /// Charges `bytes` that are about to come, in turn after everything charged before:
    /// returns when they may, or None if at once (or without a limit).
    pub fn reserve(&self, flow: Flow, bytes: usize) -> Option<Instant> {
        let rate = self.rate(flow)?;
        let now = Instant::now();
        let allowed = {
            let mut buckets = lock(&self.buckets);
            let bucket = &mut buckets[flow as usize];
            let allowed = bucket.allowed_at(now);
            bucket.charge(allowed, bytes as u64, rate);
            allowed
        };
        (allowed > now).then(|| {
            self.quotas.note_wait(flow, allowed - now);
            allowed
        })
    }

    /// Takes back a `reserve` of `bytes` whose request went away before its turn.
    pub fn refund(&self, flow: Flow, bytes: usize) {
        if let Some(rate) = self.rate(flow) {
            lock(&self.buckets)[flow as usize].refund(Instant::now(), bytes as u64, rate);
        }
    }

    /// Waits until the client may go on (its debt for `flow`, less the burst, paid).
    /// Cancel-safe: nothing is charged.
    pub async fn turn(&self, flow: Flow) {
        let throttle = self.throttle(flow);
        if !throttle.is_zero() {
            tokio::time::sleep(throttle).await;
        }
    }

    /// How long the client must wait before its next request of `flow` (zero: none).
    /// Counted as a wait when it is not zero.
    pub fn throttle(&self, flow: Flow) -> Duration {
        if self.rate(flow).is_none() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let wait = lock(&self.buckets)[flow as usize].allowed_at(now) - now;
        if !wait.is_zero() {
            self.quotas.note_wait(flow, wait);
        }
        wait
    }

    /// The bytes the client may take now without a debt, at least 1; None without a
    /// limit. A fetch reads no more than this, so that its debt stays small.
    pub fn available(&self, flow: Flow) -> Option<usize> {
        let rate = self.rate(flow)?;
        let bytes = lock(&self.buckets)[flow as usize].available(Instant::now(), rate);
        Some(usize::try_from(bytes).unwrap_or(usize::MAX).max(1))
    }

    /// Charges `bytes` that went.
    pub fn charge(&self, flow: Flow, bytes: usize) {
        if let Some(rate) = self.rate(flow) {
            lock(&self.buckets)[flow as usize].charge(Instant::now(), bytes as u64, rate);
        }
    }
}

/// The quota of a call (None without a quotas file).
pub fn of(extensions: &http::Extensions) -> Option<Quota> {
    extensions.get::<Quota>().cloned()
}

/// Gives every call its client's `Quota`, when there is a quotas file. After the auth
/// layer, which names the caller.
#[derive(Clone)]
pub struct QuotaLayer {
    quotas: Option<Quotas>,
}

impl QuotaLayer {
    pub fn new(quotas: Option<Quotas>) -> QuotaLayer {
        QuotaLayer { quotas }
    }
}

impl<S> tower_layer::Layer<S> for QuotaLayer {
    type Service = WithQuota<S>;
    fn layer(&self, inner: S) -> WithQuota<S> {
        WithQuota {
            inner,
            quotas: self.quotas.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WithQuota<S> {
    inner: S,
    quotas: Option<Quotas>,
}

impl<S> tower_service::Service<http::Request<Body>> for WithQuota<S>
where
    S: tower_service::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> S::Future {
        if let Some(quotas) = &self.quotas {
            let extensions = request.extensions();
            let address = extensions
                .get::<ConnectionInfo>()
                .and_then(ConnectionInfo::peer_ip);
            let quota = quotas.of(extensions.get::<Principal>(), address);
            request.extensions_mut().insert(quota);
        }
        self.inner.call(request)
    }
}
