//! Taking jobs inside the worker's own transaction (`take_jobs`, `pgbroker.take`) against a
//! real PostgreSQL: commit completes, rollback or a dead connection returns, failures are
//! written back with backoff and history, effects commit with the jobs, cancel never blocks.

use crate::support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, JobState};
use pgbroker::{Broker, ErrorKind, JobId};

fn count(broker: &Broker, sql: &str) -> i64 {
    broker.conn().unwrap().query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn commit_completes_rollback_returns_untouched() {
    let db = support::db();
    let broker = db.broker();
    let ids: Vec<JobId> = (0..5)
        .map(|i| broker.enqueue("t", &serde_json::json!({ "i": i })).unwrap())
        .collect();
    let mut conn = broker.conn().unwrap();
    {
        let mut tx = conn.transaction().unwrap();
        let jobs = broker.take_jobs(&mut tx, "t", 3).unwrap();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..3]);
        assert!(jobs.iter().all(|j| j.attempt == 1 && j.is_taken()));
        assert!(jobs.iter().all(|j| j.lease_until.is_none()));
        // Others still see them available (locked): stats do not change while they run.
        assert_eq!(
            count(
                &broker,
                "SELECT count(*) FROM pgbroker.jobs WHERE state = 'available'"
            ),
            5
        );
        // A concurrent taker skips them.
        let mut other = broker.conn().unwrap();
        let mut tx2 = other.transaction().unwrap();
        let rest = broker.take_jobs(&mut tx2, "t", 10).unwrap();
        assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), ids[3..]);
        drop(tx2); // rolled back
        drop(tx); // rolled back
    }
    assert_eq!(
        count(
            &broker,
            "SELECT count(*) FROM pgbroker.jobs WHERE state = 'available' AND attempt = 0"
        ),
        5
    );
    let (tx, jobs) = conn.take_jobs("t", 10).unwrap();
    assert_eq!(jobs.len(), 5);
    tx.commit().unwrap();
    assert_eq!(count(&broker, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

#[test]
fn effects_commit_with_the_jobs_or_not_at_all() {
    let db = support::db();
    let broker = db.broker();
    db.client()
        .batch_execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
        .unwrap();
    let id = broker.enqueue("fx", "{}").unwrap();
    let mut conn = broker.conn().unwrap();
    // A worker that fails after writing (a panic unwinds through the open transaction).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (mut tx, jobs) = conn.take_jobs("fx", 1).unwrap();
        tx.execute("INSERT INTO effects VALUES ($1)", &[&jobs[0].id])
            .unwrap();
        panic!("handler blew up");
    }));
    assert!(result.is_err());
    assert_eq!(count(&broker, "SELECT count(*) FROM effects"), 0);
    assert_eq!(
        count(
            &broker,
            "SELECT count(*) FROM pgbroker.jobs WHERE attempt = 0"
        ),
        1
    );
    let (mut tx, jobs) = conn.take_jobs("fx", 1).unwrap();
    assert_eq!(jobs[0].id, id);
    tx.execute("INSERT INTO effects VALUES ($1)", &[&jobs[0].id])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&broker, "SELECT count(*) FROM effects"), 1);
    assert_eq!(count(&broker, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

#[test]
fn failures_are_retried_with_backoff_then_dead_with_history() {
    let db = support::db();
    let broker = db.broker();
    let id = broker
        .enqueue_job(
            &Job::new("f", r#"{"x": 1}"#)
                .max_attempts(3)
                .priority(4)
                .unique_key("k1")
                .backoff(Duration::from_millis(200), Duration::from_millis(200)),
        )
        .unwrap();
    let mut conn = broker.conn().unwrap();
    let mut states = Vec::new();
    for attempt in 1..=3 {
        let t0 = Instant::now();
        let jobs = loop {
            let (tx, jobs) = conn.take_jobs("f", 1).unwrap();
            if !jobs.is_empty() {
                break (tx, jobs);
            }
            drop(tx);
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut tx, jobs) = jobs;
        if attempt > 1 {
            // 200 ms ± 25% of backoff
            assert!(
                t0.elapsed() >= Duration::from_millis(100),
                "{:?}",
                t0.elapsed()
            );
        }
        assert_eq!(jobs[0].id, id);
        assert_eq!(jobs[0].attempt, attempt);
        let state = broker
            .fail_taken_in(&mut tx, &jobs[0], &format!("boom {attempt}"), None)
            .unwrap();
        tx.commit().unwrap();
        states.push(state);
    }
    assert_eq!(
        states,
        [JobState::Available, JobState::Available, JobState::Dead]
    );
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.attempt, 3);
    assert_eq!(info.priority, 4);
    assert_eq!(info.unique_key.as_deref(), Some("k1"));
    assert_eq!(info.last_error.as_deref(), Some("boom 3"));
    let errors: Vec<(i64, String)> = info
        .errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["attempt"].as_i64().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "boom 1".to_owned()),
            (2, "boom 2".to_owned()),
            (3, "boom 3".to_owned())
        ]
    );
    assert_eq!(info.payload, serde_json::json!({"x": 1}));
    // Dead, it no longer holds its key (which it still shows).
    let next = broker
        .enqueue_job(&Job::new("f", "{}").unique_key("k1"))
        .unwrap();
    assert_ne!(next, id);
}

