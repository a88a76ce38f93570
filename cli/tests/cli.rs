//! The `pgbroker` command, driven as a user would: the built binary against a test database.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// libpq's variables that name a server: cleared so that only what a test sets counts.
const PG_VARIABLES: [&str; 7] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
    "PGPASSWORD",
];

fn pgbroker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgbroker"));
    c.env_remove("DATABASE_URL");
    for v in PG_VARIABLES {
        c.env_remove(v);
    }
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

/// Asserts the command failed with `code` and exactly one `pgbroker: error:` line.
fn assert_one_line_error(o: &Output, code: i32, starts: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err:?}");
    assert!(err.starts_with(starts), "stderr: {err:?}");
}

#[test]
fn setup_installs_then_reports_up_to_date() {
    let db = support::empty_db();
    let v = pgbroker::SCHEMA_VERSION;
    let o = run(&["setup", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("installed pgbroker schema version {v}\n")
    );
    let o = run(&["migrate", "--url", &db.url]);
    assert_eq!(
        stdout(&o),
        format!("pgbroker schema version {v} is up to date\n")
    );
    let o = run(&["setup", "--json", "--url", &db.url]);
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j, serde_json::json!({"previous": v, "version": v}));
}

/// Starts `listen` and waits until it says it is listening; returns the child and the rest
/// of its stderr (kept open: the command goes on reporting there).
fn spawn_listen(args: &[&str]) -> (Child, BufReader<ChildStderr>) {
    let mut child = pgbroker()
        .arg("listen")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("pgbroker: listening on "), "{line:?}");
    (child, err)
}

/// `{"channel":C,"payload":P,"pid":N}` with any pid.
fn assert_line(line: &str, channel: &str, payload: &str) {
    let prefix = format!(
        "{{\"channel\":{},\"payload\":{},\"pid\":",
        Value::from(channel),
        Value::from(payload)
    );
    let pid = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix}N}}"));
    assert!(pid.parse::<i32>().unwrap() > 0, "{line:?}");
}

