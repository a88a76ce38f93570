//! The job features of issue 19: paused queues, periodic jobs, dependencies, progress,
//! per-job timeouts, middleware, rate and group limits — from SQL and Rust, with several
//! worker processes where it matters.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, QueueOptions};
use pgbroker::{ErrorKind, JobId};

const CHILD_ENV: &str = "PGBROKER_JOB_FEATURES_CHILD";

/// Not a test of its own: the body of a child worker process, which tests start by re-running
/// this test binary with `CHILD_ENV` set to `url queue`. It runs a worker pool on `queue`
/// whose handler records each job in table `ran`, until it is killed (at most 60 s).
#[test]
fn child_worker_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, queue) = spec.split_once(' ').unwrap();
    let broker = pgbroker::Broker::connect(url).unwrap();
    let _pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new(queue)
                .concurrency(2)
                .poll_interval(Duration::from_millis(100)),
            |job| {
                let mut conn = job.broker().conn()?;
                conn.execute(
                    "INSERT INTO ran (job_id, pid, payload, unique_key) VALUES ($1, $2, $3, $4)",
                    &[
                        &job.id(),
                        &(std::process::id() as i32),
                        job.payload(),
                        &job.claimed().unique_key,
                    ],
                )?;
                if let Some(ms) = job.payload()["sleep_ms"].as_u64() {
                    std::thread::sleep(Duration::from_millis(ms));
                    conn.execute(
                        "UPDATE ran SET done_at = clock_timestamp() WHERE job_id = $1",
                        &[&job.id()],
                    )?;
                }
                Ok(())
            },
        )
        .schedule_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Child worker processes, killed when dropped.
struct Children(Vec<Child>);

impl Children {
    fn start(n: usize, url: &str, queue: &str) -> Children {
        let exe = std::env::current_exe().unwrap();
        Children(
            (0..n)
                .map(|_| {
                    Command::new(&exe)
                        .args([
                            "features::child_worker_process",
                            "--exact",
                            "--test-threads=1",
                        ])
                        .env(CHILD_ENV, format!("{url} {queue}"))
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ran_table(db: &support::TestDb) {
    db.client()
        .batch_execute(
            "CREATE TABLE ran (job_id bigint, pid int, payload jsonb, unique_key text,
                           at timestamptz DEFAULT clock_timestamp(), done_at timestamptz)",
        )
        .unwrap();
}

fn count(db: &support::TestDb, sql: &str) -> i64 {
    db.client().query_one(sql, &[]).unwrap().get(0)
}

// Pause and resume ------------------------------------------------------------------------------

#[test]
fn a_paused_queue_is_neither_claimed_nor_taken_and_enqueues_go_on() {
    let db = support::db();
    let broker = db.broker();
    let first = broker.enqueue("mail", "1").unwrap();
    assert!(broker.pause_queue("mail").unwrap());
    assert!(!broker.pause_queue("mail").unwrap(), "paused already");
    let second = broker.enqueue("mail", "2").unwrap();
    assert!(second.get() > 0);
    let lease = Duration::from_secs(30);
    assert!(broker
        .claim_jobs("mail", "w", 10, lease)
        .unwrap()
        .is_empty());
    {
        let mut conn = broker.conn().unwrap();
        let (tx, jobs) = conn.take_jobs("mail", 10).unwrap();
        assert!(jobs.is_empty());
        drop(tx);
    }
    let mut c = db.client();
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.claim('mail', 'w', 10)", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Other queues are not affected.
    broker.enqueue("other", "3").unwrap();
    assert_eq!(broker.claim_jobs("other", "w", 10, lease).unwrap().len(), 1);
    let paused = broker.paused_queues().unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].0, "mail");

    assert!(broker.resume_queue("mail").unwrap());
    assert!(!broker.resume_queue("mail").unwrap(), "not paused any more");
    let ids: Vec<JobId> = broker
        .claim_jobs("mail", "w", 10, lease)
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, vec![first, second]);
    assert!(broker.paused_queues().unwrap().is_empty());
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgbroker.queue_controls"),
        0
    );
}

#[test]
fn running_jobs_finish_while_their_queue_is_paused() {
    let db = support::db();
    let broker = db.broker();
    broker.enqueue("mail", "1").unwrap();
    let jobs = broker
        .claim_jobs("mail", "w", 1, Duration::from_secs(30))
        .unwrap();
    assert!(broker.pause_queue("mail").unwrap());
    assert_eq!(broker.complete_jobs(&jobs).unwrap(), 1);
}

#[test]
fn pausing_checks_the_queue_name() {
    let db = support::db();
    let broker = db.broker();
    let e = broker.pause_queue("no spaces").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName);
    assert_eq!(
        broker.resume_queue("").unwrap_err().kind(),
        ErrorKind::InvalidName
    );
    let e = db
        .client()
        .query_one("SELECT pgbroker.pause_queue(NULL)", &[])
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
}

