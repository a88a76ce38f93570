//! Jobs per second through a worker pool whose handler only acknowledges: a Rust closure
//! against a Python callable (python/bench/handler_throughput.py, over libpgbroker with
//! ctypes), on the same durable cluster in the same run, alternating, best of `--rounds`.
//!
//! ```sh
//! cargo run --release -p pgbroker-ffi --example handler_throughput -- --jobs 20000
//! ```
//!
//! Uses `DATABASE_URL` when set, else a private throwaway cluster with fsync on. The Python
//! side loads the libpgbroker.so built next to this example (or `PGBROKER_LIB`) and runs with
//! `python3` (or `PYTHON`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker_core::queue::Job;
use pgbroker_core::Broker;
use pgbroker_testing::TempPostgres;

struct Args {
    jobs: usize,
    threads: usize,
    concurrency: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        jobs: 20_000,
        threads: 4,
        concurrency: 4,
        rounds: 2,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        let Some(value) = value else {
            panic!(
                "usage: handler_throughput [--jobs N] [--threads N] [--concurrency N] [--rounds N]"
            );
        };
        match pair[0].as_str() {
            "--jobs" => a.jobs = value,
            "--threads" => a.threads = value,
            "--concurrency" => a.concurrency = value,
            "--rounds" => a.rounds = value,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn enqueue(broker: &Broker, queue: &str, n: usize) {
    let jobs: Vec<Job> = (0..n)
        .map(|i| Job::new(queue, &serde_json::json!({ "i": i })))
        .collect();
    for chunk in jobs.chunks(1000) {
        broker.enqueue_batch(chunk).expect("enqueue");
    }
}

fn rust_round(broker: &Broker, queue: &str, a: &Args) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let started = Instant::now();
    let pool = broker
        .worker_pool()
        .threads(a.threads)
        .queue(queue, a.concurrency, move |_job| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .start()
        .expect("start the pool");
    while done.load(Ordering::Relaxed) < a.jobs {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "rust round stalled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    pool.shutdown().expect("shutdown");
    a.jobs as f64 / elapsed
}

fn python_round(url: &str, queue: &str, a: &Args) -> f64 {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = std::env::var("PGBROKER_LIB").unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("example path");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>");
        dir.join("libpgbroker.so").display().to_string()
    });
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(root.join("python/bench/handler_throughput.py"))
        .args(["--url", url, "--queue", queue])
        .args(["--jobs", &a.jobs.to_string()])
        .args(["--threads", &a.threads.to_string()])
        .args(["--concurrency", &a.concurrency.to_string()])
        .env("PGBROKER_LIB", &lib)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "python bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("python bench prints JSON");
    report["jobs_per_sec"].as_f64().expect("jobs_per_sec")
}

fn main() {
    let a = args();
    let temp;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            temp = TempPostgres::builder()
                .durable(true)
                .start()
                .expect("a private cluster");
            temp.url()
        }
    };
    let broker = Broker::connect(&url).expect("connect");
    broker.install().expect("install");
    let (mut best_rust, mut best_python) = (0f64, 0f64);
    for round in 0..a.rounds {
        let q = format!("bench_rust_{round}");
        enqueue(&broker, &q, a.jobs);
        let rust = rust_round(&broker, &q, &a);
        let q = format!("bench_python_{round}");
        enqueue(&broker, &q, a.jobs);
        let python = python_round(&url, &q, &a);
        println!("round {round}: rust {rust:.0} jobs/s, python {python:.0} jobs/s");
        best_rust = best_rust.max(rust);
        best_python = best_python.max(python);
    }
    println!(
        "best of {}: rust handler {best_rust:.0} jobs/s, python handler {best_python:.0} jobs/s \
         (python/rust = {:.2}); {} jobs, {} threads, concurrency {}, durable: {}",
        a.rounds,
        best_python / best_rust,
        a.jobs,
        a.threads,
        a.concurrency,
        std::env::var("DATABASE_URL").is_err()
    );
}
