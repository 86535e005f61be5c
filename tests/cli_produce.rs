//! `strom produce` fed by input that has not ended, as from `tail -F app.log`: a
//! refusal that no retry can cure ends it at once with status 1, while the input is
//! still open; one the producer retries is counted and the rest goes on.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{wait_within, Serve, STROM};

/// `strom produce ARGS` with stdin left open for the test to write to.
fn produce(addr: &str, args: &[&str]) -> (Child, ChildStdin) {
    let mut child = Command::new(STROM)
        .arg("produce")
        .args(args)
        .args(["--server", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Waits for `child` to end by itself within `limit` (stdin still open); returns
/// whether it succeeded, and its stderr.
fn ends_within(mut child: Child, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    let status = wait_within(&mut child, limit);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(started.elapsed() < limit, "{err}");
    (status.success(), err)
}

#[test]
fn an_unknown_topic_fails_before_any_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    let (child, _stdin) = produce(&server.addr, &["-t", "mistyped"]);
    let (ok, err) = ends_within(child, Duration::from_secs(10));
    assert!(!ok && err.contains("\"mistyped\" does not exist"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    server.ok(&["topic", "create", "two", "-p", "2"], b"");
    let (child, _stdin) = produce(&server.addr, &["-t", "two", "-p", "2"]);
    let (ok, err) = ends_within(child, Duration::from_secs(10));
    assert!(!ok && err.contains("--partition 2 does not exist"), "{err}");
}

#[test]
fn a_refused_record_ends_the_command_while_input_is_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(
        &["topic", "create", "small", "-c", "max.message.bytes=100"],
        b"",
    );
    let (child, mut stdin) = produce(&server.addr, &["-t", "small"]);
    writeln!(stdin, "fits").unwrap();
    writeln!(stdin, "{}", "x".repeat(200)).unwrap();
    stdin.flush().unwrap();
    // stdin stays open: the command must not wait for its end to tell.
    let (ok, err) = ends_within(child, Duration::from_secs(10));
    assert!(!ok, "{err}");
    assert!(
        err.contains("line 2:") && err.contains("max.message.bytes=200"),
        "{err}"
    );
    drop(stdin);

    // A topic deleted under a running producer: NOT_FOUND from the server.
    server.ok(&["topic", "create", "doomed"], b"");
    let (child, mut stdin) = produce(&server.addr, &["-t", "doomed"]);
    writeln!(stdin, "one").unwrap();
    stdin.flush().unwrap();
    // Until "one" is stored, then delete the topic and send another line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ok(&["consume", "-t", "doomed"], b"").is_empty() {
        assert!(Instant::now() < deadline, "the first line was never stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.ok(&["topic", "delete", "doomed"], b"");
    writeln!(stdin, "two").unwrap();
    stdin.flush().unwrap();
    let (ok, err) = ends_within(child, Duration::from_secs(10));
    assert!(
        !ok && err.contains("line 2") && err.contains("NotFound"),
        "{err}"
    );
}

#[test]
fn records_the_server_cannot_take_for_now_are_retried_counted_and_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "logs"], b"");
    let (child, mut stdin) = produce(&server.addr, &["-t", "logs"]);
    writeln!(stdin, "stored").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ok(&["consume", "-t", "logs"], b"").is_empty() {
        assert!(Instant::now() < deadline, "the first line was never stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A record is readable a moment before its acknowledgement reaches the producer:
    // killed in that moment, the server leaves "stored" unacknowledged, and the command
    // rightly counts it with the lost (it failed so on a loaded machine). The ack takes
    // milliseconds; a second is room to spare.
    std::thread::sleep(Duration::from_secs(1));
    drop(server); // killed: from now on UNAVAILABLE
    writeln!(stdin, "lost").unwrap();
    drop(stdin);
    // The producer retries for its delivery timeout (5 s) before it gives a record up.
    let (ok, err) = ends_within(child, Duration::from_secs(30));
    assert!(!ok, "{err}");
    assert!(
        err.contains("line 2") && err.contains("Unavailable"),
        "{err}"
    );
    assert!(err.contains("1 of 2 records were not produced"), "{err}");
}
