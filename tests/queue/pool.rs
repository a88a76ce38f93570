//! The job queue run by worker pools in lease mode against a real PostgreSQL: throughput with
//! exactly-once completion, ordering, delays, cancellation, pipelines and graceful shutdown
//! (panics, dead jobs and snooze/discard: both_modes.rs).

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pgbroker::queue::{Job, JobState, QueueOptions};
use pgbroker::{Broker, JobId, WorkerPool};

const WAIT: Duration = Duration::from_secs(30);

/// Fast settings for tests: short poll, heartbeat and rescue intervals.
fn opts(queue: &str, concurrency: usize) -> QueueOptions {
    QueueOptions::new(queue)
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(100))
        .lease(Duration::from_secs(5))
        .heartbeat(Duration::from_millis(100))
        .rescue_interval(Duration::from_millis(200))
}

fn jobs_left(broker: &Broker) -> i64 {
    broker
        .conn()
        .unwrap()
        .query_one("SELECT count(*) FROM pgbroker.jobs", &[])
        .unwrap()
        .get(0)
}

/// The issue asks for 100K jobs; 20K keeps the test suite fast while still exercising many
/// concurrent batches. `PGBROKER_QUEUE_MANY=100000 cargo test` runs the full size.
const MANY_DEFAULT: usize = 20_000;

#[test]
fn many_jobs_eight_workers_two_pools_each_completed_exactly_once() {
    let many: usize = std::env::var("PGBROKER_QUEUE_MANY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MANY_DEFAULT);
    let db = support::db();
    let broker = db.broker();
    let jobs: Vec<Job> = (0..many)
        .map(|i| Job::new("bulk", &serde_json::json!({ "i": i })))
        .collect();
    broker.enqueue_batch(&jobs).unwrap();

    let done: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(many)));
    let start_pool = |name: &str| -> WorkerPool {
        let done = done.clone();
        broker
            .worker_pool()
            .threads(4)
            .queue_with(opts("bulk", 4).worker_name(name), move |job| {
                let i = job.payload()["i"].as_u64().unwrap();
                done.lock().unwrap().push(i);
                Ok(())
            })
            .start()
            .unwrap()
    };
    let t0 = Instant::now();
    let a = start_pool("a");
    let b = start_pool("b");
    assert!(
        support::wait_until(Duration::from_secs(90 + many as u64 / 200), || jobs_left(
            &broker
        ) == 0),
        "{} jobs left",
        jobs_left(&broker)
    );
    let elapsed = t0.elapsed();
    let (sa, sb) = (a.stats(), b.stats());
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    let mut done = done.lock().unwrap().clone();
    assert_eq!(done.len(), many, "every job ran exactly once");
    done.sort_unstable();
    done.dedup();
    assert_eq!(done.len(), many, "no job ran twice");
    assert_eq!(sa.handled + sb.handled, many as u64);
    assert!(
        sa.handled > 0 && sb.handled > 0,
        "both pools worked: {sa:?} {sb:?}"
    );
    eprintln!("{many} jobs in {elapsed:?}");
}

#[test]
fn a_single_worker_runs_available_jobs_in_priority_order() {
    let db = support::db();
    let broker = db.broker();
    let prios = [5, 1, 9, -3, 1, 0, 7, -3, 2];
    let mut expected: Vec<(i32, JobId)> = prios
        .iter()
        .map(|p| {
            let id = broker
                .enqueue_job(&Job::new("prio", &serde_json::json!({"p": p})).priority(*p))
                .unwrap();
            (*p, id)
        })
        .collect();
    expected.sort();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("prio", 1), move |job| {
            o.lock().unwrap().push((job.priority(), job.id()));
            Ok(())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || order.lock().unwrap().len() == prios.len()));
    pool.shutdown().unwrap();
    assert_eq!(*order.lock().unwrap(), expected);
}

#[test]
fn delayed_jobs_do_not_run_before_run_at_and_wake_ups_are_prompt() {
    let db = support::db();
    let broker = db.broker();
    let ran: Arc<Mutex<HashMap<JobId, SystemTime>>> = Arc::default();
    let r = ran.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            opts("later", 2).poll_interval(Duration::from_secs(5)),
            move |job| {
                r.lock().unwrap().insert(job.id(), SystemTime::now());
                Ok(())
            },
        )
        .start()
        .unwrap();
    // The pool is idle and registered as waiting: an enqueue wakes it well before the
    // 5 s poll.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let now_id = broker.enqueue("later", "{}").unwrap();
    assert!(support::wait_until(WAIT, || ran
        .lock()
        .unwrap()
        .contains_key(&now_id)));
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "woken in {:?}",
        t0.elapsed()
    );

    let at = SystemTime::now() + Duration::from_millis(1500);
    let delayed = broker
        .enqueue_job(&Job::new("later", "{}").run_at(at))
        .unwrap();
    let delayed2 = broker
        .enqueue_job(&Job::new("later", "{}").delay(Duration::from_millis(1000)))
        .unwrap();
    let enqueued = SystemTime::now();
    assert!(support::wait_until(WAIT, || ran.lock().unwrap().len() == 3));
    pool.shutdown().unwrap();
    let ran = ran.lock().unwrap();
    assert!(ran[&delayed] >= at, "ran before run_at");
    assert!(
        ran[&delayed2]
            .duration_since(enqueued)
            .is_ok_and(|d| d >= Duration::from_millis(900)),
        "delay not respected"
    );
}

