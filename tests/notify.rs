//! Pub/sub on LISTEN/NOTIFY against a real PostgreSQL.

mod support;

use std::time::Duration;

use pgbroker::Event;

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
