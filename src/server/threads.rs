//! Connection threads: each connection served whole on one thread.
//!
//! tokio's multi-thread runtime lets any worker run any task: a connection's reader,
//! its requests and the subscriptions they wake hop between workers, and each hop that
//! finds the other worker parked costs a futex wake-up. With one record a request, a
//! third of the server's CPU was that hand-over (BENCHMARKS.md, "Where a one-record
//! request's server CPU goes"), and the end-to-end tail followed it. Here each thread
//! runs its own current-thread runtime and serves the connections dealt to it in turn:
//! a connection's tasks, and the tasks its requests spawn, stay on that thread. Work
//! crosses threads only where two connections meet (a produce waking another
//! connection's subscriber) and on the blocking pools (fsyncs, large copies).
//!
//! The price is balance: a thread cannot take work from a busier one, so one
//! connection never has more than one core. Servers of many connections (Redpanda's
//! Seastar, Iggy's shards) make the same trade.
//!
//! Measured on a 2-vCPU VM with the client beside the server (BENCHMARKS.md,
//! "Connections pinned to threads"): one producer's connection gains 8-20% on less
//! CPU, several producers and a consumer gain nothing, and the end-to-end tail is
//! worse, because a record produced on one connection wakes its subscriber on another
//! thread, where tokio's work-stealing runtime would run the subscriber next on the
//! producer's. Hence off by default.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::grpc::connection::{served, Handoff, Incoming, ServedStream, ServerTls};

/// Blocking threads (fsyncs, large appends and reads) the connection threads' pools
/// share: tokio's default for one runtime, in equal parts of at least
/// `MIN_BLOCKING_THREADS`. The main thread's runtime keeps a pool of its own for the
/// upkeep and the cleaner.
const BLOCKING_THREADS: usize = 512;
const MIN_BLOCKING_THREADS: usize = 4;

/// How long a stopping thread waits for its blocking tasks (an fsync, a large append)
/// before it lets them go.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The threads, each driving its runtime until the set is dropped.
pub struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
}

struct ConnectionThread {
    runtime: Handle,
    stop: Option<oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), each asking for `time_slice` if given.
    pub fn start(count: usize, time_slice: Option<Duration>) -> io::Result<Self> {
        let count = count.max(1);
        let blocking = (BLOCKING_THREADS / count).max(MIN_BLOCKING_THREADS);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (ready, runtime) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("strom-conn-{i}"))
                .spawn(move || {
                    ask_for_time_slice(time_slice);
                    let built = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(blocking)
                        .thread_name("strom-blocking")
                        // The runtime's blocking pool: this thread is not one of them.
                        .on_thread_start(move || ask_for_time_slice(time_slice))
                        .build();
                    let built = match built {
                        Ok(built) => built,
                        Err(err) => return drop(ready.send(Err(err))),
                    };
                    let _ = ready.send(Ok(built.handle().clone()));
                    built.block_on(async {
                        let _ = stopped.await;
                    });
                    built.shutdown_timeout(STOP_WAIT);
                })?;
            let runtime = runtime
                .recv()
                .map_err(|_| io::Error::other("a connection thread ended as it started"))??;
            threads.push(ConnectionThread {
                runtime,
                stop: Some(stop),
                join: Some(join),
            });
        }
        Ok(ConnectionThreads { threads })
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Runs one server on each thread, fed the connections `incoming` accepts in turn,
    /// until `stopping` resolves or a server ends early (it can only panic); then stops
    /// accepting, calls `begin_stop` (which ends long polls and subscriptions, so that
    /// no connection keeps its server waiting), tells every server to finish (each lets
    /// its connections' requests end, as tonic's graceful shutdown does) and waits for
    /// them. `serve` makes one server from its connections and a signal to stop. The
    /// first error a server ends with is returned, and a server's panic goes on, once
    /// all have stopped, as it would have on the caller's runtime.
    pub async fn serve<S, F, E>(
        &self,
        mut incoming: Incoming,
        tls: Option<ServerTls>,
        mut serve: S,
        stopping: impl Future<Output = ()>,
        begin_stop: impl FnOnce(),
    ) -> Result<(), E>
    where
        S: FnMut(Connections, Stop) -> F,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let mut servers = JoinSet::new();
        let mut lanes = Vec::with_capacity(self.threads.len());
        for thread in &self.threads {
            let (lane, connections) = mpsc::unbounded_channel();
            lanes.push(lane);
            let connections = UnboundedReceiverStream::new(connections).map(Handoff::watch);
            // With TLS, each connection's handshake runs on the thread that serves it.
            let server = serve(
                served(connections, tls.clone()),
                stop_signal(stopped.clone()),
            );
            servers.spawn_on(server, &thread.runtime);
        }
        let mut first = None;
        let dealing = async {
            for lane in lanes.iter().cycle() {
                match incoming.next_handoff().await {
                    // A closed lane: its server has ended (and is reported below).
                    Ok(connection) => drop(lane.send(connection)),
                    Err(err) => tracing::debug!(%err, "cannot hand a connection over"),
                }
            }
        };
        tokio::select! {
            () = stopping => {}
            () = dealing => {}
            Some(ended) = servers.join_next() => note(&mut first, ended),
        }
        // Accepting stops here: the listener closes with `incoming`.
        drop(incoming);
        begin_stop();
        stop.send_replace(true);
        while let Some(ended) = servers.join_next().await {
            note(&mut first, ended);
        }
        match first {
            None => Ok(()),
            Some(Ok(err)) => Err(err),
            Some(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
        }
    }
}

/// Keeps the first way a server ended that was not a clean stop: its error, or its panic.
fn note<E>(first: &mut Option<Result<E, JoinError>>, ended: Result<Result<(), E>, JoinError>) {
    if first.is_some() {
        return;
    }
    *first = match ended {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(Ok(err)),
        Err(err) if err.is_panic() => Some(Err(err)),
        Err(_) => None, // cancelled: only when the set is dropped
    };
}

/// A server's connections, watched on its own thread.
pub type Connections = ServedStream;

/// Resolves when the servers are told to stop.
pub type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn stop_signal(mut stopped: watch::Receiver<bool>) -> Stop {
    Box::pin(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    })
}

impl Drop for ConnectionThreads {
    /// Stops every thread's runtime (tasks still on it are dropped; blocking tasks get
    /// `STOP_WAIT`) and waits for the threads.
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
        for thread in &mut self.threads {
            if let Some(join) = thread.join.take() {
                let _ = join.join();
            }
        }
    }
}

/// Gives the calling thread time slices of `slice`, if there is one (see
/// `ServerConfig::time_slice`). A refusal is logged once, not for every thread the
/// blocking pools start.
pub fn ask_for_time_slice(slice: Option<Duration>) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let Some(slice) = slice else { return };
    if let Err(err) = crate::sys::set_thread_time_slice(slice) {
        WARNED.call_once(|| tracing::warn!(%err, ?slice, "cannot set the threads' time slice"));
    }
}
