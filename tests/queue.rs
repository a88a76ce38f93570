//! The job queue's protocol against a real PostgreSQL: enqueue, claim, outcomes, rescue,
//! unique jobs, bad input, batches, watching and introspection, from Rust and from SQL.

mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use pgbroker::queue::{Job, JobState};
use pgbroker::ErrorKind;

const LEASE: Duration = Duration::from_secs(30);

fn count(db: &support::TestDb, sql: &str) -> i64 {
    db.client().query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn sql_and_rust_paths_agree() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let a = broker
        .enqueue_job(
            &Job::new("mail", &serde_json::json!({"n": 1}))
                .priority(5)
                .max_attempts(3),
        )
        .unwrap();
    let b: i64 = c
        .query_one(
            "SELECT pgbroker.enqueue('mail', '{\"n\": 2}', priority => 5, max_attempts => 3)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(b, a + 1);
    let ja = broker.job(a).unwrap().unwrap();
    let jb = broker.job(b).unwrap().unwrap();
    for j in [&ja, &jb] {
        assert_eq!(j.queue, "mail");
        assert_eq!(j.state, JobState::Available);
        assert_eq!((j.priority, j.attempt, j.max_attempts), (5, 0, 3));
    }
    assert_eq!(ja.payload, serde_json::json!({"n": 1}));
    assert_eq!(jb.payload, serde_json::json!({"n": 2}));

    // Claimed from SQL: the first one; from Rust: the second.
    let row = c
        .query_one(
            "SELECT id, queue, payload, attempt, max_attempts, priority \
             FROM pgbroker.claim('mail', 'psql', 1, '30 seconds')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), a);
    assert_eq!(row.get::<_, i32>(3), 1);
    let claimed = broker.claim_jobs("mail", "rust", 10, LEASE).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, b);
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(
        broker.job(a).unwrap().unwrap().worker.as_deref(),
        Some("psql")
    );
    assert_eq!(broker.job(b).unwrap().unwrap().state, JobState::Running);

    // Completed from SQL and from Rust: both deleted.
    assert!(c
        .query_one("SELECT pgbroker.complete($1)", &[&a])
        .unwrap()
        .get::<_, bool>(0));
    assert_eq!(broker.complete_jobs(&claimed).unwrap(), 1);
    assert_eq!(broker.complete_jobs(&claimed).unwrap(), 0);
    assert!(broker.job(a).unwrap().is_none());
    assert!(broker.job(b).unwrap().is_none());
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

#[test]
fn bad_input_is_rejected_with_typed_errors_and_nothing_written() {
    let db = support::db();
    let broker = db.broker();
    let kind = |r: pgbroker::Result<i64>| r.unwrap_err().kind();
    assert_eq!(
        kind(broker.enqueue("no spaces", "{}")),
        ErrorKind::InvalidName
    );
    assert_eq!(kind(broker.enqueue("", "{}")), ErrorKind::InvalidName);
    assert_eq!(
        kind(broker.enqueue(&"q".repeat(49), "{}")),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(broker.enqueue("q'; drop", "{}")),
        ErrorKind::InvalidName
    );
    assert_eq!(kind(broker.enqueue("q", "not json")), ErrorKind::Serialize);
    assert_eq!(kind(broker.enqueue("q", "{\"a\":")), ErrorKind::Serialize);
    assert_eq!(
        kind(broker.enqueue_job(&Job::new("q", "{}").max_attempts(0))),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(broker.enqueue("q", &serde_json::json!({"s": "nul\u{0}"}))),
        ErrorKind::InvalidInput
    );
    let batch = vec![Job::new("q", "{}"), Job::new("bad name", "{}")];
    assert_eq!(
        broker.enqueue_batch(&batch).unwrap_err().kind(),
        ErrorKind::InvalidName
    );
    assert_eq!(
        broker
            .claim_jobs("bad name", "w", 1, LEASE)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidName
    );

    // The SQL side checks the same things (SQLSTATE 22023).
    let mut c = db.client();
    for sql in [
        "SELECT pgbroker.enqueue('bad name', '{}')",
        "SELECT pgbroker.enqueue('q', '{}', delay => '-5 seconds')",
        "SELECT pgbroker.enqueue('q', '{}', max_attempts => 0)",
        "SELECT pgbroker.enqueue('q', NULL)",
    ] {
        let err = c.query_one(sql, &[]).unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22023", "{sql}");
    }
    let err = c
        .query_one("SELECT pgbroker.enqueue('q', 'not json')", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22P02");
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

#[test]
fn unique_jobs_under_racing_enqueuers() {
    let db = support::db();
    let broker = db.broker();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let broker = broker.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..25)
                    .map(|i| {
                        let job = Job::new("sync", &serde_json::json!({"t": t, "i": i}))
                            .unique_key("account:1");
                        broker.enqueue_job(&job).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 1);

    // Still unique while running; a new job once it is done.
    let claimed = broker.claim_jobs("sync", "w", 1, LEASE).unwrap();
    let again = broker
        .enqueue_job(&Job::new("sync", "{}").unique_key("account:1"))
        .unwrap();
    assert_eq!(again, ids[0]);
    // Other keys and other queues are independent.
    let other = broker
        .enqueue_job(&Job::new("sync", "{}").unique_key("account:2"))
        .unwrap();
    assert_ne!(other, ids[0]);
    let other_queue = broker
        .enqueue_job(&Job::new("sync2", "{}").unique_key("account:1"))
        .unwrap();
    assert_ne!(other_queue, ids[0]);
    broker.complete_jobs(&claimed).unwrap();
    let fresh = broker
        .enqueue_job(&Job::new("sync", "{}").unique_key("account:1"))
        .unwrap();
    assert!(fresh > ids[0]);
    // From SQL too.
    let from_sql: i64 = db
        .client()
        .query_one(
            "SELECT pgbroker.enqueue('sync', '{}', unique_key => 'account:1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(from_sql, fresh);
}

#[test]
fn claims_follow_priority_then_run_at_then_id() {
    let db = support::db();
    let broker = db.broker();
    let prios = [3, -1, 0, 3, -7, 0, 10, -1];
    let ids: Vec<i64> = prios
        .iter()
        .map(|p| {
            broker
                .enqueue_job(&Job::new("p", "{}").priority(*p))
                .unwrap()
        })
        .collect();
    let mut expected: Vec<(i32, i64)> = prios.iter().copied().zip(ids.iter().copied()).collect();
    expected.sort();
    let mut got = Vec::new();
    // One at a time, and a batch: same order.
    for _ in 0..3 {
        let j = broker.claim_jobs("p", "w", 1, LEASE).unwrap();
        got.push((j[0].priority, j[0].id));
    }
    for j in broker.claim_jobs("p", "w", 100, LEASE).unwrap() {
        got.push((j.priority, j.id));
    }
    assert_eq!(got, expected);
    assert!(broker.claim_jobs("p", "w", 100, LEASE).unwrap().is_empty());
}

#[test]
fn delayed_jobs_wait_for_run_at() {
    let db = support::db();
    let broker = db.broker();
    let delayed = broker
        .enqueue_job(&Job::new("d", "{}").delay(Duration::from_millis(700)))
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    broker
        .enqueue_job(&Job::new("d", "{}").run_at(later))
        .unwrap();
    assert!(broker.claim_jobs("d", "w", 10, LEASE).unwrap().is_empty());
    let stats = broker.queue_stats().unwrap();
    assert_eq!((stats[0].available, stats[0].scheduled), (0, 2));
    std::thread::sleep(Duration::from_millis(800));
    let got = broker.claim_jobs("d", "w", 10, LEASE).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, delayed);
    assert!(got[0].run_at <= SystemTime::now());
}

#[test]
fn failures_retry_with_backoff_then_die_and_can_be_redriven() {
    let db = support::db();
    let broker = db.broker();
    let id = broker
        .enqueue_job(
            &Job::new("r", "{}")
                .max_attempts(3)
                .backoff(Duration::from_secs(10), Duration::from_secs(15)),
        )
        .unwrap();
    for attempt in 1..=3 {
        let j = support_claim_one(&broker, "r");
        assert_eq!((j.id, j.attempt), (id, attempt));
        let state = broker
            .fail_job(&j, &format!("boom {attempt}"), None)
            .unwrap();
        if attempt < 3 {
            assert_eq!(state, Some(JobState::Available));
            // The delay from the failure to the next run: base 10 s * 2^(attempt-1) with
            // ±25% jitter, at most 15 s.
            let wait: f64 = db
                .client()
                .query_one(
                    "SELECT extract(epoch FROM run_at - (errors->-1->>'at')::timestamptz)::float8
                       FROM pgbroker.jobs WHERE id = $1",
                    &[&id],
                )
                .unwrap()
                .get(0);
            let nominal = 10.0 * f64::from(1 << (attempt - 1));
            assert!(
                wait >= nominal * 0.75 - 0.01 && wait <= (nominal * 1.25).min(15.0) + 0.01,
                "attempt {attempt}: backoff {wait}"
            );
            // Not claimable during the backoff.
            assert!(broker.claim_jobs("r", "w", 1, LEASE).unwrap().is_empty());
            // Fast-forward to the retry.
            db.client()
                .execute(
                    "UPDATE pgbroker.jobs SET run_at = now() WHERE id = $1",
                    &[&id],
                )
                .unwrap();
        } else {
            assert_eq!(state, Some(JobState::Dead));
        }
    }
    let dead = broker.dead_jobs(Some("r"), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 3"));
    let errors = dead[0].errors.as_array().unwrap();
    assert_eq!(errors.len(), 3);
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i as i64 + 1);
        assert_eq!(e["error"], format!("boom {}", i + 1));
        assert_eq!(e["worker"], "test");
    }
    assert!(dead[0].finished_at.is_some());
    assert_eq!(broker.queue_stats().unwrap()[0].dead, 1);

    // Re-drive: available now with fresh attempts, history kept.
    assert!(broker.retry_job(id).unwrap());
    assert!(!broker.retry_job(id).unwrap());
    let j = support_claim_one(&broker, "r");
    assert_eq!((j.id, j.attempt), (id, 1));
    assert_eq!(broker.complete_jobs(&[j]).unwrap(), 1);
    assert!(broker.dead_jobs(None, 10).unwrap().is_empty());
}

fn support_claim_one(broker: &pgbroker::Broker, queue: &str) -> pgbroker::queue::ClaimedJob {
    let mut found = None;
    assert!(support::wait_until(Duration::from_secs(10), || {
        found = broker.claim_jobs(queue, "test", 1, LEASE).unwrap().pop();
        found.is_some()
    }));
    found.unwrap()
}

#[test]
fn expired_leases_are_rescued_and_stale_claims_are_fenced() {
    let db = support::db();
    let broker = db.broker();
    let id = broker
        .enqueue_job(&Job::new("l", "{}").max_attempts(2))
        .unwrap();
    let first = broker
        .claim_jobs("l", "w1", 1, Duration::from_millis(100))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(broker.rescue_jobs().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(200));
    let stuck = broker.stuck_jobs(Duration::ZERO).unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].worker.as_deref(), Some("w1"));
    assert_eq!(broker.rescue_jobs().unwrap(), 1);
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Available, 1));
    assert!(info.last_error.unwrap().contains("lease expired"));

    // The second claim owns it now: the first worker's outcome is ignored.
    let second = broker
        .claim_jobs("l", "w2", 1, Duration::from_millis(100))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(
        broker.complete_jobs(std::slice::from_ref(&first)).unwrap(),
        0
    );
    assert_eq!(broker.fail_job(&first, "late", None).unwrap(), None);
    assert_eq!(broker.job(id).unwrap().unwrap().state, JobState::Running);

    // Its lease expires too: attempts are exhausted, so it is dead.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(broker.rescue_jobs().unwrap(), 1);
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.errors.as_array().unwrap().len(), 2);
}

