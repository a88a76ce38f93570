//! A CI service's runs (the way webapp.io described theirs) on pgbroker's job queue.
//!
//! A run goes `new -> initializing -> initialized -> running -> complete`. Each processing
//! state is a queue: a job waiting in `ci.init` is a run in state `new`, a running one is
//! `initializing`; waiting in `ci.run` is `initialized`, running there is `running`; the last
//! stage completing is `complete`. Each stage completes its job and enqueues the next stage in
//! one transaction. A watcher (what would feed a dashboard's websocket) prints every status change.
//!
//! Midway, a worker *process* running a job is killed with SIGKILL; its lease expires, the job
//! is rescued and another worker finishes it.
//!
//! Run with `cargo run --example ci_pipeline` (uses `DATABASE_URL`, or starts a throwaway
//! PostgreSQL).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, JobContext, JobState, QueueOptions};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;

const DOOMED: &str = "--doomed-worker";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(DOOMED) {
        return Ok(doomed_worker(&args[2])?);
    }

    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let broker = Broker::connect(&url)?;
    broker.install()?;

    // The gateway: print each run's status as its jobs change state.
    let done = Arc::new(AtomicBool::new(false));
    let gateway = {
        let done = done.clone();
        let init = broker.watch_jobs("ci.init")?;
        let run = broker.watch_jobs("ci.run")?;
        std::thread::spawn(move || loop {
            let mut idle = true;
            for w in [&init, &run] {
                if let Ok(Some(ev)) = w.recv_timeout(Duration::from_millis(50)) {
                    idle = false;
                    let status = match (ev.queue.as_str(), ev.state) {
                        ("ci.init", JobState::Available) => "new",
                        ("ci.init", JobState::Running) => "initializing",
                        ("ci.init", JobState::Completed) => "initialized (init done)",
                        ("ci.run", JobState::Available) if ev.error.is_some() => {
                            "initialized (retrying)"
                        }
                        ("ci.run", JobState::Available) => "initialized",
                        ("ci.run", JobState::Running) => "running",
                        ("ci.run", JobState::Completed) => "complete",
                        (_, JobState::Dead) => "error",
                        _ => "?",
                    };
                    let why = ev.error.map(|e| format!(" ({e})")).unwrap_or_default();
                    println!(
                        "[gateway] {} job {} attempt {}: {status}{why}",
                        ev.queue, ev.id, ev.attempt
                    );
                }
            }
            if idle && done.load(Ordering::SeqCst) {
                return;
            }
        })
    };

    // A worker process that will die mid-job: it takes the first `ci.run` job.
    let mut doomed = Command::new(std::env::current_exe()?)
        .args([DOOMED, &url])
        .stdout(Stdio::inherit())
        .spawn()?;

    for repo in [
        "colinchartier/layerci-color-test",
        "example/app",
        "example/lib",
    ] {
        broker.enqueue("ci.init", &serde_json::json!({ "repository": repo }))?;
    }

    // The init stage runs here; the run stage only in the doomed process for now.
    let init_pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new("ci.init").concurrency(2),
            |job: &JobContext| {
                std::thread::sleep(Duration::from_millis(200)); // clone the repository
                job.complete_and_enqueue(&Job::new("ci.run", job.payload()))?;
                Ok(())
            },
        )
        .start()?;

    // Wait until the doomed worker holds a job, then kill it: no shutdown, no release.
    let t0 = Instant::now();
    while broker
        .queue_stats()?
        .iter()
        .all(|q| q.queue != "ci.run" || q.running == 0)
    {
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("the doomed worker never claimed a job");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    doomed.kill()?;
    doomed.wait()?;
    println!("[main] killed the worker process mid-job (SIGKILL); its lease will expire");

    // Healthy run-stage workers; their pool rescues expired leases on a timer.
    let run_pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new("ci.run")
                .concurrency(2)
                .rescue_interval(Duration::from_millis(500)),
            |job: &JobContext| {
                println!(
                    "[worker] testing {} (attempt {})",
                    job.payload()["repository"],
                    job.attempt()
                );
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            },
        )
        .start()?;

    while broker
        .queue_stats()?
        .iter()
        .any(|q| q.queue.starts_with("ci."))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    init_pool.shutdown()?;
    run_pool.shutdown()?;
    done.store(true, Ordering::SeqCst);
    let _ = gateway.join();
    println!("[main] all runs complete");
    Ok(())
}

/// The worker that gets killed: claims a `ci.run` job with a 2 s lease and hangs.
fn doomed_worker(url: &str) -> pgbroker::Result<()> {
    let broker = Broker::connect(url)?;
    let _pool = broker
        .worker_pool()
        .threads(1)
        .queue_with(
            QueueOptions::new("ci.run")
                .lease(Duration::from_secs(2))
                .worker_name("doomed"),
            |job: &JobContext| {
                println!("[doomed] running job {}, about to be killed", job.id());
                std::thread::sleep(Duration::from_secs(600));
                Ok(())
            },
        )
        .start()?;
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}
