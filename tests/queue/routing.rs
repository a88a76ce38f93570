//! Routing: queues bound to topic patterns receive one job per matching event.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::topic::NewEvent;
use pgbroker::{ErrorKind, QueueBinding};
use serde_json::json;

fn routed_jobs(db: &support::TestDb, queue: &str) -> Vec<(String, serde_json::Value)> {
    let mut c = db.client();
    c.query(
        "SELECT payload->>'topic', payload->'payload' FROM pgbroker.jobs WHERE queue = $1 ORDER BY id",
        &[&queue],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn route_trigger_exists(db: &support::TestDb) -> bool {
    let mut c = db.client();
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'pgbroker.events'::regclass AND tgname = 'events_route')",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn bound_queues_get_one_job_per_matching_event() {
    let db = support::db();
    let broker = db.broker();
    assert!(
        !route_trigger_exists(&db),
        "no trigger while nothing is bound"
    );
    assert!(broker.bind_queue("billing", "orders.*").unwrap());
    assert!(
        !broker.bind_queue("billing", "orders.*").unwrap(),
        "binding twice is a no-op"
    );
    assert!(broker.bind_queue("audit", "#").unwrap());
    assert!(route_trigger_exists(&db));
    assert_eq!(
        broker.queue_bindings().unwrap(),
        vec![
            QueueBinding {
                queue: "audit".into(),
                pattern: "#".into()
            },
            QueueBinding {
                queue: "billing".into(),
                pattern: "orders.*".into()
            },
        ]
    );

    let id = broker.publish("orders.created", &json!({"n": 1})).unwrap();
    broker.publish("users.created", &json!({"n": 2})).unwrap();
    broker
        .publish("orders.eu.created", &json!({"n": 3}))
        .unwrap();
    broker
        .publish_event(
            &NewEvent::new("orders.paid", json!({"n": 4}))
                .key("k")
                .headers(json!({"h": 1})),
        )
        .unwrap();

    assert_eq!(
        routed_jobs(&db, "billing"),
        vec![
            ("orders.created".into(), json!({"n": 1})),
            ("orders.paid".into(), json!({"n": 4})),
        ]
    );
    assert_eq!(routed_jobs(&db, "audit").len(), 4);
    let mut c = db.client();
    let full: serde_json::Value = c
        .query_one(
            "SELECT payload FROM pgbroker.jobs WHERE queue = 'billing' ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        full,
        json!({"event_id": id.get(), "topic": "orders.created", "key": null, "headers": null, "payload": {"n": 1}})
    );
    let with_key: serde_json::Value = c
        .query_one(
            "SELECT payload FROM pgbroker.jobs WHERE queue = 'billing' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(with_key["key"], "k");
    assert_eq!(with_key["headers"], json!({"h": 1}));

    assert!(broker.unbind_queue("audit", "#").unwrap());
    assert!(!broker.unbind_queue("audit", "#").unwrap());
    assert!(route_trigger_exists(&db), "billing is still bound");
    assert!(broker.unbind_queue("billing", "orders.*").unwrap());
    assert!(
        !route_trigger_exists(&db),
        "trigger dropped with the last binding"
    );
    broker.publish("orders.created", &json!({"n": 5})).unwrap();
    assert_eq!(
        routed_jobs(&db, "billing").len(),
        2,
        "no routing after unbinding"
    );
}

#[test]
fn routing_is_transactional_and_works_for_batches() {
    let db = support::db();
    let broker = db.broker();
    broker.bind_queue("q", "t.#").unwrap();
    let mut conn = broker.conn().unwrap();
    let mut tx = conn.transaction().unwrap();
    broker
        .publish_in(&mut tx, &NewEvent::new("t.rolled", json!(1)))
        .unwrap();
    tx.rollback().unwrap();
    assert_eq!(routed_jobs(&db, "q").len(), 0);

    let events: Vec<NewEvent> = (0..2000)
        .map(|i| NewEvent::new("t.batch", json!(i)))
        .collect();
    broker.publish_batch(events).unwrap();
    let jobs = routed_jobs(&db, "q");
    assert_eq!(jobs.len(), 2000);
    let payloads: Vec<i64> = jobs.iter().map(|(_, p)| p.as_i64().unwrap()).collect();
    assert_eq!(
        payloads,
        (0..2000).collect::<Vec<_>>(),
        "jobs in event order"
    );
}

#[test]
fn routed_jobs_reach_a_queue_worker() {
    let db = support::db();
    let broker = db.broker();
    broker.bind_queue("invoices", "orders.paid").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue("invoices", 1, move |job| {
            s.lock()
                .unwrap()
                .push(job.payload()["payload"]["id"].as_i64().unwrap());
            Ok(())
        })
        .start()
        .unwrap();
    for id in 0..5 {
        broker.publish("orders.paid", &json!({"id": id})).unwrap();
        broker
            .publish("orders.created", &json!({"id": 100 + id}))
            .unwrap();
    }
    assert!(support::wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == 5));
    pool.shutdown().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn bad_bindings_are_rejected_and_write_nothing() {
    let db = support::db();
    let broker = db.broker();
    for (queue, pattern) in [
        ("bad queue", "a.b"),
        ("", "a"),
        ("q", "a..b"),
        ("q", ""),
        ("q", "a.#.b"),
    ] {
        let err = broker.bind_queue(queue, pattern).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidName,
            "{queue:?} {pattern:?}: {err}"
        );
    }
    assert!(broker.queue_bindings().unwrap().is_empty());
    assert!(!route_trigger_exists(&db));
    // The SQL path refuses too.
    let mut c = db.client();
    assert!(c
        .execute("SELECT pgbroker.bind_queue('q', 'a..b')", &[])
        .is_err());
    assert!(c
        .execute("SELECT pgbroker.bind_queue('bad queue', 'a')", &[])
        .is_err());
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.queue_bindings", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
