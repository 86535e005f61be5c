//! Running a child process with a time limit: its output is read while it runs (so a
//! chatty child cannot fill a pipe and stall), and a child still running at the limit
//! is killed and the test fails.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `command` with `stdin` as its input; returns its output once it exits.
pub fn run_within(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let pid = child.id() as libc::pid_t;
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&stdin); // a child may exit without reading it all
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => {
            let _ = writer.join();
            output.expect("the command's output is readable")
        }
        Err(_) => {
            // SAFETY (test code): signalling our own child, which has not been reaped
            // (its waiter thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}
