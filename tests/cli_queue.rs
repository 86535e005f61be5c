//! `strom queue` and `strom work` as a person runs them, against `strom serve`.

mod common;

use common::cli::Serve;

#[test]
fn work_runs_a_command_per_job_accepting_rejecting_and_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    serve.ok(&["topic", "create", "jobs", "-p", "2"], b"");
    // A bare `config` is refused rather than creating the group to show its settings.
    assert!(!serve.run(&["queue", "config", "q"], b"").status.success());
    // A pair with no key is the user's slip, told as such (it was sent, and the server
    // answered about a key "").
    let output = serve.run(&["queue", "config", "q", "--set", "=5"], b"");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("\"=5\" is not KEY=VALUE"),
        "{err}"
    );
    let listed = String::from_utf8(serve.ok(&["queue", "list"], b"")).unwrap();
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    serve.ok(
        &[
            "queue",
            "config",
            "q",
            "--set",
            "start=earliest",
            "--set",
            "dead.letter.topic=jobs-dead",
        ],
        b"",
    );
    serve.ok(
        &["produce", "-t", "jobs", "-K", ":"],
        b"a:ok-1\nb:ok-2\nc:bad-1\nd:flaky-1\n",
    );
    // ok-* succeed, bad-* are rejected (exit 3), flaky-* fail on their first delivery.
    let script = format!(
        r#"v=$(cat); echo "$v $STROM_KEY $STROM_DELIVERY_COUNT $STROM_PARTITION" >> {}/log
case "$v" in
  ok-*) exit 0;;
  bad-*) exit 3;;
  *) [ "$STROM_DELIVERY_COUNT" -ge 2 ] && exit 0; exit 1;;
esac"#,
        out.path().display()
    );
    // `run` adds --server at the end, after `--`, where the command takes it as its
    // arguments (sh's $0 and $1): so it is given before `--` as well.
    let output = serve.run(
        &[
            "work",
            "-t",
            "jobs",
            "-g",
            "q",
            "--idle-exit-ms",
            "5000",
            "-s",
            &serve.addr,
            "--",
            "sh",
            "-c",
            &script,
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 accepted, 1 rejected, 1 released"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(out.path().join("log")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(lines[0].starts_with("bad-1 c 1 "), "{log}");
    assert!(lines[1].starts_with("flaky-1 d 1 "), "{log}");
    assert!(lines[2].starts_with("flaky-1 d 2 "), "{log}");
    assert!(lines[3].starts_with("ok-1 a 1 "), "{log}");
    // The rejected job went to the dead-letter topic.
    let dead = serve.ok(
        &[
            "consume",
            "-t",
            "jobs-dead",
            "-p",
            "0",
            "--from",
            "earliest",
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&dead).trim(), "bad-1");
    let described = String::from_utf8(serve.ok(&["queue", "describe", "q"], b"")).unwrap();
    assert!(
        described.contains("dead.letter.topic=jobs-dead"),
        "{described}"
    );
    let listed = String::from_utf8(serve.ok(&["queue", "list"], b"")).unwrap();
    assert!(listed.contains("q "), "{listed}");
    serve.ok(
        &["queue", "reset", "q", "-t", "jobs", "--to", "earliest"],
        b"",
    );
    serve.ok(&["queue", "delete", "q"], b"");
    let gone = serve.run(&["queue", "describe", "q"], b"");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

/// `strom work` outlives a server restart (a stop, then a SIGKILL): its stream broke, it opens it again and
/// takes the jobs produced after the restart (it exited 1 at the first restart, a
/// hostile sweep found, so a job runner died with every server restart).
#[test]
fn work_outlives_a_server_restart() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    serve.ok(&["topic", "create", "jobs"], b"");
    serve.ok(&["queue", "config", "q", "--set", "start=earliest"], b"");
    let log = out.path().join("log");
    let script = format!("cat >> {}; echo >> {}", log.display(), log.display());
    let mut work = std::process::Command::new(common::cli::STROM)
        .args(["work", "-t", "jobs", "-g", "q", "-s", &serve.addr, "--"])
        .args(["sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ran = |values: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = std::fs::read_to_string(&log).unwrap_or_default();
            if values.iter().all(|v| done.lines().any(|l| l == *v)) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{values:?} not all run: {done:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    serve.ok(&["produce", "-t", "jobs"], b"a\nb\n");
    ran(&["a", "b"]);
    let addr = serve.addr.clone();
    let pid = rustix::process::Pid::from_raw(serve.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut stopped = serve;
    assert!(common::cli::wait_within(&mut stopped.child, Duration::from_secs(20)).success());
    let serve = Serve::start_at(dir.path(), &addr);
    serve.ok(&["produce", "-t", "jobs"], b"c\nd\n");
    ran(&["c", "d"]);
    // And a crash: the stream ends in a transport error rather than UNAVAILABLE.
    let mut killed = serve;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let serve = Serve::start_at(dir.path(), &addr);
    serve.ok(&["produce", "-t", "jobs"], b"e\nf\n");
    ran(&["e", "f"]);
    assert!(work.try_wait().unwrap().is_none(), "strom work still runs");
    work.kill().unwrap();
    let output = work.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("opening it again"), "{said}");
}
