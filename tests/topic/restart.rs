//! Durable topics across a server restart: consumers reconnect, re-take their partition and
//! re-scan, and nothing committed is lost. On a private cluster of the test's own, which it
//! restarts (the suite's shared cluster keeps serving the other tests).

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker_testing::TempPostgres;
use serde_json::json;

#[test]
fn consumers_survive_a_server_restart() {
    if support::server().temp().is_none() {
        return; // DATABASE_URL given: no private clusters on that machine
    }
    let temp = TempPostgres::start().unwrap();
    let db = support::TestDb::create_on(&temp.url(), |n| temp.url_for(n));
    let broker = db.broker();
    broker.install().unwrap();
    broker
        .subscription("s")
        .pattern("t")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let sink = seen.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with(
            "s",
            ConsumerOptions::new()
                .poll_interval(Duration::from_millis(100))
                .lock_retry(Duration::from_millis(100)),
            move |batch| {
                sink.lock()
                    .unwrap()
                    .extend(batch.events().iter().map(|e| e.id().get()));
                Ok(())
            },
        )
        .start()
        .unwrap();
    let mut ids: Vec<i64> = broker
        .publish_batch((0..100).map(|i| NewEvent::new("t", json!(i))))
        .unwrap()
        .iter()
        .map(|i| i.get())
        .collect();
    assert!(support::wait_until(Duration::from_secs(20), || seen
        .lock()
        .unwrap()
        .len()
        == 100));
    // Acknowledged too (the handler runs before the ack), so nothing is due again.
    assert!(support::wait_until(Duration::from_secs(20), || broker
        .lag("s")
        .unwrap()[0]
        .events_behind
        == 0));
    temp.restart().unwrap();
    // The pool's connections are dead; publish retries until the pool has fresh ones.
    let more = loop {
        match broker.publish_batch((100..200).map(|i| NewEvent::new("t", json!(i)))) {
            Ok(more) => break more,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    ids.extend(more.iter().map(|i| i.get()));
    assert!(support::wait_until(Duration::from_secs(30), || seen
        .lock()
        .unwrap()
        .len()
        >= 200));
    std::thread::sleep(Duration::from_millis(300));
    pool.shutdown().unwrap();
    assert_eq!(*seen.lock().unwrap(), ids);
}
