//! `pgbroker pause`, `resume`, `schedule` and the job features shown by `jobs`: the built
//! binary against a test database.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgbroker"))
        .env_remove("DATABASE_URL")
        .args(args)
        .output()
        .expect("run pgbroker")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn pause_and_resume_a_queue() {
    let db = support::db();
    let url = db.url.as_str();
    assert_eq!(ok(&["pause", "mail", "--url", url]), "queue mail paused\n");
    assert_eq!(
        ok(&["pause", "mail", "--url", url]),
        "queue mail was paused already\n"
    );
    assert_eq!(
        db.broker().paused_queues().unwrap()[0].0,
        "mail".to_string()
    );
    let j: Value = serde_json::from_str(&ok(&["resume", "mail", "--json", "--url", url])).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"queue": "mail", "state": "resumed", "changed": true})
    );
    assert_eq!(
        ok(&["resume", "mail", "--url", url]),
        "queue mail was not paused\n"
    );
    let o = run(&["pause", "bad name", "--url", url]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn schedule_add_list_remove() {
    let db = support::db();
    let url = db.url.as_str();
    let out = ok(&[
        "schedule",
        "add",
        "nightly",
        "0 3 * * *",
        "reports",
        r#"{"k":1}"#,
        "--tz",
        "Europe/Paris",
        "--url",
        url,
    ]);
    assert!(out.starts_with("schedule nightly next runs at 20"), "{out}");
    let j: Value = serde_json::from_str(&ok(&[
        "schedule",
        "add",
        "ping",
        "*/10 * * * * *",
        "pings",
        "--skip-missed",
        "--json",
        "--url",
        url,
    ]))
    .unwrap();
    assert_eq!(j["name"], "ping");
    let list = ok(&["schedule", "list", "--json", "--url", url]);
    let rows: Vec<Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "ping"); // soonest first
    assert_eq!(rows[0]["skip_missed"], true);
    assert_eq!(rows[0]["next_run_at"], j["next_run_at"]);
    assert_eq!(rows[1]["name"], "nightly");
    assert_eq!(rows[1]["time_zone"], "Europe/Paris");
    assert_eq!(rows[1]["payload"], serde_json::json!({"k": 1}));
    let table = ok(&["schedule", "list", "--url", url]);
    assert_eq!(table.lines().count(), 4, "{table}"); // header, rule, two schedules
    assert!(table.lines().next().unwrap().contains("next_run_at"));

    let o = run(&["schedule", "add", "bad", "0 25 * * *", "q", "--url", url]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hour: 25 is outside 0 to 23"), "{err}");

    assert_eq!(
        ok(&["schedule", "remove", "nightly", "--url", url]),
        "schedule nightly removed\n"
    );
    let o = run(&["schedule", "remove", "nightly", "--url", url]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn jobs_shows_progress_and_jobs_waiting_for_parents() {
    let db = support::db();
    let url = db.url.as_str();
    let broker = db.broker();
    let parent = broker.enqueue("work", r#"{"n": 1}"#).unwrap();
    let child = broker
        .enqueue_job(&pgbroker::Job::new("work", "{}").after(&[parent]))
        .unwrap();
    let jobs = broker
        .claim_jobs("work", "w", 10, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(jobs.len(), 1);
    db.client()
        .execute(
            "SELECT pgbroker.set_progress($1, '{\"pct\": 40}')",
            &[&parent],
        )
        .unwrap();
    let out = ok(&["jobs", "work", "--json", "--url", url]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], parent.get());
    assert_eq!(rows[0]["progress"], serde_json::json!({"pct": 40}));
    assert_eq!(rows[1]["id"], child.get());
    assert_eq!(rows[1]["progress"], Value::Null);
    let table = ok(&["jobs", "work", "--url", url]);
    assert!(table.contains(r#"{"pct":40}"#), "{table}");
    assert!(table.contains("after parents"), "{table}");
}