#[test]
fn explicit_retry_in_and_return_without_counting() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("r", "{}").unwrap();
    let mut conn = broker.conn().unwrap();
    let (mut tx, jobs) = conn.take_jobs("r", 1).unwrap();
    broker
        .fail_taken_in(&mut tx, &jobs[0], "later", Some(Duration::from_secs(3600)))
        .unwrap();
    tx.commit().unwrap();
    let (tx, jobs) = conn.take_jobs("r", 1).unwrap();
    assert!(jobs.is_empty(), "not before an hour");
    drop(tx);
    broker
        .conn()
        .unwrap()
        .execute("UPDATE pgbroker.jobs SET run_at = now()", &[])
        .unwrap();
    let (mut tx, jobs) = conn.take_jobs("r", 1).unwrap();
    assert_eq!(jobs[0].attempt, 2);
    broker.return_taken_in(&mut tx, &jobs[0], None).unwrap();
    tx.commit().unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Available, 1));
}

#[test]
fn bad_input_is_a_typed_error_and_writes_nothing() {
    let db = support::db();
    let broker = db.broker();
    broker.enqueue("ok", "{}").unwrap();
    let mut conn = broker.conn().unwrap();
    let mut tx = conn.transaction().unwrap();
    assert_eq!(
        broker.take_jobs(&mut tx, "bad name", 1).unwrap_err().kind(),
        ErrorKind::InvalidName
    );
    assert!(broker.take_jobs(&mut tx, "ok", 0).unwrap().is_empty());
    drop(tx);
    assert_eq!(
        conn.take_jobs("", 1).err().map(|e| e.kind()),
        Some(ErrorKind::InvalidName)
    );
    // A leased job cannot be failed as a taken one.
    let leased = broker
        .claim_jobs("ok", "w", 1, Duration::from_secs(30))
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    assert_eq!(
        broker
            .fail_taken_in(&mut tx, &leased[0], "x", None)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    tx.commit().unwrap();
    let info = broker.job(leased[0].id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Running, 1));
}

