//! Every shell example of README.md that runs `strom`, typed in order as a newcomer
//! would, against a real `strom serve`: each must succeed. Examples that follow
//! forever (`--follow`, `tail -F`) must still be running, unfailed, after a moment.
//! `cargo`, `./scripts/`, `grpcurl`, `pip`, `python` (a venv's python too) and `curl`
//! lines, and `strom serve` (which runs until stopped), are left to the tests that
//! cover them: the metrics example to tests/metrics.rs.

mod common;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{Serve, STROM};

/// Lines that other tests cover, or that need what this test does not have.
const LEFT_TO_OTHERS: [&str; 12] = [
    "strom serve ",
    // The TLS and token examples need a server with a certificate or a tokens file:
    // tests/tls.rs and tests/auth.rs run their flags and `strom token new`.
    "strom topic list -s ",
    "token=",
    "STROM_TOKEN=",
    "curl ",
    "cargo ",
    "./scripts/",
    "grpcurl ",
    "pip ",
    "python ",
    "python3 ",
    ".venv/bin/python ",
];

/// How long the whole README may take; the bench examples take most of it.
const LIMIT: Duration = Duration::from_secs(300);

/// How long a following example must keep running.
const FOLLOW_FOR: Duration = Duration::from_millis(1500);

/// The commands of the README's ```sh blocks, continuation lines joined.
fn shell_examples(readme: &str) -> Vec<String> {
    let mut examples = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_sh = false;
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                let command = std::mem::take(&mut pending).trim().to_string();
                if !command.is_empty() && !command.starts_with('#') {
                    examples.push(command);
                }
            }
        }
    }
    examples
}

fn runs_strom(command: &str) -> bool {
    command.starts_with("strom ") || command.contains("| strom ")
}

fn follows(command: &str) -> bool {
    command
        .split_whitespace()
        .any(|word| word == "--follow" || word == "-F")
}

/// Kills a process group started by `sh` (a pipeline's every process).
fn kill_group(pid: u32) {
    // SAFETY (test code): signalling a process group this test started.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

/// Runs `command` through `sh -c` in `dir`; panics unless it succeeds (or, when it
/// follows, is still running after `FOLLOW_FOR`).
fn run(command: &str, dir: &Path, path: &str, server: &str, deadline: Instant) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", path)
        .env("STROM_SERVER", server)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let until = if follows(command) {
        Instant::now() + FOLLOW_FOR
    } else {
        deadline
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_group(child.id());
    let _ = child.wait();
    let said = || {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&std::fs::read(&out).unwrap()),
            String::from_utf8_lossy(&std::fs::read(&err).unwrap())
        )
    };
    match (status, follows(command)) {
        (Some(status), _) => assert!(
            status.success() && !follows(command),
            "README example `{command}` ended with {status}{}",
            said()
        ),
        (None, true) => {}
        (None, false) => panic!(
            "README example `{command}` ran past the test's limit{}",
            said()
        ),
    }
}

#[test]
fn every_readme_example_runs() {
    let started = Instant::now();
    let readme = include_str!("../README.md");
    let examples = shell_examples(readme);
    for command in &examples {
        assert!(
            runs_strom(command) || LEFT_TO_OTHERS.iter().any(|p| command.starts_with(p)),
            "README example `{command}` is neither run here nor left to another test"
        );
    }
    let to_run: Vec<&String> = examples
        .iter()
        .filter(|c| runs_strom(c) && !LEFT_TO_OTHERS.iter().any(|p| c.starts_with(p)))
        .collect();
    for expected in ["strom topic create logs", "strom bench jitter", "tail -F "] {
        assert!(
            to_run.iter().any(|c| c.starts_with(expected)),
            "no example starts with {expected:?}: is the README read right? {to_run:?}"
        );
    }

    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Serve::start(data.path());
    let bin = Path::new(STROM).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let deadline = started + LIMIT;
    for command in to_run {
        let began = Instant::now();
        run(command, work.path(), &path, &server.addr, deadline);
        eprintln!("{:>6.2} s  {command}", began.elapsed().as_secs_f64());
    }
}

#[test]
fn examples_are_read_from_sh_blocks_only() {
    let readme = "text\n```sh\nstrom a   # note\n# comment\n\ngrpcurl x \\\n  y\n```\n\
                  ```rust\nstrom not\n```\n";
    assert_eq!(
        shell_examples(readme),
        ["strom a   # note", "grpcurl x   y"]
    );
    assert!(follows("tail -F /var/log/app.log | strom produce -t logs"));
    assert!(follows("strom consume -t logs --follow"));
    assert!(!follows("strom consume -t logs --from -10m"));
    assert!(runs_strom("printf 'a\\n' | strom produce -t logs"));
}
