//! Jobs that must be retried after failure, and dead jobs re-driven once fixed.
//!
//! Three kinds of jobs: ones that succeed, flaky ones that fail twice and then succeed
//! (retried with exponential backoff and jitter), and a poison one that always fails and ends
//! up dead with its error history. After "deploying a fix", the dead job is re-driven.
//!
//! Run with `cargo run --example retries` (uses `DATABASE_URL`, or starts a throwaway
//! PostgreSQL).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgbroker::queue::{Job, JobContext, QueueOptions};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let broker = Broker::connect(&url)?;
    broker.install()?;

    let backoff = (Duration::from_millis(100), Duration::from_secs(2));
    for (kind, n) in [("ok", 3), ("flaky", 2), ("poison", 1)] {
        for i in 0..n {
            broker.enqueue_job(
                &Job::new("tasks", &serde_json::json!({ "kind": kind, "n": i }))
                    .max_attempts(4)
                    .backoff(backoff.0, backoff.1),
            )?;
        }
    }

    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new("tasks")
                .concurrency(2)
                .poll_interval(Duration::from_millis(100)),
            move |job: &JobContext| {
                let kind = job.payload()["kind"].as_str().unwrap_or("?");
                println!(
                    "job {} ({kind}) attempt {}/{}",
                    job.id(),
                    job.attempt(),
                    job.max_attempts()
                );
                match kind {
                    "flaky" if job.attempt() <= 2 => Err("upstream timed out".into()),
                    "poison" if !f.load(Ordering::SeqCst) => {
                        Err(format!("cannot parse {}", job.payload()).into())
                    }
                    _ => Ok(()),
                }
            },
        )
        .start()?;

    // Wait for the queue to settle: everything done except the dead job.
    loop {
        let stats = broker.queue_stats()?;
        let q = stats.iter().find(|q| q.queue == "tasks");
        if q.is_some_and(|q| q.available + q.scheduled + q.running == 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for dead in broker.dead_jobs(Some("tasks"), 10)? {
        println!(
            "dead job {} after {} attempts; errors:",
            dead.id, dead.attempt
        );
        for e in dead.errors.as_array().into_iter().flatten() {
            println!("  attempt {}: {}", e["attempt"], e["error"]);
        }
        fixed.store(true, Ordering::SeqCst);
        println!("fix deployed: re-driving job {}", dead.id);
        broker.redrive_job(dead.id)?;
    }
    while broker.queue_stats()?.iter().any(|q| q.queue == "tasks") {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("all jobs completed; worker stats: {:?}", pool.stats());
    pool.shutdown()?;
    Ok(())
}
