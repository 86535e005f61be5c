//! Accepted connections, each watched for a response its client has stopped reading.
//!
//! A Fetch or Subscribe response hands HTTP/2 its records as slices of the segment
//! maps (`direct/replies.rs`). A client that stops reading (its flow-control window
//! shut, while it still answers pings) leaves those slices queued in the connection,
//! and a map keeps its segment's file on disk after retention or a topic deletion
//! removed it: one stalled subscriber could hold gigabytes of deleted segments for as
//! long as it stays connected. Nothing polls the response body while the window is
//! shut, so no timer inside it can fire; instead each connection has a watchdog task.
//! A response that has waited `stall_timeout` for its client to take the next frame,
//! or a socket whose send buffer has stayed full that long (the client's kernel takes
//! nothing: a stopped process), closes the whole connection (as Kafka closes one idle
//! for `connections.max.idle.ms`), and with it every slice it held. Only Fetch and
//! Subscribe responses are watched: they are the ones that hold maps. A connection
//! whose client sends nothing at all (not even HTTP/2's preface) within
//! `silent_timeout` of being accepted is closed as well: it would hold one of the
//! `max_connections` places for ever (HTTP/2's keepalive pings start only after it).
//! A graceful stop waits for every response to end, and a response whose client reads
//! nothing never ends (only Fetch and Subscribe responses are watched for stalls):
//! [`Hangup`] closes the connections still open when the stop's own deadline passes.
//!
//! The sockets come from [`Incoming`] (`incoming.rs`), and are served plain or with TLS
//! (`tls.rs`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tonic::transport::server::Connected;

mod admission;
mod certificates;
mod greeting;
mod incoming;
mod tls;

pub use admission::{network_of, AddressPlace, Admission, Refused};
pub use certificates::{common_name, ServerTls};
use greeting::Greeting;
pub use incoming::{Handoff, Hangup, Incoming, Place};
pub use tls::{served, Served, ServedStream};

/// How long a connection may keep the server waiting.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A response not taken, or a socket taking nothing, this long: the client stalled.
    pub stall: Duration,
    /// Nothing received this long after the accept: the client never spoke.
    pub silent: Duration,
}

/// An accepted socket that the connection's watchdog can close.
pub struct Watched {
    io: TcpStream,
    connection: Arc<Connection>,
    /// The client's first bytes, until its greeting is whole.
    greeting: Option<Greeting>,
    /// Its place among the open connections, given back when it is dropped.
    _place: Place,
}

/// The connection a request came on: in every request's extensions (tonic puts the
/// `Connected::ConnectInfo` there), so a response can register with its watchdog.
#[derive(Clone)]
pub struct ConnectionInfo(Arc<Connection>);

/// How long a response has waited for its client to take a frame, as its watchdog sees.
#[derive(Default)]
pub struct Progress {
    /// When the body last handed out a data frame that has not been followed by a
    /// poll: `clock()` in ms, plus one; 0 while the body is not waiting on its client.
    waiting_since: AtomicU64,
}

struct Connection {
    closed: AtomicBool,
    /// The connection task's waker, woken to read the closing.
    waker: Mutex<Option<Waker>>,
    /// Fetch and Subscribe responses (the ones that hold segment maps).
    responses: Mutex<Vec<Weak<Progress>>>,
    /// Since when writes to the socket have found its send buffer full (the peer's
    /// kernel stopped taking data: a stopped process, a zero TCP window): `clock()`
    /// plus one, or 0 while writes go through. What HTTP/2 flow control cannot see.
    write_blocked_since: AtomicU64,
    /// Whether the client's greeting (see `Greeting`) has arrived whole.
    heard: AtomicBool,
    /// Notified when the connection ends, so that its watchdog ends with it.
    ended: Notify,
    /// The common name of the client's certificate, once a TLS handshake that asked
    /// for one has ended (`tls_client_ca`): the caller's principal when there are no
    /// tokens (`grpc/auth`).
    certificate_name: OnceLock<Arc<str>>,
    /// The client's IP address: who it is for the quotas when it has no principal.
    peer: Option<std::net::IpAddr>,
}

impl Watched {
    /// Wraps an accepted socket, holding its place among the open connections, and
    /// starts its watchdog (on the current runtime), which ends with the connection.
    fn new(
        io: TcpStream,
        timeouts: Timeouts,
        place: Place,
        hangup: watch::Receiver<bool>,
    ) -> Watched {
        let connection = Arc::new(Connection {
            closed: AtomicBool::new(false),
            waker: Mutex::new(None),
            responses: Mutex::new(Vec::new()),
            write_blocked_since: AtomicU64::new(0),
            heard: AtomicBool::new(false),
            ended: Notify::new(),
            certificate_name: OnceLock::new(),
            peer: io.peer_addr().ok().map(|a| a.ip()),
        });
        tokio::spawn(watchdog(Arc::clone(&connection), timeouts, hangup));
        Watched {
            io,
            connection,
            greeting: Some(Greeting::default()),
            _place: place,
        }
    }