#[test]
fn cancel_available_and_running_jobs() {
    let db = support::db();
    let broker = db.broker();
    let pending = broker.enqueue("c", "{}").unwrap();
    let running = broker.enqueue("c", "{}").unwrap();
    assert!(broker.cancel_job(pending).unwrap());
    let claimed = broker.claim_jobs("c", "w", 10, LEASE).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, running);
    assert!(broker.cancel_job(running).unwrap());
    assert!(!broker.cancel_job(running).unwrap());
    assert!(!broker.cancel_job(123_456).unwrap());
    // The worker's outcome no longer applies.
    assert_eq!(broker.complete_jobs(&claimed).unwrap(), 0);
    for id in [pending, running] {
        let info = broker.job(id).unwrap().unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        assert!(info.finished_at.is_some());
    }
    assert_eq!(broker.queue_stats().unwrap()[0].cancelled, 2);
    // Re-drive a cancelled job.
    assert!(broker.retry_job(pending).unwrap());
    assert_eq!(
        broker.claim_jobs("c", "w", 10, LEASE).unwrap()[0].id,
        pending
    );
}

#[test]
fn enqueue_in_commits_with_the_transaction() {
    let db = support::db();
    let broker = db.broker();
    let mut conn = broker.conn().unwrap();
    {
        let mut tx = conn.transaction().unwrap();
        broker.enqueue_in(&mut tx, &Job::new("t", "{}")).unwrap();
        tx.rollback().unwrap();
    }
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
    let mut tx = conn.transaction().unwrap();
    let id = broker
        .enqueue_in(&mut tx, &Job::new("t", "{}").priority(2))
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
    tx.commit().unwrap();
    assert_eq!(broker.job(id).unwrap().unwrap().priority, 2);
}