#[test]
fn resume_wakes_idle_workers_at_once() {
    let db = support::db();
    let broker = db.broker();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    broker.pause_queue("mail").unwrap();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            // Without the wake-up, a job would wait for this poll.
            QueueOptions::new("mail").poll_interval(Duration::from_secs(60)),
            move |job| {
                r.lock().unwrap().push(job.id());
                Ok(())
            },
        )
        .start()
        .unwrap();
    let id = broker.enqueue("mail", "1").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(ran.lock().unwrap().is_empty(), "ran while paused");
    // The worker registered as idle.
    assert!(support::wait_until(Duration::from_secs(5), || count(
        &db,
        "SELECT count(*) FROM pgbroker.queue_waiters WHERE queue = 'mail'"
    ) == 1));
    let resumed = Instant::now();
    broker.resume_queue("mail").unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || !ran
        .lock()
        .unwrap()
        .is_empty()));
    assert!(resumed.elapsed() < Duration::from_secs(10));
    pool.shutdown().unwrap();
    assert_eq!(*ran.lock().unwrap(), vec![id]);
}

#[test]
fn several_worker_processes_respect_a_pause() {
    let db = support::db();
    let broker = db.broker();
    ran_table(&db);
    broker.pause_queue("shared").unwrap();
    let _children = Children::start(2, &db.url, "shared");
    let jobs: Vec<Job> = (0..50)
        .map(|i| Job::new("shared", &serde_json::json!(i)))
        .collect();
    assert_eq!(broker.enqueue_batch(&jobs).unwrap(), 50);
    std::thread::sleep(Duration::from_secs(2)); // the children started and polled meanwhile
    assert_eq!(count(&db, "SELECT count(*) FROM ran"), 0);
    broker.resume_queue("shared").unwrap();
    assert!(support::wait_until(Duration::from_secs(30), || count(
        &db,
        "SELECT count(*) FROM ran"
    ) == 50));
    assert_eq!(count(&db, "SELECT count(DISTINCT job_id) FROM ran"), 50);
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
}

// Periodic jobs ---------------------------------------------------------------------------------

use pgbroker::queue::Schedule;
use std::time::SystemTime;

fn at(db: &support::TestDb, rfc3339: &str) -> SystemTime {
    db.client()
        .query_one("SELECT $1::text::timestamptz", &[&rfc3339])
        .unwrap()
        .get(0)
}

#[test]
fn cron_expressions_name_the_right_times() {
    let db = support::db();
    let broker = db.broker();
    let next =
        |cron: &str, after: &str, tz: &str| broker.cron_next(cron, at(&db, after), tz).unwrap();
    let cases = [
        (
            "*/15 * * * *",
            "2026-01-01 10:07:30Z",
            "UTC",
            "2026-01-01 10:15:00Z",
        ),
        (
            "*/10 * * * * *",
            "2026-01-01 10:07:35Z",
            "UTC",
            "2026-01-01 10:07:40Z",
        ),
        (
            "0 3 * * *",
            "2026-01-01 10:07:30Z",
            "Europe/Paris",
            "2026-01-02 02:00:00Z",
        ),
        // 02:30 does not exist in Paris that night: it runs at 03:30 summer time.
        (
            "30 2 * * *",
            "2026-03-29 00:00:00Z",
            "Europe/Paris",
            "2026-03-29 01:30:00Z",
        ),
        (
            "0 0 29 2 *",
            "2026-01-01 00:00:00Z",
            "UTC",
            "2028-02-29 00:00:00Z",
        ),
        (
            "0 9 * * MON-FRI",
            "2026-12-05 10:00:00Z",
            "UTC",
            "2026-12-07 09:00:00Z",
        ),
        // Both day fields restricted: the 13th or a Friday.
        (
            "0 0 13 * FRI",
            "2026-01-01 00:00:00Z",
            "UTC",
            "2026-01-02 00:00:00Z",
        ),
        (
            "0 0 * * 7",
            "2026-12-05 10:00:00Z",
            "UTC",
            "2026-12-06 00:00:00Z",
        ),
        (
            "@hourly",
            "2026-01-01 10:00:00Z",
            "UTC",
            "2026-01-01 11:00:00Z",
        ),
        (
            "0 12 1 jan,jul *",
            "2026-02-01 00:00:00Z",
            "UTC",
            "2026-07-01 12:00:00Z",
        ),
    ];
    for (cron, after, tz, want) in cases {
        assert_eq!(
            next(cron, after, tz),
            at(&db, want),
            "{cron} after {after} in {tz}"
        );
    }
    for (bad, says) in [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "minute: 61 is outside 0 to 59"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "bad range"),
        ("* * * * FOO", "weekday: 'FOO' is not a number or a name"),
        ("0 0 30 2 *", "names no time in the next five years"),
    ] {
        let e = broker.cron_next(bad, SystemTime::now(), "UTC").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
    let e = broker
        .cron_next("@daily", SystemTime::now(), "Mars/Olympus")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("unknown time zone 'Mars/Olympus'"),
        "{e}"
    );
}

#[test]
fn bad_schedules_are_refused_with_what_is_wrong() {
    let db = support::db();
    let broker = db.broker();
    let kind = |s: Schedule| broker.schedule(&s).unwrap_err().kind();
    assert_eq!(
        kind(Schedule::new("s", "* * * * * * *", "q", "{}")),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Schedule::new("s", "@daily", "q", "{}").time_zone("Nowhere/Land")),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Schedule::new("", "@daily", "q", "{}")),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Schedule::new("s", "@daily", "q", "{}").max_attempts(0)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(Schedule::new("s", "@daily", "bad queue", "{}")),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(Schedule::new("s", "@daily", "q", "not json")),
        ErrorKind::Serialize
    );
    assert!(broker.schedules().unwrap().is_empty());
    // The same checks in SQL.
    let e = db
        .client()
        .query_one("SELECT pgbroker.schedule('s', '99 * * * *', 'q')", &[])
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    assert!(!broker.unschedule("s").unwrap());
}

