//! The harness: workloads with a raw side and a pgbroker side, a shared budget of work, and
//! the warm-up / fresh tables / measure sequence each side goes through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pgbroker::postgres::Client;
use pgbroker::{Broker, WorkerPool};

use super::cpu::CpuMeter;
use super::{tables, Result};

/// What every workload runs against.
pub struct Ctx {
    /// A broker on the database: pgbroker sides use it, raw sides open plain `postgres`
    /// connections with its settings and TLS connector.
    pub broker: Broker,
    /// Whether progress bars are drawn (stderr is a terminal and output is not JSON).
    pub progress: bool,
    /// Reads the CPU time of this process and the server's (when the server is local).
    pub cpu: Option<CpuMeter>,
}

impl Ctx {
    /// A plain `postgres` connection, outside any pool (same server, same TLS as the broker).
    pub fn client(&self) -> Result<Client> {
        Ok(self.broker.new_client()?)
    }
}

/// How much work a measured run may do: a count (`--messages`, or the workload's fixed
/// size) and optionally a deadline (`--seconds`). Threads share it by taking chunks.
pub struct Budget {
    total: u64,
    claimed: AtomicU64,
    deadline: Option<Instant>,
    bar: ProgressBar,
}

impl Budget {
    pub fn new(total: u64, seconds: Option<f64>, bar: ProgressBar) -> Budget {
        let start = Instant::now();
        Budget {
            total,
            claimed: AtomicU64::new(0),
            deadline: seconds.map(|s| start + Duration::from_secs_f64(s)),
            bar,
        }
    }

    /// Claims up to `k` units; 0 when the budget is spent or the deadline has passed.
    pub fn take(&self, k: u64) -> u64 {
        if self.expired() {
            return 0;
        }
        let before = self.claimed.fetch_add(k, Ordering::Relaxed);
        if before >= self.total {
            return 0;
        }
        k.min(self.total - before)
    }

    /// True once `--seconds` have passed, or the run was interrupted (Ctrl-C).
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) || super::interrupted()
    }

    /// Reports `n` units done, for the progress bar.
    pub fn done(&self, n: u64) {
        self.bar.inc(n);
    }
}

/// The outcome of one measured run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Units of work done (messages written, read, claimed, delivered).
    pub units: u64,
    pub elapsed: Duration,
    /// Further numbers of this side (`p99_ms`, `notifies_per_s`, ...).
    pub extra: Vec<(&'static str, f64)>,
    /// CPU time the run used, in this process and the server (see `cpu.rs`), when known.
    pub cpu: Option<Duration>,
}

impl Sample {
    pub fn new(units: u64, elapsed: Duration) -> Sample {
        Sample {
            units,
            elapsed,
            extra: Vec::new(),
            cpu: None,
        }
    }

    /// CPU microseconds per unit of work, when the CPU time is known.
    pub fn cpu_us_per_unit(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.units > 0).then(|| cpu.as_secs_f64() * 1e6 / self.units as f64)
    }

    pub fn with(mut self, key: &'static str, value: f64) -> Sample {
        self.extra.push((key, value));
        self
    }

    pub fn per_s(&self) -> f64 {
        per_s(self.units, self.elapsed)
    }
}

pub fn per_s(units: u64, elapsed: Duration) -> f64 {
    units as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// One side of a workload: does the work the budget allows and says how long it took.
pub type Runner = Box<dyn Fn(&Ctx, &Budget) -> Result<Sample> + Send + Sync>;

/// Fills the fresh tables before a run with `n` units of input (for workloads that consume).
pub type Seed = fn(&Ctx, u64) -> Result<()>;

/// A named piece of work, done the raw PostgreSQL way and the pgbroker way.
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    pub threads: usize,
    /// Units a measured run does (`--messages`, or the workload's own size).
    pub messages: u64,
    /// True when the count is inherent (seeded input, fixed size): `--seconds` then only
    /// adds a deadline instead of replacing the count.
    pub bounded: bool,
    /// Fills the raw side's fresh tables before each run.
    pub seed: Option<Seed>,
    /// Fills pgbroker's tables with the same input, through pgbroker.
    pub seed_pgbroker: Option<Seed>,
    /// How the ratio compares the sides.
    pub ratio: Ratio,
    pub raw: Runner,
    pub pgbroker: Runner,
    /// A peer's way of doing the same work, run as a third side in the same run.
    pub peer: Option<Peer>,
}