#[test]
fn cancelling_running_and_pending_jobs() {
    let db = support::db();
    let broker = db.broker();
    let started = Arc::new(AtomicU64::new(0));
    let observed = Arc::new(AtomicBool::new(false));
    let (s, o) = (started.clone(), observed.clone());
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(opts("long", 1), move |job| {
            s.store(job.id().get() as u64, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if job.is_cancelled() {
                    o.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
        .start()
        .unwrap();
    let running = broker.enqueue("long", "{}").unwrap();
    let pending = broker
        .enqueue_job(&Job::new("long", "{}").delay(Duration::from_millis(500)))
        .unwrap();
    assert!(support::wait_until(WAIT, || started.load(Ordering::SeqCst)
        == running.get() as u64));
    // One slot: the pending job cannot start while the running one holds it.
    assert!(broker.cancel_job(pending).unwrap());
    assert!(broker.cancel_job(running).unwrap());
    assert!(support::wait_until(WAIT, || observed.load(Ordering::SeqCst)));
    std::thread::sleep(Duration::from_millis(800)); // past the pending job's run_at
    pool.shutdown().unwrap();
    assert_eq!(
        started.load(Ordering::SeqCst),
        running.get() as u64,
        "pending job never ran"
    );
    for id in [running, pending] {
        assert_eq!(broker.job(id).unwrap().unwrap().state, JobState::Cancelled);
    }
}

#[test]
fn graceful_shutdown_finishes_running_jobs_and_releases_unstarted_ones() {
    let db = support::db();
    let broker = db.broker();
    let ids: Vec<JobId> = (0..3)
        .map(|i| {
            broker
                .enqueue("slow", &serde_json::json!({"i": i}))
                .unwrap()
        })
        .collect();
    let started = Arc::new(AtomicU64::new(0));
    let s = started.clone();
    // One thread, three slots: one job runs, two are claimed ahead and wait.
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(opts("slow", 3), move |_job| {
            s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(700));
            Ok(())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || started.load(Ordering::SeqCst) == 1));
    assert!(support::wait_until(WAIT, || {
        broker.queue_stats().unwrap()[0].running == 3
    }));
    pool.shutdown().unwrap();
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(
        broker.job(ids[0]).unwrap().is_none(),
        "the running job completed"
    );
    for id in &ids[1..] {
        let info = broker.job(*id).unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempt),
            (JobState::Available, 0),
            "job {id}"
        );
        assert_eq!(info.lease_until, None);
    }
}

#[test]
fn pipeline_stages_complete_and_enqueue_atomically_and_are_watchable() {
    // Seed 001: new -> initializing -> initialized -> running -> complete, as a chain of
    // queues; each stage completes its job and enqueues the next in one transaction.
    let db = support::db();
    let broker = db.broker();
    let stages = ["ci.clone", "ci.init", "ci.run"];
    let watchers: Vec<_> = stages
        .iter()
        .map(|s| broker.watch_jobs(s).unwrap())
        .collect();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut builder = broker.worker_pool().threads(3);
    for (i, stage) in stages.iter().enumerate() {
        let next = stages.get(i + 1).copied();
        let finished = finished.clone();
        builder = builder.queue_with(opts(stage, 2), move |job| {
            let mut payload = job.payload().clone();
            payload["stages"]
                .as_array_mut()
                .unwrap()
                .push(job.queue().into());
            match next {
                Some(next) => {
                    job.complete_and_enqueue(&Job::new(next, &payload))?;
                }
                None => finished.lock().unwrap().push(payload),
            }
            Ok(())
        });
    }
    let pool = builder.start().unwrap();
    for run in 0..5 {
        broker
            .enqueue("ci.clone", &serde_json::json!({"run": run, "stages": []}))
            .unwrap();
    }
    assert!(support::wait_until(WAIT, || finished.lock().unwrap().len() == 5));
    assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
    pool.shutdown().unwrap();
    for p in finished.lock().unwrap().iter() {
        assert_eq!(p["stages"], serde_json::json!(stages));
    }
    // Every stage's watcher saw each of its 5 jobs go available -> running -> completed.
    for w in &watchers {
        let mut by_job: HashMap<JobId, Vec<JobState>> = HashMap::new();
        while let Some(ev) = w.recv_timeout(Duration::from_millis(300)).unwrap() {
            by_job.entry(ev.id).or_default().push(ev.state);
        }
        assert_eq!(by_job.len(), 5);
        for states in by_job.values() {
            assert_eq!(
                states,
                &vec![JobState::Available, JobState::Running, JobState::Completed]
            );
        }
    }
}

#[test]
fn completed_jobs_can_be_kept_with_their_result() {
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("kept", r#"{"x": 2}"#).unwrap();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            opts("kept", 1).keep_completed(Duration::from_secs(3600)),
            |job| {
                let x = job.payload()["x"].as_i64().unwrap();
                job.set_result(serde_json::json!({"square": x * x}));
                Ok(())
            },
        )
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || {
        broker.job(id).unwrap().unwrap().state == JobState::Completed
    }));
    pool.shutdown().unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.result, Some(serde_json::json!({"square": 4})));
    assert_eq!(broker.queue_stats().unwrap()[0].completed, 1);
}

