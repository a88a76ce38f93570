//! Transactional queues on the worker pool (`QueueOptions::transactional`) against a real
//! PostgreSQL: each handler's writes commit with its job's completion, exactly once; failures
//! roll back only their own job; lost connections and shutdown give jobs back untouched.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, JobContext, JobState, QueueOptions};
use pgbroker::{Broker, ErrorKind};

const WAIT: Duration = Duration::from_secs(60);

/// A transactional queue with test-speed polling.
fn opts(queue: &str) -> QueueOptions {
    QueueOptions::new(queue)
        .transactional(true)
        .poll_interval(Duration::from_millis(100))
        .lease(Duration::from_secs(5))
}

fn count(broker: &Broker, sql: &str) -> i64 {
    broker.conn().unwrap().query_one(sql, &[]).unwrap().get(0)
}

fn jobs_left(broker: &Broker) -> i64 {
    count(broker, "SELECT count(*) FROM pgbroker.jobs")
}

/// A table of effects: one row per (job, attempt) a handler wrote.
fn effects_table(db: &support::TestDb) {
    db.client()
        .batch_execute(
            "CREATE TABLE effects (job_id bigint, attempt int, PRIMARY KEY (job_id, attempt))",
        )
        .unwrap();
}

/// The handler's write: this job's id and attempt, in the job's transaction.
fn record(job: &JobContext<'_>) -> pgbroker::Result<()> {
    job.with_transaction(|tx| {
        tx.execute(
            "INSERT INTO effects VALUES ($1, $2)",
            &[&job.id(), &(job.attempt() as i32)],
        )?;
        Ok(())
    })
}

fn effects(broker: &Broker) -> Vec<(i64, i32)> {
    broker
        .conn()
        .unwrap()
        .query("SELECT job_id, attempt FROM effects ORDER BY 1, 2", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn many_jobs_on_four_transactions_each_handled_exactly_once() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let n = 2_000;
    let jobs: Vec<Job> = (0..n)
        .map(|i| Job::new("many", &serde_json::json!({ "i": i })))
        .collect();
    broker.enqueue_batch(&jobs).unwrap();
    let mut ids: Vec<i64> = broker
        .conn()
        .unwrap()
        .query("SELECT id FROM pgbroker.jobs", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort_unstable();
    let calls = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let c = calls.clone();
    let pool = broker
        .worker_pool()
        .threads(4)
        .queue_with(opts("many").concurrency(4), move |job| {
            record(job)?;
            c.lock().unwrap().push(job.id());
            Ok(())
        })
        .start()
        .unwrap();
    assert!(
        support::wait_until(WAIT, || jobs_left(&broker) == 0),
        "{} jobs left",
        jobs_left(&broker)
    );
    let stats = pool.shutdown().unwrap();
    let done: Vec<i64> = effects(&broker).into_iter().map(|(id, _)| id).collect();
    assert_eq!(done, ids, "the effects table holds exactly the N job ids");
    let mut calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), n, "no handler ran twice");
    calls.sort_unstable();
    assert_eq!(calls, ids);
    assert_eq!((stats.handled, stats.failed), (n as u64, 0));
}

#[test]
fn a_panicking_handler_rolls_back_its_own_writes_only_and_is_retried() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            broker
                .enqueue_job(
                    &Job::new("p", &serde_json::json!({ "i": i }))
                        .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                )
                .unwrap()
        })
        .collect();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("p").jobs_per_transaction(10), move |job| {
            r.lock().unwrap().push((job.id(), job.attempt()));
            record(job)?;
            if job.payload()["i"] == 2 && job.attempt() == 1 {
                panic!("job 2 explodes after writing");
            }
            Ok(())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
    let stats = pool.shutdown().unwrap();
    // One batch ran all five (the panic did not stop it), then job 2 again as attempt 2.
    let mut expected: Vec<(i64, u32)> = ids.iter().map(|id| (*id, 1)).collect();
    expected.push((ids[2], 2));
    assert_eq!(*runs.lock().unwrap(), expected);
    // Attempt 1 of job 2 wrote nothing that survived; the others' writes committed once.
    let mut written: Vec<(i64, i32)> = ids.iter().map(|id| (*id, 1)).collect();
    written[2].1 = 2;
    assert_eq!(effects(&broker), written);
    assert_eq!((stats.handled, stats.panicked), (5, 1));
}

