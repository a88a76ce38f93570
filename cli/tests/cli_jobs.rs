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