/// A peer broker's way of doing a workload, as its own SQL does it (its tables and
/// functions modelled in the bench's schema, see `peer_models.rs`): reported beside
/// pgbroker so that a ratio to the peer is measured in the same run as the one to raw.
pub struct Peer {
    /// The peer's name in reports (`pgmq`).
    pub name: &'static str,
    /// Fills the peer's fresh tables before each run.
    pub seed: Option<Seed>,
    pub run: Runner,
}

/// How a workload's ratio compares pgbroker to raw; either way above 1 means pgbroker did
/// better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ratio {
    /// pgbroker/s divided by raw/s.
    Throughput,
    /// raw p50 latency divided by pgbroker p50 latency (a fixed-rate workload).
    Latency,
}

/// Every side's results of one workload.
pub struct Outcome {
    pub raw: Sample,
    pub pgbroker: Sample,
    /// The peer side's, when the workload has one.
    pub peer: Option<Sample>,
    /// Each side's lowest CPU time per unit over the rounds (µs), when known.
    pub raw_cpu_us: Option<f64>,
    pub pgbroker_cpu_us: Option<f64>,
    pub peer_cpu_us: Option<f64>,
}

/// Runs every side of `w` (raw, pgbroker, and the peer's when it has one): for each, fresh
/// tables, a warm-up, truncate, measure.
///
/// With several `rounds` the sides alternate (raw, pgbroker, peer, raw, ...) and each keeps
/// its best round, and separately its lowest CPU time per unit: on a machine shared with
/// other work, the best is the one least disturbed.
pub fn run(ctx: &Ctx, w: &Workload, seconds: Option<f64>, rounds: u32) -> Result<Outcome> {
    let mut best: Option<(Sample, Sample, Option<Sample>)> = None;
    let (mut raw_cpu, mut pgbroker_cpu, mut peer_cpu) = (None, None, None);
    for _ in 0..rounds.max(1) {
        let raw = run_side(ctx, w, &w.raw, w.seed, "raw", seconds)?;
        let pgbroker = run_side(ctx, w, &w.pgbroker, w.seed_pgbroker, "pgbroker", seconds)?;
        let peer = match &w.peer {
            Some(p) => Some(run_side(ctx, w, &p.run, p.seed, p.name, seconds)?),
            None => None,
        };
        raw_cpu = lowest(raw_cpu, raw.cpu_us_per_unit());
        pgbroker_cpu = lowest(pgbroker_cpu, pgbroker.cpu_us_per_unit());
        peer_cpu = lowest(peer_cpu, peer.as_ref().and_then(Sample::cpu_us_per_unit));
        best = Some(match best {
            None => (raw, pgbroker, peer),
            Some((r, p, q)) => (
                better(w.ratio, r, raw),
                better(w.ratio, p, pgbroker),
                match (q, peer) {
                    (Some(q), Some(peer)) => Some(better(w.ratio, q, peer)),
                    (q, peer) => q.or(peer),
                },
            ),
        });
    }
    let (raw, pgbroker, peer) = best.expect("at least one round");
    Ok(Outcome {
        raw,
        pgbroker,
        peer,
        raw_cpu_us: raw_cpu,
        pgbroker_cpu_us: pgbroker_cpu,
        peer_cpu_us: peer_cpu,
    })
}

fn lowest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The better of two samples of one side: faster, or for latency the lower p50.
fn better(ratio: Ratio, a: Sample, b: Sample) -> Sample {
    let key = |s: &Sample| match ratio {
        Ratio::Throughput => s.per_s(),
        Ratio::Latency => -s
            .extra
            .iter()
            .find(|(k, _)| *k == "p50_ms")
            .map_or(f64::INFINITY, |x| x.1),
    };
    if key(&b) > key(&a) {
        b
    } else {
        a
    }
}