#[test]
fn exhausted_jobs_die_with_their_errors_and_no_effects() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let id = broker
        .enqueue_job(
            &Job::new("f", "{}")
                .max_attempts(3)
                .backoff(Duration::from_millis(10), Duration::from_millis(20)),
        )
        .unwrap();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(opts("f"), move |job| {
            record(job)?;
            if job.attempt() == 2 {
                panic!("attempt 2 panicked");
            }
            Err(format!("attempt {} failed", job.attempt()).into())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || broker
        .job(id)
        .unwrap()
        .is_some_and(|j| j.state == JobState::Dead)));
    pool.shutdown().unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.attempt, 3);
    assert_eq!(info.last_error.as_deref(), Some("attempt 3 failed"));
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
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0], (1, "attempt 1 failed".to_owned()));
    assert_eq!(errors[1].0, 2);
    assert!(errors[1].1.contains("attempt 2 panicked"), "{errors:?}");
    assert_eq!(errors[2], (3, "attempt 3 failed".to_owned()));
    assert!(
        effects(&broker).is_empty(),
        "every attempt's write rolled back"
    );
}

#[test]
fn a_pipeline_stage_enqueues_the_next_stage_atomically() {
    let db = support::db();
    let broker = db.broker();
    for i in 0..3 {
        broker
            .enqueue_job(
                &Job::new("clone", &serde_json::json!({ "run": i }))
                    .backoff(Duration::from_millis(10), Duration::from_millis(10)),
            )
            .unwrap();
    }
    let built = Arc::new(Mutex::new(Vec::new()));
    let b = built.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(opts("clone").jobs_per_transaction(3), |job| {
            let next = job.complete_and_enqueue(&Job::new("build", job.payload()))?;
            assert!(next > job.id());
            if job.payload()["run"] == 1 && job.attempt() == 1 {
                // The build job enqueued above is rolled back with this attempt.
                return Err("clone of run 1 failed after enqueueing".into());
            }
            Ok(())
        })
        .queue_with(opts("build"), move |job| {
            b.lock()
                .unwrap()
                .push(job.payload()["run"].as_i64().unwrap());
            Ok(())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || built.lock().unwrap().len()
        >= 3
        && jobs_left(&broker) == 0));
    std::thread::sleep(Duration::from_millis(300)); // a duplicate build would show up now
    pool.shutdown().unwrap();
    let mut built = built.lock().unwrap().clone();
    built.sort_unstable();
    assert_eq!(built, [0, 1, 2], "exactly one build per clone");
    assert_eq!(jobs_left(&broker), 0);
}

