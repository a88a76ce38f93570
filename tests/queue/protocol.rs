//! The job queue's protocol against a real PostgreSQL: enqueue, claim, outcomes, rescue,
//! unique jobs, bad input, batches, watching and introspection, from Rust and from SQL.

use crate::support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use pgbroker::queue::{Job, JobState};
use pgbroker::{ErrorKind, JobId};

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
    let b: JobId = c
        .query_one(
            "SELECT pgbroker.enqueue('mail', '{\"n\": 2}', priority => 5, max_attempts => 3)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(b.get(), a.get() + 1);
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
    assert_eq!(row.get::<_, JobId>(0), a);
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
    let kind = |r: pgbroker::Result<JobId>| r.unwrap_err().kind();
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
    let ids: Vec<JobId> = threads
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
    let from_sql: JobId = db
        .client()
        .query_one(
            "SELECT pgbroker.enqueue('sync', '{}', unique_key => 'account:1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(from_sql, fresh);
}

/// A unique key keeps other jobs out only while its job is available or running: a dead, a
/// cancelled and a kept completed job free it (and still show it), and re-driving a job takes
/// its key back, refused while another job holds it.
#[test]
fn a_unique_key_is_held_only_while_its_job_is_available_or_running() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let unique = |key: &str| {
        broker
            .enqueue_job(&Job::new("u", "{}").unique_key(key).max_attempts(1))
            .unwrap()
    };
    let dead = unique("a");
    let j = support_claim_one(&broker, "u");
    assert_eq!(
        broker.fail_job(&j, "boom", None).unwrap(),
        Some(JobState::Dead)
    );
    let cancelled = unique("b");
    assert!(broker.cancel_job(cancelled).unwrap());
    let kept = unique("c");
    assert_eq!(support_claim_one(&broker, "u").id, kept);
    let completed: bool = c
        .query_one(
            "SELECT pgbroker.complete($1, '{\"ok\": 1}', interval '1 hour')",
            &[&kept],
        )
        .unwrap()
        .get(0);
    assert!(completed);

    let mut fresh = Vec::new();
    for (old, key, state) in [
        (dead, "a", JobState::Dead),
        (cancelled, "b", JobState::Cancelled),
        (kept, "c", JobState::Completed),
    ] {
        let info = broker.job(old).unwrap().unwrap();
        assert_eq!((info.state, info.unique_key.as_deref()), (state, Some(key)));
        let new = unique(key);
        assert_ne!(new, old);
        assert_eq!(unique(key), new, "the new job holds the key");
        fresh.push(new);
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgbroker.jobs WHERE unique_key IS NOT NULL"
        ),
        3
    );

    // Re-driving while another job holds the key fails and changes nothing...
    let err = broker.redrive_job(dead).unwrap_err();
    assert_eq!(err.db_code(), Some("23505"), "{err}");
    assert_eq!(broker.job(dead).unwrap().unwrap().state, JobState::Dead);
    // ...and once the key is free, the job takes it back.
    assert!(broker.cancel_job(fresh[0]).unwrap());
    assert!(broker.redrive_job(dead).unwrap());
    let info = broker.job(dead).unwrap().unwrap();
    assert_eq!(
        (
            info.state,
            info.unique_key.as_deref(),
            info.errors.as_array().map(Vec::len)
        ),
        (JobState::Available, Some("a"), Some(1))
    );
    assert_eq!(unique("a"), dead);
}

#[test]
fn claims_follow_priority_then_run_at_then_id() {
    let db = support::db();
    let broker = db.broker();
    let prios = [3, -1, 0, 3, -7, 0, 10, -1];
    let ids: Vec<JobId> = prios
        .iter()
        .map(|p| {
            broker
                .enqueue_job(&Job::new("p", "{}").priority(*p))
                .unwrap()
        })
        .collect();
    let mut expected: Vec<(i32, JobId)> = prios.iter().copied().zip(ids.iter().copied()).collect();
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
                    "SELECT extract(epoch FROM run_at - (details->'errors'->-1->>'at')::timestamptz)::float8
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
    assert!(broker.redrive_job(id).unwrap());
    assert!(!broker.redrive_job(id).unwrap());
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

/// Kept completed jobs are deleted by rescue once their retention ends, and only then.
#[test]
fn rescue_deletes_kept_jobs_after_their_retention() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let short = broker.enqueue("kept", "{}").unwrap();
    let long = broker.enqueue("kept", "{}").unwrap();
    broker.claim_jobs("kept", "w", 2, LEASE).unwrap();
    for (id, keep) in [(short, "100 milliseconds"), (long, "1 hour")] {
        let done: bool = c
            .query_one(
                "SELECT pgbroker.complete($1, '{\"ok\": 1}', $2::text::interval)",
                &[&id, &keep],
            )
            .unwrap()
            .get(0);
        assert!(done);
    }
    assert_eq!(broker.rescue_jobs().unwrap(), 0);
    assert!(broker.job(short).unwrap().is_some(), "still kept");
    std::thread::sleep(Duration::from_millis(200));
    broker.rescue_jobs().unwrap();
    assert!(broker.job(short).unwrap().is_none());
    let kept = broker.job(long).unwrap().unwrap();
    assert_eq!(
        (kept.state, kept.result),
        (JobState::Completed, Some(serde_json::json!({"ok": 1})))
    );
}

