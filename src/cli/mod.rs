//! `strom`: the server and the tools to talk to it, in the spirit of kcat and Kafka's
//! scripts. Output meant for pipes goes to stdout; progress and summaries to stderr.

mod bench;
mod consume;
mod exchange;
mod format;
mod group;
mod interrupt;
mod output;
mod position;
mod produce;
mod progress;
mod queue;
mod serve;
mod token;
mod topic;
mod work;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::Stop;

use crate::client::{Client, ClientTls, ConnectOptions};
use crate::config::DEFAULT_LISTEN;
use output::noteln;

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "A partitioned commit-log server over gRPC"
)]
struct Cli {
    /// Address of the server, for the client commands [default: 127.0.0.1:7400].
    #[arg(long, short = 's', env = "STROM_SERVER", value_name = "HOST:PORT")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// How client commands find the server. `--server` is taken before the subcommand
/// (`strom -s HOST:PORT topic list`) and after it (`strom topic list -s HOST:PORT`);
/// given in both places, the later one wins.
#[derive(clap::Args, Clone)]
pub struct Connect {
    /// Address of the server (may also come before the subcommand, or from
    /// STROM_SERVER) [default: 127.0.0.1:7400]; https://HOST:PORT for TLS.
    #[arg(long, short = 's', value_name = "HOST:PORT", global = true)]
    server: Option<String>,
    /// Connect with TLS, trusting the CA certificates in this PEM file (without it,
    /// https:// trusts the system's) [default: plaintext].
    #[arg(long, env = "STROM_TLS_CA", value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for a server that verifies
    /// clients; with --tls-client-key.
    #[arg(
        long,
        env = "STROM_TLS_CLIENT_CERT",
        value_name = "FILE",
        global = true
    )]
    tls_client_cert: Option<PathBuf>,
    /// PEM file of --tls-client-cert's private key.
    #[arg(long, env = "STROM_TLS_CLIENT_KEY", value_name = "FILE", global = true)]
    tls_client_key: Option<PathBuf>,
    /// Token for a server with auth_tokens (better from STROM_TOKEN or --token-file
    /// than on a command line others can list).
    #[arg(long, global = true)]
    token: Option<String>,
    /// File whose first line is the token (or STROM_TOKEN_FILE).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
}

impl Connect {
    /// Fills in the address given before the subcommand (or by STROM_SERVER), unless
    /// one came after it. clap already shares the values of a global argument with an
    /// argument of the same name in the parent command this way; the rule is spelled
    /// out here so as not to hang on that detail.
    fn inherit(&mut self, before: &Option<String>) {
        if self.server.is_none() {
            self.server.clone_from(before);
        }
    }

