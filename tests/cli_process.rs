//! The `strom` binary as a person uses it, following the README: `strom serve` as its
//! own process, lines piped into `strom produce`, `strom consume --format json` read
//! back, SIGTERM, and a restart that opens cleanly and still has everything.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::run_within;
use serde_json::Value;

const STROM: &str = env!("CARGO_BIN_EXE_strom");

/// A `strom serve` child on a free loopback port.
struct Server {
    child: Child,
    addr: String,
    /// Log lines up to and including the ready line.
    startup: Vec<String>,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    fn start_with(dir: &Path, args: &[&str]) -> Server {
        Server::spawn(Server::command(), dir, args)
    }

    /// `strom serve` on `dir` with one environment variable set.
    fn start_with_env(dir: &Path, (name, value): (&str, &str), args: &[&str]) -> Server {
        let mut command = Server::command();
        command.env(name, value);
        Server::spawn(command, dir, args)
    }

    /// `strom`, without the settings of the environment that the tests set themselves:
    /// a developer's would override the tests' files and flags.
    fn command() -> Command {
        let mut command = Command::new(STROM);
        command.env_remove("STROM_WORKER_THREADS");
        command.env_remove("STROM_TIME_SLICE_US");
        command.env_remove("STROM_PIN_CONNECTIONS");
        command
    }