#[test]
fn notify_and_listen_round_trip() {
    let db = support::db();
    let (listen, _stderr) = spawn_listen(&[
        "orders",
        "Mixed \"Case\"",
        "--count",
        "4",
        "--timeout",
        "20",
        "--url",
        &db.url,
    ]);
    let o = run(&["notify", "orders", "first", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let o = run(&["notify", "Mixed \"Case\"", "{\"a\": 1}", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut stdin_notify = pgbroker()
        .args(["notify", "orders", "-", "--url", &db.url])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    stdin_notify
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    assert!(stdin_notify.wait().unwrap().success());

    let out = listen.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 4, "{text}");
    // In order per channel; across channels, listener threads may interleave.
    let on = |prefix: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{{\"channel\":{}", Value::from(prefix))))
            .collect()
    };
    let orders = on("orders");
    assert_eq!(orders.len(), 3, "{text}");
    assert_line(orders[0], "orders", "first");
    assert_line(orders[1], "orders", "line one");
    assert_line(orders[2], "orders", "line two");
    let mixed = on("Mixed \"Case\"");
    assert_eq!(mixed.len(), 1, "{text}");
    assert_line(mixed[0], "Mixed \"Case\"", "{\"a\": 1}");
}

#[test]
fn listen_says_on_stderr_when_it_reconnects() {
    let db = support::db();
    let (listen, mut status) =
        spawn_listen(&["jobs", "--count", "1", "--timeout", "30", "--url", &db.url]);
    assert!(support::wait_until(Duration::from_secs(10), || {
        support::terminate_backends(&db, "LISTEN%") > 0
    }));
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            status.read_line(&mut line).unwrap() > 0,
            "stderr ended: {lines:?}"
        );
        let done = line.contains("reconnected");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(
        lines[0].starts_with("pgbroker: connection of listener \"jobs\" lost, reconnecting: "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("pgbroker: listener \"jobs\" reconnected after "),
        "{lines:?}"
    );
    let o = run(&["notify", "jobs", "after", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = listen.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_line(stdout(&out).trim_end(), "jobs", "after");
}

#[test]
fn listen_timeout_short_of_count_fails() {
    let db = support::db();
    let o = run(&[
        "listen",
        "quiet",
        "--count",
        "1",
        "--timeout",
        "0.3",
        "--url",
        &db.url,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(
        err.lines().last(),
        Some("pgbroker: error: timed out after 0.3 s with 0 of 1 notifications")
    );
}

/// Tests that hold the cluster's horizon back, or need it not held, run one at a time.
static HORIZON: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn stats_json_and_prometheus() {
    let _horizon = HORIZON.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    // A writing transaction left open holds back the log horizon.
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let o = run(&["stats", "--json", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["schema"]["version"], pgbroker::SCHEMA_VERSION);
    assert!(j["notify"]["queue_usage"].as_f64().unwrap() >= 0.0);
    assert!(j["connections"]["total"].as_i64().unwrap() >= 2);
    assert!(j["connections"]["max"].as_i64().unwrap() > 0);
    // The oldest xid holder in the cluster is at least as old as ours.
    assert!(
        j["horizon"]["holdback_seconds"].as_f64().unwrap() >= 0.3,
        "{j}"
    );
    assert!(j["horizon"]["holdback_xids"].as_i64().unwrap() >= 1, "{j}");
    assert!(j["horizon"]["pid"].as_i64().is_some(), "{j}");

    let o = run(&["stats", "--prometheus", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "# TYPE pgbroker_notification_queue_usage_ratio gauge\n",
        "\npgbroker_notification_queue_usage_ratio ",
        &format!("\npgbroker_schema_version {}\n", pgbroker::SCHEMA_VERSION),
        "\npgbroker_connections{state=\"",
        "\npgbroker_connections_total ",
        "\npgbroker_connections_max ",
        "\npgbroker_horizon_holdback_seconds ",
        "\npgbroker_horizon_holdback_xids ",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    holder.batch_execute("ROLLBACK").unwrap();

    let o = run(&["stats", "--url", &db.url]);
    assert!(stdout(&o).contains("horizon.holdback_seconds"));
}

#[test]
fn stats_of_queues_and_subscriptions() {
    use pgbroker::queue::Job;
    use pgbroker::topic::StartAt;
    use std::time::Duration;

    let _horizon = HORIZON.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    let broker = db.broker();
    broker.enqueue("mail", "{}").unwrap();
    broker
        .enqueue_job(&Job::new("mail", "{}").delay(Duration::from_secs(3600)))
        .unwrap();
    broker
        .enqueue_job(&Job::new("mail", "{}").max_attempts(1))
        .unwrap();
    // Claims the older ready job first; fail one of the two claimed, the other stays running.
    let claimed = broker
        .claim_jobs("mail", "w", 2, Duration::from_secs(60))
        .unwrap();
    assert_eq!(claimed.len(), 2);
    broker.fail_job(&claimed[1], "boom", None).unwrap();

    broker
        .subscription("audit")
        .pattern("orders.#")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    for i in 0..3 {
        broker
            .publish("orders.created", &serde_json::json!({ "i": i }))
            .unwrap();
    }
    // Readable once no older transaction of the cluster (other tests') is running.
    let mut first = None;
    assert!(support::wait_until(Duration::from_secs(20), || {
        first = broker.read("audit", 1).unwrap().last_position();
        first.is_some()
    }));
    broker.ack("audit", first.unwrap()).unwrap();
    // A writing transaction left open holds back the event published after it.
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .unwrap();
    let holder_pid: i32 = db
        .client()
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND datname = $1",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    broker
        .publish("orders.paid", &serde_json::json!({}))
        .unwrap();

    let o = run(&["stats", "--json", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mail = &j["queues"]["mail"];
    assert_eq!(
        (
            &mail["available"],
            &mail["scheduled"],
            &mail["running"],
            &mail["dead"],
            &mail["completed"],
            &mail["cancelled"]
        ),
        (
            &0.into(),
            &1.into(),
            &1.into(),
            &1.into(),
            &0.into(),
            &0.into()
        ),
        "{j}"
    );
    assert_eq!(mail["oldest_available_seconds"], 0.0, "{j}");
    let audit = &j["subscriptions"]["audit"];
    assert_eq!(audit["events_behind"], 3, "{j}");
    assert_eq!(audit["held_by_horizon"], 1, "{j}");
    assert_eq!(audit["horizon_pid"], holder_pid, "{j}");
    assert_eq!(audit["partitions"], 1, "{j}");
    assert_eq!(audit["dead_letters"], 0, "{j}");
    assert!(audit["oldest_seconds"].as_f64().unwrap() > 0.0, "{j}");

    let o = run(&["stats", "--prometheus", "--url", &db.url]);
    let text = stdout(&o);
    for line in [
        "pgbroker_queue_jobs{queue=\"mail\",state=\"dead\"} 1\n",
        "pgbroker_queue_jobs{queue=\"mail\",state=\"scheduled\"} 1\n",
        "pgbroker_queue_oldest_available_seconds{queue=\"mail\"} 0\n",
        "pgbroker_subscription_events_behind{subscription=\"audit\"} 3\n",
        "pgbroker_subscription_events_held_by_horizon{subscription=\"audit\"} 1\n",
        "# TYPE pgbroker_subscription_oldest_event_age_seconds gauge\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    holder.batch_execute("ROLLBACK").unwrap();

    let o = run(&["stats", "--url", &db.url]);
    let text = stdout(&o);
    assert!(text.contains("queues.mail.dead"), "{text}");
    assert!(text.contains("subscriptions.audit.events_behind"), "{text}");
}

#[test]
fn stats_without_the_schema() {
    let db = support::empty_db();
    let o = run(&["stats", "--json", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["schema"]["version"], Value::Null);
    let o = run(&["stats", "--prometheus", "--url", &db.url]);
    assert!(!stdout(&o).contains("\npgbroker_schema_version "));
}

#[test]
fn demo_delivers_all_but_the_rolled_back() {
    let o = run(&["demo", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6);
    let got: Vec<(u64, usize)> = steps
        .iter()
        .map(|s| {
            let n = s["received"].as_array().unwrap().len();
            (s["expected"].as_u64().unwrap(), n)
        })
        .collect();
    assert_eq!(got, [(1, 1), (1, 1), (0, 0), (2, 2), (1, 1), (1, 1)]);
    assert_eq!(steps[0]["received"][0]["payload"], "hello");
}

#[test]
fn no_database_is_a_usage_error() {
    for cmd in [
        &["setup"][..],
        &["stats"],
        &["notify", "c", "x"],
        &["listen", "c"],
        &["publish", "t", "{}"],
        &["tail", "s"],
        &["enqueue", "q"],
        &["jobs"],
        &["retry", "1"],
        &["cancel", "1"],
    ] {
        let o = run(cmd);
        assert_one_line_error(&o, 2, "pgbroker: error: no database given");
    }
    let o = pgbroker()
        .args(["setup"])
        .env("DATABASE_URL", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn without_a_url_the_pg_variables_name_the_database() {
    let db = support::db();
    let pg: pgbroker::postgres::Config = db.url.parse().unwrap();
    let host = match &pg.get_hosts()[0] {
        pgbroker::postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("{other:?}"),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
    let o = pgbroker()
        .args(["enqueue", "from_env", "{}"])
        .env("PGHOST", &host)
        .env("PGPORT", &port)
        .env("PGUSER", pg.get_user().unwrap())
        .env("PGDATABASE", &db.name)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let n: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pgbroker.jobs WHERE queue = 'from_env'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // A port where nothing listens: the error names it, in one line.
    let o = pgbroker()
        .args(["setup"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        1,
        "pgbroker: error: connection failed: connection refused by 127.0.0.1:1: no PostgreSQL is listening there",
    );
}

#[test]
fn transaction_pooling_needs_a_session_url_to_listen() {
    let db = support::db();
    let o = run(&[
        "listen",
        "c",
        "--count",
        "1",
        "--transaction-pooling",
        "--url",
        &db.url,
    ]);
    assert_one_line_error(
        &o,
        2,
        "pgbroker: error: configuration error: this needs a session connection",
    );
    assert!(stderr(&o).contains("--session-url"), "{}", stderr(&o));
    // With one, listening works; notify goes through the (here: same) pooled URL.
    let (child, _err) = spawn_listen(&[
        "c",
        "--count",
        "1",
        "--transaction-pooling",
        "--session-url",
        &db.url,
        "--url",
        &db.url,
    ]);
    let o = run(&[
        "notify",
        "c",
        "hi",
        "--transaction-pooling",
        "--url",
        &db.url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"hi\""));
}

#[test]
fn bad_input_is_one_line() {
    let db = support::db();
    let o = run(&["notify", "", "x", "--url", &db.url]);
    assert_one_line_error(
        &o,
        2,
        "pgbroker: error: invalid name: channel name is empty",
    );
    let long = "c".repeat(64);
    let o = run(&["listen", &long, "--url", &db.url]);
    assert_one_line_error(
        &o,
        2,
        "pgbroker: error: invalid name: channel name is 64 bytes",
    );
    let big = "x".repeat(8000);
    let o = run(&["notify", "c", &big, "--url", &db.url]);
    assert_one_line_error(&o, 2, "pgbroker: error: payload too large");
    let o = run(&["setup", "--url", "not a url"]);
    assert_one_line_error(&o, 2, "pgbroker: error: configuration error");
    let o = run(&["setup", "--url", "postgres://nobody@127.0.0.1:1/none"]);
    assert_one_line_error(&o, 1, "pgbroker: error: connection failed");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["listen"]).status.code(), Some(2));
    assert_eq!(run(&["bench", "--messages", "lots"]).status.code(), Some(2));
    let o = run(&["bench", "--rounds", "0"]);
    assert_one_line_error(&o, 2, "pgbroker: error: --rounds must be at least 1");
    let o = run(&["bench", "--only", "nope"]);
    assert_one_line_error(&o, 2, "pgbroker: error: no workload named \"nope\"");
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

#[test]
fn bench_smoke() {
    // Its log reads end at the horizon: not while another test holds it back.
    let _horizon = HORIZON.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    let o = run(&["bench", "--messages", "1000", "--json", "--url", &db.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(j["peak_rss_kb"].as_u64().unwrap() > 0);
    assert_eq!(j["private_cluster"], false);
    let rows = j["workloads"].as_array().unwrap();
    let row = |name: &str| -> &Value {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing in {j}"))
    };
    for name in [
        "publish_single_t4",
        "enqueue_single_t4",
        "publish_batch_10000",
        "claim_complete_b100_t4",
        "log_read_sub10",
        "pgmb_1kb_b100_p5_c10",
    ] {
        let r = row(name);
        assert!(r["raw_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["pgbroker_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Both sides did all the work: every seeded job claimed, every event read by all.
    assert_eq!(row("claim_complete_b100_t4")["pgbroker_messages"], 1000);
    assert_eq!(row("log_read_sub10")["pgbroker_messages"], 10_000);
    for name in ["watch_table_1k", "watch_table_100k", "notify_latency"] {
        let r = row(name);
        assert!(r["pgbroker_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(row("watch_table_100k")["messages"], 1000);
    assert!(
        row("watch_table_1k")["pgbroker_notifies_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(row("notify_latency")["pgbroker_p99_ms"].as_f64().unwrap() > 0.0);
    // The bench's tables are gone afterwards, and its rows in pgbroker's.
    let mut c = db.client();
    let left: bool = c
        .query_one(
            "SELECT to_regnamespace('pgbroker_bench') IS NOT NULL
                 OR EXISTS (SELECT 1 FROM pgbroker.events)
                 OR EXISTS (SELECT 1 FROM pgbroker.jobs)
                 OR EXISTS (SELECT 1 FROM pgbroker.subscriptions)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!left);
}

#[test]
fn bench_peer_workloads_smoke() {
    let _horizon = HORIZON.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    let only = "lease_*,subscription_one_*,event_latency_200,job_latency_200";
    let o = run(&[
        "bench",
        "--messages",
        "300",
        "--json",
        "--url",
        &db.url,
        "--only",
        only,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = j["workloads"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "lease_batched_t1",
            "lease_batched_t4",
            "lease_one_t1",
            "subscription_one_p1",
            "subscription_one_p4",
            "event_latency_200",
            "job_latency_200"
        ]
    );
    for r in rows {
        // Both sides handled every message, and the WAL each wrote is reported.
        let want = if r["name"].as_str().unwrap().contains("latency") {
            60
        } else {
            300
        };
        assert_eq!(r["messages"], want, "{r}");
        assert_eq!(r["pgbroker_messages"], want, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(rows[0]["pgbroker_wal_bytes"].as_f64().unwrap() > 0.0);
    assert!(rows[6]["pgbroker_p99_ms"].as_f64().unwrap() > 0.0);
    // The batched lease-mode rows have PGMQ's side, the one-at-a-time ones graphile-worker's,
    // each run in full on the same database; the latency rows have no peer side.
    let peers = ["pgmq", "pgmq", "graphile", "graphile", "graphile"];
    for (r, peer) in rows.iter().zip(peers) {
        assert_eq!(r["peer"], peer, "{r}");
        assert_eq!(r["peer_messages"], 300, "{r}");
        assert!(r["peer_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["peer_ratio"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["peer_wal_bytes"].as_f64().unwrap() > 0.0, "{r}");
    }
    for r in &rows[5..] {
        assert!(r.get("peer").is_none(), "{r}");
    }
}
