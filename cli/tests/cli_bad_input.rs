//! Issue 13 for the `pgbroker` command: closed pipes, options that do nothing, Ctrl-C, stdin
//! with a bad line, out-of-range numbers, and the benchmark's database.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn pgbroker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgbroker"));
    c.env_remove("DATABASE_URL");
    c
}

fn run(args: &[&str]) -> Output {
    pgbroker().args(args).output().expect("run pgbroker")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn usage_error(o: &Output, words: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err:?}");
    }
}

/// Sends SIGINT (Ctrl-C) to the child.
fn interrupt(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgbroker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_closed_stdout_and_stderr_end_commands_quietly() {
    // `pgbroker demo 2>&1 | head -3`: the reader is gone before the output is written.
    let mut child = pgbroker()
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = wait_with_timeout(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "not a panic (101)");
    // The same for a command on a database.
    let db = support::db();
    for args in [
        &["stats", "--url", &db.url][..],
        &["stats", "--json", "--url", &db.url],
        &["setup", "--url", &db.url],
        &["jobs", "--url", &db.url],
        &["bench", "--list"],
    ] {
        let mut child = pgbroker()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        let status = wait_with_timeout(&mut child, Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn demo_refuses_a_url_it_would_not_use() {
    let o = run(&["demo", "--url", "postgres://nobody@127.0.0.1:1/none"]);
    usage_error(&o, &["takes no --url"]);
    assert_eq!(stderr(&o).lines().count(), 1);
}

#[test]
fn json_is_offered_only_where_it_changes_the_output() {
    for args in [
        &["notify", "c", "x", "--json"][..],
        &["listen", "c", "--json"],
        &["publish", "t", "--json"],
        &["tail", "s", "--json"],
        &["enqueue", "q", "--json"],
    ] {
        let o = run(args);
        usage_error(&o, &["--json"]);
    }
    for args in [
        &["setup", "--help"][..],
        &["migrate", "--help"],
        &["jobs", "--help"],
        &["retry", "--help"],
        &["cancel", "--help"],
        &["stats", "--help"],
        &["bench", "--help"],
        &["demo", "--help"],
    ] {
        let o = run(args);
        assert!(stdout(&o).contains("--json"), "{args:?}");
    }
}

#[test]
fn ctrl_c_exits_130_from_listen_and_tail() {
    let db = support::db();
    let mut listen = pgbroker()
        .args(["listen", "chan", "--url", &db.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(listen.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    interrupt(&listen);
    let status = wait_with_timeout(&mut listen, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));

    let mut tail = pgbroker()
        .args(["tail", "--topic", "orders.#", "--url", &db.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = db.client();
    let subscribed = support::wait_until(Duration::from_secs(10), || {
        c.query_one("SELECT count(*) FROM pgbroker.subscriptions", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    assert!(subscribed);
    interrupt(&tail);
    let status = wait_with_timeout(&mut tail, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    let left: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.subscriptions", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the temporary subscription is removed");
}

#[test]
fn a_bad_stdin_line_stops_after_the_lines_before_it() {
    let db = support::db();
    for (command, table) in [("publish", "events"), ("enqueue", "jobs")] {
        let mut child = pgbroker()
            .args([command, "t", "-", "--url", &db.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"a\": 1}\n{\"a\": 2}\nnot json\n{\"a\": 3}\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        usage_error(&o, &["stdin line 3", "2 "]);
        assert_eq!(stdout(&o).lines().count(), 2, "{command}: the two ids");
        let mut c = db.client();
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM pgbroker.{table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "{command}");
    }
    // The help says so.
    for command in ["publish", "enqueue"] {
        let help = stdout(&run(&[command, "--help"]));
        assert!(help.contains("the lines before it are"), "{help}");
    }
}

#[test]
fn numbers_out_of_range_are_usage_errors_not_panics() {
    let db = support::db();
    for delay in ["999999999999999999999", "99999999d", "36501d"] {
        let o = run(&["enqueue", "q", "--delay", delay, "--url", &db.url]);
        usage_error(&o, &["--delay"]);
    }
    let o = run(&["enqueue", "q", "--delay", "36500d", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in ["0", "5000000000", "2147483648"] {
        let o = run(&["enqueue", "q", "--max-attempts", n, "--url", &db.url]);
        usage_error(&o, &["1..=2147483647"]);
    }
    let help = stdout(&run(&["enqueue", "--help"]));
    assert!(help.contains("1 to 2147483647"), "{help}");
}

#[test]
fn bench_uses_database_url_only_when_given_as_url() {
    let db = support::empty_db();
    let o = pgbroker()
        .args(["bench", "--only", "publish_single_t4", "--messages", "200"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("$DATABASE_URL is not used by bench"));
    // Printed as it finished, under its header, then the footer.
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("workload"), "{out}");
    assert!(lines[2].starts_with("publish_single_t4"), "{out}");
    assert!(out.contains("private cluster"), "{out}");
    let mut c = db.client();
    let installed: bool = c
        .query_one("SELECT to_regnamespace('pgbroker') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(
        !installed,
        "nothing was written to the DATABASE_URL database"
    );
}

#[test]
fn bench_drops_what_it_created_on_ctrl_c() {
    let db = support::db();
    let mut child = pgbroker()
        .args([
            "bench",
            "--only",
            "enqueue_single_t4",
            "--messages",
            "100000000",
            "--url",
            &db.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = db.client();
    let busy = support::wait_until(Duration::from_secs(60), || {
        c.query_one("SELECT to_regnamespace('pgbroker_bench') IS NOT NULL", &[])
            .unwrap()
            .get::<_, bool>(0)
    });
    assert!(busy, "the benchmark started");
    std::thread::sleep(Duration::from_secs(2));
    interrupt(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let left: bool = c
        .query_one(
            "SELECT to_regnamespace('pgbroker_bench') IS NOT NULL
                 OR EXISTS (SELECT 1 FROM pgbroker.jobs)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!left, "the benchmark's schema and jobs are gone: {err}");
    let _ = Value::Null;
}
