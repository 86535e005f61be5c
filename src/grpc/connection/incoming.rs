//! Accepting connections for the server.
//!
//! [`Incoming`] accepts the server's sockets and bounds how many are open at once:
//! every connection takes a file descriptor, and the log needs its own (three per
//! partition), so a flood of idle connections must not take them all. A connection
//! over the limit, or over its address's (`admission.rs`), is closed as soon as it is
//! accepted. An accept that fails for want of descriptors or memory is retried after a
//! pause, not at once: the pending connection keeps the listener readable, and
//! retrying at once spins a core.
//!
//! A stopping server closes whatever connections are still open after its deadline
//! with the [`Hangup`] taken from `Incoming` before it is handed to tonic.
//!
//! A server with connection threads (`server/threads.rs`) takes each socket as a
//! [`Handoff`]: off the accepting runtime's reactor, to be watched and served on the
//! thread it is dealt to.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_stream::Stream;

use super::{AddressPlace, Admission, Refused, Timeouts, Watched};

/// The longest pause between accepts that fail for want of resources.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// The server's accepted connections, at most `max_connections` open at once.
pub struct Incoming {
    /// Shared with the server answering while it starts (`server/starting.rs`).
    listener: Arc<TcpListener>,
    timeouts: Timeouts,
    max_connections: usize,
    open: Arc<AtomicUsize>,
    /// Connections per address, shared with the Kafka listener.
    admission: Arc<Admission>,
    /// Turns true when the server hangs up (each connection's watchdog holds a copy).
    hangup: watch::Receiver<bool>,
    hangup_sender: Arc<watch::Sender<bool>>,
    /// After a failed accept: the pause before the next, doubling while they fail.
    pause: Option<Pin<Box<Sleep>>>,
    pause_for: Duration,
    /// When a refusal was last logged, for each reason (once a second at most each,
    /// so that refusals of one address do not hide those of a full server).
    refusal_logged: [Option<Instant>; 2],
}

/// One of the `max_connections` places, and one of its address's: taken at the
/// accept, given back on drop.
pub struct Place {
    open: Arc<AtomicUsize>,
    /// Held for its drop, which gives the address's place back.
    _address: AddressPlace,
}

/// A socket accepted, counted and not yet watched, on its way to the thread that will
/// serve it (`server::threads`). It is taken off the accepting runtime's reactor, so
/// that its readiness wakes the serving thread directly.
pub struct Handoff {
    socket: std::net::TcpStream,
    place: Place,
    timeouts: Timeouts,
    hangup: watch::Receiver<bool>,
}

/// Closes every connection of an [`Incoming`] still open, at once.
pub struct Hangup {
    sender: Arc<watch::Sender<bool>>,
    open: Arc<AtomicUsize>,
}

impl Incoming {
    pub fn new(
        listener: impl Into<Arc<TcpListener>>,
        timeouts: Timeouts,
        max_connections: usize,
        admission: Arc<Admission>,
    ) -> Self {
        let (hangup_sender, hangup) = watch::channel(false);
        Incoming {
            listener: listener.into(),
            timeouts,
            max_connections: max_connections.max(1),
            open: Arc::new(AtomicUsize::new(0)),
            admission,
            hangup,
            hangup_sender: Arc::new(hangup_sender),
            pause: None,
            pause_for: Duration::ZERO,
            refusal_logged: [None; 2],
        }
    }

