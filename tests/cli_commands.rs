//! The `strom` command's handling of its surroundings: a reader that goes away
//! (`strom topic list | head -1`), where `--server` may be written, and `topic alter`
//! as its help shows it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli::{ready_address, wait_within, Serve, STROM};
use common::process::run_within;

/// Runs `strom ARGS` with stdout (or stderr) a pipe whose reader is already gone;
/// returns its exit status and what it said on stderr.
fn with_closed(
    addr: &str,
    args: &[&str],
    close_stderr: bool,
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(STROM)
        .args(args)
        .env("STROM_SERVER", addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command has written anything: its first write meets EPIPE.
    let mut err = String::new();
    if close_stderr {
        drop(child.stderr.take());
    } else {
        drop(child.stdout.take());
    }
    let status = wait_within(&mut child, Duration::from_secs(60));
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        stderr.read_to_string(&mut err).unwrap();
    }
    (status, err)
}

#[test]
fn a_closed_stdout_is_a_quiet_end_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t", "--partitions", "2"], b"");
    let lines: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    server.ok(&["produce", "-t", "t"], lines.as_bytes());
    for args in [
        &["topic", "list"][..],
        &["topic", "describe", "t"],
        &["topic", "create", "u"],
        &["topic", "alter", "t", "--config", "segment.ms=60000"],
        &["offsets", "-t", "t"],
        &["consume", "-t", "t"],
        &["consume", "-t", "t", "--format", "json"],
        &["consume", "-t", "t", "--format", "%o %s\\n", "-p", "1"],
        &[
            "bench",
            "produce",
            "-t",
            "b",
            "--records",
            "100",
            "--batch",
            "10",
        ],
        &["bench", "consume", "-t", "b", "--json"],
        &["bench", "jitter", "--duration", "1s"],
    ] {
        let (status, err) = with_closed(&server.addr, args, false);
        assert!(
            status.success() && err.is_empty(),
            "strom {args:?} with a closed stdout: {status}: {err}"
        );
    }
    // Messages to a closed stderr are lost, not fatal.
    let (status, _) = with_closed(&server.addr, &["topic", "delete", "u"], true);
    assert!(
        status.success(),
        "topic delete with a closed stderr: {status}"
    );
}

#[test]
fn server_flag_before_or_after_the_subcommand_or_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "here"], b"");
    let nobody = "127.0.0.1:9"; // discard port: nothing listens there
    let list = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(STROM);
        command.args(args).env_remove("STROM_SERVER");
        if let Some(env) = env {
            command.env("STROM_SERVER", env);
        }
        let out = run_within(&mut command, b"", Duration::from_secs(60));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let addr = server.addr.as_str();
    for (args, env) in [
        (&["-s", addr, "topic", "list"][..], None),
        (&["--server", addr, "topic", "list"], Some(nobody)),
        (&["topic", "list", "-s", addr], None),
        (&["topic", "-s", addr, "list"], None),
        (&["topic", "list"], Some(addr)),
        // The later flag wins.
        (&["-s", nobody, "topic", "list", "-s", addr], Some(nobody)),
        (&["-s", addr, "offsets", "-t", "here"], None),
    ] {
        let (ok, out, err) = list(args, env);
        assert!(
            ok && (out.contains("here") || out.contains("partition")),
            "{args:?} {env:?}: {err}"
        );
    }
    let (ok, _, err) = list(&["-s", nobody, "topic", "list"], Some(addr));
    assert!(
        !ok && err.contains(nobody),
        "a flag beats the environment: {err}"
    );
}

