//! Pub/sub on LISTEN/NOTIFY against a real PostgreSQL.

use crate::support;

use std::time::Duration;

use pgbroker::{ErrorKind, Event};

const WAIT: Duration = Duration::from_secs(10);

fn next_notification(l: &pgbroker::Listener) -> pgbroker::Notification {
    loop {
        match l.recv_timeout(WAIT).unwrap() {
            Some(Event::Notification(n)) => return n,
            Some(_) => continue,
            None => panic!("no notification on {:?} within {WAIT:?}", l.channel()),
        }
    }
}

#[test]
fn delivers_in_order_per_channel() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("orders").unwrap();
    for i in 0..500 {
        broker.notify("orders", &i.to_string()).unwrap();
    }
    for i in 0..500 {
        let n = next_notification(&listener);
        assert_eq!(n.channel(), "orders");
        assert_eq!(n.payload(), i.to_string());
    }
    assert!(listener
        .recv_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
}

#[test]
fn transactional_notify_commit_delivers_rollback_does_not() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("tx").unwrap();
    let mut conn = broker.conn().unwrap();

    let mut tx = conn.transaction().unwrap();
    broker.notify_in(&mut tx, "tx", "rolled-back").unwrap();
    tx.rollback().unwrap();

    let mut tx = conn.transaction().unwrap();
    broker.notify_in(&mut tx, "tx", "committed").unwrap();
    // Not delivered before commit.
    assert!(listener
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    tx.commit().unwrap();

    assert_eq!(next_notification(&listener).payload(), "committed");
    assert!(listener
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

#[test]
fn payload_limit_is_7999_bytes() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("big").unwrap();
    let ok = "x".repeat(7999);
    broker.notify("big", &ok).unwrap();
    assert_eq!(next_notification(&listener).payload(), ok);

    let err = broker.notify("big", &"x".repeat(8000)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let mut conn = broker.conn().unwrap();
    let mut tx = conn.transaction().unwrap();
    let err = broker
        .notify_in(&mut tx, "big", &"é".repeat(4000))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    // The transaction is still usable: nothing was sent to the server.
    tx.commit().unwrap();
    assert!(listener
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

#[test]
fn json_payloads_round_trip() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("json").unwrap();
    let value = serde_json::json!({"id": 7, "tags": ["a", "b"], "text": "héllo \"quoted\""});
    broker.notify("json", &value).unwrap();
    assert_eq!(next_notification(&listener).json().unwrap(), value);
}

#[test]
fn channel_names_are_exact_or_rejected() {
    let db = support::db();
    let broker = db.broker();
    let names = [
        "MixedCase",
        "mixedcase",
        "with space",
        "quote\"inside",
        "semi; DROP TABLE x; --",
        "ünïcödé",
        &"n".repeat(63),
    ];
    let listeners: Vec<_> = names.iter().map(|n| broker.listen(n).unwrap()).collect();
    for (i, name) in names.iter().enumerate() {
        broker.notify(name, &i.to_string()).unwrap();
    }
    for (i, l) in listeners.iter().enumerate() {
        let n = next_notification(l);
        assert_eq!(n.channel(), names[i]);
        assert_eq!(n.payload(), i.to_string(), "channel {:?}", names[i]);
        // Case-sensitive: "MixedCase" and "mixedcase" each got only their own.
        assert!(l
            .recv_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none());
    }
    for bad in ["", &"n".repeat(64), "nul\0byte"] {
        assert_eq!(
            broker.listen(bad).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            broker.notify(bad, "x").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
    }
}

#[test]
fn terminated_listener_connection_reconnects() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("survivor").unwrap();
    broker.notify("survivor", "before").unwrap();
    assert_eq!(next_notification(&listener).payload(), "before");

    assert_eq!(support::terminate_backends(&db, "LISTEN%"), 1);

    let mut saw_disconnect = false;
    let attempts = loop {
        match listener.recv_timeout(WAIT).unwrap() {
            Some(Event::Disconnected { channel, .. }) => {
                assert_eq!(channel, "survivor");
                saw_disconnect = true;
            }
            Some(Event::Reconnected {
                channel, attempts, ..
            }) => {
                assert_eq!(channel, "survivor");
                break attempts;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no Reconnected event"),
        }
    };
    assert!(saw_disconnect);
    assert!(attempts >= 1);
    for i in 0..10 {
        broker.notify("survivor", &format!("after-{i}")).unwrap();
    }
    for i in 0..10 {
        assert_eq!(next_notification(&listener).payload(), format!("after-{i}"));
    }
}

#[test]
fn slow_consumer_does_not_hold_back_the_server() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("firehose").unwrap();
    // Nobody reads the listener while 20 000 notifications are sent.
    let mut conn = broker.conn().unwrap();
    conn.batch_execute(
        "SELECT pg_notify('firehose', g::text || repeat('x', 200)) FROM generate_series(1, 20000) g",
    )
    .unwrap();
    assert!(
        support::wait_until(WAIT, || listener.pending() == 20_000),
        "listener drained {} of 20000",
        listener.pending()
    );
    let usage: f64 = conn
        .query_one("SELECT pg_notification_queue_usage()", &[])
        .unwrap()
        .get(0);
    assert_eq!(usage, 0.0);
    for i in 1..=20_000 {
        let n = next_notification(&listener);
        assert!(n.payload().starts_with(&format!("{i}x")));
    }
}

#[test]
fn listener_stops_promptly_and_recv_reports_shutdown() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("stop").unwrap();
    let started = std::time::Instant::now();
    listener.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Its connection is gone from the server.
    assert!(support::wait_until(WAIT, || support::listener_backends(
        &db
    ) == 0));
}