    /// The count of connections open, kept up to date as they come and go.
    pub fn open_count(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    /// Counts its connections in `open` too, with those already counted there (the
    /// ones the server took while it started, not all closed yet).
    pub fn counting_in(mut self, open: Arc<AtomicUsize>) -> Self {
        self.open = open;
        self
    }

    /// What closes the connections this accepts, for the server's stop.
    pub fn hangup(&self) -> Hangup {
        Hangup {
            sender: Arc::clone(&self.hangup_sender),
            open: Arc::clone(&self.open),
        }
    }

    fn log_refusal(&mut self, why: Refused, peer: std::net::IpAddr) {
        let now = Instant::now();
        let logged = &mut self.refusal_logged[usize::from(why == Refused::PerAddress)];
        if logged.is_none_or(|at| now - at >= Duration::from_secs(1)) {
            *logged = Some(now);
            match why {
                Refused::PerAddress => tracing::warn!(
                    %peer,
                    max_connections_per_address = self.admission.max_per_address(),
                    "refusing connections from an address: it has max_connections_per_address open"
                ),
                _ => tracing::warn!(
                    max_connections = self.max_connections,
                    "refusing connections: the server has max_connections open"
                ),
            }
        }
    }
}

impl Incoming {
    /// The next connection to serve, counted in the open ones, its socket set up. Never
    /// fails: a failed accept is logged and retried after a pause.
    fn poll_accepted(&mut self, cx: &mut Context<'_>) -> Poll<(TcpStream, Place)> {
        loop {
            if let Some(pause) = &mut self.pause {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((socket, peer)) => {
                    self.pause_for = Duration::ZERO;
                    // Dropped when refused: the client sees the connection closed.
                    if self.open.load(Ordering::Relaxed) >= self.max_connections {
                        self.admission.refuse(Refused::MaxConnections);
                        self.log_refusal(Refused::MaxConnections, peer.ip());
                        continue;
                    }
                    let Some(address) = self.admission.take(Some(peer.ip())) else {
                        self.log_refusal(Refused::PerAddress, peer.ip());
                        continue;
                    };
                    // Small frames (acknowledgements, single records) go out at once, not
                    // after the peer's delayed ACK (40 ms per 1 MiB produce, measured).
                    if let Err(err) = socket.set_nodelay(true) {
                        tracing::debug!(%err, "cannot set TCP_NODELAY");
                    }
                    return Poll::Ready((socket, Place::take(&self.open, address)));
                }
                // The connection went before it was taken: nothing to wait for.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(err) => {
                    self.pause_for = (self.pause_for * 2)
                        .max(Duration::from_millis(5))
                        .min(MAX_ACCEPT_PAUSE);
                    tracing::warn!(%err, pause_ms = self.pause_for.as_millis() as u64, "cannot accept a connection; trying again after a pause");
                    self.pause = Some(Box::pin(tokio::time::sleep(self.pause_for)));
                }
            }
        }
    }

    /// The next connection, to be served on another runtime (see `Handoff`).
    pub async fn next_handoff(&mut self) -> io::Result<Handoff> {
        let (socket, place) = std::future::poll_fn(|cx| self.poll_accepted(cx)).await;
        Ok(Handoff {
            socket: socket.into_std()?,
            place,
            timeouts: self.timeouts,
            hangup: self.hangup.clone(),
        })
    }
}

/// Connections served on the runtime that accepts them.
impl Stream for Incoming {
    type Item = io::Result<Watched>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (socket, place) = ready!(self.poll_accepted(cx));
        let hangup = self.hangup.clone();
        Poll::Ready(Some(Ok(Watched::new(socket, self.timeouts, place, hangup))))
    }
}

impl Handoff {
    /// The connection, watched and registered with the runtime this is called on.
    pub fn watch(self) -> io::Result<Watched> {
        let socket = TcpStream::from_std(self.socket)?;
        Ok(Watched::new(socket, self.timeouts, self.place, self.hangup))
    }
}

impl Hangup {
    /// Closes the connections still open `timeout` from now (and any accepted later),
    /// on a task of the current runtime that ends early once no connection is left.
    /// `why` ends the warning logged if any are.
    pub fn after(self, timeout: Duration, why: &'static str) {
        tokio::spawn(async move {
            tokio::select! {
                // Every watchdog, and the `Incoming`, gone: nothing left to close.
                () = self.sender.closed() => {}
                () = tokio::time::sleep(timeout) => {
                    let open = self.open.load(Ordering::Relaxed);
                    if open > 0 {
                        tracing::warn!(
                            // All the server's, these among them.
                            server_connections_open = open,
                            timeout_ms = timeout.as_millis() as u64,
                            "closing the connections still open: {why}"
                        );
                    }
                    self.sender.send_replace(true);
                }
            }
        });
    }
}

impl Place {
    pub(super) fn take(open: &Arc<AtomicUsize>, address: AddressPlace) -> Place {
        open.fetch_add(1, Ordering::Relaxed);
        Place {
            open: Arc::clone(open),
            _address: address,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}
