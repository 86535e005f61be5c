//! `strom consume --group` and `strom group ...` as a person runs them.

mod common;

use common::cli::Serve;

fn lines(out: Vec<u8>) -> Vec<String> {
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `strom group describe GROUP`: checks the group has no member and returns the last
/// row (its last partition) split into its columns.
fn empty_group_last_row(server: &Serve, group: &str) -> Vec<String> {
    let described = String::from_utf8(server.ok(&["group", "describe", group], b"")).unwrap();
    assert!(described.contains("state empty"), "{described}");
    described
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_group_resumes_where_it_stopped_and_a_reset_replays() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    let input: String = (1..=10).map(|i| format!("r{i}\n")).collect();
    server.ok(&["produce", "-t", "orders"], input.as_bytes());
    // -n 4 stops in the middle of a fetched batch: only what was printed is committed.
    let first = lines(server.ok(
        &["consume", "-t", "orders", "--group", "billing", "-n", "4"],
        b"",
    ));
    assert_eq!(first, ["r1", "r2", "r3", "r4"]);
    let rest = lines(server.ok(&["consume", "-t", "orders", "--group", "billing"], b""));
    assert_eq!(rest, (5..=10).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(
        empty_group_last_row(&server, "billing"),
        ["orders", "0", "10", "10", "0", "-"]
    );
    // Without --execute the plan is printed and nothing moves.
    let plan = server.run(
        &[
            "group", "reset", "billing", "-t", "orders", "--to", "earliest",
        ],
        b"",
    );
    assert!(String::from_utf8_lossy(&plan.stderr).contains("dry run"));
    let row: Vec<String> = lines(plan.stdout)
        .last()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(row, ["orders", "0", "10", "0"]);
    assert!(lines(server.ok(&["consume", "-t", "orders", "--group", "billing"], b"")).is_empty());
    server.ok(
        &[
            "group",
            "reset",
            "billing",
            "-t",
            "orders",
            "--shift-by",
            "-2",
            "--execute",
        ],
        b"",
    );
    let replayed = lines(server.ok(
        &["consume", "--topic-pattern", "ord.*", "--group", "billing"],
        b"",
    ));
    assert_eq!(replayed, ["r9", "r10"]);
    let listed = String::from_utf8(server.ok(&["group", "list"], b"")).unwrap();
    assert!(listed.contains("billing"), "{listed}");
    server.ok(&["group", "delete", "billing"], b"");
    let gone = server.run(&["group", "describe", "billing"], b"");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

/// Ctrl-C (or SIGTERM) on a following `strom consume --group` commits what it printed
/// and leaves the group before it exits (status 130, as a shell reports SIGINT): the
/// group's partitions are free at once, not after the member's session times out.
#[test]
fn an_interrupted_group_consumer_commits_and_leaves_before_it_exits() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    server.ok(&["produce", "-t", "orders"], b"r1\nr2\nr3\n");
    let consume = ["consume", "-t", "orders", "--group", "billing", "--follow"];
    let (mut child, rx) = server.spawn_lines(&consume);
    let printed: Vec<String> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("printed"))
        .collect();
    assert_eq!(printed, ["r1", "r2", "r3"]);
    // SAFETY: a plain signal to our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = common::cli::wait_within(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{status:?}");
    // Right away (the CLI's session timeout is 10 s): no member, everything committed.
    assert_eq!(
        empty_group_last_row(&server, "billing"),
        ["orders", "0", "3", "3", "0", "-"]
    );
}

/// Output that cannot be written (a full disk) is not consumed: the group commits
/// nothing of it, and the command fails (it committed the whole batch). `-n 0` is
/// refused (it printed one record and committed it).
#[test]
fn output_that_cannot_be_written_is_not_committed() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    server.ok(&["produce", "-t", "orders"], b"r1\nr2\nr3\n");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = Command::new(common::cli::STROM)
        .args(["consume", "-t", "orders", "--group", "billing"])
        .args(["--server", &server.addr])
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        empty_group_last_row(&server, "billing"),
        ["orders", "0", "0", "3", "3", "-"]
    );
    let refused = server.run(&["consume", "-t", "orders", "-n", "0"], b"");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(refused.stdout.is_empty());
}

/// A commit that fails at the end (the server gone) fails the command: the records it
/// printed will be printed again, and a script must be able to tell (it exited 0).
#[test]
fn a_failed_final_commit_fails_the_command() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    server.ok(&["produce", "-t", "orders"], b"r1\nr2\nr3\n");
    let mut child = Command::new(common::cli::STROM)
        .args(["consume", "-t", "orders", "--group", "billing"])
        .args(["--server", &server.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for want in ["r1", "r2", "r3"] {
        assert_eq!(lines.next().unwrap().unwrap(), want);
    }
    // Printed; it exits after 2 s with nothing more. The server goes first.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let status = common::cli::wait_within(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("printed again"), "{stderr}");
}

/// On one core, a reader that stops reading for longer than the member's session (10 s)
/// blocked the only runtime thread in a write to stdout: the heartbeat stopped, the
/// member lost its partitions, and when the reader went on, the same process printed
/// its backlog again. Every record must be printed once.
#[test]
fn on_one_core_a_stalled_reader_gets_every_record_once() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    let input: String = (0..30_000).map(|i| format!("record-{i:06}\n")).collect();
    server.ok(&["produce", "-t", "orders"], input.as_bytes());
    let mut child = Command::new("taskset")
        .args(["-c", "0", common::cli::STROM])
        .args(["consume", "-t", "orders", "--group", "billing"])
        .args(["--server", &server.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(13)); // the pipe fills, and stays full
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = common::cli::wait_within(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    let printed: Vec<&str> = out.lines().collect();
    let unique: std::collections::BTreeSet<&str> = printed.iter().copied().collect();
    assert_eq!((printed.len(), unique.len()), (30_000, 30_000));
}

/// A new member waits for the partitions another member holds (here one that stopped
/// heartbeating; its 1 s session must end first): without --follow it exited after 2 s
/// of nothing, having been given nothing yet, and printed nothing.
#[test]
fn a_new_member_waits_for_its_partitions_before_it_counts_as_idle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    server.ok(&["topic", "create", "orders", "-p", "1"], b"");
    server.ok(&["produce", "-t", "orders"], b"r1\nr2\nr3\n");
    // A member that joins, takes the partition and goes quiet.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = strom::client::Client::connect(&server.addr).await.unwrap();
        let mut groups = client.groups();
        let mut request = strom::grpc::pb::HeartbeatRequest {
            group: "billing".into(),
            topics: vec!["orders".into()],
            session_timeout_ms: 1_000,
            ..Default::default()
        };
        let joined = groups
            .heartbeat(request.clone())
            .await
            .unwrap()
            .into_inner();
        request.member_id = joined.member_id;
        request.member_epoch = joined.member_epoch;
        let held = groups.heartbeat(request).await.unwrap().into_inner();
        assert_eq!(held.assignment.len(), 1, "{held:?}");
    });
    let started = std::time::Instant::now();
    let out = lines(server.ok(&["consume", "-t", "orders", "--group", "billing"], b""));
    assert_eq!(out, ["r1", "r2", "r3"], "after {:?}", started.elapsed());
}