fn run_side(
    ctx: &Ctx,
    w: &Workload,
    runner: &Runner,
    seed: Option<Seed>,
    side: &str,
    seconds: Option<f64>,
) -> Result<Sample> {
    let warm = (w.messages / 20).clamp(1, 2_000);
    tables::recreate(ctx)?;
    if let Some(seed) = seed {
        seed(ctx, warm)?;
    }
    runner(ctx, &Budget::new(warm, None, ProgressBar::hidden()))?;

    tables::truncate(ctx)?;
    if let Some(seed) = seed {
        seed(ctx, w.messages)?;
    }
    let total = match seconds {
        Some(_) if !w.bounded => u64::MAX,
        _ => w.messages,
    };
    let bar = progress_bar(ctx, total, &format!("{} {side}", w.name));
    let cpu_before = ctx.cpu.and_then(|m| m.now());
    let wal_before = wal_lsn(ctx);
    let mut sample = runner(ctx, &Budget::new(total, seconds, bar.clone()))
        .map_err(|e| format!("workload {} ({side} side): {e}", w.name))?;
    let cpu_after = ctx.cpu.and_then(|m| m.now());
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        sample.cpu = Some(after.saturating_sub(before));
    }
    // WAL bytes per unit: exact where timings on a shared machine are not (each durable
    // commit flushes the WAL written so far).
    if let (Some(before), Some(after)) = (wal_before, wal_lsn(ctx)) {
        if sample.units > 0 && after > before {
            let units = sample.units;
            sample = sample.with("wal_bytes", (after - before) as f64 / units as f64);
        }
    }
    bar.finish_and_clear();
    Ok(sample)
}

/// The server's WAL insert position in bytes (`None` when it cannot be read).
fn wal_lsn(ctx: &Ctx) -> Option<i64> {
    let mut c = ctx.client().ok()?;
    let row = c
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text",
            &[],
        )
        .ok()?;
    row.try_get::<_, String>(0).ok()?.parse().ok()
}

fn progress_bar(ctx: &Ctx, total: u64, label: &str) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let bar = if total == u64::MAX {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(total)
    };
    let style = if total == u64::MAX {
        ProgressStyle::with_template("{spinner} {prefix:30} {pos} ({elapsed})")
    } else {
        ProgressStyle::with_template("{prefix:30} [{bar:25}] {pos}/{len} (eta {eta})")
    };
    if let Ok(style) = style {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs `work` on `threads` threads, each with its own plain connection opened before the
/// clock starts; returns the units done by all and the wall time from a common start.
pub fn parallel<F>(ctx: &Ctx, threads: usize, budget: &Budget, work: F) -> Result<Sample>
where
    F: Fn(&mut Client, &Budget) -> Result<u64> + Sync,
{
    let clients = (0..threads)
        .map(|_| ctx.client())
        .collect::<Result<Vec<_>>>()?;
    on_threads(clients, budget, work)
}

/// [`on_threads`] doing `op` once per unit of work, each thread taking units in chunks of
/// `raw::CHUNK` (so the shared budget counter stays cold): the single-message workloads.
pub fn one_per_unit<S, F>(states: Vec<S>, budget: &Budget, op: F) -> Result<Sample>
where
    S: Send,
    F: Fn(&mut S) -> Result<()> + Sync,
{
    on_threads(states, budget, |state, budget| {
        let mut done = 0;
        loop {
            let k = budget.take(super::raw::CHUNK);
            if k == 0 {
                return Ok(done);
            }
            for _ in 0..k {
                op(state)?;
            }
            budget.done(k);
            done += k;
        }
    })
}

/// Runs `work` on one thread per state (a connection, a thread number), all started together
/// after every thread exists; returns the units done by all and the wall time from the
/// common start.
pub fn on_threads<S, F>(states: Vec<S>, budget: &Budget, work: F) -> Result<Sample>
where
    S: Send,
    F: Fn(&mut S, &Budget) -> Result<u64> + Sync,
{
    let gate = Arc::new(Barrier::new(states.len() + 1));
    std::thread::scope(|s| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let gate = gate.clone();
                let work = &work;
                s.spawn(move || {
                    gate.wait();
                    work(&mut state, budget)
                })
            })
            .collect();
        gate.wait();
        let start = Instant::now();
        let mut units = 0;
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(n)) => units += n,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert_with(|| "a benchmark thread panicked".into());
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Sample::new(units, start.elapsed())),
        }
    })
}