#[test]
fn a_killed_connection_mid_batch_gives_the_jobs_back_and_they_are_redone() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let ids: Vec<i64> = (0..3)
        .map(|i| broker.enqueue("k", &serde_json::json!({ "i": i })).unwrap())
        .collect();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (killed_tx, killed_rx) = crossbeam_channel::bounded::<()>(1);
    let r = runs.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("k").jobs_per_transaction(3), move |job| {
            let first = {
                let mut runs = r.lock().unwrap();
                runs.push((job.id(), job.attempt()));
                runs.len() == 1
            };
            record(job)?;
            if first {
                started_tx.send(()).unwrap();
                killed_rx.recv().unwrap();
            }
            Ok(())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = $1 AND state = 'idle in transaction'",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    killed_tx.send(()).unwrap();
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
    pool.shutdown().unwrap();
    // Redone: the first job ran twice, both times as attempt 1 (the lost batch counts
    // nothing); its first write died with the connection.
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs[0], (ids[0], 1));
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "{runs:?}");
    assert_eq!(
        runs.iter().filter(|(id, _)| *id == ids[0]).count(),
        2,
        "{runs:?}"
    );
    assert_eq!(
        effects(&broker),
        ids.iter().map(|id| (*id, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn shutdown_gives_unstarted_jobs_back_untouched() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let ids: Vec<i64> = (0..4)
        .map(|i| broker.enqueue("s", &serde_json::json!({ "i": i })).unwrap())
        .collect();
    let before: Vec<_> = ids
        .iter()
        .map(|id| broker.job(*id).unwrap().unwrap().run_at)
        .collect();
    let (started_tx, started_rx) = crossbeam_channel::bounded::<i64>(4);
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("s").jobs_per_transaction(10), move |job| {
            record(job)?;
            started_tx.send(job.id()).unwrap();
            std::thread::sleep(Duration::from_millis(500)); // shutdown begins meanwhile
            Ok(())
        })
        .start()
        .unwrap();
    assert_eq!(started_rx.recv_timeout(WAIT).unwrap(), ids[0]);
    let stats = pool.shutdown().unwrap();
    assert_eq!(stats.abandoned, 3);
    assert!(started_rx.try_recv().is_err(), "no other handler started");
    // The running job finished and committed; the rest are back as they were.
    assert!(broker.job(ids[0]).unwrap().is_none());
    assert_eq!(effects(&broker), [(ids[0], 1)]);
    for (id, run_at) in ids[1..].iter().zip(&before[1..]) {
        let info = broker.job(*id).unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempt, info.run_at),
            (JobState::Available, 0, *run_at)
        );
        assert!(info.errors.as_array().is_none_or(|e| e.is_empty()));
    }
}

#[test]
fn an_idle_pool_is_woken_well_before_its_poll_interval() {
    let db = support::db();
    let broker = db.broker();
    let ran = Arc::new(Mutex::new(None));
    let r = ran.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            opts("wake").poll_interval(Duration::from_secs(10)),
            move |job| {
                *r.lock().unwrap() = Some((job.id(), Instant::now()));
                Ok(())
            },
        )
        .start()
        .unwrap();
    // Idle and registered as waiting by now.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let id = broker.enqueue("wake", "{}").unwrap();
    assert!(support::wait_until(Duration::from_secs(5), || ran
        .lock()
        .unwrap()
        .is_some()));
    pool.shutdown().unwrap();
    let (ran_id, at) = ran.lock().unwrap().unwrap();
    assert_eq!(ran_id, id);
    assert!(
        at.duration_since(t0) < Duration::from_secs(2),
        "woken after {:?}",
        at.duration_since(t0)
    );
    assert_eq!(jobs_left(&broker), 0);
}

#[test]
fn snooze_and_discard_are_written_back_in_the_batch() {
    let db = support::db();
    let broker = db.broker();
    let later = broker
        .enqueue("sd", &serde_json::json!({"do": "snooze"}))
        .unwrap();
    let dead = broker
        .enqueue("sd", &serde_json::json!({"do": "discard"}))
        .unwrap();
    let done = broker
        .enqueue("sd", &serde_json::json!({"do": "ok"}))
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("sd").jobs_per_transaction(3), move |job| {
            r.store(true, Ordering::SeqCst);
            match job.payload()["do"].as_str() {
                Some("snooze") => job.snooze(Duration::from_secs(3600)),
                Some("discard") => job.discard("not wanted"),
                _ => Ok(()),
            }
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || broker
        .job(dead)
        .unwrap()
        .is_some_and(|j| j.state == JobState::Dead)));
    pool.shutdown().unwrap();
    assert!(ran.load(Ordering::SeqCst));
    assert!(broker.job(done).unwrap().is_none());
    let snoozed = broker.job(later).unwrap().unwrap();
    assert_eq!((snoozed.state, snoozed.attempt), (JobState::Available, 0));
    assert!(snoozed.run_at > std::time::SystemTime::now() + Duration::from_secs(3000));
    let discarded = broker.job(dead).unwrap().unwrap();
    assert_eq!(discarded.attempt, 1);
    assert_eq!(
        discarded.last_error.as_deref(),
        Some("discarded: not wanted")
    );
}