#[test]
fn batch_enqueue_with_copy() {
    const N: usize = 20_000;
    let db = support::db();
    let broker = db.broker();
    let jobs: Vec<Job> = (0..N)
        .map(|i| Job::new("batch", &serde_json::json!({"i": i})).priority((i % 3) as i32))
        .collect();
    assert_eq!(broker.enqueue_batch(&jobs).unwrap(), N as u64);
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT payload->>'i') FROM pgbroker.jobs WHERE queue = 'batch'"
        ),
        N as i64
    );
    // Unique keys: existing ones and repeats within the batch are skipped.
    broker
        .enqueue_job(&Job::new("u", "{}").unique_key("a"))
        .unwrap();
    let uniq = vec![
        Job::new("u", "{}").unique_key("a"),
        Job::new("u", "{}").unique_key("b"),
        Job::new("u", "{}").unique_key("b"),
        Job::new("u", "{}")
            .delay(Duration::from_secs(60))
            .max_attempts(2),
    ];
    assert_eq!(broker.enqueue_batch(&uniq).unwrap(), 2);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgbroker.jobs WHERE queue = 'u'"),
        3
    );
    let scheduled = broker
        .queue_stats()
        .unwrap()
        .into_iter()
        .find(|q| q.queue == "u")
        .unwrap();
    assert_eq!((scheduled.available, scheduled.scheduled), (2, 1));
    assert_eq!(broker.enqueue_batch(&[]).unwrap(), 0);
}