#[test]
fn sql_protocol_take_fail_commit() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("s", r#"{"a": 1}"#).unwrap();
    let mut c = db.client();
    c.batch_execute("BEGIN").unwrap();
    let row = c
        .query_one("SELECT * FROM pgbroker.take('s', 5)", &[])
        .unwrap();
    assert_eq!(row.get::<_, JobId>("id"), id);
    assert_eq!(row.get::<_, i32>("attempt"), 1);
    let state: String = c
        .query_one(
            "SELECT pgbroker.fail_taken(t.id, t.queue, t.payload, t.attempt, t.max_attempts,
                    t.priority, t.run_at, t.created_at, t.unique_key, t.details,
                    'sql says no', retry_in => interval '0')
               FROM (VALUES ($1::bigint)) v(id)
               JOIN LATERAL (SELECT $1::bigint AS id, 's'::text AS queue,
                                    '{\"a\": 1}'::jsonb AS payload, 1 AS attempt,
                                    25 AS max_attempts, 0 AS priority, now() AS run_at,
                                    now() AS created_at, NULL::text AS unique_key,
                                    NULL::jsonb AS details) t ON true",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "available");
    c.batch_execute("COMMIT").unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.attempt, 1);
    assert_eq!(info.last_error.as_deref(), Some("sql says no"));
}