#[test]
fn a_handler_that_swallows_a_database_error_still_fails_its_job_alone() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let bad = broker
        .enqueue_job(&Job::new("sw", "{}").max_attempts(1))
        .unwrap();
    let good = broker.enqueue("sw", "{}").unwrap();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("sw").jobs_per_transaction(2), move |job| {
            record(job)?;
            if job.id() == bad {
                let err = job
                    .with_transaction(|tx| Ok(tx.execute("SELECT 1/0", &[])?))
                    .unwrap_err();
                assert_eq!(err.db_code(), Some("22012"));
            }
            Ok(()) // but the transaction was aborted
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 1));
    pool.shutdown().unwrap();
    assert_eq!(effects(&broker), [(good, 1)]);
    let info = broker.job(bad).unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert!(
        info.last_error.as_deref().unwrap().contains("aborted"),
        "{:?}",
        info.last_error
    );
}

#[test]
fn lease_mode_has_no_job_transaction_and_bad_options_fail_start() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("lease", "{}").unwrap();
    let kind = Arc::new(Mutex::new(None));
    let k = kind.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            QueueOptions::new("lease").poll_interval(Duration::from_millis(100)),
            move |job| {
                let err = job.with_transaction(|_tx| Ok(())).unwrap_err();
                *k.lock().unwrap() = Some(err.kind());
                Ok(())
            },
        )
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || broker
        .job(id)
        .unwrap()
        .is_none()));
    pool.shutdown().unwrap();
    assert_eq!(*kind.lock().unwrap(), Some(ErrorKind::Config));

    for bad in [
        opts("x").keep_completed(Duration::from_secs(60)),
        opts("x").jobs_per_transaction(0),
    ] {
        let err = broker
            .worker_pool()
            .queue_with(bad, |_| Ok(()))
            .start()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

#[test]
fn taken_jobs_are_not_handed_to_a_second_pool() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let n = 300;
    let jobs: Vec<Job> = (0..n).map(|i| Job::new("two", &i.to_string())).collect();
    broker.enqueue_batch(&jobs).unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let start = |name: &str| {
        let seen = seen.clone();
        broker
            .worker_pool()
            .threads(2)
            .queue_with(opts("two").concurrency(2).worker_name(name), move |job| {
                record(job)?;
                assert!(seen.lock().unwrap().insert(job.id()), "ran twice");
                Ok(())
            })
            .start()
            .unwrap()
    };
    let (a, b) = (start("a"), start("b"));
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
    let (sa, sb) = (a.shutdown().unwrap(), b.shutdown().unwrap());
    assert_eq!(sa.handled + sb.handled, n as u64);
    assert_eq!(effects(&broker).len(), n);
}

#[test]
fn a_deadlock_between_batches_gives_the_victim_back_uncounted_and_both_commit() {
    let db = support::db();
    let broker = db.broker();
    db.client()
        .batch_execute(
            "CREATE TABLE rows (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO rows VALUES (1, 0), (2, 0);",
        )
        .unwrap();
    // Batch A updates row 1 then row 2, batch B row 2 then row 1.
    for row in [1, 2, 2, 1] {
        broker
            .enqueue("dl", &serde_json::json!({ "row": row }))
            .unwrap();
    }
    let both_locked = Arc::new(std::sync::Barrier::new(2));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            opts("dl").concurrency(2).jobs_per_transaction(2),
            move |job| {
                let first_of_batch = {
                    let mut runs = r.lock().unwrap();
                    runs.push((job.id(), job.attempt()));
                    runs.len() <= 2
                };
                let row = job.payload()["row"].as_i64().unwrap() as i32;
                job.with_transaction(|tx| {
                    tx.execute("UPDATE rows SET n = n + 1 WHERE id = $1", &[&row])?;
                    Ok(())
                })?;
                if first_of_batch {
                    both_locked.wait();
                }
                Ok(())
            },
        )
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
    let stats = pool.shutdown().unwrap();
    let n: Vec<i32> = broker
        .conn()
        .unwrap()
        .query("SELECT n FROM rows ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(n, [2, 2], "every update applied exactly once");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 5, "the victim ran again: {runs:?}");
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "{runs:?}");
    assert_eq!((stats.handled, stats.failed), (4, 1));
}

