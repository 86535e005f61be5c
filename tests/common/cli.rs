//! The `strom` binary as a person runs it: `strom serve` as a child process on a free
//! loopback port, and client commands run against it with a time limit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::process::run_within;

pub const STROM: &str = env!("CARGO_BIN_EXE_strom");

/// A `strom serve` child, killed when dropped.
pub struct Serve {
    pub child: Child,
    /// The address it listens on.
    pub addr: String,
    /// Every line it has written to stderr so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The address in `strom serve`'s ready line: `strom is ready listen=ADDR` (older)
/// or `serving gRPC on ADDR`.
pub fn ready_address(line: &str) -> Option<String> {
    ["strom is ready listen=", "serving gRPC on "]
        .iter()
        .find_map(|marker| line.split(marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|addr| addr.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == ']')))
        .map(|addr| addr.trim_start_matches('"').to_string())
        .filter(|addr| addr.parse::<std::net::SocketAddr>().is_ok())
}

/// The address in the line `strom serve` logs while it starts, before it is ready:
/// `strom is starting: answering on ADDR ...`.
pub fn starting_address(line: &str) -> Option<String> {
    line.split("strom is starting: answering on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|addr| addr.parse::<std::net::SocketAddr>().is_ok())
        .map(str::to_string)
}

impl Serve {
    pub fn start(dir: &Path) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir);
        Self::spawn(command)
    }

    /// `strom serve` on `addr` (to restart a server where its clients expect it).
    pub fn start_at(dir: &Path, addr: &str) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(dir);
        Self::spawn(command)
    }

    /// `strom serve` on `addr` with more flags.
    pub fn start_at_with_args(dir: &Path, addr: &str, args: &[&str]) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(dir)
            .args(args);
        Self::spawn(command)
    }

    /// `strom serve` with more flags.
    pub fn start_with_args(dir: &Path, args: &[&str]) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args);
        Self::spawn(command)
    }

    /// `strom serve` on `addr` (`127.0.0.1:0` for a free port), returned once it
    /// answers on its port while it starts, not once it is ready.
    pub fn start_answering(dir: &Path, addr: &str) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(dir);
        Self::spawn_until(command, starting_address)
    }

    /// As `start_answering` on a free port, with more flags.
    pub fn start_answering_with(dir: &Path, args: &[&str]) -> Serve {
        let mut command = Command::new(STROM);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args);
        Self::spawn_until(command, starting_address)
    }

    /// `strom serve` with its open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(dir: &Path, nofile: u32) -> Serve {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" serve --listen 127.0.0.1:0 --data-dir \"$1\""
            ))
            .arg(STROM)
            .arg(dir);
        Self::spawn(command)
    }

    fn spawn(command: Command) -> Serve {
        Self::spawn_until(command, ready_address)
    }

    /// Starts `command` and waits for the line `address_in` finds an address in.
    fn spawn_until(mut command: Command, address_in: fn(&str) -> Option<String>) -> Serve {
        let mut child = command
            .env_remove("STROM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strom serve starts");
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&lines);
        // Keeps reading after the ready line, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            addr: String::new(),
            stderr: lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while serve.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("strom serve printed no ready line in 20 s: {seen:?}");
            };
            if let Some(addr) = address_in(&line) {
                serve.addr = addr;
            }
            seen.push(line);
        }
        serve
    }

    /// Runs `strom ARGS --server ADDR` with `stdin`; returns its output, whatever its
    /// exit status.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut command = Command::new(STROM);
        command.args(args).args(["--server", &self.addr]);
        run_within(&mut command, stdin, Duration::from_secs(60))
    }

    /// Sends SIGHUP and waits up to 10 s for a log line containing `logged`.
    pub fn hang_up_until_logged(&self, logged: &str) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        self.wait_logged(logged, Duration::from_secs(10));
    }

    /// Waits up to `limit` for a line containing `logged`; panics, with the lines, if
    /// none comes.
    pub fn wait_logged(&self, logged: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(logged))
        {
            if Instant::now() >= deadline {
                let lines = self.stderr.lock().unwrap().clone();
                panic!("no {logged:?} logged in {limit:?}: {lines:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `strom ARGS --server ADDR` (stderr dropped); each line it prints comes
    /// down the receiver.
    #[allow(dead_code)] // not every test binary uses it
    pub fn spawn_lines(&self, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(STROM)
            .args(args)
            .args(["--server", &self.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        (child, rx)
    }

    /// Like `run`, and panics unless the command succeeds; returns its stdout.
    pub fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "strom {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `child` to exit; kills it and panics if it has not.
pub fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