#[test]
fn many_jobs_over_four_threads_each_taken_exactly_once() {
    let db = support::db();
    let broker = db.broker();
    let n = 3_000;
    let jobs: Vec<Job> = (0..n)
        .map(|i| Job::new("many", &serde_json::json!({ "i": i })))
        .collect();
    broker.enqueue_batch(&jobs).unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    std::thread::scope(|s| {
        for w in 0..4 {
            let (broker, seen) = (&broker, &seen);
            s.spawn(move || {
                let mut conn = broker.conn().unwrap();
                loop {
                    let (tx, jobs) = conn.take_jobs("many", 1 + w * 17).unwrap();
                    if jobs.is_empty() {
                        return;
                    }
                    let ids: Vec<i64> = jobs
                        .iter()
                        .map(|j| j.payload["i"].as_i64().unwrap())
                        .collect();
                    tx.commit().unwrap();
                    seen.lock().unwrap().extend(ids);
                }
            });
        }
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), n);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), n);
    assert_eq!(count(&broker, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

#[test]
fn priorities_order_the_take() {
    let db = support::db();
    let broker = db.broker();
    let mut expected: Vec<(i32, JobId)> = [3, -1, 7, 0, -1, 2]
        .iter()
        .map(|p| {
            let id = broker
                .enqueue_job(&Job::new("p", "{}").priority(*p))
                .unwrap();
            (*p, id)
        })
        .collect();
    expected.sort();
    let mut conn = broker.conn().unwrap();
    let mut got = Vec::new();
    loop {
        let (tx, jobs) = conn.take_jobs("p", 2).unwrap();
        if jobs.is_empty() {
            break;
        }
        got.extend(jobs.iter().map(|j| (j.priority, j.id)));
        tx.commit().unwrap();
    }
    assert_eq!(got, expected);
}

#[test]
fn a_killed_connection_gives_its_jobs_back() {
    let db = support::db();
    let broker = db.broker();
    for _ in 0..4 {
        broker.enqueue("k", "{}").unwrap();
    }
    let mut conn = broker.conn().unwrap();
    let (mut tx, jobs) = conn.take_jobs("k", 10).unwrap();
    assert_eq!(jobs.len(), 4);
    tx.execute("SET LOCAL application_name = 'doomed-taker'", &[])
        .unwrap();
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = $1 AND application_name = 'doomed-taker'",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    assert!(tx.commit().is_err());
    drop(conn);
    // The pool may hand out the dead connection once; then a fresh one.
    let again = (0..3)
        .find_map(|_| {
            let mut conn = broker.conn().unwrap();
            let (tx, again) = conn.take_jobs("k", 10).ok()?;
            tx.commit().ok()?;
            Some(again)
        })
        .unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
        jobs.iter().map(|j| (j.id, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn the_idle_in_transaction_timeout_is_the_lease() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("hang", "{}").unwrap();
    let mut conn = broker.conn().unwrap();
    let (mut tx, jobs) = conn.take_jobs("hang", 1).unwrap();
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = '300ms'")
        .unwrap();
    assert_eq!(jobs[0].id, id);
    // The "handler" hangs; the server ends the session and the job is available again.
    let back = support::wait_until(Duration::from_secs(10), || {
        let mut c = broker.conn().unwrap();
        let (tx, jobs) = c.take_jobs("hang", 1).unwrap();
        drop(tx);
        jobs.len() == 1
    });
    assert!(back);
    assert!(tx.commit().is_err());
}

#[test]
fn cancel_does_not_wait_for_a_taking_transaction() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("c", "{}").unwrap();
    let mut conn = broker.conn().unwrap();
    let (tx, _jobs) = conn.take_jobs("c", 1).unwrap();
    let t0 = Instant::now();
    let err = broker.cancel_job(id).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(err.kind(), ErrorKind::Db);
    assert_eq!(err.db_code(), Some("55P03"));
    drop(tx); // rolled back: available again, and cancellable
    assert!(broker.cancel_job(id).unwrap());
    assert_eq!(broker.job(id).unwrap().unwrap().state, JobState::Cancelled);
}

#[test]
fn an_enqueue_with_the_same_unique_key_waits_for_the_taking_transaction() {
    let db = support::db();
    let broker = db.broker();
    let first = broker
        .enqueue_job(&Job::new("u", "{}").unique_key("only"))
        .unwrap();
    let mut conn = broker.conn().unwrap();
    let (tx, _jobs) = conn.take_jobs("u", 1).unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let b = broker.clone();
    let h = std::thread::spawn(move || {
        let id = b
            .enqueue_job(&Job::new("u", "{}").unique_key("only"))
            .unwrap();
        done_tx.send(id).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "did not wait"
    );
    tx.commit().unwrap(); // the first is done: the key is free, a new job is enqueued
    let second = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    h.join().unwrap();
    assert_ne!(second, first);
    // Rolled back instead, the waiting enqueue gets the existing job.
    let (tx, jobs) = conn.take_jobs("u", 1).unwrap();
    assert_eq!(jobs[0].id, second);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let b = broker.clone();
    let h = std::thread::spawn(move || {
        done_tx
            .send(
                b.enqueue_job(&Job::new("u", "{}").unique_key("only"))
                    .unwrap(),
            )
            .unwrap();
    });
    assert!(done_rx.recv_timeout(Duration::from_millis(300)).is_err());
    drop(tx);
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        second
    );
    h.join().unwrap();
}

#[test]
fn watchers_see_completed_or_the_written_back_state_once_at_commit() {
    let db = support::db();
    let broker = db.broker();
    let watcher = broker.watch_jobs("w").unwrap();
    let ok = broker.enqueue("w", "{}").unwrap();
    let bad = broker.enqueue("w", "{}").unwrap();
    let gone = broker.enqueue("w", "{}").unwrap();
    let mut events = Vec::new();
    while let Some(e) = watcher.recv_timeout(Duration::from_millis(500)).unwrap() {
        events.push((e.id, e.state));
    }
    assert_eq!(
        events,
        [
            (ok, JobState::Available),
            (bad, JobState::Available),
            (gone, JobState::Available)
        ]
    );
    let mut conn = broker.conn().unwrap();
    // Rolled back: nothing to report.
    let (tx, jobs) = conn.take_jobs("w", 3).unwrap();
    assert_eq!(jobs.len(), 3);
    drop(tx);
    assert!(watcher
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    let (mut tx, jobs) = conn.take_jobs("w", 3).unwrap();
    broker
        .fail_taken_in(&mut tx, &jobs[1], "nope", None)
        .unwrap();
    broker.return_taken_in(&mut tx, &jobs[2], None).unwrap();
    tx.commit().unwrap();
    let mut events = Vec::new();
    while let Some(e) = watcher.recv_timeout(Duration::from_millis(500)).unwrap() {
        events.push((e.id, e.state, e.attempt, e.error));
    }
    events.sort_by_key(|e| e.0);
    assert_eq!(
        events,
        [
            (ok, JobState::Completed, 1, None),
            (bad, JobState::Available, 1, Some("nope".to_owned())),
            (gone, JobState::Available, 0, None),
        ]
    );
}
