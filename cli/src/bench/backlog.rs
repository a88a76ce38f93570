//! A deep backlog (module `queue`): worker-pool consumers work through `--messages` jobs
//! while up to a million more wait, sampling this process's resident memory, so the report
//! shows whether memory stays flat with the backlog (bounded prefetch) and whether claiming
//! slows down with a deep queue (raw: the same backlog drained by a one-job DELETE loop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::{Ctx, Ratio, Runner, Sample, Workload};
use super::queue;
use super::raw;
use super::tables;
use super::{rss_kb, Options, Result};

const QUEUE: &str = tables::BENCH_QUEUE;

/// The most jobs left waiting; a run with fewer `--messages` seeds 50 per job it consumes.
pub const MAX_BACKLOG: u64 = 1_000_000;

/// How often the pgbroker side samples its resident memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The jobs seeded for a run that consumes `n`: a million at the default sizes.
pub fn backlog(n: u64) -> u64 {
    n.saturating_mul(50).clamp(n, MAX_BACKLOG.max(n))
}

fn seed_raw(ctx: &Ctx, n: u64) -> Result<()> {
    queue::seed_jobs(ctx, backlog(n))
}

fn seed_pgbroker(ctx: &Ctx, n: u64) -> Result<()> {
    queue::seed_pgbroker_jobs(ctx, backlog(n))
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    vec![Workload {
        name: "queue_backlog_1m",
        about: "worker-pool consumers (one job per handler call) work through --messages jobs \
                while up to 1M wait; resident memory sampled (raw: a one-job DELETE ... SKIP \
                LOCKED loop per thread on the same backlog)",
        threads: o.threads,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_raw),
        seed_pgbroker: Some(seed_pgbroker),
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::claim_delete(QUEUE, 1, o.threads),
        pgbroker: consume(o.threads),
    }]
}

/// A worker pool of `threads` threads running the queue at concurrency `threads`, stopped
/// once the budget's jobs are done. Extras: the backlog, resident memory before the pool
/// starts and at its peak while it runs (sampled), and the growth between the two.
fn consume(threads: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let target = budget.take(u64::MAX);
        let waiting = count_jobs(ctx)?;
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let rss_before = rss_kb("VmRSS:").unwrap_or(0);
        let start = Instant::now();
        let pool = ctx
            .broker
            .worker_pool()
            .threads(threads)
            .queue(QUEUE, threads, move |_job| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .start()?;
        let mut rss_peak = rss_before;
        let mut last = 0;
        loop {
            std::thread::sleep(SAMPLE_EVERY);
            rss_peak = rss_peak.max(rss_kb("VmRSS:").unwrap_or(0));
            let now = done.load(Ordering::Relaxed);
            budget.done(now - last);
            last = now;
            if now >= target || budget.expired() {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                return Err("queue_backlog_1m: no progress for 10 minutes".into());
            }
        }
        let elapsed = start.elapsed();
        let units = done.load(Ordering::Relaxed);
        pool.shutdown()?;
        Ok(Sample::new(units, elapsed)
            .with("backlog", waiting as f64)
            .with("rss_before_kb", rss_before as f64)
            .with("rss_peak_kb", rss_peak as f64)
            .with("rss_growth_kb", rss_peak.saturating_sub(rss_before) as f64))
    })
}

fn count_jobs(ctx: &Ctx) -> Result<u64> {
    let row = ctx.client()?.query_one(
        "SELECT count(*) FROM pgbroker.jobs WHERE queue = $1",
        &[&QUEUE],
    )?;
    Ok(row.get::<_, i64>(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_wait_at_the_default_sizes() {
        assert_eq!(backlog(20_000), 1_000_000);
        assert_eq!(backlog(100_000), 1_000_000);
        assert_eq!(backlog(1_000), 50_000);
        assert_eq!(backlog(2_000_000), 2_000_000);
    }
}