#[test]
fn schedules_are_listed_with_their_next_run_and_replaced_by_name() {
    let db = support::db();
    let broker = db.broker();
    let next = broker
        .schedule(&Schedule::new(
            "report",
            "0 3 * * *",
            "reports",
            r#"{"kind": 1}"#,
        ))
        .unwrap();
    assert_eq!(
        next,
        broker
            .cron_next("0 3 * * *", SystemTime::now(), "UTC")
            .unwrap()
    );
    let next2 = broker
        .schedule(
            &Schedule::new("report", "30 4 * * *", "reports", r#"{"kind": 2}"#)
                .time_zone("Asia/Tokyo")
                .priority(3)
                .max_attempts(2)
                .skip_missed(true),
        )
        .unwrap();
    let list = broker.schedules().unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(
        (
            s.name.as_str(),
            s.cron.as_str(),
            s.time_zone.as_str(),
            s.queue.as_str()
        ),
        ("report", "30 4 * * *", "Asia/Tokyo", "reports")
    );
    assert_eq!(s.payload, serde_json::json!({"kind": 2}));
    assert_eq!((s.priority, s.max_attempts, s.skip_missed), (3, 2, true));
    assert_eq!(s.next_run_at, next2);
    assert_eq!((s.last_run_at, s.last_job_id), (None, None));
    assert!(broker.unschedule("report").unwrap());
    assert!(broker.schedules().unwrap().is_empty());
}

/// Moves a schedule's next run into the past, as if nothing ran the scheduler since.
fn miss(db: &support::TestDb, name: &str, ago: &str) -> SystemTime {
    db.client()
        .query_one(
            "UPDATE pgbroker.schedules SET next_run_at = date_trunc('minute', now()) - $2::text::interval
              WHERE name = $1 RETURNING next_run_at",
            &[&name, &ago],
        )
        .unwrap()
        .get(0)
}

#[test]
fn missed_ticks_are_enqueued_once_or_skipped() {
    let db = support::db();
    let broker = db.broker();
    broker
        .schedule(&Schedule::new("sync", "*/5 * * * *", "sync", "{}").max_attempts(4))
        .unwrap();
    broker
        .schedule(&Schedule::new("ping", "*/5 * * * *", "ping", "{}").skip_missed(true))
        .unwrap();
    assert_eq!(broker.run_schedules().unwrap(), 0, "nothing due yet");
    let missed = miss(&db, "sync", "3 hours");
    miss(&db, "ping", "3 hours");
    // 36 ticks of each were missed: one job for sync, none for ping.
    assert_eq!(broker.run_schedules().unwrap(), 1);
    assert_eq!(broker.run_schedules().unwrap(), 0);
    let jobs = broker
        .claim_jobs("sync", "w", 10, Duration::from_secs(30))
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].max_attempts, 4);
    let key = jobs[0].unique_key.clone().unwrap();
    assert!(key.starts_with("schedule:sync:"), "{key}");
    let tick: SystemTime = db
        .client()
        .query_one("SELECT split_part($1, 'sync:', 2)::timestamptz", &[&key])
        .unwrap()
        .get(0);
    assert_eq!(tick, missed);
    assert!(broker
        .claim_jobs("ping", "w", 10, Duration::from_secs(30))
        .unwrap()
        .is_empty());
    for s in broker.schedules().unwrap() {
        assert!(s.next_run_at > SystemTime::now(), "{}", s.name);
        assert_eq!(s.last_run_at, Some(missed));
        assert_eq!(s.last_job_id.is_some(), s.name == "sync");
    }
    assert_eq!(
        broker
            .schedules()
            .unwrap()
            .iter()
            .find(|s| s.name == "sync")
            .unwrap()
            .last_job_id,
        Some(jobs[0].id)
    );
}

#[test]
fn worker_pools_run_the_scheduler_unless_told_not_to() {
    let db = support::db();
    let broker = db.broker();
    broker
        .schedule(&Schedule::new(
            "tick",
            "* * * * * *",
            "ticks",
            r#"{"n": 1}"#,
        ))
        .unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    let quiet = broker
        .worker_pool()
        .threads(1)
        .queue("other", 1, |_| Ok(()))
        .run_schedules(false)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue("ticks", 1, move |job| {
            r.lock().unwrap().push(job.payload().clone());
            Ok(())
        })
        .schedule_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || ran
        .lock()
        .unwrap()
        .len()
        >= 2));
    pool.shutdown().unwrap();
    quiet.shutdown().unwrap();
    assert!(ran
        .lock()
        .unwrap()
        .iter()
        .all(|p| *p == serde_json::json!({"n": 1})));
}

