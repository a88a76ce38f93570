//! The worker pool running notification handlers.

use crate::support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::ErrorKind;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn each_notification_is_handled_once_by_one_thread() {
    let db = support::db();
    let broker = db.broker();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let (s, t) = (seen.clone(), threads.clone());
    let pool = broker
        .worker_pool()
        .threads(4)
        .handler("work", move |n| {
            s.lock().unwrap().push(n.payload().parse::<u32>()?);
            t.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(1));
            Ok(())
        })
        .start()
        .unwrap();
    for i in 0..1000 {
        broker.notify("work", &i.to_string()).unwrap();
    }
    assert!(support::wait_until(WAIT, || seen.lock().unwrap().len() == 1000));
    pool.shutdown().unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(
        threads.lock().unwrap().len() > 1,
        "work was spread over threads"
    );
}

#[test]
fn panicking_and_failing_handlers_are_counted_and_threads_live_on() {
    let db = support::db();
    let broker = db.broker();
    let ok = Arc::new(AtomicUsize::new(0));
    let ok2 = ok.clone();
    let pool = broker
        .worker_pool()
        .threads(1) // one thread: it must survive the panics to handle the rest
        .handler("p", move |n| match n.payload() {
            "panic" => panic!("handler bug"),
            "fail" => Err("bad payload".into()),
            _ => {
                ok2.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap();
    for p in ["panic", "ok", "fail", "panic", "ok", "ok"] {
        broker.notify("p", p).unwrap();
    }
    assert!(support::wait_until(WAIT, || {
        let s = pool.stats();
        s.handled + s.failed == 6
    }));
    let s = pool.stats();
    assert_eq!((s.handled, s.failed, s.panicked), (3, 3, 2));
    assert_eq!(ok.load(Ordering::SeqCst), 3);
    pool.shutdown().unwrap();
}

#[test]
fn shutdown_finishes_in_flight_and_starts_nothing_new() {
    let db = support::db();
    let broker = db.broker();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let pool = broker
        .worker_pool()
        .threads(2)
        .handler("slow", move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(500));
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .start()
        .unwrap();
    for i in 0..20 {
        broker.notify("slow", &i.to_string()).unwrap();
    }
    assert!(support::wait_until(WAIT, || started.load(Ordering::SeqCst) == 2));
    pool.shutdown().unwrap();
    let (s, f) = (
        started.load(Ordering::SeqCst),
        finished.load(Ordering::SeqCst),
    );
    assert_eq!(s, f, "every started handler finished");
    assert!(
        s <= 4,
        "no new work started after shutdown began (started {s})"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(started.load(Ordering::SeqCst), s);
}

#[test]
fn shutdown_reports_handlers_that_overrun_the_grace_period() {
    let db = support::db();
    let broker = db.broker();
    let running = Arc::new(AtomicUsize::new(0));
    let r = running.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .shutdown_grace(Duration::from_millis(200))
        .handler("stuck", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        })
        .start()
        .unwrap();
    broker.notify("stuck", "x").unwrap();
    assert!(support::wait_until(WAIT, || running.load(Ordering::SeqCst) == 1));
    let err = pool.shutdown().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[test]
fn reconnect_hook_runs_after_connection_loss() {
    let db = support::db();
    let broker = db.broker();
    let reconnects = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (r, h) = (reconnects.clone(), handled.clone());
    let pool = broker
        .worker_pool()
        .threads(2)
        .handler("rc", move |_| {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .on_reconnect("rc", move |channel, _downtime| {
            assert_eq!(channel, "rc");
            r.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    assert_eq!(support::terminate_backends(&db, "LISTEN%"), 1);
    assert!(support::wait_until(WAIT, || reconnects
        .load(Ordering::SeqCst)
        == 1));
    broker.notify("rc", "after").unwrap();
    assert!(support::wait_until(WAIT, || handled.load(Ordering::SeqCst) == 1));
    assert_eq!(pool.stats().reconnects, 1);
    pool.shutdown().unwrap();
}

#[test]
fn bad_pool_configuration_is_rejected() {
    let db = support::db();
    let broker = db.broker();
    let err = broker.worker_pool().threads(0).start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = broker
        .worker_pool()
        .handler("dup", |_| Ok(()))
        .handler("dup", |_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = broker
        .worker_pool()
        .handler(&"x".repeat(64), |_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
}

#[test]
fn dropping_the_pool_shuts_it_down() {
    let db = support::db();
    let broker = db.broker();
    let pool = broker
        .worker_pool()
        .threads(2)
        .handler("d", |_| Ok(()))
        .start()
        .unwrap();
    drop(pool);
    assert!(support::wait_until(WAIT, || support::listener_backends(
        &db
    ) == 0));
}