#[test]
fn topic_alter_takes_key_value_pairs_as_its_help_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "logs"], b"");
    let out = server.ok(
        &[
            "topic",
            "alter",
            "logs",
            "segment.bytes=268435456",
            "--config",
            "segment.ms=60000",
        ],
        b"",
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("segment.bytes = 268435456"), "{out}");
    assert!(out.contains("segment.ms = 60000"), "{out}");

    // Nothing to change, a pair without '=', and a key as in Rust code rather than as
    // users type it: each says what to write instead.
    for (args, expected) in [
        (
            &["topic", "alter", "logs"][..],
            "strom topic alter logs segment.bytes=",
        ),
        (
            &["topic", "alter", "segment.ms=1"],
            "strom topic alter NAME key=value",
        ),
        (
            &["topic", "alter", "logs", "segment.bytes"],
            "is not key=value",
        ),
        (
            &["topic", "alter", "logs", "segment_bytes=268435456"],
            "did you mean segment.bytes",
        ),
        (
            &["topic", "create", "x", "-c", "Segment.MS=1000"],
            "did you mean segment.ms",
        ),
    ] {
        let out = server.run(args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn ready_lines_of_either_form_give_the_address() {
    assert_eq!(
        ready_address("2026-01-01T00:00:00Z  INFO strom::cli::serve: strom is ready listen=127.0.0.1:4567 data_dir=/tmp/x"),
        Some("127.0.0.1:4567".into())
    );
    assert_eq!(
        ready_address("INFO strom::server: serving gRPC on 127.0.0.1:4567"),
        Some("127.0.0.1:4567".into())
    );
    assert_eq!(
        ready_address(r#"{"fields":{"message":"serving gRPC on 127.0.0.1:4567"}}"#),
        Some("127.0.0.1:4567".into())
    );
    assert_eq!(
        ready_address("INFO strom::server: serving address=Some(127.0.0.1:1)"),
        None
    );
}

#[test]
fn delete_records_moves_the_start_that_describe_shows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "r"], b"");
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    server.ok(&["produce", "-t", "r", "-p", "0"], lines.as_bytes());
    let said = server.ok(
        &["topic", "delete-records", "r", "-p", "0", "--before", "40"],
        b"",
    );
    assert_eq!(
        String::from_utf8(said).unwrap(),
        "topic r partition 0 now starts at offset 40\n"
    );
    let described = String::from_utf8(server.ok(&["topic", "describe", "r"], b"")).unwrap();
    assert!(described.contains("oldest record"), "{described}");
    let row = described
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("a row for partition 0: {described}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["0", "40", "100"], "{row}");
    assert!(
        cells[5].ends_with('Z'),
        "the oldest record's time, RFC 3339: {row}"
    );
    let refused = server.run(
        &[
            "topic",
            "delete-records",
            "r",
            "-p",
            "0",
            "--before",
            "soon",
        ],
        b"",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("latest"), "{err}");
    let past = server.run(
        &["topic", "delete-records", "r", "-p", "0", "--before", "101"],
        b"",
    );
    assert!(!past.status.success());
    let err = String::from_utf8_lossy(&past.stderr);
    assert!(err.contains("[40, 100)"), "{err}");
    server.ok(
        &[
            "topic",
            "delete-records",
            "r",
            "-p",
            "0",
            "--before",
            "latest",
        ],
        b"",
    );
    let described = String::from_utf8(server.ok(&["topic", "describe", "r"], b"")).unwrap();
    assert!(described.contains("  100            100"), "{described}");
}

/// `strom exchange`: create, bind, publish lines, and read them back from each topic;
/// an unroutable publish fails the command, unless --drop-unroutable.
#[test]
fn exchange_commands_route_published_lines_to_bound_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "eu"], b"");
    server.ok(&["topic", "create", "audit"], b"");
    server.ok(&["exchange", "create", "orders", "--type", "topic"], b"");
    server.ok(&["exchange", "bind", "orders", "eu", "-k", "eu.#"], b"");
    server.ok(&["exchange", "bind", "orders", "audit", "-k", "#"], b"");
    let lines: String = (0..2500).map(|i| format!("k{i}:line {i}\n")).collect();
    let args = [
        "exchange",
        "publish",
        "orders",
        "-r",
        "eu.created",
        "-K",
        ":",
    ];
    let said = server.run(&args, lines.as_bytes());
    assert!(said.status.success(), "{said:?}");
    let err = String::from_utf8_lossy(&said.stderr);
    assert!(err.contains("published 2500 records"), "{err}");
    server.ok(&["exchange", "publish", "orders", "-r", "us.x"], b"us\n");
    for (topic, count) in [("eu", 2500), ("audit", 2501)] {
        let out = server.ok(
            &[
                "consume", "-t", topic, "--from", "earliest", "--until", "latest",
            ],
            b"",
        );
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), count, "{topic}");
        assert!(out.starts_with("line 0\n"), "{topic}: {out:.40}");
    }
    let listed = String::from_utf8(server.ok(&["exchange", "list"], b"")).unwrap();
    assert_eq!(listed, "orders\ttopic\t2\n");
    let described = String::from_utf8(server.ok(&["exchange", "describe", "orders"], b"")).unwrap();
    assert_eq!(described, "audit\t#\neu\teu.#\n");
    server.ok(&["exchange", "unbind", "orders", "audit", "-k", "#"], b"");
    let refused = server.run(&["exchange", "publish", "orders", "-r", "us.x"], b"us\n");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("drop_unroutable"), "{err}");
    let args = [
        "exchange",
        "publish",
        "orders",
        "-r",
        "us.x",
        "--drop-unroutable",
    ];
    server.ok(&args, b"us\n");
    server.ok(&["exchange", "delete", "orders"], b"");
    assert!(server.ok(&["exchange", "list"], b"").is_empty());
}
