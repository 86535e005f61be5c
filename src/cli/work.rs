//! `strom work -t T --group G -- COMMAND...`: a job-queue runner. Each record of the
//! topic that the share group hands this worker runs COMMAND once, with the record's
//! value on stdin and the rest in the environment:
//!
//! - `STROM_TOPIC`, `STROM_PARTITION`, `STROM_OFFSET`, `STROM_DELIVERY_COUNT`;
//! - `STROM_KEY` (the key's bytes, when it has no NUL byte) and `STROM_KEY_BASE64`;
//! - `STROM_HEADER_<NAME>` per header, the name upper-cased with every character
//!   outside [A-Z0-9] made `_`.
//!
//! Exit 0 accepts the record; exit 3 rejects it (dead-lettered, never retried); any
//! other end (another status, a signal, a command that cannot start) releases it for
//! another try, up to the group's max.deliveries.
//!
//! A stream that breaks (the server restarting, the network) is opened again, as a new
//! member, with a backoff, rather than ending the runner: a job runner must outlive a
//! server restart. The records it held go back to the queue when its stream ends, so a
//! job whose answer could not be sent runs again, as after any crash.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;

use super::output::noteln;
use super::{describe, Connect, Stop};
use crate::client::{transient, Job, Worker, WorkerConfig};

/// The exit status that rejects a record.
pub const REJECT_STATUS: i32 = 3;

#[derive(clap::Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Topic to take jobs from.
    #[arg(long, short = 't')]
    topic: String,
    /// The share group the workers share.
    #[arg(long, short = 'g')]
    group: String,
    /// Jobs the server may send ahead (locked to this worker while they wait).
    #[arg(long, default_value_t = 1)]
    prefetch: u32,
    /// Stop after this many jobs.
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Stop when no job has come for this long (default: never).
    #[arg(long, value_name = "MS")]
    idle_exit_ms: Option<u64>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn env_name(header: &str) -> String {
    let upper: String = header
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    format!("STROM_HEADER_{upper}")
}

/// Runs the command for one job; its exit status, or `None` if it did not exit.
fn run_job(command: &[String], topic: &str, job: &Job) -> Option<i32> {
    let mut c = Command::new(&command[0]);
    c.args(&command[1..])
        .stdin(Stdio::piped())
        .env("STROM_TOPIC", topic)
        .env("STROM_PARTITION", job.partition.to_string())
        .env("STROM_OFFSET", job.offset.to_string())
        .env("STROM_DELIVERY_COUNT", job.delivery_count.to_string());
    if let Some(key) = &job.key {
        if !key.contains(&0) {
            c.env("STROM_KEY", OsStr::from_bytes(key));
        }
        c.env(
            "STROM_KEY_BASE64",
            base64::engine::general_purpose::STANDARD.encode(key),
        );
    }
    for (name, value) in &job.headers {
        if !value.contains(&0) {
            c.env(env_name(name), OsStr::from_bytes(value));
        }
    }
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(err) => {
            noteln!("strom work: cannot run {:?}: {err}", command[0]);
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes it: not a failure.
        let _ = stdin.write_all(&job.value);
    }
    child.wait().ok().and_then(|status| status.code())
}

/// Joins the share group over a new stream. A runner whose stream broke
/// (`reconnecting`) first waits its backoff, then tries until the server takes it.
async fn join(
    client: &crate::client::Client,
    args: &WorkArgs,
    reconnecting: Option<&mut Backoff>,
) -> Result<Worker, Stop> {
    let mut config = WorkerConfig::new(&args.group, &args.topic);
    config.prefetch = args.prefetch.max(1);
    let worker = match reconnecting {
        None => Worker::connect(client, config).await.map_err(describe)?,
        Some(backoff) => loop {
            backoff.wait().await;
            match Worker::connect(client, config.clone()).await {
                Ok(worker) => break worker,
                Err(status) if transient(&status) => {
                    noteln!(
                        "strom work: cannot open the stream yet: {}",
                        describe(status)
                    );
                }
                Err(status) => return Err(describe(status).into()),
            }
        },
    };
    noteln!(
        "strom work: member {} of share group {}, taking jobs from {}",
        worker.member_id(),
        args.group,
        args.topic
    );
    Ok(worker)
}

/// The wait before opening the stream again, doubled at each attempt up to
/// `MAX_BACKOFF` and kept across reconnects, so that a stream that opens and breaks at
/// once (a server failing every fetch of the group) is not opened in a tight loop. It
/// starts again once a stream has delivered a job.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// The longest wait between attempts to open the stream again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn run(args: WorkArgs) -> Result<(), Stop> {
    let client = args.connect.client().await?;
    let mut worker = join(&client, &args, None).await?;
    let mut backoff = Backoff(Backoff::FIRST);
    let wait = Duration::from_millis(args.idle_exit_ms.unwrap_or(u64::MAX / 4));
    let (mut done, mut failed, mut rejected) = (0u64, 0u64, 0u64);
    while args
        .max_jobs
        .is_none_or(|max| done + failed + rejected < max)
    {
        let job = match worker.next(wait).await {
            Ok(Some(job)) => job,
            Ok(None) => break, // idle for --idle-exit-ms
            Err(status) if transient(&status) => {
                noteln!(
                    "strom work: the stream broke ({}); opening it again",
                    describe(status)
                );
                worker = join(&client, &args, Some(&mut backoff)).await?;
                continue;
            }
            Err(status) => return Err(describe(status).into()),
        };
        backoff.reset();
        let command = args.command.clone();
        let topic = args.topic.clone();
        let ran = job.clone();
        let status = tokio::task::spawn_blocking(move || run_job(&command, &topic, &ran))
            .await
            .map_err(|e| format!("job runner failed: {e}"))?;
        let (acked, count) = match status {
            Some(0) => (worker.accept(&job).await, &mut done),
            Some(REJECT_STATUS) => (worker.reject(&job).await, &mut rejected),
            _ => (worker.release(&job).await, &mut failed),
        };
        match acked {
            // Counted once its answer is on its way: a job that runs again counts once.
            Ok(()) => *count += 1,
            Err(status) if transient(&status) => {
                noteln!(
                    "strom work: the stream broke ({}); the job at partition {} offset {} goes back to the queue and runs again; opening it again",
                    describe(status),
                    job.partition,
                    job.offset
                );
                worker = join(&client, &args, Some(&mut backoff)).await?;
            }
            Err(status) => return Err(describe(status).into()),
        }
    }
    worker.close().await;
    noteln!("strom work: {done} accepted, {rejected} rejected, {failed} released");
    Ok(())
}
