//! Table-change notifications.

use crate::support;

use std::time::Duration;

use pgbroker::{ErrorKind, Event, TableOp};
use serde_json::json;

fn next_json(l: &pgbroker::Listener) -> serde_json::Value {
    loop {
        match l.recv_timeout(Duration::from_secs(10)).unwrap() {
            Some(Event::Notification(n)) => return n.json().unwrap(),
            Some(_) => continue,
            None => panic!("no notification"),
        }
    }
}

#[test]
fn insert_update_delete_are_notified_as_json() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute("CREATE TABLE job (id int PRIMARY KEY, status text)")
        .unwrap();
    broker
        .watch_table("job", "job_channel", &TableOp::ALL)
        .unwrap();
    let l = broker.listen("job_channel").unwrap();

    c.batch_execute(
        "INSERT INTO job VALUES (1, 'new');
         UPDATE job SET status = 'done' WHERE id = 1;
         DELETE FROM job WHERE id = 1;",
    )
    .unwrap();
    assert_eq!(
        next_json(&l),
        json!({"op": "insert", "schema": "public", "table": "job", "row": {"id": 1, "status": "new"}})
    );
    assert_eq!(
        next_json(&l),
        json!({"op": "update", "schema": "public", "table": "job",
               "row": {"id": 1, "status": "done"}, "old": {"id": 1, "status": "new"}})
    );
    assert_eq!(
        next_json(&l),
        json!({"op": "delete", "schema": "public", "table": "job", "old": {"id": 1, "status": "done"}})
    );

    // Rolled-back changes notify nothing.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("INSERT INTO job VALUES (2, 'ghost')")
        .unwrap();
    tx.rollback().unwrap();
    assert!(l
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());

    assert!(broker.unwatch_table("job", "job_channel").unwrap());
    assert!(!broker.unwatch_table("job", "job_channel").unwrap());
    c.batch_execute("INSERT INTO job VALUES (3, 'quiet')")
        .unwrap();
    assert!(l
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

#[test]
fn only_selected_ops_and_odd_names() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute(
        r#"CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."My Table" (id int PRIMARY KEY)"#,
    )
    .unwrap();
    broker
        .watch_table(
            r#""Odd Schema"."My Table""#,
            "Odd \"Channel\"",
            &[TableOp::Delete],
        )
        .unwrap();
    let l = broker.listen("Odd \"Channel\"").unwrap();
    c.batch_execute(
        r#"INSERT INTO "Odd Schema"."My Table" VALUES (1); DELETE FROM "Odd Schema"."My Table""#,
    )
    .unwrap();
    assert_eq!(
        next_json(&l),
        json!({"op": "delete", "schema": "Odd Schema", "table": "My Table", "old": {"id": 1}})
    );
    assert!(l
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

#[test]
fn oversized_rows_fall_back_to_the_primary_key() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute("CREATE TABLE doc (a int, b text, body text, PRIMARY KEY (a, b)); CREATE TABLE nokey (body text)")
        .unwrap();
    broker.watch_table("doc", "docs", &TableOp::ALL).unwrap();
    broker
        .watch_table("nokey", "docs", &[TableOp::Insert])
        .unwrap();
    let l = broker.listen("docs").unwrap();
    c.execute("INSERT INTO doc VALUES (7, 'k', $1)", &[&"x".repeat(9000)])
        .unwrap();
    assert_eq!(
        next_json(&l),
        json!({"op": "insert", "schema": "public", "table": "doc", "truncated": true,
               "key": {"a": 7, "b": "k"}})
    );
    c.execute("INSERT INTO nokey VALUES ($1)", &[&"x".repeat(9000)])
        .unwrap();
    assert_eq!(
        next_json(&l),
        json!({"op": "insert", "schema": "public", "table": "nokey", "truncated": true})
    );
}

#[test]
fn bad_tables_and_channels_are_rejected_without_side_effects() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute("CREATE TABLE t (id int)").unwrap();
    let err = broker
        .watch_table("missing", "c", &TableOp::ALL)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = broker
        .watch_table("t; DROP TABLE t", "c", &TableOp::ALL)
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidName | ErrorKind::NotFound),
        "{err}"
    );
    let err = broker.watch_table("", "c", &TableOp::ALL).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = broker
        .watch_table("t", &"c".repeat(64), &TableOp::ALL)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = broker.watch_table("t", "c", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let exists: bool = c
        .query_one("SELECT to_regclass('t') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(exists);
}