#[test]
fn one_job_per_tick_across_processes_that_are_killed_and_restarted() {
    let db = support::db();
    let broker = db.broker();
    ran_table(&db);
    broker
        .schedule(&Schedule::new("tick", "* * * * * *", "ticks", "{}"))
        .unwrap();
    {
        let _first = Children::start(3, &db.url, "ticks");
        assert!(support::wait_until(Duration::from_secs(20), || count(
            &db,
            "SELECT count(*) FROM ran"
        ) >= 3));
    } // killed (SIGKILL), mid-whatever
    let _second = Children::start(3, &db.url, "ticks");
    let before = count(&db, "SELECT count(*) FROM ran");
    assert!(support::wait_until(Duration::from_secs(20), || count(
        &db,
        "SELECT count(*) FROM ran"
    ) >= before
        + 3));
    drop(_second);
    let (jobs, ticks, pids): (i64, i64, i64) = db
        .client()
        .query_one(
            "SELECT count(*), count(DISTINCT unique_key), count(DISTINCT pid) FROM ran",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!(jobs, ticks, "a tick ran twice");
    assert!(ticks >= 6);
    assert!(pids >= 2, "the ticks were spread over the processes");
}

// Dependencies ----------------------------------------------------------------------------------

use pgbroker::queue::JobState;

const LEASE: Duration = Duration::from_secs(30);

fn claim_one(broker: &pgbroker::Broker, queue: &str) -> Vec<pgbroker::queue::ClaimedJob> {
    broker.claim_jobs(queue, "w", 10, LEASE).unwrap()
}

#[test]
fn a_job_runs_after_all_its_parents_completed() {
    let db = support::db();
    let broker = db.broker();
    let a = broker.enqueue("parts", "1").unwrap();
    let b = broker.enqueue("parts", "2").unwrap();
    let c = broker.enqueue("parts", "3").unwrap();
    let child = broker
        .enqueue_job(&Job::new("whole", "{}").after(&[a, b, c]))
        .unwrap();
    let info = broker.job(child).unwrap().unwrap();
    assert_eq!(info.state, JobState::Available);
    assert_eq!(info.parents, vec![a, b, c]);
    assert!(claim_one(&broker, "whole").is_empty());

    // a: claimed and completed (deleted).
    let mut jobs = claim_one(&broker, "parts");
    assert_eq!(jobs.len(), 3);
    assert_eq!(broker.complete_jobs(&jobs[..1]).unwrap(), 1);
    assert_eq!(broker.job(child).unwrap().unwrap().parents, vec![b, c]);
    // b: completed and kept (a state change, not a deletion).
    let mut conn = broker.conn().unwrap();
    conn.execute(
        "SELECT pgbroker.complete($1, '{\"ok\": 1}', interval '1 hour')",
        &[&b],
    )
    .unwrap();
    assert_eq!(broker.job(child).unwrap().unwrap().parents, vec![c]);
    assert!(claim_one(&broker, "whole").is_empty());
    // c: failed once (retried), then completed in a transaction that took it.
    let c_job = jobs.pop().unwrap();
    broker
        .fail_job(&c_job, "flaky", Some(Duration::ZERO))
        .unwrap();
    assert_eq!(broker.job(child).unwrap().unwrap().parents, vec![c]);
    let (tx, taken) = conn.take_jobs("parts", 10).unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![c]);
    tx.commit().unwrap();
    let info = broker.job(child).unwrap().unwrap();
    assert!(info.parents.is_empty());
    assert!(info.run_at <= SystemTime::now());
    let ids: Vec<JobId> = claim_one(&broker, "whole").iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![child]);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgbroker.job_dependencies"),
        0
    );
}

#[test]
fn a_dependent_dies_with_its_parent_unless_told_to_run() {
    let db = support::db();
    let broker = db.broker();
    let doomed = broker
        .enqueue_job(&Job::new("parts", "1").max_attempts(1))
        .unwrap();
    let cancelled = broker.enqueue("parts", "2").unwrap();
    let strict = broker
        .enqueue_job(&Job::new("whole", "1").after(&[doomed]))
        .unwrap();
    let grandchild = broker
        .enqueue_job(&Job::new("whole", "2").after(&[strict]))
        .unwrap();
    let lenient = broker
        .enqueue_job(
            &Job::new("whole", "3")
                .after(&[doomed, cancelled])
                .run_if_parent_fails(true),
        )
        .unwrap();
    let strict2 = broker
        .enqueue_job(&Job::new("whole", "4").after(&[cancelled]))
        .unwrap();
    let jobs = broker.claim_jobs("parts", "w", 1, LEASE).unwrap();
    assert_eq!(
        broker.fail_job(&jobs[0], "boom", None).unwrap(),
        Some(JobState::Dead)
    );
    assert!(broker.cancel_job(cancelled).unwrap());

    let strict_info = broker.job(strict).unwrap().unwrap();
    assert_eq!(strict_info.state, JobState::Dead);
    assert_eq!(
        strict_info.last_error.as_deref(),
        Some(format!("parent job {doomed} died").as_str())
    );
    // Its own dependent follows it.
    let g = broker.job(grandchild).unwrap().unwrap();
    assert_eq!(g.state, JobState::Dead);
    assert_eq!(
        g.last_error.as_deref(),
        Some(format!("parent job {strict} died").as_str())
    );
    let s2 = broker.job(strict2).unwrap().unwrap();
    assert_eq!(
        (s2.state, s2.last_error.as_deref()),
        (
            JobState::Dead,
            Some(format!("parent job {cancelled} was cancelled").as_str())
        )
    );
    let ids: Vec<JobId> = claim_one(&broker, "whole").iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![lenient]);

    // A parent dead before the dependent is enqueued; an unknown (completed) parent.
    let late = broker
        .enqueue_job(&Job::new("whole", "5").after(&[doomed]))
        .unwrap();
    assert_eq!(broker.job(late).unwrap().unwrap().state, JobState::Dead);
    let free = broker
        .enqueue_job(&Job::new("whole", "6").after(&[JobId(987_654_321)]))
        .unwrap();
    let info = broker.job(free).unwrap().unwrap();
    assert_eq!((info.state, info.parents.len()), (JobState::Available, 0));
    assert!(info.run_at <= SystemTime::now());
}

