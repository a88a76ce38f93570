//! A worker process killed with SIGKILL mid-job: its lease expires, the job is rescued and
//! another worker runs it again.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use pgbroker::queue::QueueOptions;

const CHILD_ENV: &str = "PGBROKER_QUEUE_KILL_CHILD_URL";

/// Not a test of its own: the body of the child worker process, which the test below starts
/// by re-running this test binary with `CHILD_ENV` set. Without it, it does nothing.
#[test]
fn child_worker_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let broker = pgbroker::Broker::connect(&url).unwrap();
    let _pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            QueueOptions::new("fragile")
                .lease(Duration::from_secs(1))
                .worker_name("doomed-child"),
            |job| {
                let mut conn = job.broker().conn()?;
                conn.execute(
                    "INSERT INTO started (job_id, pid) VALUES ($1, $2)",
                    &[&job.id(), &(std::process::id() as i32)],
                )?;
                std::thread::sleep(Duration::from_secs(120)); // killed long before
                Ok(())
            },
        )
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_worker_process_loses_its_job_to_rescue() {
    let db = support::db();
    let broker = db.broker();
    db.client()
        .batch_execute("CREATE TABLE started (job_id bigint, pid int)")
        .unwrap();
    let id = broker.enqueue("fragile", r#"{"step": 1}"#).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill::child_worker_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db.url)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = || -> i64 {
        db.client()
            .query_one("SELECT count(*) FROM started", &[])
            .unwrap()
            .get(0)
    };
    let ok = support::wait_until(Duration::from_secs(30), || started() == 1);
    if !ok {
        let _ = child.kill();
        panic!("the child worker never started the job");
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no release
    child.wait().unwrap();
    let info = broker.job(id).unwrap().unwrap();
    assert_eq!(info.state, pgbroker::queue::JobState::Running);
    assert_eq!(info.worker.as_deref(), Some("doomed-child"));

    // A surviving worker pool rescues the job once the lease expires, and runs it.
    let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = ran.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            QueueOptions::new("fragile")
                .poll_interval(Duration::from_millis(100))
                .rescue_interval(Duration::from_millis(200)),
            move |job| {
                r.lock().unwrap().push((job.id(), job.attempt()));
                Ok(())
            },
        )
        .start()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(30), || {
        broker.job(id).unwrap().is_none()
    }));
    pool.shutdown().unwrap();
    assert_eq!(*ran.lock().unwrap(), vec![(id, 2)]);
    assert_eq!(started(), 1);
}