#[test]
fn stats_report_the_oldest_ready_job_age() {
    let db = support::db();
    let broker = db.broker();
    assert!(broker.queue_stats().unwrap().is_empty());
    broker.enqueue("age", "{}").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    broker.enqueue("age", "{}").unwrap();
    let stats = broker.queue_stats().unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].queue.as_str(), stats[0].available), ("age", 2));
    let age = stats[0].oldest_available.unwrap();
    assert!(
        age >= Duration::from_millis(300) && age < Duration::from_secs(30),
        "{age:?}"
    );
    broker.claim_jobs("age", "w", 2, LEASE).unwrap();
    let stats = broker.queue_stats().unwrap();
    assert_eq!((stats[0].available, stats[0].running), (0, 2));
    assert_eq!(stats[0].oldest_available, None);
}

#[test]
fn watchers_see_every_state_change() {
    let db = support::db();
    let broker = db.broker();
    let watcher = broker.watch_jobs("w").unwrap();
    let id = broker
        .enqueue_job(&Job::new("w", "{}").max_attempts(2))
        .unwrap();
    let j = broker
        .claim_jobs("w", "x", 1, LEASE)
        .unwrap()
        .pop()
        .unwrap();
    broker.fail_job(&j, "flaky", Some(Duration::ZERO)).unwrap();
    let j = broker
        .claim_jobs("w", "x", 1, LEASE)
        .unwrap()
        .pop()
        .unwrap();
    broker.complete_jobs(&[j]).unwrap();
    let other = broker.enqueue("not-watched", "{}").unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = watcher.recv_timeout(Duration::from_millis(500)).unwrap() {
        assert_eq!(ev.id, id, "only the watched queue: {other}");
        seen.push((ev.state, ev.attempt, ev.error));
    }
    assert_eq!(
        seen,
        vec![
            (JobState::Available, 0, None),
            (JobState::Running, 1, None),
            (JobState::Available, 1, Some("flaky".to_owned())),
            (JobState::Running, 2, None),
            (JobState::Completed, 2, None),
        ]
    );
    // Plain LISTEN works too, and unwatching stops the events.
    assert!(broker.unwatch_jobs("w").unwrap());
    broker.enqueue("w", "{}").unwrap();
    assert!(watcher
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgbroker_job_status'"
        ),
        0
    );
}

