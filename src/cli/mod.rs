//! `strom`: the server and the tools to talk to it, in the spirit of kcat and Kafka's
//! scripts. Output meant for pipes goes to stdout; progress and summaries to stderr.

mod bench;
mod consume;
mod format;
mod group;
mod interrupt;
mod output;
mod position;
mod produce;
mod progress;
mod queue;
mod serve;
mod topic;
mod work;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::Stop;

use crate::client::Client;
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
    /// STROM_SERVER) [default: 127.0.0.1:7400].
    #[arg(long, short = 's', value_name = "HOST:PORT", global = true)]
    server: Option<String>,
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

    pub async fn client(&self) -> Result<Client, String> {
        let address = self.address();
        Client::connect(address).await.map_err(|e| {
            format!("cannot connect to {address}: {e}; is `strom serve` running there?")
        })
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
    /// Run a command for each record a share group hands this worker (a job queue
    /// runner): value on stdin, key and headers in the environment; exit 0 accepts, 3
    /// rejects, anything else releases the record for another try.
    Work(work::WorkArgs),
    /// Measure a running server: produce or consume throughput and latency.
    Bench(bench::BenchArgs),
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
        Command::Work(mut args) => {
            args.connect.inherit(before);
            work::run(args).await
        }
        Command::Bench(mut args) => {
            args.connect.inherit(before);
            bench::run(args).await
        }
    }
}

/// A gRPC error as one line a person can act on.
pub fn describe(status: tonic::Status) -> String {
    format!("{} ({:?})", status.message(), status.code())
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