/// Starts a pool with `build`, whose handlers count into the counter it is given, and waits
/// until the budget's units are handled; the pool's start-up is inside the clock (as a
/// worker's is when jobs are waiting).
pub fn until_handled(
    budget: &Budget,
    what: &str,
    build: impl FnOnce(Arc<AtomicU64>) -> pgbroker::Result<WorkerPool>,
) -> Result<Sample> {
    let target = budget.take(u64::MAX);
    let handled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let pool = build(handled.clone())?;
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let now = handled.load(Ordering::Relaxed);
        budget.done(now - last);
        last = now;
        if now >= target || budget.expired() {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("{what}: {now} of {target} handled after 10 minutes").into());
        }
    }
    // The time includes the shutdown: what the handlers finished is committed (a lease-mode
    // job's DELETE, a subscription's ack) only once it returns.
    let stats = pool.shutdown()?;
    let elapsed = start.elapsed();
    let handled = handled.load(Ordering::Relaxed);
    budget.done(handled - last);
    if stats.failed > 0 {
        return Err(format!("{what}: {} handler call(s) failed", stats.failed).into());
    }
    Ok(Sample::new(handled, elapsed))
}

/// Waits up to `drain` for `n` (sequence, arrival) pairs on `rx`.
pub fn arrivals(
    rx: &crossbeam_channel::Receiver<(u64, Instant)>,
    n: u64,
    drain: Duration,
) -> Result<Vec<(u64, Instant)>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + drain;
    while (got.len() as u64) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(x) => got.push(x),
            Err(_) => return Err(format!("{} of {n} messages handled", got.len()).into()),
        }
    }
    Ok(got)
}

/// Latency percentiles of `v` (sorted here) in milliseconds: p50, p99, max.
pub fn percentiles(v: &mut [Duration]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)].as_secs_f64() * 1000.0;
    (at(50), at(99), v[v.len() - 1].as_secs_f64() * 1000.0)
}

/// Joins every scoped thread; the first error (or panic, named by `what`) is the result.
pub fn join_all(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>,
    what: &str,
) -> Result<()> {
    let mut first = Ok(());
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(format!("{what} panicked").into()));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn budget_hands_out_exactly_the_total() {
        let b = Budget::new(250, None, ProgressBar::hidden());
        assert_eq!(b.take(100), 100);
        assert_eq!(b.take(100), 100);
        assert_eq!(b.take(100), 50);
        assert_eq!(b.take(100), 0);
    }

    #[test]
    fn deadline_stops_an_unbounded_budget() {
        let b = Budget::new(u64::MAX, Some(0.0), ProgressBar::hidden());
        assert_eq!(b.take(1), 0);
        assert!(b.expired());
    }

    #[test]
    fn the_better_sample_wins() {
        let fast = Sample::new(100, Duration::from_secs(1));
        let slow = Sample::new(100, Duration::from_secs(2));
        assert_eq!(
            better(Ratio::Throughput, slow.clone(), fast.clone()).units,
            100
        );
        assert_eq!(
            better(Ratio::Throughput, slow.clone(), fast.clone()).elapsed,
            fast.elapsed
        );
        let low = Sample::new(1, Duration::from_secs(1)).with("p50_ms", 1.0);
        let high = Sample::new(1, Duration::from_secs(1)).with("p50_ms", 2.0);
        assert_eq!(better(Ratio::Latency, low, high).extra, [("p50_ms", 1.0)]);
    }

    #[test]
    fn percentiles_of_a_hundred() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentiles(&mut v), (51.0, 100.0, 100.0));
        assert_eq!(percentiles(&mut []), (0.0, 0.0, 0.0));
    }
}