#[test]
fn bad_job_options_are_refused() {
    let db = support::db();
    let broker = db.broker();
    let kind = |j: Job| broker.enqueue_job(&j).unwrap_err().kind();
    assert_eq!(
        kind(Job::new("q", "{}").timeout(Duration::ZERO)),
        ErrorKind::InvalidInput
    );
    assert_eq!(kind(Job::new("q", "{}").group("")), ErrorKind::InvalidInput);
    assert_eq!(
        kind(Job::new("q", "{}").group("a\nb")),
        ErrorKind::InvalidInput
    );
    let e = broker
        .enqueue_batch(&[Job::new("q", "{}"), Job::new("q", "{}").after(&[JobId(1)])])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("job 1 of the batch"), "{e}");
    assert_eq!(count(&db, "SELECT count(*) FROM pgbroker.jobs"), 0);
    let mut c = db.client();
    let id: i64 = c
        .query_one("SELECT pgbroker.enqueue('q', '{}')", &[])
        .unwrap()
        .get(0);
    let e = c
        .query_one(
            "SELECT pgbroker.set_job_options($1::bigint, ARRAY[$1::bigint])",
            &[&id],
        )
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("cannot wait for itself"), "{msg}");
    let e = c
        .query_one(
            "SELECT pgbroker.set_job_options(-5, timeout => interval '1s')",
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "P0002");
}

#[test]
fn fan_in_of_a_thousand_parents_across_worker_processes() {
    let db = support::db();
    let broker = db.broker();
    ran_table(&db);
    broker.pause_queue("fan").unwrap(); // enqueue everything first
    let parents: Vec<JobId> = (0..1000)
        .map(|i| {
            broker
                .enqueue("fan", &serde_json::json!({"part": i}))
                .unwrap()
        })
        .collect();
    let whole = broker
        .enqueue_job(&Job::new("fan", r#"{"whole": true}"#).after(&parents))
        .unwrap();
    assert_eq!(broker.job(whole).unwrap().unwrap().parents.len(), 1000);
    let _children = Children::start(3, &db.url, "fan");
    broker.resume_queue("fan").unwrap();
    assert!(support::wait_until(Duration::from_secs(60), || count(
        &db,
        "SELECT count(*) FROM ran"
    ) == 1001));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&db, "SELECT count(*) FROM ran"), 1001);
    assert_eq!(count(&db, "SELECT count(DISTINCT job_id) FROM ran"), 1001);
    let last: JobId = db
        .client()
        .query_one("SELECT job_id FROM ran ORDER BY at DESC LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(last, whole, "the fan-in job ran before a parent finished");
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgbroker.job_dependencies"),
        0
    );
    assert!(count(&db, "SELECT count(DISTINCT pid) FROM ran") >= 2);
}

// Progress ---------------------------------------------------------------------------------------

#[test]
fn progress_is_stored_shown_and_sent_to_watchers() {
    let db = support::db();
    let broker = db.broker();
    let watcher = broker.watch_jobs("imports").unwrap();
    let (reported_tx, reported) = crossbeam_channel::bounded::<()>(0);
    let (go_on, go) = crossbeam_channel::bounded::<()>(0);
    let results = Arc::new(Mutex::new(Vec::new()));
    let r = results.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            QueueOptions::new("imports").keep_completed(Duration::from_secs(60)),
            move |job| {
                r.lock()
                    .unwrap()
                    .push(job.set_progress(&serde_json::json!({"rows": 5, "of": 10}))?);
                let _ = reported_tx.send(());
                let _ = go.recv();
                r.lock()
                    .unwrap()
                    .push(job.set_progress(r#"{"rows": 10, "of": 10}"#)?);
                let big = "x".repeat(5000);
                let e = job
                    .set_progress(&serde_json::json!({ "big": big }))
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                let e = job
                    .set_progress(&serde_json::json!({ "note": "a\u{0}b" }))
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                assert!(e.to_string().contains("NUL"), "{e}");
                Ok(())
            },
        )
        .start()
        .unwrap();
    let id = broker.enqueue("imports", "{}").unwrap();
    reported.recv_timeout(Duration::from_secs(10)).unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.state, JobState::Running);
    assert_eq!(
        info.progress,
        Some(serde_json::json!({"rows": 5, "of": 10}))
    );
    go_on.send(()).unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || broker
        .job(id)
        .unwrap()
        .unwrap()
        .state
        == JobState::Completed));
    pool.shutdown().unwrap();
    assert_eq!(*results.lock().unwrap(), vec![true, true]);
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(
        info.progress,
        Some(serde_json::json!({"rows": 10, "of": 10}))
    );

    let mut seen = Vec::new();
    while let Some(ev) = watcher.recv_timeout(Duration::from_millis(500)).unwrap() {
        seen.push((ev.state, ev.progress));
    }
    assert_eq!(
        seen,
        vec![
            (JobState::Available, None),
            (JobState::Running, None),
            (
                JobState::Running,
                Some(serde_json::json!({"rows": 5, "of": 10}))
            ),
            (
                JobState::Running,
                Some(serde_json::json!({"rows": 10, "of": 10}))
            ),
            (JobState::Completed, None),
        ]
    );
    // Not running any more: nothing recorded.
    let ok: bool = db
        .client()
        .query_one("SELECT pgbroker.set_progress($1, '1')", &[&id])
        .unwrap()
        .get(0);
    assert!(!ok);
}