    /// Starts `command` (`strom`, with its environment) as `strom serve` on `dir`.
    fn spawn(mut command: Command, dir: &Path, args: &[&str]) -> Server {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Every log line goes to a channel; the ready line tells the bound address.
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned by a `Server` from here on, so a panic below still kills and reaps it.
        let mut server = Server {
            child,
            addr: String::new(),
            startup: Vec::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.addr.is_empty() {
            let line = server
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("strom serve printed its ready line in time");
            if let Some(rest) = line.split("serving gRPC on ").nth(1) {
                server.addr = rest.split(',').next().unwrap().to_string();
            }
            server.startup.push(line);
        }
        server
    }

    /// Sends SIGTERM; returns the exit status and every log line after the ready line.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY (test code): signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "strom serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends, and with it this iterator, at the end of the output.
        (status, self.log.iter().collect())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `strom ARGS` against `server`, with `stdin` piped in; panics unless it succeeds.
fn strom(server: &Server, args: &[&str], stdin: &str) -> String {
    let mut command = Command::new(STROM);
    command.args(args).args(["--server", &server.addr]);
    let out = run_within(&mut command, stdin.as_bytes(), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "strom {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every record of `logs`, in (partition, offset) order: `consume` interleaves the
/// partitions as their records arrive.
fn consume_json(server: &Server) -> Vec<Value> {
    let mut records: Vec<Value> = strom(server, &["consume", "-t", "logs", "--format", "json"], "")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    records.sort_by_key(|r| (r["partition"].as_u64(), r["offset"].as_u64()));
    records
}

#[test]
fn serve_produce_consume_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    strom(
        &server,
        &["topic", "create", "logs", "--partitions", "3"],
        "",
    );
    let lines: String = (0..200)
        .map(|i| format!("user-{}:event {i}\n", i % 7))
        .collect();
    strom(
        &server,
        &[
            "produce",
            "-t",
            "logs",
            "--key-separator",
            ":",
            "--header",
            "app=test",
        ],
        &lines,
    );
    let records = consume_json(&server);
    assert_eq!(records.len(), 200);
    for record in &records {
        let key = record["key"].as_str().unwrap();
        let partition = record["partition"].as_u64().unwrap() as u32;
        assert_eq!(
            partition,
            strom::broker::partitioner::partition_for_key(key.as_bytes(), 3),
            "{record}"
        );
        assert_eq!(record["headers"][0], serde_json::json!(["app", "test"]));
    }
    let mut values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    values.sort_by_key(|v| v[6..].parse::<u32>().unwrap());
    assert_eq!(values[0], "event 0");
    assert_eq!(values[199], "event 199");

    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}; log: {log:?}");
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{log:?}");
    for partition in 0..3 {
        let marker =
            common::topic_dir(dir.path(), "logs").join(format!("{partition}/.clean-shutdown"));
        assert!(marker.exists(), "{} is missing", marker.display());
    }

    let server = Server::start(dir.path());
    let again = consume_json(&server);
    assert!(
        again == records,
        "not the same records, offsets and partitions after a restart"
    );
    let offsets = strom(&server, &["offsets", "-t", "logs"], "");
    assert_eq!(
        offsets.lines().count(),
        4,
        "a header and three partitions: {offsets}"
    );

    // `strom consume | head -1`: a reader that goes away is a normal end, not a panic.
    strom(&server, &["topic", "create", "big"], "");
    let lines: String = (0..20_000).map(|i| format!("line {i:>40}\n")).collect();
    strom(&server, &["produce", "-t", "big"], &lines);
    let mut consume = Command::new(STROM)
        .args(["consume", "-t", "big", "--server", &server.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(consume.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim_end(), format!("line {:>40}", 0));
    // The read end is closed here, with most of the 900 KB still to come.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = consume.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = consume.kill();
            let _ = consume.wait();
            panic!("strom consume did not stop after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    consume
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success() && err.is_empty(), "{status}: {err}");
    let startup = server.startup.clone();
    let (status, _) = server.terminate();
    assert!(status.success());
    assert!(
        startup.iter().any(|l| l.contains("broker opened topics=1")),
        "the start-up lines are the ones checked: {startup:?}"
    );
    assert!(
        !startup.iter().any(|l| l.contains("partition recovered")),
        "a clean shutdown needs no recovery: {startup:?}"
    );
}

/// The `THP_enabled` line of a process's status: false once the process turned
/// transparent huge pages off for itself (or on a kernel without them); None on a
/// kernel older than 5.0, which has no such line.
fn huge_pages_enabled(pid: &str) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1) == Some("1"))
}

#[test]
fn serve_turns_transparent_huge_pages_off_for_itself_unless_configured() {
    // This test process never turns them off: if they read as off here, the kernel
    // has none (or no such line), and there is nothing to tell apart.
    if huge_pages_enabled("self") != Some(true) {
        eprintln!("skipped: this kernel reports no transparent huge pages to turn off");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a"));
    assert_eq!(
        huge_pages_enabled(&server.child.id().to_string()),
        Some(false)
    );
    drop(server);

    let config = dir.path().join("strom.toml");
    std::fs::write(&config, "transparent_huge_pages = true\n").unwrap();
    let server = Server::start_with(
        &dir.path().join("b"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(
        huge_pages_enabled(&server.child.id().to_string()),
        Some(true)
    );
}

/// The worker threads a server's ready line reports.
fn ready_workers(server: &Server) -> usize {
    let ready = server.startup.last().unwrap();
    let count = ready.rsplit(", ").next().unwrap();
    let count = count
        .strip_suffix(" worker threads")
        .or_else(|| count.strip_suffix(" worker thread"))
        .expect(ready);
    count.parse().expect(ready)
}

/// The `/proc` directories of a process's threads whose name says they belong to the
/// tokio runtime: its workers, and its blocking pool (a thread for each blocking task
/// running at once). A thread that ended meanwhile is skipped.
fn runtime_tasks(pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            comm.starts_with("tokio-").then_some(task)
        })
        .collect()
}

/// How many runtime threads a process has (see `runtime_tasks`).
fn runtime_threads(pid: u32) -> usize {
    runtime_tasks(pid).len()
}

#[test]
fn serve_sizes_its_runtime_by_worker_threads_and_refuses_absurd_ones() {
    let dir = tempfile::tempdir().unwrap();
    let three = Server::start_with(&dir.path().join("a"), &["--worker-threads", "3"]);
    assert_eq!(ready_workers(&three), 3);
    // The blocking pool adds a thread or two (the data directory was opened on one).
    let threads = runtime_threads(three.child.id());
    assert!((3..=5).contains(&threads), "{threads} runtime threads");
    drop(three);

    // One worker still serves.
    let config = dir.path().join("strom.toml");
    std::fs::write(&config, "worker_threads = 1\n").unwrap();
    let one = Server::start_with(
        &dir.path().join("b"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(ready_workers(&one), 1);
    strom(&one, &["topic", "create", "t"], "");
    strom(&one, &["produce", "-t", "t"], "x\n");
    drop(one);

    // The environment overrides the file.
    let two = Server::start_with_env(
        &dir.path().join("c"),
        ("STROM_WORKER_THREADS", "2"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(ready_workers(&two), 2);
    drop(two);

    // The default is one per core.
    let auto = Server::start(&dir.path().join("e"));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(ready_workers(&auto), cores);
    drop(auto);

    let stderr = refused_serve(&dir.path().join("d"), &["--worker-threads", "100000"]);
    assert!(stderr.contains("worker_threads 100000"), "{stderr}");
}

/// The connection threads of a process (`server/threads.rs`): each one's name and the
/// time it has run, in ns (`schedstat`), by name.
fn connection_threads(pid: u32) -> Vec<(String, u64)> {
    let mut threads: Vec<(String, u64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            let ran = std::fs::read_to_string(task.join("schedstat")).ok()?;
            let ran = ran.split_whitespace().next()?.parse().ok()?;
            Some((comm.trim().to_string(), ran))
        })
        .filter(|(comm, _)| comm.starts_with("strom-conn-"))
        .collect();
    threads.sort();
    threads
}

fn names(threads: &[(String, u64)]) -> Vec<&str> {
    threads.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn serve_pins_connections_to_threads_of_their_own_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strom.toml");
    std::fs::write(&config, "pin_connections = true\nworker_threads = 3\n").unwrap();
    let server = Server::start_with(
        &dir.path().join("a"),
        &["--config", config.to_str().unwrap()],
    );
    let ready = server.startup.last().unwrap();
    assert!(ready.ends_with(", 3 connection threads"), "{ready}");
    let pid = server.child.id();
    // Each thread starts its server after the ready line: wait until they all sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let idle = loop {
        let before = connection_threads(pid);
        std::thread::sleep(Duration::from_millis(200));
        let after = connection_threads(pid);
        if before == after || Instant::now() > deadline {
            break after;
        }
    };
    assert_eq!(
        names(&idle),
        ["strom-conn-0", "strom-conn-1", "strom-conn-2"]
    );
    // No work-stealing workers: the accepting runtime runs on the main thread, and
    // every runtime's blocking pool is named strom-blocking (the data directory was
    // opened on one), so no thread has tokio's name.
    assert_eq!(
        runtime_threads(pid),
        0,
        "tokio's threads beside the connection threads"
    );
    let blocking = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "strom-blocking")
        .count();
    assert!(blocking >= 1, "no blocking thread: did the names change?");
    // The connection threads ask for the default time slice, as tokio's workers do.
    if kernel_takes_custom_slices() {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.starts_with("strom-conn-") {
                assert_eq!(slice_of(&task.join("sched")), Some(100_000), "{comm}");
            }
        }
    }
    strom(&server, &["topic", "create", "logs"], "");
    strom(&server, &["produce", "-t", "logs"], "one\ntwo\n");
    let values: Vec<String> = consume_json(&server)
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["one", "two"]);
    // Three commands, three connections, dealt in turn: each thread served one (a
    // thread with no connection sleeps and runs no time at all).
    let served = connection_threads(pid);
    assert_eq!(names(&served), names(&idle));
    for ((name, before), (_, after)) in idle.iter().zip(&served) {
        assert!(after > before, "{name} served no connection");
    }
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{log:?}");

    // The environment turns it off again over the file.
    let server = Server::start_with_env(
        &dir.path().join("b"),
        ("STROM_PIN_CONNECTIONS", "false"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(ready_workers(&server), 3);
    assert!(connection_threads(server.child.id()).is_empty());
}

/// Runs `strom serve ARGS` on `dir`, which must refuse to start before it touches
/// `dir`; returns what it printed.
fn refused_serve(dir: &Path, args: &[&str]) -> String {
    let mut command = Server::command();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args);
    let out = run_within(&mut command, b"", Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(!dir.exists(), "refused before the server touched anything");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A thread's time slice as the kernel's scheduler shows it (`se.slice`, ns), from its
/// `/proc/.../sched` file.
fn slice_of(sched: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(sched).ok()?;
    let line = text.lines().find(|l| l.starts_with("se.slice"))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// The time slices of a process's runtime threads (workers and blocking pool); a
/// thread that ended meanwhile is skipped.
fn runtime_slices(pid: u32) -> Vec<u64> {
    runtime_tasks(pid)
        .iter()
        .filter_map(|task| slice_of(&task.join("sched")))
        .collect()
}

/// Asserts that the runtime threads of `server`, at least `threads` of them, all have
/// `slice_ns`. A thread is named before it runs the runtime's start hook, so a thread
/// just started may show its old slice for a moment: waits up to 5 s for agreement.
fn assert_slices(server: &Server, threads: usize, slice_ns: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let slices = runtime_slices(server.child.id());
        if slices.len() >= threads && slices.iter().all(|&s| s == slice_ns) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "want at least {threads} threads of {slice_ns} ns: {slices:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Linux 6.12 or later: the first to take a fair-scheduled thread's slice from
/// `sched_setattr` (older ones accept the call and ignore it).
fn kernel_takes_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = numbers.next().unwrap().parse().unwrap();
    let minor: u32 = numbers.next().unwrap().parse().unwrap();
    (major, minor) >= (6, 12)
}

#[test]
fn serve_asks_for_short_time_slices_and_refuses_ones_the_kernel_would_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let kernel_default = slice_of(Path::new("/proc/thread-self/sched"));
    if !kernel_takes_custom_slices() || kernel_default.is_none() {
        eprintln!("skipped: this kernel neither takes nor shows a thread's time slice");
        return;
    }
    let kernel_default = kernel_default.unwrap();
    assert_ne!(
        kernel_default, 100_000,
        "the test needs a default other than 100 µs"
    );

    // The default: 100 µs on every runtime thread, the blocking pool's too (the data
    // directory is opened on one, so there is at least one beside the two workers).
    let server = Server::start_with(&dir.path().join("a"), &["--worker-threads", "2"]);
    assert_slices(&server, 3, 100_000);
    drop(server);

    // A flag, a file, and the environment over the file.
    let server = Server::start_with(&dir.path().join("b"), &["--time-slice-us", "2000"]);
    assert_slices(&server, 1, 2_000_000);
    drop(server);
    let config = dir.path().join("strom.toml");
    std::fs::write(&config, "time_slice_us = 300\n").unwrap();
    let server = Server::start_with(
        &dir.path().join("c"),
        &["--config", config.to_str().unwrap()],
    );
    assert_slices(&server, 1, 300_000);
    drop(server);
    let server = Server::start_with_env(
        &dir.path().join("d"),
        ("STROM_TIME_SLICE_US", "0"),
        &["--config", config.to_str().unwrap()],
    );
    // 0 leaves the kernel's own, which this test's thread has too.
    assert_slices(&server, 1, kernel_default);
    drop(server);

    // Outside what the kernel takes: refused, before the server touched anything.
    for refused in ["99", "100001"] {
        let stderr = refused_serve(&dir.path().join("e"), &["--time-slice-us", refused]);
        assert!(
            stderr.contains(&format!("time_slice_us {refused}")),
            "{stderr}"
        );
    }
}
