//! TLS on the server's connections (`tls_cert`, `tls_key`, and `tls_client_ca` for
//! clients that must show a certificate; loaded by `certificates.rs`).
//!
//! The handshake is made here, not by tonic, so that it sits between the two layers of
//! watching: the socket under it stays [`Watched`] (a stalled client, the server's
//! hangup), and the client's HTTP/2 greeting, which the silent-client timeout waits for,
//! is read from the decrypted bytes above it. Read from the encrypted ones it would be
//! noise: three bytes of a TLS record taken for a SETTINGS frame's length. So the silent
//! timeout covers the handshake as well: a client that connects and never finishes it
//! is closed like one that never speaks. Handshakes run on tasks of their own, as many
//! at once as connections arrive, so a slow one holds up no other.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::certificates::common_name;
use super::greeting::Greeting;
use super::{Connection, ConnectionInfo, ServerTls, Watched};

/// A connection as the server serves it: the watched socket, or TLS over it.
pub enum Served {
    Plain(Watched),
    Tls(Box<Secured>),
}

/// TLS over a watched socket, reading the client's greeting from the decrypted bytes.
pub struct Secured {
    io: TlsStream<Watched>,
    greeting: Option<Greeting>,
    connection: Arc<Connection>,
}

/// The server's connections, served as they come: plain, or once their handshake ends.
pub type ServedStream = Pin<Box<dyn Stream<Item = io::Result<Served>> + Send>>;

/// `accepted` as the server serves them: with `tls`, each after its handshake.
pub fn served<S>(accepted: S, tls: Option<ServerTls>) -> ServedStream
where
    S: Stream<Item = io::Result<Watched>> + Send + 'static,
{
    match tls {
        None => Box::pin(tokio_stream::StreamExt::map(accepted, |watched| {
            watched.map(Served::Plain)
        })),
        Some(tls) => Box::pin(Handshakes {
            accepted: Box::pin(accepted),
            tls,
            pending: JoinSet::new(),
            failures: Failures::default(),
        }),
    }
}

/// Connections whose handshakes run on tasks of the runtime that polls this.
struct Handshakes {
    accepted: Pin<Box<dyn Stream<Item = io::Result<Watched>> + Send>>,
    /// Its certificate as of each accept (a reload serves the connections after it).
    tls: ServerTls,
    pending: JoinSet<io::Result<Secured>>,
    failures: Failures,
}

impl Stream for Handshakes {
    type Item = io::Result<Served>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Handshakes that ended, before more are started: a flood of accepts must
            // not keep them waiting. This also registers the waker for those pending:
            // nothing is added to them between here and a Pending below.
            while let Poll::Ready(Some(ended)) = this.pending.poll_join_next(cx) {
                match ended {
                    Ok(Ok(secured)) => {
                        return Poll::Ready(Some(Ok(Served::Tls(Box::new(secured)))))
                    }
                    // A plaintext client, a port scanner, a certificate refused, or a
                    // client silent past the timeout: that connection only.
                    Ok(Err(err)) => {
                        this.tls.count_failure();
                        this.failures.note(&err)
                    }
                    Err(err) => tracing::debug!(%err, "TLS handshake task ended"),
                }
            }
            match this.accepted.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(mut watched))) => {
                    // The greeting is read above the TLS layer from here on.
                    watched.greeting = None;
                    let connection = Arc::clone(&watched.connection);
                    let handshake = this.tls.acceptor().accept(watched);
                    this.pending.spawn(async move {
                        let io = handshake.await?;
                        if let Some(name) = common_name(io.get_ref().1.peer_certificates()) {
                            let _ = connection.certificate_name.set(name);
                        }
                        Ok(Secured {
                            io,
                            greeting: Some(Greeting::default()),
                            connection,
                        })
                    });
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                // Accepting has ended: so does this, and the handshakes not yet ended go
                // with it (tonic drops the stream at a stop in any case).
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    this.failures.poll_due(cx);
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Handshakes that failed, logged at most once a second with the count since the last
/// line: an operator sees that clients are refused (a plaintext client, a missing
/// certificate), and a flood of them does not flood the log. Failures held back are
/// logged when their second is up, even if no other follows.
#[derive(Default)]
struct Failures {
    logged_at: Option<Instant>,
    /// Failures not logged yet, and the latest one's error.
    held: u64,
    latest: String,
    /// When the held failures are due to be logged.
    due: Option<Pin<Box<tokio::time::Sleep>>>,
}

const FAILURES_EVERY: Duration = Duration::from_secs(1);

impl Failures {
    fn note(&mut self, err: &io::Error) {
        self.held += 1;
        self.latest = err.to_string();
        let now = Instant::now();
        match self.logged_at {
            Some(at) if now - at < FAILURES_EVERY => {
                if self.due.is_none() {
                    let due = tokio::time::Instant::from_std(at + FAILURES_EVERY);
                    self.due = Some(Box::pin(tokio::time::sleep_until(due)));
                }
            }
            _ => self.log(now),
        }
    }

    /// Logs the held failures once they are due (registering `cx` until then).
    fn poll_due(&mut self, cx: &mut Context<'_>) {
        if let Some(due) = &mut self.due {
            if due.as_mut().poll(cx).is_ready() {
                self.log(Instant::now());
            }
        }
    }

    fn log(&mut self, now: Instant) {
        tracing::info!(err = %self.latest, failed = self.held, "TLS handshakes failed (the latest's error); those connections are closed");
        self.logged_at = Some(now);
        self.held = 0;
        self.due = None;
    }
}

impl Connected for Served {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            Served::Plain(watched) => watched.connect_info(),
            Served::Tls(secured) => ConnectionInfo(Arc::clone(&secured.connection)),
        }
    }
}

impl AsyncRead for Served {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(watched) => Pin::new(watched).poll_read(cx, buf),
            Served::Tls(secured) => {
                let before = buf.filled().len();
                let polled = Pin::new(&mut secured.io).poll_read(cx, buf);
                secured
                    .connection
                    .listen(&mut secured.greeting, &buf.filled()[before..]);
                polled
            }
        }
    }
}

impl AsyncWrite for Served {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Served::Plain(watched) => Pin::new(watched).poll_write(cx, buf),
            Served::Tls(secured) => Pin::new(&mut secured.io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Served::Plain(watched) => Pin::new(watched).poll_write_vectored(cx, bufs),
            Served::Tls(secured) => Pin::new(&mut secured.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Served::Plain(watched) => watched.is_write_vectored(),
            Served::Tls(secured) => secured.io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(watched) => Pin::new(watched).poll_flush(cx),
            Served::Tls(secured) => Pin::new(&mut secured.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(watched) => Pin::new(watched).poll_shutdown(cx),
            Served::Tls(secured) => Pin::new(&mut secured.io).poll_shutdown(cx),
        }
    }
}