// Per-job timeouts --------------------------------------------------------------------------------

#[test]
fn a_timeout_is_the_lease_and_heartbeats_do_not_extend_it() {
    let db = support::db();
    let broker = db.broker();
    let id = broker
        .enqueue_job(&Job::new("slow", "{}").timeout(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(
        broker.job(id).unwrap().unwrap().timeout,
        Some(Duration::from_millis(300))
    );
    let plain = broker.enqueue("slow", "{}").unwrap();
    let jobs = broker
        .claim_jobs("slow", "w", 10, Duration::from_secs(60))
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let leased = |j: &pgbroker::queue::ClaimedJob| {
        j.lease_until
            .unwrap()
            .duration_since(jobs[1].lease_until.unwrap() - Duration::from_secs(60))
            .unwrap()
    };
    assert_eq!(jobs[0].id, id);
    assert_eq!(leased(&jobs[0]), Duration::from_millis(300));
    assert_eq!(jobs[1].id, plain);
    let mut c = db.client();
    let held = |c: &mut pgbroker::postgres::Client| -> Vec<JobId> {
        c.query(
            "SELECT pgbroker.extend_leases(ARRAY[$1, $2]::bigint[], ARRAY[1, 1], interval '60 s')",
            &[&id, &plain],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(held(&mut c), vec![id, plain]);
    assert_eq!(
        broker.job(id).unwrap().unwrap().lease_until,
        jobs[0].lease_until
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        held(&mut c),
        vec![plain],
        "past its timeout the job is no longer held"
    );
    assert_eq!(broker.rescue_jobs().unwrap(), 1);
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.state, JobState::Available);
    assert_eq!(
        info.last_error.as_deref(),
        Some("attempt timed out after 0.3 s")
    );
}

#[test]
fn a_handler_past_its_timeout_is_cancelled_and_counted_failed() {
    let db = support::db();
    let broker = db.broker();
    let saw_cancel = Arc::new(Mutex::new(Vec::new()));
    let s = saw_cancel.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new("slow")
                .concurrency(2)
                .lease(Duration::from_secs(30))
                .heartbeat(Duration::from_millis(100))
                .rescue_interval(Duration::from_millis(200)),
            move |job| {
                let started = Instant::now();
                while !job.is_cancelled() && started.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                s.lock().unwrap().push((job.id(), job.is_cancelled()));
                // Does not return at once: the rescue counts the attempt failed meanwhile.
                std::thread::sleep(Duration::from_secs(1));
                Ok(())
            },
        )
        .start()
        .unwrap();
    let id = broker
        .enqueue_job(
            &Job::new("slow", "{}")
                .timeout(Duration::from_millis(500))
                .max_attempts(1),
        )
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(20), || broker
        .job(id)
        .unwrap()
        .unwrap()
        .state
        == JobState::Dead));
    pool.shutdown().unwrap();
    assert_eq!(*saw_cancel.lock().unwrap(), vec![(id, true)]);
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(
        info.last_error.as_deref(),
        Some("attempt timed out after 0.5 s")
    );
    assert_eq!(info.attempt, 1);
}

// Middleware and tracing ------------------------------------------------------------------------

use pgbroker::middleware::HandlerRun;

#[test]
fn middleware_runs_around_every_handler_outermost_first() {
    let db = support::db();
    let broker = db.broker();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (outer, inner, handler_log) = (log.clone(), log.clone(), log.clone());
    let pool = broker
        .worker_pool()
        .threads(1)
        .middleware(move |run, next| {
            outer.lock().unwrap().push(format!("outer before {run}"));
            let result = next();
            outer
                .lock()
                .unwrap()
                .push(format!("outer after {}", result.is_ok()));
            result
        })
        .middleware(move |run, next| {
            if let HandlerRun::Job { id, attempt, .. } = run {
                inner
                    .lock()
                    .unwrap()
                    .push(format!("inner job {id} attempt {attempt}"));
            }
            if let HandlerRun::Notification(n) = run {
                inner.lock().unwrap().push(format!("inner {}", n.payload()));
                if n.payload() == "skip" {
                    return Ok(()); // the handler does not run
                }
            }
            next()
        })
        .handler("pings", move |n| {
            handler_log
                .lock()
                .unwrap()
                .push(format!("handler {}", n.payload()));
            Ok(())
        })
        .queue("mw", 1, |job| {
            if job.payload()["fail"] == true {
                return Err("asked to fail".into());
            }
            Ok(())
        })
        .start()
        .unwrap();
    let id = broker
        .enqueue_job(&Job::new("mw", r#"{"fail": true}"#).max_attempts(1))
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || log
        .lock()
        .unwrap()
        .len()
        == 3));
    broker.notify("pings", "skip").unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || log
        .lock()
        .unwrap()
        .len()
        == 6));
    broker.notify("pings", "run").unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || log
        .lock()
        .unwrap()
        .len()
        == 10));
    pool.shutdown().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            format!("outer before queue \"mw\" job {id}"),
            format!("inner job {id} attempt 1"),
            "outer after false".to_string(),
            "outer before channel \"pings\"".to_string(),
            "inner skip".to_string(),
            "outer after true".to_string(),
            "outer before channel \"pings\"".to_string(),
            "inner run".to_string(),
            "handler run".to_string(),
            "outer after true".to_string(),
        ]
    );
    assert_eq!(
        broker.job(id).unwrap().unwrap().last_error.as_deref(),
        Some("asked to fail")
    );
}

