//! The pool across a server restart: every pooled connection is dead afterwards, and the
//! first call on each must still succeed (a dead connection is replaced before use).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use pgbroker::Broker;
use pgbroker_testing::TempPostgres;

use crate::support;

const POOL: u32 = 4;

/// A private cluster of the test's own (to restart), a database on it and a broker with the
/// schema; `None` when `DATABASE_URL` names a server that cannot be restarted here.
fn restartable() -> Option<(TempPostgres, support::TestDb, Broker)> {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: DATABASE_URL is set and that server cannot be restarted here");
        return None;
    }
    // Commits must survive an immediate stop (the default test cluster does not wait for WAL).
    let pg = TempPostgres::builder()
        .setting("synchronous_commit", "on")
        .start()
        .unwrap();
    let db = support::TestDb::create_on(&pg.url(), |n| pg.url_for(n));
    let broker = Broker::builder()
        .url(&db.url)
        .pool_size(POOL)
        .build()
        .unwrap();
    broker.install().unwrap();
    Some((pg, db, broker))
}

/// Takes every pooled connection at once (so each is opened), then gives them back.
fn open_all(broker: &Broker) {
    let conns: Vec<_> = (0..POOL).map(|_| broker.conn().unwrap()).collect();
    assert_eq!(conns.len(), POOL as usize);
}

/// Runs one enqueue on each of POOL threads at the same time: each gets its own pooled
/// connection, and every one must succeed on the first try.
fn first_calls(broker: &Broker) -> Vec<pgbroker::Result<pgbroker::JobId>> {
    let barrier = Arc::new(Barrier::new(POOL as usize));
    let threads: Vec<_> = (0..POOL)
        .map(|_| {
            let (broker, barrier) = (broker.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                broker.enqueue("after_restart", "{}")
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn the_first_call_after_a_restart_succeeds() {
    let Some((pg, db, broker)) = restartable() else {
        return;
    };
    for (round, immediate) in [(1, false), (2, true)] {
        open_all(&broker);
        if immediate {
            pg.stop_immediate().unwrap();
        } else {
            pg.stop().unwrap();
        }
        pg.resume().unwrap();
        for (i, r) in first_calls(&broker).into_iter().enumerate() {
            if let Err(e) = r {
                panic!("round {round} (immediate: {immediate}), call {i}: {e}");
            }
        }
    }
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pgbroker.jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2 * i64::from(POOL));
}

#[test]
fn a_completion_during_a_restart_is_retried_not_lost() {
    let Some((pg, db, broker)) = restartable() else {
        return;
    };
    let id = broker.enqueue("restart_jobs", "{}").unwrap();
    let (started_tx, started) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    let pool = broker
        .worker_pool()
        .queue("restart_jobs", 1, move |job| {
            started_tx.send(job.id()).unwrap();
            release_rx.recv().unwrap();
            Ok(())
        })
        .start()
        .unwrap();
    assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), id);
    // The handler finishes while the server is down: its completion must wait and retry.
    pg.stop().unwrap();
    release.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    pg.resume().unwrap();
    let gone = support::wait_until(Duration::from_secs(10), || {
        db.client()
            .query_one("SELECT count(*) = 0 FROM pgbroker.jobs", &[])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    });
    assert!(gone, "the completed job is still in pgbroker.jobs");
    let stats = pool.stats();
    assert_eq!((stats.handled, stats.failed), (1, 0));
    pool.shutdown().unwrap();
}