#[test]
fn bad_queue_options_fail_start() {
    let db = support::db();
    let broker = db.broker();
    let err = broker
        .worker_pool()
        .queue("no spaces", 1, |_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), pgbroker::ErrorKind::InvalidName);
    let err = broker
        .worker_pool()
        .queue("q", 0, |_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), pgbroker::ErrorKind::Config);
}

#[test]
fn workers_survive_losing_every_connection() {
    let db = support::db();
    let broker = db.broker();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(opts("resilient", 2), move |_job| {
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .start()
        .unwrap();
    broker.enqueue("resilient", "{}").unwrap();
    assert!(support::wait_until(WAIT, || done.load(Ordering::SeqCst) == 1));
    // Kill the listener's and every pooled connection's backend.
    assert!(support::terminate_backends(&db, "%") > 0);
    let producer = db.broker(); // a fresh pool: the old one's connections are dead too
    for _ in 0..5 {
        producer.enqueue("resilient", "{}").unwrap();
    }
    assert!(
        support::wait_until(WAIT, || done.load(Ordering::SeqCst) == 6),
        "done {}",
        done.load(Ordering::SeqCst)
    );
    assert!(support::wait_until(WAIT, || jobs_left(&producer) == 0));
    pool.shutdown().unwrap();
}

/// An enqueue that skipped its look for waiting workers (its broker looked less than 2 ms
/// earlier and found none) wakes nobody; here a plain SQL INSERT, committed 20 to 40 ms after
/// the worker registered as waiting, stands for it. The worker claims once more 3, 10 and
/// 50 ms after registering and runs the job then, not at its 30 s poll. Tries again when the
/// machine was
/// too slow to commit within that window.
#[test]
fn an_idle_worker_claims_again_50_ms_after_registering() {
    let db = support::db();
    let broker = db.broker();
    let mut writer = db.client();
    for _ in 0..10 {
        writer
            .batch_execute("DELETE FROM pgbroker.queue_waiters")
            .unwrap();
        let mut tx = writer.transaction().unwrap();
        tx.execute(
            "INSERT INTO pgbroker.jobs (queue, payload) VALUES ('late', '{}')",
            &[],
        )
        .unwrap();
        let ran = Arc::new(Mutex::new(None));
        let r = ran.clone();
        let pool = broker
            .worker_pool()
            .threads(1)
            .queue_with(
                opts("late", 1).poll_interval(Duration::from_secs(30)),
                move |_job| {
                    *r.lock().unwrap() = Some(Instant::now());
                    Ok(())
                },
            )
            .start()
            .unwrap();
        assert!(support::wait_until(WAIT, || {
            tx.query_one(
                "SELECT count(*) FROM pgbroker.queue_waiters WHERE queue = 'late'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
                == 1
        }));
        tx.execute(
            "SELECT pg_sleep(extract(epoch FROM since + interval '20 ms' - clock_timestamp()))
               FROM pgbroker.queue_waiters WHERE queue = 'late'",
            &[],
        )
        .unwrap();
        let in_time: bool = tx
            .query_one(
                "SELECT clock_timestamp() - since < interval '40 ms'
                   FROM pgbroker.queue_waiters WHERE queue = 'late'",
                &[],
            )
            .unwrap()
            .get(0);
        if !in_time {
            tx.rollback().unwrap();
            pool.shutdown().unwrap();
            continue;
        }
        tx.commit().unwrap();
        let committed = Instant::now();
        assert!(support::wait_until(WAIT, || ran.lock().unwrap().is_some()));
        pool.shutdown().unwrap();
        let at = ran.lock().unwrap().unwrap();
        assert!(
            at.duration_since(committed) < Duration::from_secs(10),
            "ran {:?} after the commit: by the 30 s poll, not the claim 50 ms after registering",
            at.duration_since(committed)
        );
        assert_eq!(jobs_left(&broker), 0);
        return;
    }
    panic!("never committed within 40 ms of the registration");
}
