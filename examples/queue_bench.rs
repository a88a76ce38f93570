//! A rough measurement of the queue's hot paths against their raw-SQL baselines, interleaved in
//! small rounds so that load from elsewhere affects both sides alike:
//! - single enqueue vs a raw single-row INSERT into a table of similar shape;
//! - claim+complete in batches of 100 vs a raw
//!   `DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100)` loop;
//! - batch enqueue with COPY.
//!
//! `cargo run --release --example queue_bench` (uses `DATABASE_URL`, or starts a throwaway
//! PostgreSQL). Set `N` for the number of jobs (default 20000).

use std::time::{Duration, Instant};

use pgbroker::queue::Job;
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let broker = Broker::connect(&url)?;
    broker.install()?;
    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS bench_raw;
         CREATE TABLE bench_raw (id bigserial PRIMARY KEY, queue text NOT NULL,
                                 payload jsonb NOT NULL, priority int NOT NULL DEFAULT 0,
                                 run_at timestamptz NOT NULL DEFAULT now());
         DELETE FROM pgbroker.jobs WHERE queue = 'bench';",
    )?;
    let payload = serde_json::json!({"to": "someone@example.com", "n": 1});
    let insert = conn.prepare("INSERT INTO bench_raw (queue, payload) VALUES ($1, $2)")?;
    let delete = conn.prepare(
        "DELETE FROM bench_raw WHERE id IN (SELECT id FROM bench_raw WHERE queue = $1 \
         ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)",
    )?;

    const ROUND: usize = 500;
    let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n / ROUND {
        let t = Instant::now();
        for _ in 0..ROUND {
            conn.execute(&insert, &[&"bench", &payload])?;
        }
        raw += t.elapsed();
        let t = Instant::now();
        for _ in 0..ROUND {
            broker.enqueue("bench", &payload)?;
        }
        ours += t.elapsed();
    }
    report("single enqueue", n, ours, raw);

    let (mut raw, mut ours) = (Duration::ZERO, Duration::ZERO);
    let (mut raw_left, mut ours_left) = (true, true);
    while raw_left || ours_left {
        for _ in 0..10 {
            let t = Instant::now();
            raw_left = raw_left && conn.execute(&delete, &[&"bench"])? > 0;
            raw += t.elapsed();
            let t = Instant::now();
            let jobs = broker.claim_jobs("bench", "bench", 100, Duration::from_secs(60))?;
            ours_left = !jobs.is_empty();
            broker.complete_jobs(&jobs)?;
            ours += t.elapsed();
        }
    }
    report("claim+complete x100", n, ours, raw);

    let jobs: Vec<Job> = (0..n).map(|_| Job::new("bench", &payload)).collect();
    let t = Instant::now();
    broker.enqueue_batch(&jobs)?;
    println!(
        "batch enqueue (COPY): {:.0} jobs/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    conn.batch_execute("DROP TABLE bench_raw; DELETE FROM pgbroker.jobs WHERE queue = 'bench'")?;
    Ok(())
}

fn report(what: &str, n: usize, ours: Duration, raw: Duration) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{what}: {:.0}/s vs raw {:.0}/s = {:.0}%",
        rate(ours),
        rate(raw),
        100.0 * raw.as_secs_f64() / ours.as_secs_f64()
    );
}
