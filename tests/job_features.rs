//! The job features of issue 19: paused queues, periodic jobs, dependencies, progress,
//! per-job timeouts, middleware, rate and group limits — from SQL and Rust, with several
//! worker processes where it matters.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, QueueOptions};
use pgbroker::ErrorKind;

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
                    "INSERT INTO ran (job_id, pid, payload) VALUES ($1, $2, $3)",
                    &[&job.id(), &(std::process::id() as i32), job.payload()],
                )?;
                Ok(())
            },
        )
        //SCHEDULE
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
                        .args(["child_worker_process", "--exact", "--test-threads=1"])
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
        .batch_execute("CREATE TABLE ran (job_id bigint, pid int, payload jsonb)")
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
    assert!(second > 0);
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
    let ids: Vec<i64> = broker
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
