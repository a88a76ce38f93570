//! Job queue workloads (module `queue`): each done with plain SQL on the bench's own jobs
//! table, and through pgbroker on `pgbroker.jobs` (same jobs, same threads, same jobs per
//! transaction).

use std::time::{Duration, Instant};

use pgbroker::Job;
use serde_json::Value;

use super::harness::{on_threads, one_per_unit, Ctx, Ratio, Runner, Sample, Seed, Workload};
use super::raw;
use super::tables::{self, Target};
use super::{Options, Result};

/// The bench's queue; `tables::BENCH_QUEUE`.
const QUEUE: &str = tables::BENCH_QUEUE;

/// The lease of claimed jobs: far longer than a run, so no job is rescued mid-run.
const LEASE: Duration = Duration::from_secs(600);

pub(super) fn job() -> Value {
    serde_json::json!({"email": "user@example.com", "template": "welcome"})
}

pub(super) fn seed_jobs(ctx: &Ctx, n: u64) -> Result<()> {
    tables::seed(ctx, Target::Jobs, QUEUE, &job(), n)
}

/// The same jobs as `seed_jobs`, through `enqueue_batch`: 10 000 per transaction.
pub(super) fn seed_pgbroker_jobs(ctx: &Ctx, n: u64) -> Result<()> {
    let mut left = n;
    let jobs: Vec<Job> = (0..left.min(10_000))
        .map(|_| Job::new(QUEUE, &job()))
        .collect();
    while left > 0 {
        let k = left.min(10_000);
        ctx.broker.enqueue_batch(&jobs[..k as usize])?;
        left -= k;
    }
    ctx.client()?.batch_execute("ANALYZE pgbroker.jobs")?;
    Ok(())
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    let single = |name, threads| Workload {
        name,
        about: "enqueue one job per transaction (raw: INSERT into a jobs table)",
        threads,
        messages: o.messages,
        bounded: false,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::insert_single(Target::Jobs, QUEUE, job(), threads),
        pgbroker: enqueue_single(job(), threads),
    };
    let batch = |name, size| Workload {
        name,
        about: "enqueue a batch per call (raw: the faster of multi-row INSERT and binary COPY)",
        threads: 1,
        messages: o.messages,
        bounded: false,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::insert_batch(Target::Jobs, QUEUE, job(), size),
        pgbroker: enqueue_batch(job(), size),
    };
    let claim = |name, size, workers| Workload {
        name,
        about: "claim and complete jobs until the queue is empty (raw: DELETE ... WHERE id IN \
                (SELECT ... FOR UPDATE SKIP LOCKED LIMIT k) RETURNING)",
        threads: workers,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_jobs as Seed),
        seed_pgbroker: Some(seed_pgbroker_jobs as Seed),
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::claim_delete(QUEUE, size, workers),
        pgbroker: claim_complete(size, workers),
    };
    let take = |name, size, workers| Workload {
        name,
        about: "take jobs inside a transaction and commit it until the queue is empty (raw: \
                the same DELETE ... SKIP LOCKED as claim_complete, autocommitted)",
        threads: workers,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_jobs as Seed),
        seed_pgbroker: Some(seed_pgbroker_jobs as Seed),
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::claim_delete(QUEUE, size, workers),
        pgbroker: take_commit(size, workers),
    };
    vec![
        single("enqueue_single_t1", 1),
        single("enqueue_single_t4", o.threads),
        batch("enqueue_batch_100", 100),
        batch("enqueue_batch_10000", 10_000),
        claim("claim_complete_b1_t1", 1, 1),
        claim("claim_complete_b1_t4", 1, o.threads),
        claim("claim_complete_b100_t1", 100, 1),
        claim("claim_complete_b100_t4", 100, o.threads),
        take("take_commit_b1_t1", 1, 1),
        take("take_commit_b1_t4", 1, o.threads),
        take("take_commit_b100_t1", 100, 1),
        take("take_commit_b100_t4", 100, o.threads),
    ]
}

/// `Broker::enqueue` per job on `threads` threads sharing the broker's pool.
fn enqueue_single(payload: Value, threads: usize) -> Runner {
    Box::new(move |ctx, budget| {
        one_per_unit(vec![(); threads], budget, |_| {
            ctx.broker.enqueue(QUEUE, &payload)?;
            Ok(())
        })
    })
}

/// `Broker::enqueue_batch` of `batch` jobs per call, one thread.
fn enqueue_batch(payload: Value, batch: u64) -> Runner {
    Box::new(move |ctx, budget| {
        let start = Instant::now();
        let mut done = 0;
        loop {
            let k = budget.take(batch);
            if k == 0 {
                break;
            }
            let jobs: Vec<Job> = (0..k).map(|_| Job::new(QUEUE, &payload)).collect();
            ctx.broker.enqueue_batch(&jobs)?;
            budget.done(k);
            done += k;
        }
        Ok(Sample::new(done, start.elapsed()))
    })
}

/// `workers` threads loop `claim_jobs(batch)` + `complete_jobs` until the queue is empty.
///
/// pgbroker does more per job than the raw DELETE: a claim records the lease (at-least-once
/// delivery), an UPDATE that cannot be HOT (`state` and `lease_until` are indexed), so each
/// job gets a new heap tuple plus primary-key and lease-index entries, and completion then
/// deletes it. EXPLAIN (ANALYZE, BUFFERS) on 20 000 jobs: claiming 100 takes 1.1 ms and
/// 1 000 buffer hits, the raw DELETE of 100 0.3 ms and 550; the ratio is bounded near 0.3
/// when the server's CPU is the limit.
fn claim_complete(batch: u64, workers: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let names: Vec<String> = (0..workers).map(|i| format!("bench-worker-{i}")).collect();
        on_threads(names, budget, |worker, budget| {
            let mut done = 0;
            loop {
                let k = budget.take(batch);
                if k == 0 {
                    return Ok(done);
                }
                let jobs = ctx.broker.claim_jobs(QUEUE, worker, k as usize, LEASE)?;
                if jobs.is_empty() {
                    return Ok(done);
                }
                ctx.broker.complete_jobs(&jobs)?;
                budget.done(jobs.len() as u64);
                done += jobs.len() as u64;
            }
        })
    })
}

/// `workers` threads loop: begin and take a batch (`CachedClient::take_jobs`), "handle" it,
/// commit, until the queue is empty. The take is the raw side's DELETE; the transaction adds BEGIN and COMMIT round
/// trips.
fn take_commit(batch: u64, workers: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let conns = (0..workers)
            .map(|_| ctx.broker.conn())
            .collect::<pgbroker::Result<Vec<_>>>()?;
        on_threads(conns, budget, |conn, budget| {
            let mut done = 0;
            loop {
                let k = budget.take(batch);
                if k == 0 {
                    return Ok(done);
                }
                let (tx, jobs) = conn.take_jobs(QUEUE, k as usize)?;
                if jobs.is_empty() {
                    return Ok(done);
                }
                tx.commit()?;
                budget.done(jobs.len() as u64);
                done += jobs.len() as u64;
            }
        })
    })
}
