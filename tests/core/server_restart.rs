//! Surviving a PostgreSQL restart: needs a private cluster of its own to restart.

use crate::support;

use std::time::Duration;

use pgbroker::Event;
use pgbroker_testing::TempPostgres;

#[test]
fn listener_and_pool_survive_a_server_restart() {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: DATABASE_URL is set and that server cannot be restarted here");
        return;
    }
    let pg = TempPostgres::start().unwrap();
    let db = support::TestDb::create_on(&pg.url(), |n| pg.url_for(n));
    let broker = db.broker();
    broker.install().unwrap();
    let listener = broker.listen("restart").unwrap();
    broker.notify("restart", "before").unwrap();
    match listener.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(Event::Notification(n)) => assert_eq!(n.payload(), "before"),
        other => panic!("{other:?}"),
    }

    pg.stop().unwrap();
    // While down: publishing fails with a transient error, nothing hangs.
    let err = broker.notify("restart", "while down").unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    std::thread::sleep(Duration::from_millis(300));
    pg.resume().unwrap();

    let mut reconnected = false;
    while let Some(ev) = listener.recv_timeout(Duration::from_secs(20)).unwrap() {
        if let Event::Reconnected { .. } = ev {
            reconnected = true;
            break;
        }
    }
    assert!(reconnected, "no Reconnected event after restart");
    // The pool recovers too (broken connections are replaced).
    let mut sent = false;
    for _ in 0..50 {
        if broker.notify("restart", "after").is_ok() {
            sent = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent);
    match listener.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(Event::Notification(n)) => assert_eq!(n.payload(), "after"),
        other => panic!("{other:?}"),
    }
    drop(listener);
    drop(db);
}