#[test]
fn schema_install_is_idempotent_and_keeps_jobs() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("keep", "{}").unwrap();
    broker.install().unwrap();
    assert!(broker.job(id).unwrap().is_some());
}

#[test]
fn wake_ups_only_while_a_worker_waits_and_one_per_transaction() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("pgbroker.jobs").unwrap();
    // Nobody waits: producers send no NOTIFY at all.
    broker.enqueue("mail", "{}").unwrap();
    assert!(listener
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    // An idle worker registered: one notification per transaction, payload = queue name.
    let mut c = db.client();
    c.execute("SELECT pgbroker.wait_for_jobs('mail', 'w1')", &[])
        .unwrap();
    let mut conn = broker.conn().unwrap();
    let mut tx = conn.transaction().unwrap();
    for _ in 0..3 {
        broker.enqueue_in(&mut tx, &Job::new("mail", "{}")).unwrap();
    }
    tx.query("SELECT pgbroker.enqueue('mail', '{}')", &[])
        .unwrap();
    // Delayed jobs and other queues wake nobody.
    broker
        .enqueue_in(
            &mut tx,
            &Job::new("mail", "{}").delay(Duration::from_secs(60)),
        )
        .unwrap();
    broker
        .enqueue_in(&mut tx, &Job::new("other", "{}"))
        .unwrap();
    tx.commit().unwrap();
    let mut got = Vec::new();
    while let Some(pgbroker::Event::Notification(n)) =
        listener.recv_timeout(Duration::from_millis(300)).unwrap()
    {
        got.push(n.payload().to_owned());
    }
    assert_eq!(got, vec!["mail".to_owned()]);
    c.execute("SELECT pgbroker.stop_waiting('mail', 'w1')", &[])
        .unwrap();
    broker.enqueue("mail", "{}").unwrap();
    assert!(listener
        .recv_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
}

/// Installing over the first layout of `pgbroker.jobs` (three CHECKs, re-planned by every
/// insert and update) leaves the one cheap state check, which still refuses unknown states.
#[test]
fn install_replaces_the_costly_job_checks() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute(
        "ALTER TABLE pgbroker.jobs DROP CONSTRAINT jobs_state_check,
           ADD CONSTRAINT jobs_state_check
               CHECK (state IN ('available', 'running', 'completed', 'dead', 'cancelled')),
           ADD CONSTRAINT jobs_max_attempts_check CHECK (max_attempts > 0),
           ADD CONSTRAINT jobs_queue_check CHECK (octet_length(queue) BETWEEN 1 AND 48)",
    )
    .unwrap();
    let id = broker.enqueue("keep", "{}").unwrap();
    broker.install().unwrap();
    let checks: Vec<String> = c
        .query(
            "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = 'pgbroker.jobs'::regclass AND contype = 'c'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        checks,
        ["jobs_state_check CHECK (((state)::pgbroker.job_state IS NOT NULL))"]
    );
    assert!(broker.job(id).unwrap().is_some());
    let err = c
        .execute(
            "UPDATE pgbroker.jobs SET state = 'done' WHERE id = $1",
            &[&id],
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&pgbroker::postgres::error::SqlState::INVALID_TEXT_REPRESENTATION)
    );
}

