//! `strom consume` as the README shows it: ranges by offset and by time (RFC 3339 too),
//! `--until latest`, a range past a partition's end, the output formats, and partitions
//! added while `--follow` runs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cli::{Serve, STROM};
use common::process::run_within;
use serde_json::Value;

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn ranges_by_offset_time_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "logs", "--partitions", "3"], b"");
    let lines: String = (0..5).map(|i| format!("v{i}\n")).collect();
    server.ok(&["produce", "-t", "logs", "-p", "0"], lines.as_bytes());

    // The README's example on a partition far shorter than 100 records.
    let out = server.run(
        &[
            "consume",
            "-t",
            "logs",
            "-p",
            "0",
            "--from",
            "100",
            "--until",
            "200",
            "--print-key",
        ],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("partition 0 ends before offset 100"), "{err}");

    // `--until latest` with --follow stops by itself at the end it found.
    let consume =
        |args: &[&str]| text(server.ok(&[&["consume", "-t", "logs"][..], args].concat(), b""));
    assert_eq!(consume(&["--until", "latest", "--follow"]), lines);
    assert_eq!(
        consume(&["-p", "0", "--from", "2", "--until", "latest"]),
        "v2\nv3\nv4\n"
    );
    assert_eq!(
        consume(&["-p", "0", "--from", "1", "--until", "3"]),
        "v1\nv2\n"
    );

    // RFC 3339 times, with Z or an offset.
    assert_eq!(consume(&["--from", "2000-01-01T00:00:00Z"]), lines);
    assert_eq!(
        consume(&["--from", "2000-01-01T02:00:00+02:00", "-p", "0"]),
        lines
    );
    assert_eq!(consume(&["--from", "2999-01-01T00:00:00Z"]), "");
    assert_eq!(consume(&["--until", "2000-01-01T00:00:00Z"]), "");
    assert_eq!(consume(&["--until", "2999-01-01T00:00:00Z"]), lines);

    let out = server.run(
        &["consume", "-t", "logs", "--from", "2026-12-01T10:00:00"],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--from") && err.contains("time zone"),
        "{err}"
    );
    let out = server.run(&["consume", "-t", "logs", "-p", "3"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("partitions 0 to 2"),
        "{err}"
    );
}

#[test]
fn templates_and_json_keep_every_byte_and_tell_absent_keys_from_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "t"], b"");
    server.ok(
        &[
            "produce", "-t", "t", "-K", ":", "-H", "app=web", "-H", "v=2",
        ],
        b"user-1:paid\nno key\n:empty key\n\xff\xfe:\x80 binary\n",
    );
    let consume = |format: &str| server.ok(&["consume", "-t", "t", "--format", format], b"");

    assert_eq!(
        &consume(r"%t/%p/%o %k(%K)=%s(%S) [%h]\n")[..],
        &b"t/0/0 user-1(6)=paid(4) [app=web,v=2]\n\
           t/0/1 NULL(-1)=no key(6) [app=web,v=2]\n\
           t/0/2 (0)=empty key(9) [app=web,v=2]\n\
           t/0/3 \xff\xfe(2)=\x80 binary(8) [app=web,v=2]\n"[..]
    );
    assert_eq!(&consume(r"%s")[..], b"paidno keyempty key\x80 binary");
    assert_eq!(&consume(r"%o\t%%\n")[..], b"0\t%\n1\t%\n2\t%\n3\t%\n");
    let out = server.ok(&["consume", "-t", "t", "--print-key", "-n", "3"], b"");
    assert_eq!(text(out), "user-1\tpaid\nNULL\tno key\n\tempty key\n");

    let json: Vec<Value> = text(consume("json"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[0]["key"], "user-1");
    assert_eq!(json[0]["topic"], "t");
    assert_eq!(
        json[0]["headers"],
        serde_json::json!([["app", "web"], ["v", "2"]])
    );
    assert_eq!(json[1]["key"], Value::Null);
    assert_eq!(json[2]["key"], "");
    assert!(json[..3]
        .iter()
        .all(|r| r.get("key_encoding").is_none() && r.get("value_encoding").is_none()));
    assert_eq!(json[3]["key"], "//4=");
    assert_eq!(json[3]["key_encoding"], "base64");
    assert_eq!(json[3]["value"], "gCBiaW5hcnk=");
    assert_eq!(json[3]["value_encoding"], "base64");

    let mut command = Command::new(STROM);
    command.args(["consume", "-t", "t", "--format", "jsn", "-s", &server.addr]);
    let out = run_within(&mut command, b"", Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("use text, json or a template"),
        "{err}"
    );
}

/// `--follow` reads the partitions added to its topic while it runs, each from its
/// first record (produced before the command saw the partition) even with `--from
/// latest`.
#[test]
fn follow_reads_partitions_added_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "grows", "-p", "1"], b"");
    server.ok(&["produce", "-t", "grows"], b"before\n");
    let consume = ["consume", "-t", "grows", "--from", "latest", "--follow"];
    let (mut child, rx) = server.spawn_lines(&consume);
    // Until it prints, it may not have looked at the topic yet.
    let mut first = String::new();
    while first.is_empty() {
        server.ok(&["produce", "-t", "grows", "-p", "0"], b"running\n");
        first = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    }
    assert_eq!(first, "running");
    server.ok(&["topic", "alter", "grows", "--partitions", "3"], b"");
    server.ok(&["produce", "-t", "grows", "-p", "1"], b"one\n");
    server.ok(&["produce", "-t", "grows", "-p", "2"], b"two\n");
    let mut printed = Vec::new();
    while !(printed.contains(&"one".to_string()) && printed.contains(&"two".to_string())) {
        let line = rx.recv_timeout(Duration::from_secs(30));
        printed.push(line.unwrap_or_else(|_| panic!("printed only {printed:?}")));
    }
    // Each once (one reader a partition), later copies of "running", and nothing from
    // before the command started.
    std::thread::sleep(Duration::from_secs(3));
    printed.extend(rx.try_iter());
    for once in ["one", "two"] {
        assert_eq!(
            printed.iter().filter(|l| *l == once).count(),
            1,
            "{printed:?}"
        );
    }
    assert!(printed
        .iter()
        .all(|l| ["running", "one", "two"].contains(&l.as_str())));
    let _ = child.kill();
    let _ = child.wait();
}
