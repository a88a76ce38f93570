//! Durable topics: reads wait for the xid8 horizon. These tests hold transactions open, which
//! delays every reader of the cluster, so they have a test process (and cluster) of their own
//! and run one at a time.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use pgbroker::topic::{NewEvent, StartAt};
use pgbroker::{Broker, ErrorKind};
use serde_json::json;

static SERIAL: Mutex<()> = Mutex::new(());

fn ids(b: &pgbroker::Batch) -> Vec<i64> {
    b.events().iter().map(|e| e.id().get()).collect()
}

fn from_beginning(broker: &Broker, name: &str, patterns: &[&str]) {
    patterns
        .iter()
        .fold(broker.subscription(name), |b, p| b.pattern(p))
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
}

#[test]
fn out_of_order_commit_is_never_skipped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", &["t"]);
    let mut a = db.client();
    let mut ta = a.transaction().unwrap();
    let id_a: i64 = ta
        .query_one("SELECT pgbroker.publish('t', '\"A\"')", &[])
        .unwrap()
        .get(0);
    let id_b = broker.publish("t", &json!("B")).unwrap().get(); // commits first
    assert!(id_b > id_a);
    // B is committed but A, older, is not: nothing is readable after A's position yet.
    // Acknowledging what an empty read scanned (up to the horizon) must not skip A either.
    for _ in 0..3 {
        let b = broker.read("s", 10).unwrap();
        assert!(b.is_empty());
        if let Some(p) = b.ack_position() {
            broker.ack("s", p).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ta.commit().unwrap();
    let batch = broker.read("s", 10).unwrap();
    assert_eq!(ids(&batch), vec![id_a, id_b]);
    assert_eq!(batch.events()[0].payload(), &json!("A"));
    assert_eq!(batch.events()[1].payload(), &json!("B"));
}

#[test]
fn lag_counts_events_and_shows_the_horizon_holder() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", &["t"]);
    broker
        .publish_batch((0..5).map(|i| NewEvent::new("t", json!(i))))
        .unwrap();
    let lag = broker.lag("s").unwrap();
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].events_behind, 5);
    assert!(lag[0].oldest_age.is_some());
    let b = broker.read("s", 2).unwrap();
    broker.ack("s", b.last_position().unwrap()).unwrap();
    assert_eq!(broker.lag("s").unwrap()[0].events_behind, 3);
    assert_eq!(
        broker.lag("s").unwrap()[0].cursor,
        b.last_position().unwrap()
    );

    let mut a = db.client();
    let mut ta = a.transaction().unwrap();
    let pid: i32 = ta.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    ta.execute("SELECT pgbroker.publish('t', '1')", &[])
        .unwrap();
    broker.publish("t", &json!("after")).unwrap(); // committed, but behind the open one
    let lag = broker.lag("s").unwrap();
    assert_eq!(lag[0].events_behind, 4);
    assert_eq!(lag[0].beyond_horizon, 1);
    assert_eq!(lag[0].horizon_held_by.map(|h| h.0), Some(pid));
    ta.rollback().unwrap();
    assert_eq!(broker.lag("nope").unwrap_err().kind(), ErrorKind::NotFound);
}