/// Enqueues `n` jobs on `queue` (payload `{"i": i}`); their ids.
fn enqueue_numbered(broker: &Broker, queue: &str, n: i64) -> Vec<i64> {
    (0..n)
        .map(|i| {
            broker
                .enqueue(queue, &serde_json::json!({ "i": i }))
                .unwrap()
        })
        .collect()
}

/// Runs `handler` on a one-thread pool until no job is left.
fn drain_on_one_thread<F>(broker: &Broker, opts: QueueOptions, handler: F)
where
    F: Fn(&JobContext<'_>) -> pgbroker::HandlerResult + Send + Sync + 'static,
{
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts, handler)
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || jobs_left(broker) == 0));
    pool.shutdown().unwrap();
}

/// Each of `ids` wrote its effect once, as attempt 1.
fn assert_each_done_once(broker: &Broker, ids: &[i64]) {
    assert_eq!(
        effects(broker),
        ids.iter().map(|id| (*id, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn every_batch_runs_under_the_lease_and_in_a_transaction_of_its_own() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let ids = enqueue_numbered(&broker, "l", 6);
    // (job, the job's transaction, its idle_in_transaction_session_timeout)
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = opts("l")
        .jobs_per_transaction(2)
        .lease(Duration::from_millis(1500));
    drain_on_one_thread(&broker, opts, move |job| {
        record(job)?;
        let (tx, timeout) = job.with_transaction(|tx| {
            let row = tx.query_one(
                "SELECT pg_current_xact_id()::text,
                        current_setting('idle_in_transaction_session_timeout')",
                &[],
            )?;
            Ok((row.get::<_, String>(0), row.get::<_, String>(1)))
        })?;
        s.lock().unwrap().push((job.id(), tx, timeout));
        Ok(())
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        ids,
        "each job once, in order"
    );
    assert!(
        seen.iter().all(|(_, _, timeout)| timeout == "1500ms"),
        "{seen:?}"
    );
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].1, pair[1].1, "a batch is one transaction: {seen:?}");
    }
    let transactions: HashSet<&String> = seen.iter().map(|(_, tx, _)| tx).collect();
    assert_eq!(transactions.len(), 3, "three batches: {seen:?}");
    assert_each_done_once(&broker, &ids);
}

#[test]
fn a_batch_idle_past_its_lease_loses_its_session_and_its_jobs_come_back() {
    let db = support::db();
    let broker = db.broker();
    effects_table(&db);
    let ids = enqueue_numbered(&broker, "h", 2);
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    let opts = opts("h")
        .jobs_per_transaction(2)
        .lease(Duration::from_millis(300));
    drain_on_one_thread(&broker, opts, move |job| {
        let first = {
            let mut runs = r.lock().unwrap();
            runs.push((job.id(), job.attempt()));
            runs.len() == 1
        };
        record(job)?;
        if first {
            // Idle in the batch's transaction past the lease: the server ends the session.
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(())
    });
    // The first batch died with its session after its first job: nothing of it committed,
    // no attempt counted; the jobs ran again.
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs, vec![(ids[0], 1), (ids[0], 1), (ids[1], 1)]);
    assert_each_done_once(&broker, &ids);
}
