//! Throwaway subscriptions (`Broker::stream`) against a real PostgreSQL: events from now on,
//! gone when dropped, renewed while alive, expired by maintenance when their process is gone.

mod support;

use std::time::Duration;

use pgbroker::ErrorKind;
use serde_json::json;

fn subscriptions(broker: &pgbroker::Broker) -> Vec<String> {
    broker
        .subscriptions()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

#[test]
fn a_stream_yields_events_from_now_on_and_vanishes_when_dropped() {
    let db = support::db();
    let broker = db.broker();
    broker.publish("orders.old", &json!(0)).unwrap();
    let mut stream = broker.stream(&["orders.#"]).unwrap();
    assert_eq!(subscriptions(&broker), [stream.name().to_owned()]);
    for n in 1..=5 {
        broker.publish("orders.new", &json!(n)).unwrap();
        broker.publish("other.topic", &json!(-n)).unwrap();
    }
    let got: Vec<serde_json::Value> = stream
        .by_ref()
        .take(5)
        .map(|e| e.unwrap().payload().clone())
        .collect();
    assert_eq!(got, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
    assert!(stream
        .next_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    drop(stream);
    assert!(subscriptions(&broker).is_empty());

    // A named one, filtered; an existing name is refused.
    broker.subscribe("taken", &["#"]).unwrap();
    let err = broker
        .subscription("taken")
        .pattern("#")
        .into_stream()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let mut evens = broker
        .subscription("evens")
        .pattern("orders.#")
        .filter(json!({"even": true}))
        .into_stream()
        .unwrap();
    for n in 1..=4 {
        broker
            .publish("orders.new", &json!({"n": n, "even": n % 2 == 0}))
            .unwrap();
    }
    let a = evens.next().unwrap().unwrap();
    let b = evens.next().unwrap().unwrap();
    assert_eq!(
        (a.payload()["n"].clone(), b.payload()["n"].clone()),
        (json!(2), json!(4))
    );
}

#[test]
fn a_live_stream_is_renewed_and_a_forgotten_one_expires() {
    let db = support::db();
    let broker = db.broker();
    let day = Duration::from_secs(86400);
    let mut live = broker
        .subscription("live")
        .pattern("#")
        .expire_after(Duration::from_millis(900))
        .into_stream()
        .unwrap();
    // Idle for longer than the expiry, but reading: renewed every 300 ms.
    assert!(live
        .next_timeout(Duration::from_millis(1500))
        .unwrap()
        .is_none());
    assert_eq!(broker.log_maintain(day, 1).unwrap().expired, 0);

    // The process "dies": no drop runs. Maintenance removes it once the expiry passed.
    let dead = broker.stream(&["#"]).unwrap();
    let name = dead.name().to_owned();
    std::mem::forget(dead);
    assert_eq!(broker.log_maintain(day, 1).unwrap().expired, 0);
    db.client()
        .execute(
            "UPDATE pgbroker.subscriptions SET updated_at = now() - interval '61 seconds'
              WHERE name = $1",
            &[&name],
        )
        .unwrap();
    db.client()
        .execute(
            "UPDATE pgbroker.subscription_cursors SET active_at = now() - interval '61 seconds'
              WHERE subscription = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(broker.log_maintain(day, 1).unwrap().expired, 1);
    assert_eq!(subscriptions(&broker), ["live"]);

    // A stream left unread past its expiry is gone: reading says so.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(broker.log_maintain(day, 1).unwrap().expired, 1);
    let err = live.next_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