/// Each of the three enqueue statements wakes a waiting worker on its own, and only for a job
/// that is new and due now.
#[test]
fn every_enqueue_statement_wakes_a_waiting_worker() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("pgbroker.jobs").unwrap();
    let mut c = db.client();
    c.execute("SELECT pgbroker.wait_for_jobs('mail', 'w1')", &[])
        .unwrap();
    let woken = || {
        let mut n = 0;
        while let Some(pgbroker::Event::Notification(_)) =
            listener.recv_timeout(Duration::from_millis(300)).unwrap()
        {
            n += 1;
        }
        n
    };
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    let cases = [
        ("enqueue", None, 1),
        ("plain job", Some(Job::new("mail", "{}").priority(3)), 1),
        ("run_at past", Some(Job::new("mail", "{}").run_at(past)), 1),
        (
            "delayed",
            Some(Job::new("mail", "{}").delay(Duration::from_secs(60))),
            0,
        ),
        (
            "unique, new",
            Some(Job::new("mail", "{}").unique_key("k")),
            1,
        ),
        (
            "unique, duplicate",
            Some(Job::new("mail", "{}").unique_key("k")),
            0,
        ),
    ];
    for (what, job, expected) in cases {
        match job {
            None => broker.enqueue("mail", "{}").map(|_| ()),
            Some(j) => broker.enqueue_job(&j).map(|_| ()),
        }
        .unwrap();
        assert_eq!(woken(), expected, "{what}");
    }
}

#[test]
fn sql_claims_use_the_same_order_as_rust_claims() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let prios = [4, -2, 4, 0, -2, 9];
    let mut expected: Vec<(i32, i64)> = prios
        .iter()
        .map(|p| {
            let id: i64 = c
                .query_one("SELECT pgbroker.enqueue('o', '{}', priority => $1)", &[p])
                .unwrap()
                .get(0);
            (*p, id)
        })
        .collect();
    expected.sort();
    let mut got: Vec<(i32, i64)> = c
        .query(
            "SELECT priority, id FROM pgbroker.claim('o', 'psql', 3, '1 minute')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    got.extend(
        broker
            .claim_jobs("o", "rust", 10, LEASE)
            .unwrap()
            .iter()
            .map(|j| (j.priority, j.id)),
    );
    assert_eq!(got, expected);
}

#[test]
fn a_batch_completion_completes_exactly_the_claims_still_held() {
    let db = support::db();
    let broker = db.broker();
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            broker
                .enqueue("mix", &serde_json::json!({ "i": i }))
                .unwrap()
        })
        .collect();
    let old = broker.claim_jobs("mix", "w1", 4, LEASE).unwrap();
    assert_eq!(old.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    // Job 1 is rescued and claimed again (attempt 2); job 2 is cancelled.
    db.client()
        .execute(
            "UPDATE pgbroker.jobs SET lease_until = now() - interval '1 second' WHERE id = $1",
            &[&ids[1]],
        )
        .unwrap();
    assert_eq!(broker.rescue_jobs().unwrap(), 1);
    let again = broker.claim_jobs("mix", "w2", 4, LEASE).unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
        [(ids[1], 2)]
    );
    assert!(broker.cancel_job(ids[2]).unwrap());
    // The old claims complete jobs 0 and 3 only, in one statement.
    assert_eq!(broker.complete_jobs(&old).unwrap(), 2);
    let states: Vec<Option<(JobState, i32)>> = ids
        .iter()
        .map(|id| broker.job(*id).unwrap().map(|j| (j.state, j.attempt)))
        .collect();
    assert_eq!(
        states,
        [
            None,
            Some((JobState::Running, 2)),
            Some((JobState::Cancelled, 1)),
            None
        ]
    );
    // The SQL functions fence the same way; without attempts they complete whatever runs.
    let mut c = db.client();
    let mut held = |attempt: i32| -> Vec<i64> {
        c.query(
            "SELECT pgbroker.extend_leases($1, $2)",
            &[&ids, &vec![attempt; 4]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(held(1), Vec::<i64>::new(), "job 1 runs as attempt 2");
    assert_eq!(held(2), [ids[1]]);
    let done: i32 = c
        .query_one(
            "SELECT pgbroker.complete_many($1, $2)",
            &[&ids, &vec![1i32, 1, 1, 1]],
        )
        .unwrap()
        .get(0);
    assert_eq!(done, 0);
    let done: i32 = c
        .query_one("SELECT pgbroker.complete_many($1)", &[&ids])
        .unwrap()
        .get(0);
    assert_eq!(done, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 1);
}