/// Rescue, stuck and dead jobs, and the expiry of kept jobs find their rows through the one
/// index of jobs that are not available, among many available ones.
#[test]
fn queries_of_jobs_not_available_use_their_index() {
    let db = support::db();
    let mut c = db.client();
    c.batch_execute(
        "INSERT INTO pgbroker.jobs (queue, payload, state, lease_until, finished_at)
         SELECT 'q' || i % 10, '{}', s::pgbroker.job_state,
                CASE WHEN s IN ('running', 'completed') THEN now() + i * interval '1 second' END,
                CASE WHEN s IN ('completed', 'dead') THEN now() - i * interval '1 second' END
           FROM generate_series(1, 20000) i,
                LATERAL (SELECT CASE i % 20 WHEN 0 THEN 'running' WHEN 1 THEN 'completed'
                                            WHEN 2 THEN 'dead' ELSE 'available' END) AS t(s);
         ANALYZE pgbroker.jobs;",
    )
    .unwrap();
    // The statements of pgbroker.rescue() (a plpgsql function cannot be explained as a
    // whole), and the SQL functions, which PostgreSQL inlines.
    for sql in [
        "SELECT j.id FROM pgbroker.jobs j
          WHERE j.state = 'running' AND j.lease_until < now()
            AND coalesce(j.lease_until, j.finished_at) < now()
            FOR UPDATE SKIP LOCKED",
        "DELETE FROM pgbroker.jobs
          WHERE state = 'completed' AND coalesce(lease_until, finished_at) < now()",
        "SELECT * FROM pgbroker.stuck_jobs(interval '1 minute')",
        "SELECT * FROM pgbroker.dead_jobs(NULL, 10)",
        "SELECT * FROM pgbroker.dead_jobs('q2', 10)",
    ] {
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN {sql}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("jobs_state_time_idx"), "{sql}:\n{plan}");
    }
    // ...which are these, as the schema has them.
    let schema = pgbroker::schema_sql();
    assert!(schema.contains("AND coalesce(j.lease_until, j.finished_at) < now() -- the index"));
    assert!(schema.contains(
        "WHERE state = 'completed' AND coalesce(lease_until, finished_at) < now(); -- the index"
    ));
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
    assert!(!broker.cancel_job(JobId(123_456)).unwrap());
    // The worker's outcome no longer applies.
    assert_eq!(broker.complete_jobs(&claimed).unwrap(), 0);
    for id in [pending, running] {
        let info = broker.job(id).unwrap().unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        assert!(info.finished_at.is_some());
    }
    assert_eq!(broker.queue_stats().unwrap()[0].cancelled, 2);
    // Re-drive a cancelled job.
    assert!(broker.redrive_job(pending).unwrap());
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
fn batch_enqueue_as_arrays_and_with_copy() {
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
    // Both ways a batch is sent (one statement of arrays up to 1 000 jobs, COPY above), on a
    // pooled connection and in the caller's transaction: unique keys that exist and repeats
    // within the batch are skipped, options are kept, a rollback writes nothing.
    for (case, padding) in [0, 1_500].into_iter().enumerate() {
        let q = format!("u{case}");
        broker
            .enqueue_job(&Job::new(&q, "{}").unique_key("a"))
            .unwrap();
        let mut uniq = vec![
            Job::new(&q, "{}").unique_key("a"),
            Job::new(&q, "{}").unique_key("b"),
            Job::new(&q, "{}").unique_key("b"),
            Job::new(&q, "{}")
                .delay(Duration::from_secs(60))
                .max_attempts(2)
                .backoff(Duration::from_secs(3), Duration::from_secs(90)),
        ];
        uniq.extend((0..padding).map(|_| Job::new("padding", "{}")));
        assert_eq!(broker.enqueue_batch(&uniq).unwrap(), 2 + padding as u64);
        let rows: Vec<(Option<String>, i32, Option<serde_json::Value>)> = db
            .client()
            .query(
                "SELECT unique_key, max_attempts, details FROM pgbroker.jobs
                  WHERE queue = $1 ORDER BY id",
                &[&q],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            rows,
            [
                (Some("a".to_owned()), 25, None),
                (Some("b".to_owned()), 25, None),
                (
                    None,
                    2,
                    Some(serde_json::json!({"backoff": {"base": 3, "max": 90}}))
                ),
            ],
            "padding {padding}"
        );
        let stats = broker.queue_stats().unwrap();
        let scheduled = stats.iter().find(|s| s.queue == q).unwrap();
        assert_eq!((scheduled.available, scheduled.scheduled), (2, 1));

        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        uniq[1] = Job::new(&q, "{}").unique_key("c");
        assert_eq!(
            broker.enqueue_batch_in(&mut tx, &uniq).unwrap(),
            2 + padding as u64,
            "c and the delayed job"
        );
        tx.rollback().unwrap();
        let mut tx = conn.transaction().unwrap();
        assert_eq!(
            broker.enqueue_batch_in(&mut tx, &uniq).unwrap(),
            2 + padding as u64
        );
        tx.commit().unwrap();
        assert_eq!(
            count(
                &db,
                &format!("SELECT count(*) FROM pgbroker.jobs WHERE queue = '{q}'")
            ),
            5
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgbroker.jobs WHERE queue = 'padding'"
        ),
        2 * 1_500
    );
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

/// After an enqueue found nobody waiting, a worker that registers right after is woken by
/// the first enqueue once the broker asks again (2 ms later), and every later one while it
/// waits.
#[test]
fn a_worker_that_starts_waiting_after_a_quiet_enqueue_is_woken_soon() {
    let db = support::db();
    let broker = db.broker();
    let listener = broker.listen("pgbroker.jobs").unwrap();
    broker.enqueue("mail", "{}").unwrap();
    db.client()
        .execute("SELECT pgbroker.wait_for_jobs('mail', 'w1')", &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        broker.enqueue("mail", "{}").unwrap();
        let n = listener
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("a wake-up");
        match n {
            pgbroker::Event::Notification(n) => assert_eq!(n.payload(), "mail"),
            other => panic!("{other:?}"),
        }
    }
}

/// Single enqueues with the table's defaults leave priority and max_attempts to the table (a
/// shorter statement); any other value is written.
#[test]
fn single_enqueues_with_and_without_the_defaults() {
    let db = support::db();
    let broker = db.broker();
    let jobs = [
        Job::new("d", "{}"),
        Job::new("d", "{}").priority(-3),
        Job::new("d", "{}").max_attempts(2),
        Job::new("d", "{}").priority(0).max_attempts(25),
    ];
    // Twice: the first enqueue of a broker takes another path.
    for _ in 0..2 {
        let got: Vec<(i32, i32)> = jobs
            .iter()
            .map(|j| {
                let info = broker.job(broker.enqueue_job(j).unwrap()).unwrap().unwrap();
                (info.priority, info.max_attempts)
            })
            .collect();
        assert_eq!(got, [(0, 25), (-3, 25), (0, 2), (0, 25)]);
        let info = broker
            .job(broker.enqueue("d", "{}").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.priority, info.max_attempts as u32),
            (0, pgbroker::queue::DEFAULT_MAX_ATTEMPTS)
        );
    }
}