#[test]
fn a_panicking_middleware_fails_the_job_and_the_pool_lives_on() {
    let db = support::db();
    let broker = db.broker();
    let pool = broker
        .worker_pool()
        .threads(1)
        .middleware(|run, next| {
            if let HandlerRun::Job { attempt: 1, .. } = run {
                panic!("middleware bug");
            }
            next()
        })
        .queue_with(QueueOptions::new("mw"), |_| Ok(()))
        .start()
        .unwrap();
    let id = broker
        .enqueue_job(
            &Job::new("mw", "{}").backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || broker
        .job(id)
        .unwrap()
        .is_none()));
    let stats = pool.shutdown().unwrap();
    assert_eq!((stats.panicked, stats.handled), (1, 1));
}

#[cfg(feature = "tracing")]
mod tracing_spans {
    use std::fmt::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};

    /// Every span created in this process: (name, "field=value ...").
    pub fn spans() -> &'static Mutex<Vec<(String, String)>> {
        static SPANS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
        SPANS.get_or_init(|| {
            tracing::subscriber::set_global_default(Recorder(AtomicU64::new(1))).unwrap();
            Mutex::new(Vec::new())
        })
    }

    struct Recorder(AtomicU64);
    struct Text(String);

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }

    impl tracing::Subscriber for Recorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.0.fetch_add(1, Ordering::Relaxed);
            let mut text = Text(String::new());
            span.record(&mut text);
            spans().lock().unwrap().push((
                span.metadata().name().to_owned(),
                format!("#{id} {}", text.0),
            ));
            Id::from_u64(id)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut text = Text(String::new());
            values.record(&mut text);
            let tag = format!("#{} ", span.into_u64());
            for s in spans().lock().unwrap().iter_mut() {
                if s.1.starts_with(&tag) {
                    s.1.push_str(&text.0);
                }
            }
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[cfg(feature = "tracing")]
#[test]
fn tracing_spans_name_the_jobs_and_events() {
    let spans = tracing_spans::spans();
    let db = support::db();
    let broker = db.broker();
    let id = broker.enqueue("traced", "{}").unwrap();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue("traced", 1, |_| Ok(()))
        .start()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(10), || broker
        .job(id)
        .unwrap()
        .is_none()));
    pool.shutdown().unwrap();
    let event = broker
        .publish("traced.topic", &serde_json::json!({"a": 1}))
        .unwrap();
    let spans = spans.lock().unwrap().clone();
    let has = |name: &str, parts: &[String]| {
        spans
            .iter()
            .any(|(n, f)| n == name && parts.iter().all(|p| f.contains(p.as_str())))
    };
    let q = "queue=\"traced\"".to_string();
    assert!(
        has("pgbroker.enqueue", &[q.clone(), format!("job_id={id} ")]),
        "{spans:?}"
    );
    assert!(
        has(
            "pgbroker.claim",
            &[q.clone(), format!("first_job_id={id} ")]
        ),
        "{spans:?}"
    );
    assert!(
        has(
            "pgbroker.handle_job",
            &[q, format!("job_id={id} "), "attempt=1".into()]
        ),
        "{spans:?}"
    );
    assert!(
        has(
            "pgbroker.publish",
            &[
                "topic=\"traced.topic\"".into(),
                format!("event_id={} ", event.0)
            ]
        ),
        "{spans:?}"
    );
}

// Rate limits and group concurrency ---------------------------------------------------------------

use pgbroker::queue::QueueLimits;