    pub fn address(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_LISTEN)
    }

    /// TLS as the options ask for it: None for plaintext (unless the address says
    /// https://, which `Client::connect_with` honours with the system's roots).
    fn tls(&self) -> Result<Option<ClientTls>, String> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some((
                read("--tls-client-cert", cert)?,
                read("--tls-client-key", key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(
                    "--tls-client-cert and --tls-client-key go together: give both, or neither"
                        .into(),
                )
            }
        };
        let ca_pem = self
            .tls_ca
            .as_ref()
            .map(|ca| read("--tls-ca", ca))
            .transpose()?;
        let https = self.address().starts_with("https://");
        Ok((https || ca_pem.is_some() || identity.is_some())
            .then_some(ClientTls { ca_pem, identity }))
    }

    /// The token: a flag wins over the environment (`--token`, `--token-file`, then
    /// STROM_TOKEN, STROM_TOKEN_FILE); both flags at once are refused.
    fn token(&self) -> Result<Option<String>, String> {
        let from_file = |file: &PathBuf, named: &str| -> Result<String, String> {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{named} {}: {e}", file.display()))?;
            Ok(text.lines().next().unwrap_or("").to_string())
        };
        let (token, named) = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => return Err("--token and --token-file: give one".into()),
            (Some(token), None) => (token.clone(), "--token"),
            (None, Some(file)) => (from_file(file, "--token-file")?, "--token-file"),
            // An empty variable counts as unset, as shells leave them.
            (None, None) => {
                let set = |name| std::env::var_os(name).filter(|v| !v.is_empty());
                match (set("STROM_TOKEN"), set("STROM_TOKEN_FILE")) {
                    (Some(token), _) => match token.into_string() {
                        Ok(token) => (token, "STROM_TOKEN"),
                        Err(_) => return Err("STROM_TOKEN is not UTF-8".into()),
                    },
                    (None, Some(file)) => (
                        from_file(&PathBuf::from(file), "STROM_TOKEN_FILE")?,
                        "STROM_TOKEN_FILE",
                    ),
                    (None, None) => return Ok(None),
                }
            }
        };
        match token.trim() {
            "" => Err(format!("{named} gives an empty token")),
            token => Ok(Some(token.to_string())),
        }
    }

    pub async fn client(&self) -> Result<Client, String> {
        let address = self.address();
        let tls = self.tls()?;
        // What to suggest when the server turns the connection away.
        let hint = match &tls {
            None => "it may serve TLS only (give --tls-ca FILE, or an https:// address), or be at its max_connections (or this address at its max_connections_per_address), or stopping",
            Some(ClientTls { identity: None, .. }) => "it may require a client certificate (give --tls-client-cert and --tls-client-key), or be at its max_connections (or this address at its max_connections_per_address), or stopping",
            Some(_) => "it may not accept this client certificate (is it signed by a CA in the server's tls_client_ca?), or be at its max_connections (or this address at its max_connections_per_address), or stopping",
        };
        let secure = tls.is_some();
        let options = ConnectOptions {
            tls,
            token: self.token()?,
        };
        let client = Client::connect_with(address, options).await.map_err(|e| {
            // tonic's Display is "transport error"; the cause is what says what to do.
            let cause = format!("{e}{}", causes(&e));
            match secure {
                true => format!("cannot connect to {address} over TLS: {cause}; is `strom serve` running there with TLS, does its certificate name that host and chain to --tls-ca, and is it below its max_connections and max_connections_per_address?"),
                false => format!("cannot connect to {address}: {cause}; is `strom serve` running there?"),
            }
        })?;
        // A server that refuses the connection after it is made (plaintext to a TLS
        // port, TLS without the client certificate it requires) would otherwise fail the
        // command's first call with "transport error" or "operation was canceled".
        // Bounded: a server that is slow to answer is left to the command's own calls.
        let checked = tokio::time::timeout(std::time::Duration::from_secs(5), client.check());
        match checked.await.unwrap_or(Ok(())) {
            // The transport's failures come as UNKNOWN, UNAVAILABLE, CANCELLED or (a TLS
            // alert read as an HTTP/2 frame) INTERNAL; a server without health checks
            // would answer UNIMPLEMENTED, and a stopping one NOT_FOUND.
            Err(status)
                if !matches!(
                    status.code(),
                    tonic::Code::Unimplemented | tonic::Code::NotFound
                ) =>
            {
                Err(format!(
                    "{address} closed the connection ({}): {hint}",
                    describe(status)
                ))
            }
            // Served, or a server without health checks: the command will tell.
            _ => Ok(client),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    Topic(topic::TopicArgs),
    /// Produce records read from stdin (or a file), one per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// Print each partition's first and next offset.
    Offsets(consume::OffsetsArgs),
    /// List, describe, reset and delete consumer groups.
    Group(group::GroupArgs),
    /// List, describe, configure, reset and delete share groups (queues).
    Queue(queue::QueueArgs),
    /// Create exchanges, bind topics to them, and publish with a routing key.
    Exchange(exchange::ExchangeArgs),
    /// Run a command for each record a share group hands this worker (a job queue
    /// runner): value on stdin, key and headers in the environment; exit 0 accepts, 3
    /// rejects, anything else releases the record for another try.
    Work(work::WorkArgs),
    /// Measure a running server: produce or consume throughput and latency.
    Bench(bench::BenchArgs),
    /// Make tokens for a server with auth_tokens.
    Token(token::TokenArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server builds its own runtime, sized by its configuration.
    if let Command::Serve(args) = cli.command {
        return match serve::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                noteln!("strom: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match &cli.command {
        Command::Bench(args) => {
            if let Some(threads) = args.threads() {
                builder.worker_threads(threads.clamp(1, cores));
            }
        }
        // At least two, even on one core: output goes to stdout by blocking writes, and
        // a reader that stops reading blocks one thread; a group member's heartbeat
        // must still run on another, or its session ends and its partitions move.
        _ => {
            builder.worker_threads(cores.max(2));
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            noteln!("strom: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Spawned, so the command runs on the worker threads rather than on the main thread
    // that `block_on` uses.
    let result = runtime.block_on(async move {
        tokio::spawn(async move { run(cli).await })
            .await
            .unwrap_or_else(|e| Err(Stop::Failed(format!("command failed: {e}"))))
    });
    // A client command may end while a thread of the runtime is still blocked reading
    // stdin (`tail -F app.log | strom produce` after a fatal error), which dropping the
    // runtime would wait for, forever.
    runtime.shutdown_background();
    match result {
        Ok(()) | Err(Stop::OutputClosed) => ExitCode::SUCCESS,
        Err(Stop::Interrupted(signal)) => ExitCode::from((128 + signal) as u8),
        Err(Stop::Failed(message)) => {
            noteln!("strom: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Stop> {
    let before = &cli.server;
    match cli.command {
        Command::Serve(_) => unreachable!("`main` runs the server"),
        Command::Topic(mut args) => {
            args.connect.inherit(before);
            topic::run(args).await
        }
        Command::Produce(mut args) => {
            args.connect.inherit(before);
            produce::run(args).await
        }
        Command::Consume(mut args) => {
            args.connect.inherit(before);
            consume::run(args).await
        }
        Command::Offsets(mut args) => {
            args.connect.inherit(before);
            consume::offsets(args).await
        }
        Command::Group(mut args) => {
            args.connect.inherit(before);
            group::run(args).await
        }
        Command::Queue(mut args) => {
            args.connect.inherit(before);
            queue::run(args).await
        }
        Command::Exchange(mut args) => {
            args.connect.inherit(before);
            exchange::run(args).await
        }
        Command::Work(mut args) => {
            args.connect.inherit(before);
            work::run(args).await
        }
        Command::Bench(mut args) => {
            args.connect.inherit(before);
            bench::run(args).await
        }
        Command::Token(args) => token::run(args),
    }
}

/// A gRPC error as one line a person can act on.
pub fn describe(status: tonic::Status) -> String {
    // A call that failed in the transport (a TLS alert, a connection reset) says why
    // only in its causes: "transport error" alone tells a person nothing.
    format!(
        "{} ({:?}){}",
        status.message(),
        status.code(),
        causes(&status)
    )
}

/// An error's causes, each after ": ".
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` or `1d` as milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// One `key=value` argument; `usage` tells how to write it, for the message when it
/// is not one.
pub fn parse_pair(pair: &str, usage: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{pair:?} is not {usage}")),
    }
}
