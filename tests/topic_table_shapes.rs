//! Shaped table events against a real PostgreSQL: columns included or left out, a condition
//! on the change, lower-case topics, nothing from rolled back changes.

mod support;

use std::time::Duration;

use pgbroker::topic::StartAt;
use pgbroker::{Broker, ErrorKind, TableOp};
use serde_json::{json, Value};

/// The (topic, payload, key) of the next `n` events, in log order, acknowledged.
fn take(broker: &Broker, sub: &str, n: usize) -> Vec<(String, Value, Option<String>)> {
    let mut out = Vec::new();
    for _ in 0..500 {
        let b = broker.read(sub, 100).unwrap();
        for e in b.events() {
            out.push((
                e.topic().to_owned(),
                e.payload().clone(),
                e.key().map(str::to_owned),
            ));
        }
        if let Some(p) = b.ack_position() {
            broker.ack(sub, p).unwrap();
        }
        if out.len() >= n {
            assert_eq!(out.len(), n, "{out:?}");
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{sub}: {} of {n} events: {out:?}", out.len());
}

#[test]
fn table_events_carry_the_chosen_columns_of_the_chosen_changes() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute(
        r#"CREATE TABLE "Users" (id int PRIMARY KEY, email text, status text, pw text)"#,
    )
    .unwrap();
    // Inserts and deletes always, updates only when the status changes; never the password.
    broker
        .table_changes("\"Users\"")
        .exclude_columns(&["pw"])
        .condition("old.id IS NULL OR new.id IS NULL OR new.status IS DISTINCT FROM old.status")
        .publish()
        .unwrap();
    broker
        .subscription("s")
        .pattern("public.users.#")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    // One string would be one transaction, which the ROLLBACK would undo whole.
    for sql in [
        r#"INSERT INTO "Users" VALUES (1, 'a@x', 'new', 's1'), (2, 'b@x', NULL, 's2')"#,
        r#"UPDATE "Users" SET email = email || '.org'"#,
        r#"UPDATE "Users" SET status = 'active' WHERE id = 1"#,
        r#"BEGIN; UPDATE "Users" SET status = 'gone'; INSERT INTO "Users" VALUES (3); ROLLBACK"#,
        r#"DELETE FROM "Users" WHERE id = 2"#,
    ] {
        c.batch_execute(sql).unwrap();
    }
    let got = take(&broker, "s", 4);
    let event = |topic: &str, body: Value, key: &str| {
        let mut payload = json!({"schema": "public", "table": "Users"});
        let fields = body.as_object().unwrap().clone();
        payload.as_object_mut().unwrap().extend(fields);
        (topic.to_owned(), payload, Some(key.to_owned()))
    };
    assert_eq!(
        got,
        [
            event(
                "public.users.insert",
                json!({"op": "insert", "row": {"id": 1, "email": "a@x", "status": "new"}}),
                "[1]"
            ),
            event(
                "public.users.insert",
                json!({"op": "insert", "row": {"id": 2, "email": "b@x", "status": null}}),
                "[2]"
            ),
            event(
                "public.users.update",
                json!({"op": "update",
                       "row": {"id": 1, "email": "a@x.org", "status": "active"},
                       "old": {"id": 1, "email": "a@x.org", "status": "new"}}),
                "[1]"
            ),
            event(
                "public.users.delete",
                json!({"op": "delete", "old": {"id": 2, "email": "b@x.org", "status": null}}),
                "[2]"
            ),
        ]
    );

    // Only some columns, from SQL; calling again replaces the shaping.
    c.batch_execute(
        r#"SELECT pgbroker.publish_table_changes('"Users"', ARRAY['update'],
                                                columns => ARRAY['id', 'status'])"#,
    )
    .unwrap();
    c.batch_execute(r#"UPDATE "Users" SET email = 'z', status = 'x'"#)
        .unwrap();
    let got = take(&broker, "s", 1);
    assert_eq!(
        got[0].1,
        json!({"schema": "public", "table": "Users", "op": "update",
               "row": {"id": 1, "status": "x"}, "old": {"id": 1, "status": "active"}})
    );
}

#[test]
fn bad_shapes_are_refused_and_change_nothing() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, a text); CREATE TABLE kept (x int)")
        .unwrap();
    let refused = [
        (
            broker.table_changes("t").columns(&["id", "nope"]),
            "no column nope",
        ),
        (
            broker.table_changes("t").columns(&[]),
            "no column (none given)",
        ),
        (
            broker
                .table_changes("t")
                .columns(&["id"])
                .exclude_columns(&["a"]),
            "not both",
        ),
        (
            broker.table_changes("t").condition("new.nope"),
            "invalid condition",
        ),
        (
            broker
                .table_changes("t")
                .condition("true)::boolean; DROP TABLE kept; SELECT (true"),
            "multi-query",
        ),
        (
            broker.table_changes("t").condition("now()"), // not a boolean
            "cannot cast",
        ),
        (broker.table_changes("t").ops(&[]), "at least one operation"),
    ];
    for (builder, why) in refused {
        let err = builder
            .publish()
            .map(|_| panic!("accepted: {why}"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    let triggers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
    c.batch_execute("SELECT * FROM kept").unwrap();
    // Plain tables still publish as before.
    broker
        .publish_table_changes("t", &[TableOp::Insert])
        .unwrap();
}