/// A broker's first single enqueue takes its id from the sequence; later ones use ids the
/// broker reserved in blocks (16 first): unique, increasing for the broker, but not in order
/// with jobs enqueued elsewhere meanwhile (SQL, another broker, a transaction).
#[test]
fn single_enqueues_use_ids_their_broker_reserved() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let mut ids = vec![
        broker.enqueue("ids", "{}").unwrap(),
        broker.enqueue("ids", "{}").unwrap(),
        broker
            .enqueue_job(&Job::new("ids", "{}").priority(2))
            .unwrap(),
    ];
    ids.push(
        c.query_one("SELECT pgbroker.enqueue('ids', '{}')", &[])
            .unwrap()
            .get(0),
    );
    ids.push(broker.enqueue("ids", "{}").unwrap());
    assert_eq!(ids, [1, 2, 3, 18, 4].map(JobId));
    let stored: Vec<(i64, i32)> = c
        .query(
            "SELECT id, priority FROM pgbroker.jobs WHERE queue = 'ids' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored, [(1, 0), (2, 0), (3, 2), (4, 0), (18, 0)]);
}

/// A reserved id already taken (here by a job written with an explicit id) fails that enqueue
/// with the database's unique violation, and the next enqueue goes on with the next id.
#[test]
fn an_enqueue_whose_reserved_id_is_taken_fails_alone() {
    let db = support::db();
    let broker = db.broker();
    assert_eq!(broker.enqueue("ids", "{}").unwrap(), JobId(1));
    db.client()
        .execute(
            "INSERT INTO pgbroker.jobs (id, queue, payload) VALUES (2, 'ids', '{}')",
            &[],
        )
        .unwrap();
    let err = broker.enqueue("ids", "{}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Db);
    assert_eq!(err.db_code(), Some("23505"), "unique_violation: {err}");
    assert_eq!(broker.enqueue("ids", "{}").unwrap(), JobId(3));
}

#[test]
fn sql_claims_use_the_same_order_as_rust_claims() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let prios = [4, -2, 4, 0, -2, 9];
    let mut expected: Vec<(i32, JobId)> = prios
        .iter()
        .map(|p| {
            let id: JobId = c
                .query_one("SELECT pgbroker.enqueue('o', '{}', priority => $1)", &[p])
                .unwrap()
                .get(0);
            (*p, id)
        })
        .collect();
    expected.sort();
    let mut got: Vec<(i32, JobId)> = c
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
    let ids: Vec<JobId> = (0..4)
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
    let mut held = |attempt: i32| -> Vec<JobId> {
        c.query(
            "SELECT pgbroker.extend_leases($1, $2)",
            &[&ids, &vec![attempt; 4]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(held(1), Vec::<JobId>::new(), "job 1 runs as attempt 2");
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
