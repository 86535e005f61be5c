//! `strom consume` as the README shows it: ranges by offset and by time (RFC 3339 too),
//! `--until latest`, and a range past a partition's end.

mod common;

use common::cli::Serve;

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
