//! The `pgbroker` commands of the durable log and the job queue (publish, tail, enqueue, jobs,
//! retry, cancel), driven as a user would: the built binary against a test database.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use pgbroker::topic::StartAt;
use serde_json::{json, Value};

fn pgbroker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgbroker"));
    c.env_remove("DATABASE_URL");
    c
}

fn run(args: &[&str]) -> Output {
    pgbroker().args(args).output().expect("run pgbroker")
}

/// Runs with `input` on stdin.
fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = pgbroker()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgbroker");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(o));
    stdout(o)
}

/// Asserts the command failed with `code` and exactly the one line `line` on stderr.
fn assert_error(o: &Output, code: i32, line: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err, format!("{line}\n"));
}

/// The JSON lines of a tail.
fn events(o: &Output) -> Vec<Value> {
    ok(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(text: &str) -> Vec<i64> {
    text.lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn published_lines_are_tailed_in_order_and_replayed_from_a_position() {
    let db = support::db();
    let url = db.url.as_str();
    db.broker()
        .subscription("audit")
        .pattern("orders.*")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    let o = run_with_stdin(
        &[
            "publish",
            "orders.created",
            "-",
            "--key",
            "c-7",
            "--url",
            url,
        ],
        "{\"n\": 1}\n\n[2]\n\"three\"\n",
    );
    let published = ids(&ok(&o));
    assert_eq!(published.len(), 3, "{published:?}");
    let o = run(&[
        "publish",
        "orders.paid",
        "{\"n\": 4}",
        "--headers",
        "{\"trace\": \"t-1\"}",
        "--url",
        url,
    ]);
    assert_eq!(ids(&ok(&o)).len(), 1);

    let got = events(&run(&[
        "tail",
        "audit",
        "--count",
        "3",
        "--timeout",
        "20",
        "--url",
        url,
    ]));
    assert_eq!(got.len(), 3);
    let payloads: Vec<&Value> = got.iter().map(|e| &e["payload"]).collect();
    assert_eq!(payloads, [&json!({"n": 1}), &json!([2]), &json!("three")]);
    for e in &got {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "created_at",
                "headers",
                "key",
                "payload",
                "position",
                "topic"
            ]
        );
        assert_eq!(e["topic"], "orders.created");
        assert_eq!(e["key"], "c-7");
        assert_eq!(e["headers"], Value::Null);
        assert!(e["created_at"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let position = |e: &Value| -> (u64, i64) {
        let (tx, id) = e["position"].as_str().unwrap().split_once('-').unwrap();
        (tx.parse().unwrap(), id.parse().unwrap())
    };
    let ids_read: Vec<i64> = got.iter().map(|e| position(e).1).collect();
    assert_eq!(ids_read, published);
    assert!(position(&got[0]) < position(&got[1]) && position(&got[1]) < position(&got[2]));

    // Acknowledged as printed: the next tail goes on with the fourth event.
    let got = events(&run(&[
        "tail",
        "audit",
        "--count",
        "1",
        "--timeout",
        "20",
        "--url",
        url,
    ]));
    assert_eq!(got[0]["payload"], json!({"n": 4}));
    assert_eq!(got[0]["headers"], json!({"trace": "t-1"}));
    assert_eq!(got[0]["key"], Value::Null);
    let o = run(&[
        "tail",
        "audit",
        "--count",
        "1",
        "--timeout",
        "0.3",
        "--url",
        url,
    ]);
    assert_error(
        &o,
        1,
        "pgbroker: error: timed out after 0.3 s with 0 of 1 events",
    );

    // --from replays what came after a position.
    let from = got_position(&events(&run(&[
        "tail",
        "audit",
        "--from",
        "beginning",
        "--count",
        "1",
        "--timeout",
        "20",
        "--url",
        url,
    ])));
    let again = events(&run(&[
        "tail",
        "audit",
        "--from",
        &from,
        "--count",
        "3",
        "--timeout",
        "20",
        "--url",
        url,
    ]));
    let replayed: Vec<&Value> = again.iter().map(|e| &e["payload"]).collect();
    assert_eq!(replayed, [&json!([2]), &json!("three"), &json!({"n": 4})]);

    // --topic reads through a temporary subscription, gone afterwards.
    let all = events(&run(&[
        "tail",
        "--topic",
        "orders.#",
        "--from",
        "beginning",
        "--count",
        "4",
        "--timeout",
        "20",
        "--url",
        url,
    ]));
    assert_eq!(all.len(), 4);
    assert_eq!(all[3]["topic"], "orders.paid");
    let subs: Vec<String> = db
        .client()
        .query("SELECT name FROM pgbroker.subscriptions", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(subs, ["audit"]);
}

fn got_position(events: &[Value]) -> String {
    events[0]["position"].as_str().unwrap().to_owned()
}

#[test]
fn bad_publish_input_is_a_usage_error_and_writes_nothing() {
    let db = support::db();
    let url = db.url.as_str();
    let o = run(&["publish", "orders", "{nope", "--url", url]);
    assert_error(
        &o,
        2,
        "pgbroker: error: the payload is not valid JSON: key must be a string at line 1 column 2",
    );
    // A bad first line: nothing before it, nothing published (the lines before a bad one are
    // published, as the help says: tests/cli_bad_input.rs).
    let o = run_with_stdin(
        &["publish", "orders", "-", "--url", url],
        "not json\n{\"a\": 1}\n",
    );
    assert_error(
        &o,
        2,
        "pgbroker: error: stdin line 1 is not valid JSON: expected ident at line 1 column 2; \
         0 event(s) published before it",
    );
    let o = run(&["publish", "orders", "{}", "--headers", "[1]", "--url", url]);
    assert_error(
        &o,
        2,
        "pgbroker: error: --headers must be a JSON object, got [1]",
    );
    let o = run(&["publish", "bad topic", "{}", "--url", url]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["enqueue", "mail", "{nope", "--url", url]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let written: i64 = db
        .client()
        .query_one(
            "SELECT (SELECT count(*) FROM pgbroker.events) + (SELECT count(*) FROM pgbroker.jobs)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
    let o = run(&["tail", "nobody", "--count", "1", "--url", url]);
    assert_error(
        &o,
        1,
        "pgbroker: error: not found: no subscription \"nobody\"",
    );
    let o = run(&["tail", "--from", "beginning", "--url", url]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn enqueued_jobs_are_listed_cancelled_and_retried() {
    let db = support::db();
    let url = db.url.as_str();
    let o = run(&[
        "enqueue",
        "mail",
        "{\"to\": \"a@example.com\"}",
        "--priority",
        "-5",
        "--max-attempts",
        "3",
        "--url",
        url,
    ]);
    let id = ids(&ok(&o))[0];
    let o = run(&[
        "enqueue",
        "mail",
        "--delay",
        "1h",
        "--unique-key",
        "k",
        "--url",
        url,
    ]);
    let delayed = ids(&ok(&o))[0];
    // The same unique key: the pending job's id.
    let o = run(&["enqueue", "mail", "--unique-key", "k", "--url", url]);
    assert_eq!(ids(&ok(&o)), [delayed]);
    let o = run_with_stdin(&["enqueue", "other", "-", "--url", url], "1\n2\n");
    let more = ids(&ok(&o));
    assert_eq!(more.len(), 2);

    let o = run(&["jobs", "mail", "--json", "--url", url]);
    let listed: Vec<Value> = ok(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let j = &listed[0];
    assert_eq!(
        (
            &j["id"],
            &j["queue"],
            &j["state"],
            &j["priority"],
            &j["attempt"]
        ),
        (
            &json!(id),
            &json!("mail"),
            &json!("available"),
            &json!(-5),
            &json!(0)
        )
    );
    assert_eq!(j["max_attempts"], 3);
    assert_eq!(j["payload"], json!({"to": "a@example.com"}));
    assert_eq!(listed[1]["unique_key"], "k");
    assert!(
        listed[1]["run_at"].as_str().unwrap() > listed[1]["created_at"].as_str().unwrap(),
        "{}",
        listed[1]
    );
    let o = run(&["jobs", "--url", url]);
    let table = ok(&o);
    assert_eq!(table.lines().count(), 2 + 4, "{table}");
    assert!(table.starts_with("id"), "{table}");
    assert!(table.contains("{\"to\":\"a@example.com\"}"), "{table}");

    let o = run(&["cancel", &id.to_string(), "--url", url]);
    assert_eq!(ok(&o), format!("job {id} is cancelled\n"));
    let o = run(&["jobs", "--state", "cancelled", "--json", "--url", url]);
    let cancelled: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(
        (&cancelled["id"], &cancelled["state"]),
        (&json!(id), &json!("cancelled"))
    );
    let o = run(&["cancel", &id.to_string(), "--url", url]);
    assert_error(
        &o,
        1,
        &format!(
            "pgbroker: error: job {id} is cancelled: only available or running jobs can be cancelled"
        ),
    );

    let o = run(&["retry", &id.to_string(), "--json", "--url", url]);
    assert_eq!(
        serde_json::from_str::<Value>(ok(&o).trim()).unwrap(),
        json!({"id": id, "state": "available"})
    );
    assert_eq!(
        db.broker().job(pgbroker::JobId(id)).unwrap().unwrap().state,
        pgbroker::JobState::Available
    );
    let o = run(&["retry", &delayed.to_string(), "--url", url]);
    assert_error(
        &o,
        1,
        &format!(
            "pgbroker: error: job {delayed} is available: only dead or cancelled jobs can be re-driven"
        ),
    );
    for cmd in ["retry", "cancel"] {
        let o = run(&[cmd, "999999", "--url", url]);
        assert_error(&o, 1, "pgbroker: error: no job 999999");
    }
    let o = run(&["cancel", "x", "--url", url]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["jobs", "--state", "sleeping", "--url", url]);
    assert_error(
        &o,
        2,
        "pgbroker: error: --state must be available, running, completed, dead or cancelled; \
         got \"sleeping\"",
    );
}

#[test]
fn tail_topic_filters_and_conditions() {
    let db = support::db();
    let url = &db.url;
    let broker = db.broker();
    for n in 1..=6 {
        broker
            .publish("orders.created", &json!({"n": n, "customer": n % 2}))
            .unwrap();
    }
    let tail = |extra: &[&str]| -> Vec<i64> {
        let mut args = vec!["tail", "--topic", "orders.#", "--from", "beginning"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--timeout", "20", "--url", url]);
        events(&run(&args))
            .iter()
            .map(|e| e["payload"]["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        tail(&["--filter", r#"{"customer": 0}"#, "--count", "3"]),
        [2, 4, 6]
    );
    let cond = "(payload->>'n')::int > (params->>'min')::int";
    let got = tail(&[
        "--condition",
        cond,
        "--params",
        r#"{"min": 4}"#,
        "--count",
        "2",
    ]);
    assert_eq!(got, [5, 6]);
    let o = run(&[
        "tail",
        "--topic",
        "orders.#",
        "--condition",
        "nextval('x') > 0",
        "--url",
        url,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid condition"), "{}", stderr(&o));
    assert!(broker.subscriptions().unwrap().is_empty());
}