    /// Registers the connection task's waker, then fails once the watchdog has closed
    /// the connection (in that order, so that no closing goes unseen).
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        let mut waker = lock(&self.connection.waker);
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        drop(waker);
        match self.connection.closed.load(Ordering::Acquire) {
            true => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed by the server: the client stalled or never spoke, or the server stopped",
            )),
            false => Ok(()),
        }
    }

    /// Notes whether a write went through or found the send buffer full.
    fn wrote(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        let since = &self.connection.write_blocked_since;
        match &polled {
            Poll::Pending if since.load(Ordering::Relaxed) == 0 => {
                since.store(clock() + 1, Ordering::Relaxed)
            }
            Poll::Ready(Ok(n)) if *n > 0 => since.store(0, Ordering::Relaxed),
            _ => {}
        }
        polled
    }
}

impl ConnectionInfo {
    /// The common name of the certificate the client showed, if it showed one.
    pub fn certificate_name(&self) -> Option<Arc<str>> {
        self.0.certificate_name.get().cloned()
    }

    /// The client's IP address, if the system told it.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.0.peer
    }

    /// A response's progress, watched until it is dropped.
    pub fn watch(&self) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        let mut responses = lock(&self.0.responses);
        // Responses that ended go before the list grows, so it holds about twice the
        // live ones however many a connection makes between two watchdog rounds.
        if responses.len() == responses.capacity() {
            responses.retain(|r| r.strong_count() > 0);
        }
        responses.push(Arc::downgrade(&progress));
        progress
    }
}

impl Progress {
    /// The body was polled: whatever it handed out was taken.
    pub fn polled(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// The body handed out a data frame; it waits until it is polled again.
    pub fn handed_out(&self) {
        self.waiting_since.store(clock() + 1, Ordering::Relaxed);
    }
}

/// Whether a `clock() + 1` stamp (0: not waiting) is `timeout` ms old at `now`.
fn waited(since: &AtomicU64, now: u64, timeout: u64) -> bool {
    let since = since.load(Ordering::Relaxed);
    since != 0 && now + 1 >= since + timeout
}

/// Closes a connection whose client sent nothing within `silent`, or in which a
/// response, or the socket, has waited `stall` for the client (checked a few times per
/// `stall`), and every connection when the server hangs up. Ends when the connection
/// does.
async fn watchdog(
    connection: Arc<Connection>,
    timeouts: Timeouts,
    mut hangup: watch::Receiver<bool>,
) {
    let accepted = clock();
    let silent_ms = timeouts.silent.as_millis() as u64;
    let every = (timeouts.stall / 4).max(Duration::from_millis(10));
    let timeout_ms = timeouts.stall.as_millis() as u64;
    loop {
        // Until the client speaks, often enough to see it silent for `silent`.
        let next = match connection.heard.load(Ordering::Relaxed) {
            true => every,
            false => every.min(timeouts.silent.max(Duration::from_millis(10))),
        };
        tokio::select! {
            () = connection.ended.notified() => return,
            () = tokio::time::sleep(next) => {}
            // An error (the server's `Hangup` gone) disables the branch, not the loop.
            Ok(_) = hangup.wait_for(|hung_up| *hung_up) => {
                connection.close();
                return;
            }
        }
        let now = clock();
        if !connection.heard.load(Ordering::Relaxed) && now >= accepted + silent_ms {
            tracing::warn!(
                silent_ms,
                "closing a connection whose client sent no HTTP/2 greeting (nor, with TLS, finished its handshake)"
            );
            connection.close();
            return;
        }
        let mut stalled = waited(&connection.write_blocked_since, now, timeout_ms);
        let mut responses = lock(&connection.responses);
        responses.retain(|response| match response.upgrade() {
            Some(progress) => {
                stalled |= waited(&progress.waiting_since, now, timeout_ms);
                true
            }
            None => false,
        });
        if responses.capacity() > 64 && responses.len() < responses.capacity() / 4 {
            let keep = responses.len() * 2;
            responses.shrink_to(keep);
        }
        drop(responses);
        if stalled {
            tracing::warn!(
                timeout_ms,
                "closing a connection: a response waited that long for its client to read it"
            );
            connection.close();
            return;
        }
    }
}

impl Connection {
    /// Takes bytes the client sent, while its `greeting` is not whole: once it is, the
    /// client has been heard (see `Greeting`) and the greeting is dropped.
    fn listen(&self, greeting: &mut Option<Greeting>, read: &[u8]) {
        if greeting.as_mut().is_some_and(|g| g.take(read)) {
            *greeting = None;
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Makes the socket fail its next read or write, and wakes the connection's task
    /// to make one: the connection, its streams and what they hold are dropped.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

/// Milliseconds since the first call: a clock that cannot go back.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.connection.ended.notify_one(); // kept if the watchdog is not waiting yet
    }
}

impl Connected for Watched {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo(Arc::clone(&self.connection))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let this = &mut *self;
        this.connection
            .listen(&mut this.greeting, &buf.filled()[before..]);
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
