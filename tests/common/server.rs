//! A real strom server on 127.0.0.1:0 with a temporary data directory, stopped through
//! the shutdown future of `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use strom::broker::{Broker, Limits};
use strom::client::Client;
use strom::server::{serve_listeners, Listeners, ServeOptions};
use tokio::sync::oneshot;

pub struct TestServer {
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, if it was asked to.
    #[allow(dead_code)] // not every test binary uses it
    pub metrics: Option<SocketAddr>,
    /// Where it answers Kafka clients, if it was asked to.
    #[allow(dead_code)] // not every test binary uses it
    pub kafka: Option<SocketAddr>,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<strom::Result<()>>>,
}

impl TestServer {
    /// The value of one series (`name{labels}`, as the endpoint writes it) in a scrape
    /// of the server's metrics; a series not there fails the test.
    pub async fn metric(&self, series: &str) -> f64 {
        let at = self.metrics.expect("a server with metrics").to_string();
        let text = tokio::task::spawn_blocking(move || super::scrape(&at));
        let text = text.await.unwrap();
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
        let value = value.unwrap_or_else(|| panic!("no {series} in {text}"));
        value.parse().unwrap()
    }

    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(dir, Limits::default()).await
    }

    pub async fn start_with(dir: &Path, limits: Limits) -> TestServer {
        Self::start_with_options(dir, limits, ServeOptions::default()).await
    }

    pub async fn start_with_options(
        dir: &Path,
        limits: Limits,
        options: ServeOptions,
    ) -> TestServer {
        Self::start_serving(dir, limits, options, false, false).await
    }

    /// A server that answers Kafka's protocol too, and serves metrics, on ports of
    /// their own.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn start_with_kafka(dir: &Path, limits: Limits, options: ServeOptions) -> TestServer {
        Self::start_serving(dir, limits, options, true, true).await
    }

    /// A server that serves Prometheus metrics too, on a port of its own.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn start_with_metrics(dir: &Path) -> TestServer {
        Self::start_serving(dir, Limits::default(), ServeOptions::default(), true, false).await
    }

    /// `start_with_options`, serving Prometheus metrics too.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn start_with_options_and_metrics(
        dir: &Path,
        limits: Limits,
        options: ServeOptions,
    ) -> TestServer {
        Self::start_serving(dir, limits, options, true, false).await
    }

    async fn start_serving(
        dir: &Path,
        limits: Limits,
        options: ServeOptions,
        metrics: bool,
        kafka: bool,
    ) -> TestServer {
        // A test in the same binary that spawns a process forks this one, and the child
        // holds a copy of every descriptor, the data directory's lock included, until it
        // execs: a restart right after a stop can find the lock still held for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let broker = loop {
            match Broker::open(dir, limits.clone()) {
                Err(strom::Error::DataDirInUse { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                opened => break opened.unwrap(),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = match metrics {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let metrics = metrics_listener.as_ref().map(|l| l.local_addr().unwrap());
        let kafka_listener = match kafka {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let kafka = kafka_listener.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            grpc: listener.into(),
            metrics: metrics_listener.map(Into::into),
            kafka: kafka_listener,
        };
        let served = serve_listeners(listeners, broker, options, async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(served);
        TestServer {
            addr,
            metrics,
            kafka,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr.to_string()).await.unwrap()
    }

    /// A client, after creating topic `name` of `partitions` partitions with defaults.
    pub async fn client_with_topic(&self, name: &str, partitions: u32) -> Client {
        let client = self.client().await;
        client
            .admin()
            .create_topic(name, partitions, Default::default())
            .await
            .unwrap();
        client
    }

    /// A Subscribe to partition 0 of `topic` from its start, on a connection of its
    /// own whose client grants only HTTP/2's initial 64 KiB window and never reads: the
    /// first message of up to 1 MiB fills it, and the response can never end.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn subscriber_that_reads_nothing(
        &self,
        topic: &str,
    ) -> tonic::Streaming<strom::grpc::records::SubscribeResponse> {
        use strom::grpc::pb::{log_client::LogClient, subscribe_request::Start, SubscribeRequest};
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535))
            .connect()
            .await
            .unwrap();
        let request = SubscribeRequest {
            topic: topic.into(),
            partition: 0,
            start: Some(Start::Earliest(true)),
            max_bytes: 1 << 20,
        };
        LogClient::new(channel)
            .subscribe(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// Graceful stop (as on SIGTERM); returns what `serve` returned.
    pub async fn stop(mut self) -> strom::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}