#[test]
fn a_rate_limit_holds_across_worker_processes() {
    let db = support::db();
    let broker = db.broker();
    ran_table(&db);
    broker
        .limit_queue(
            "rated",
            &QueueLimits::new().rate(5, Duration::from_secs(3600)),
        )
        .unwrap();
    let jobs: Vec<Job> = (0..20)
        .map(|i| Job::new("rated", &serde_json::json!(i)))
        .collect();
    broker.enqueue_batch(&jobs).unwrap();
    let _children = Children::start(3, &db.url, "rated");
    assert!(support::wait_until(Duration::from_secs(20), || count(
        &db,
        "SELECT count(*) FROM ran"
    ) >= 5));
    std::thread::sleep(Duration::from_secs(2)); // the processes keep claiming meanwhile
    assert_eq!(count(&db, "SELECT count(*) FROM ran"), 5);
    let limits = broker.queue_limits().unwrap();
    assert_eq!(limits.len(), 1);
    assert_eq!(
        (
            limits[0].queue.as_str(),
            limits[0].rate,
            limits[0].group_concurrency
        ),
        ("rated", Some((5, Duration::from_secs(3600))), None)
    );
    // Cleared: the rest runs.
    broker.limit_queue("rated", &QueueLimits::new()).unwrap();
    assert!(broker.queue_limits().unwrap().is_empty());
    assert!(support::wait_until(Duration::from_secs(20), || count(
        &db,
        "SELECT count(*) FROM ran"
    ) == 20));
    assert_eq!(count(&db, "SELECT count(DISTINCT job_id) FROM ran"), 20);
}

#[test]
fn a_rate_window_reopens_and_claims_take_what_is_left() {
    let db = support::db();
    let broker = db.broker();
    broker
        .limit_queue(
            "rated",
            &QueueLimits::new().rate(3, Duration::from_millis(500)),
        )
        .unwrap();
    for i in 0..10 {
        broker.enqueue("rated", &serde_json::json!(i)).unwrap();
    }
    assert_eq!(broker.claim_jobs("rated", "w", 2, LEASE).unwrap().len(), 2);
    assert_eq!(broker.claim_jobs("rated", "w", 10, LEASE).unwrap().len(), 1);
    assert_eq!(broker.claim_jobs("rated", "w", 10, LEASE).unwrap().len(), 0);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(broker.claim_jobs("rated", "w", 10, LEASE).unwrap().len(), 3);
    // The plain SQL claim leaves a limited queue alone; claim_limited honours it.
    let mut c = db.client();
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.claim('rated', 'w', 10)", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    std::thread::sleep(Duration::from_millis(600));
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pgbroker.claim_limited('rated', 'w', 10)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[test]
fn group_concurrency_holds_across_worker_processes() {
    let db = support::db();
    let broker = db.broker();
    ran_table(&db);
    broker
        .limit_queue("tenants", &QueueLimits::new().group_concurrency(2))
        .unwrap();
    for i in 0..8 {
        for tenant in ["a", "b"] {
            broker
                .enqueue_job(
                    &Job::new(
                        "tenants",
                        &serde_json::json!({"tenant": tenant, "i": i, "sleep_ms": 150}),
                    )
                    .group(tenant),
                )
                .unwrap();
        }
    }
    broker
        .enqueue_job(&Job::new("tenants", r#"{"tenant": null, "sleep_ms": 150}"#))
        .unwrap();
    let _children = Children::start(3, &db.url, "tenants"); // 6 slots in all
    assert!(support::wait_until(Duration::from_secs(30), || count(
        &db,
        "SELECT count(*) FROM ran WHERE done_at IS NOT NULL"
    ) == 17));
    // At no job's start did its group have more than 2 jobs running.
    let most = count(
        &db,
        "SELECT max(n) FROM (SELECT (SELECT count(*) FROM ran o
                                      WHERE o.payload ->> 'tenant' = r.payload ->> 'tenant'
                                        AND o.at <= r.at AND o.done_at > r.at) AS n
                               FROM ran r WHERE r.payload ->> 'tenant' IS NOT NULL) x",
    );
    assert_eq!(most, 2);
    assert_eq!(count(&db, "SELECT count(DISTINCT job_id) FROM ran"), 17);
}

#[test]
fn bad_limits_are_refused() {
    let db = support::db();
    let broker = db.broker();
    for bad in [
        QueueLimits::new().rate(0, Duration::from_secs(1)),
        QueueLimits::new().rate(1, Duration::ZERO),
        QueueLimits::new().group_concurrency(0),
    ] {
        assert_eq!(
            broker.limit_queue("q", &bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        broker
            .limit_queue("bad name", &QueueLimits::new())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidName
    );
    let e = db
        .client()
        .query_one("SELECT pgbroker.limit_queue('q', rate_limit => 5)", &[])
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    assert!(broker.queue_limits().unwrap().is_empty());
    // Pausing a limited queue and resuming it keeps its limits.
    broker
        .limit_queue("q", &QueueLimits::new().group_concurrency(3))
        .unwrap();
    broker.pause_queue("q").unwrap();
    broker.resume_queue("q").unwrap();
    assert_eq!(broker.queue_limits().unwrap()[0].group_concurrency, Some(3));
}

#[test]
fn claim_limited_refuses_a_bad_lease_as_claim_does() {
    let db = support::db();
    db.broker().enqueue("q", "{}").unwrap();
    let mut c = db.client();
    for f in ["claim", "claim_limited"] {
        for lease in ["0 s", "-1 s", "36501 days"] {
            let err = c
                .query(
                    &format!("SELECT * FROM pgbroker.{f}('q', 'w', 1, interval '{lease}')"),
                    &[],
                )
                .unwrap_err();
            assert_eq!(
                err.code(),
                Some(&pgbroker::postgres::error::SqlState::INVALID_PARAMETER_VALUE),
                "{f} with {lease}: {err}"
            );
        }
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgbroker.jobs WHERE state = 'available'"
        ),
        1,
        "nothing claimed"
    );
}
