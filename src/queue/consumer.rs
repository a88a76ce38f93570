//! The queue's source for the shared worker pool: a fetch thread claiming batches (bounded by
//! the queue's concurrency) and waking on LISTEN or a poll timer, and a heartbeat thread
//! extending leases of claimed jobs, noticing cancellations and rescuing expired leases. In
//! transactional mode the fetch thread hands out batches to take instead (`take_batch.rs`).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, at, never, select, Receiver, Sender};

use super::completions::Completions;
use super::context::{JobContext, Outcome};
use super::take_batch::{self, Taken};
use super::wake_checks::RECHECK;
use super::{validate_queue, ClaimedJob, JobId, WAKE_CHANNEL};
use crate::notify::{Event, Listener};
use crate::worker::{HandlerResult, Source, SourceContext, Stats, Task};
use crate::{Broker, Error, ErrorKind, Result, WorkerPoolBuilder};

pub(super) type JobHandler = Arc<dyn Fn(&JobContext<'_>) -> HandlerResult + Send + Sync>;

/// How a worker pool runs one queue. Each setter documents its default.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker::queue::QueueOptions;
///
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let pool = broker
///     .worker_pool()
///     .queue_with(
///         QueueOptions::new("reports")
///             .concurrency(2)
///             .lease(Duration::from_secs(300))
///             .keep_completed(Duration::from_secs(24 * 3600)),
///         |job| Ok(()),
///     )
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QueueOptions {
    queue: String,
    concurrency: usize,
    lease: Duration,
    heartbeat: Option<Duration>,
    poll_interval: Duration,
    rescue_interval: Duration,
    keep_completed: Option<Duration>,
    worker_name: Option<String>,
    transactional: bool,
    jobs_per_transaction: usize,
}

impl QueueOptions {
    /// Options for `queue` with every setting at its default.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pgbroker::queue::QueueOptions::new("emails").concurrency(8);
    /// ```
    pub fn new(queue: &str) -> QueueOptions {
        QueueOptions {
            queue: queue.to_owned(),
            concurrency: 1,
            lease: Duration::from_secs(60),
            heartbeat: None,
            poll_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(30),
            keep_completed: None,
            worker_name: None,
            transactional: false,
            jobs_per_transaction: 10,
        }
    }

    /// How many jobs of this queue run at once in this pool; also how many are claimed ahead
    /// (bounded prefetch). They share the pool's threads with other work. On a
    /// [transactional](Self::transactional) queue, how many transactions run at once (each
    /// runs its jobs one after another, so still at most this many jobs at once; each holds
    /// a connection of the broker's pool). Default 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pgbroker::queue::QueueOptions::new("emails").concurrency(4);
    /// ```
    pub fn concurrency(mut self, n: usize) -> QueueOptions {
        self.concurrency = n;
        self
    }

    /// How long a claimed job stays leased without a heartbeat; a worker that dies loses its
    /// jobs to [`rescue`](crate::Broker::rescue_jobs) this long after its last heartbeat.
    /// On a [transactional](Self::transactional) queue it is the batch transaction's
    /// `idle_in_transaction_session_timeout`: the longest pause between two statements of a
    /// batch before the server ends the session (and its jobs come back). Default 60 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pgbroker::queue::QueueOptions::new("q").lease(std::time::Duration::from_secs(10));
    /// ```
    pub fn lease(mut self, lease: Duration) -> QueueOptions {
        self.lease = lease;
        self
    }

    /// How often leases of claimed jobs are extended (and cancellations noticed). Default a
    /// third of the lease; must be shorter than the lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = pgbroker::queue::QueueOptions::new("q").heartbeat(Duration::from_millis(500));
    /// ```
    pub fn heartbeat(mut self, every: Duration) -> QueueOptions {
        self.heartbeat = Some(every);
        self
    }

    /// How often an idle pool looks for jobs without being woken (delayed jobs, retries, lost
    /// notifications). Default 1 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = pgbroker::queue::QueueOptions::new("q").poll_interval(Duration::from_millis(200));
    /// ```
    pub fn poll_interval(mut self, every: Duration) -> QueueOptions {
        self.poll_interval = every;
        self
    }

    /// How often this pool runs [`rescue`](crate::Broker::rescue_jobs) (for every queue).
    /// Default 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = pgbroker::queue::QueueOptions::new("q").rescue_interval(Duration::from_secs(5));
    /// ```
    pub fn rescue_interval(mut self, every: Duration) -> QueueOptions {
        self.rescue_interval = every;
        self
    }

    /// Keeps completed jobs (state `completed`, with the handler's
    /// [result](JobContext::set_result)) for this long instead of deleting them. Default: not
    /// kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = pgbroker::queue::QueueOptions::new("q").keep_completed(Duration::from_secs(3600));
    /// ```
    pub fn keep_completed(mut self, keep: Duration) -> QueueOptions {
        self.keep_completed = Some(keep);
        self
    }

    /// The worker name recorded on claimed jobs and in their error history. Default
    /// `host/pid/queue/n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pgbroker::queue::QueueOptions::new("q").worker_name("billing-7");
    /// ```
    pub fn worker_name(mut self, name: impl Into<String>) -> QueueOptions {
        self.worker_name = Some(name.into());
        self
    }

    /// Runs the jobs in transactions instead of with leases ("take" mode, for short jobs).
    /// Default false (leases).
    ///
    /// Each batch is one task on a pool thread: it begins a transaction on a connection of the
    /// broker's pool, sets `idle_in_transaction_session_timeout` to the [lease](Self::lease),
    /// [takes](crate::Broker::take_jobs) up to
    /// [`jobs_per_transaction`](Self::jobs_per_transaction) jobs (deleting them in that
    /// transaction), runs the handler for each in turn and commits: **COMMIT completes the
    /// jobs**, together with what their handlers wrote through
    /// [`JobContext::with_transaction`] — exactly-once effects in this database. Each job's
    /// writes are under a savepoint of their own, so a handler that fails (error or panic) has
    /// its writes rolled back and its failed attempt recorded in the same transaction (retried
    /// with backoff, dead after the last attempt) without touching the other jobs of the batch.
    /// [`snooze`](JobContext::snooze) and [`discard`](JobContext::discard) are written back in
    /// it too. If the transaction cannot commit (the connection was lost, the timeout ended
    /// the session) the failure is logged and the whole batch comes back as if never taken, to
    /// run again. At shutdown the running handler finishes (within the grace period), the
    /// batch's jobs not yet started are given back untouched (attempt not counted) and the
    /// rest commits; a batch none of whose handlers started is rolled back. While batches
    /// come full, a task goes on with the next batch on the same connection for up to 100 ms
    /// (committing one and beginning the next in one round trip) before it gives its thread
    /// back to the pool.
    ///
    /// The trade-offs (see also [`Broker::take_jobs`](crate::Broker::take_jobs)):
    ///
    /// - **Short jobs only.** A batch holds a transaction id while it runs, which holds back
    ///   the durable topics' read horizon (delivery to every subscription waits) and vacuum,
    ///   cluster-wide. Long jobs belong in lease mode.
    /// - **A crash counts no attempt**: a job that kills its worker process is retried without
    ///   limit (nothing survives the rollback to count it).
    /// - **Taken jobs show as `available`** (locked) in `pgbroker.jobs` and the queue stats
    ///   while they run; there is no `running` state, no status event before the commit, and
    ///   [`Broker::cancel_job`](crate::Broker::cancel_job) cannot cancel them
    ///   ([`JobContext::is_cancelled`] stays false).
    /// - **Row locks last until the batch commits.** A row a job updated stays locked while
    ///   the rest of its batch runs, so batches updating the same rows wait for each other,
    ///   and in opposite orders deadlock (the server detects it after `deadlock_timeout`,
    ///   1 s by default). A job that fails on a deadlock or serialization failure (SQLSTATE
    ///   `40P01`, `40001`) is given back without counting the attempt and its batch commits
    ///   at once, releasing its locks. For hot rows use fewer
    ///   [`jobs_per_transaction`](Self::jobs_per_transaction) or a concurrency of 1.
    /// - The lease is not extended by a heartbeat: it bounds each pause between statements
    ///   (a handler that works longer without touching the transaction loses the batch).
    /// - [`keep_completed`](Self::keep_completed) is not supported (the take deletes the job):
    ///   [`start`](crate::WorkerPoolBuilder::start) fails with [`ErrorKind::Config`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::QueueOptions;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue_with(
    ///         QueueOptions::new("invoices").transactional(true).concurrency(4),
    ///         |job| {
    ///             let id = job.payload()["invoice"].as_i64();
    ///             job.with_transaction(|tx| {
    ///                 tx.execute("UPDATE invoices SET sent = true WHERE id = $1", &[&id])?;
    ///                 Ok(())
    ///             })?;
    ///             Ok(()) // the job is done when the batch commits, with the invoice marked
    ///         },
    ///     )
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn transactional(mut self, yes: bool) -> QueueOptions {
        self.transactional = yes;
        self
    }

    /// On a [transactional](Self::transactional) queue, the most jobs one transaction takes
    /// and runs, one after another. More amortize the commit; fewer spread the jobs over
    /// more threads and hold each transaction for less time. Keep it at most 64 when handlers
    /// write (each writing job is a subtransaction; more than 64 in one transaction make
    /// every snapshot in the cluster slower). Ignored in lease mode. Default 10.
    ///
    /// # Examples
    ///
    /// ```
    /// use pgbroker::queue::QueueOptions;
    /// let opts = QueueOptions::new("q").transactional(true).jobs_per_transaction(32);
    /// ```
    pub fn jobs_per_transaction(mut self, n: usize) -> QueueOptions {
        self.jobs_per_transaction = n;
        self
    }

    fn check(&self) -> Result<()> {
        validate_queue(&self.queue)?;
        let bad = |msg: String| Err(Error::new(ErrorKind::Config, msg));
        if self.concurrency == 0 {
            return bad(format!(
                "queue {:?}: concurrency must be at least 1",
                self.queue
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return bad(format!(
                "queue {:?}: lease must be at least 100 ms",
                self.queue
            ));
        }
        if self.heartbeat_every() >= self.lease || self.heartbeat_every().is_zero() {
            return bad(format!(
                "queue {:?}: heartbeat must be shorter than the lease",
                self.queue
            ));
        }
        if self.poll_interval.is_zero() || self.rescue_interval.is_zero() {
            return bad(format!(
                "queue {:?}: poll and rescue intervals must not be zero",
                self.queue
            ));
        }
        if self.transactional && self.jobs_per_transaction == 0 {
            return bad(format!(
                "queue {:?}: jobs_per_transaction must be at least 1",
                self.queue
            ));
        }
        if self.transactional && self.keep_completed.is_some() {
            return bad(format!(
                "queue {:?}: keep_completed needs lease mode (a transactional take deletes \
                 the job)",
                self.queue
            ));
        }
        Ok(())
    }

    pub(super) fn queue(&self) -> &str {
        &self.queue
    }

    pub(super) fn lease_duration(&self) -> Duration {
        self.lease
    }

    pub(super) fn jobs_per_batch(&self) -> usize {
        self.jobs_per_transaction
    }

    fn heartbeat_every(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }
}

impl WorkerPoolBuilder {
    /// Runs `handler` for jobs of `queue`, at most `concurrency` at a time, on the pool's
    /// threads. `Ok(())` completes a job; an error or panic fails the attempt (retried with
    /// backoff, dead after the last attempt). See [`JobContext`] for other outcomes and
    /// [`queue_with`](Self::queue_with) for more options.
    ///
    /// [`start`](Self::start) fails with [`ErrorKind::InvalidName`] for a bad queue name and
    /// [`ErrorKind::Config`] for a concurrency of 0.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .threads(8)
    ///     .queue("emails", 6, |job| {
    ///         println!("email {}", job.payload());
    ///         Ok(())
    ///     })
    ///     .queue("reports", 2, |job| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn queue<F>(self, queue: &str, concurrency: usize, handler: F) -> Self
    where
        F: Fn(&JobContext<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.queue_with(QueueOptions::new(queue).concurrency(concurrency), handler)
    }

    /// Runs `handler` for jobs of a queue with the given [`QueueOptions`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::QueueOptions;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue_with(QueueOptions::new("emails").concurrency(4), |job| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn queue_with<F>(self, options: QueueOptions, handler: F) -> Self
    where
        F: Fn(&JobContext<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.source(Box::new(QueueSource {
            options,
            handler: Arc::new(handler),
        }))
    }
}

struct QueueSource {
    options: QueueOptions,
    handler: JobHandler,
}

/// A claimed job not yet finished: its fencing attempt and its cancellation flag.
struct Inflight {
    attempt: i32,
    cancelled: Arc<AtomicBool>,
}

pub(super) struct Shared {
    pub(super) broker: Broker,
    pub(super) opts: QueueOptions,
    pub(super) handler: JobHandler,
    pub(super) worker: String,
    pub(super) stats: Arc<Stats>,
    inflight: Mutex<HashMap<JobId, Inflight>>,
    /// One per job running or claimed ahead; one per batch in transactional mode.
    pub(super) permits: Sender<()>,
    /// Successful jobs waiting to be deleted, many per statement.
    completions: Completions,
}

impl Shared {
    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Inflight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn default_worker_name(queue: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{host}/{}/{queue}/{n}", std::process::id())
}

impl Source for QueueSource {
    fn runs_jobs(&self) -> bool {
        true
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>> {
        let opts = self.options;
        opts.check()?;
        let listener = ctx.broker.listen(WAKE_CHANNEL)?;
        let (permit_tx, permit_rx) = crossbeam_channel::bounded(opts.concurrency);
        for _ in 0..opts.concurrency {
            let _ = permit_tx.send(());
        }
        let shared = Arc::new(Shared {
            broker: ctx.broker.clone(),
            worker: opts
                .worker_name
                .clone()
                .unwrap_or_else(|| default_worker_name(&opts.queue)),
            opts,
            handler: self.handler,
            stats: ctx.stats.clone(),
            inflight: Mutex::new(HashMap::new()),
            permits: permit_tx,
            completions: Completions::default(),
        });
        let queue = shared.opts.queue.clone();
        // The heartbeat outlives the fetch thread: handlers still running during the shutdown
        // grace period keep their leases. It ends once nothing is in flight.
        {
            let shared = shared.clone();
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("pgbroker-lease-{queue}"))
                .spawn(move || heartbeat_loop(&shared, &ctx))?;
        }
        let fetch = std::thread::Builder::new()
            .name(format!("pgbroker-queue-{queue}"))
            .spawn(move || fetch_loop(&shared, &ctx, &listener, &permit_rx))?;
        Ok(vec![fetch])
    }
}

fn fetch_loop(
    shared: &Arc<Shared>,
    ctx: &SourceContext,
    listener: &Listener,
    permits: &Receiver<()>,
) {
    let queue = shared.opts.queue.as_str();
    let mut waiting = false;
    // When to claim once more after registering as waiting: an enqueue that skipped its
    // waiter check (wake_checks.rs) has committed by then.
    let mut recheck_at: Option<Instant> = None;
    let mut failures: u32 = 0;
    'outer: while !ctx.is_stopping() {
        // Claim only as many jobs as there are free slots: bounded prefetch.
        let mut n: usize = select! {
            recv(permits) -> p => match p {
                Ok(()) => 1,
                Err(_) => break,
            },
            recv(ctx.stop_signal()) -> _ => break,
        };
        let fetched = if shared.opts.transactional {
            // One permit is one batch; the batch takes its jobs on a worker thread and says
            // how many it got.
            match take_batch::start(shared, ctx) {
                Taken::Jobs(k) => Ok(Fetched::Taken(k)),
                Taken::Failed(e) => Err(e),
                Taken::Stopped => break,
            }
        } else {
            while n < shared.opts.concurrency && permits.try_recv().is_ok() {
                n += 1;
            }
            let claimed = shared
                .broker
                .claim_jobs(queue, &shared.worker, n, shared.opts.lease);
            if let Ok(jobs) = &claimed {
                for _ in jobs.len()..n {
                    let _ = shared.permits.send(());
                }
            } else {
                for _ in 0..n {
                    let _ = shared.permits.send(());
                }
            }
            claimed.map(Fetched::Claimed)
        };
        let fetched = match fetched {
            Ok(fetched) => {
                failures = 0;
                fetched
            }
            Err(e) => {
                failures += 1;
                let what = if shared.opts.transactional {
                    "taking jobs"
                } else {
                    "claiming"
                };
                log::warn!("pgbroker queue {queue:?}: {what} failed: {e}");
                let delay = shared.broker.config().reconnect_delay(failures - 1);
                if !ctx.sleep(delay) {
                    break;
                }
                continue;
            }
        };
        let got = match &fetched {
            Fetched::Claimed(jobs) => jobs.len(),
            Fetched::Taken(k) => *k,
        };
        if got == 0 {
            if !waiting {
                // Register as idle, then claim once more before sleeping: a job enqueued in
                // between is found by that claim or announced by a wake-up.
                match shared.broker.set_waiting(queue, &shared.worker, true) {
                    Ok(()) => {
                        waiting = true;
                        recheck_at = Some(Instant::now() + RECHECK);
                    }
                    Err(e) => {
                        log::warn!("pgbroker queue {queue:?}: registering as idle failed: {e}");
                        if !ctx.sleep(shared.opts.poll_interval) {
                            break;
                        }
                    }
                }
                continue;
            }
            let poll = after(shared.opts.poll_interval);
            let recheck = recheck_at.map_or_else(never, at);
            loop {
                select! {
                    recv(listener.receiver()) -> ev => match ev {
                        Ok(Event::Notification(n)) if n.payload() == queue => break,
                        Ok(Event::Reconnected { .. }) => break, // wake-ups were lost: re-scan
                        Ok(_) => continue,
                        Err(_) => {
                            if !ctx.sleep(shared.opts.poll_interval) {
                                break 'outer;
                            }
                            break;
                        }
                    },
                    recv(ctx.stop_signal()) -> _ => break 'outer,
                    recv(recheck) -> _ => {
                        recheck_at = None;
                        break;
                    }
                    recv(poll) -> _ => {
                        waiting = false; // refresh the registration next round
                        break;
                    }
                }
            }
            // Wake-ups that piled up meanwhile are all answered by the next claim.
            while listener.try_recv().is_some() {}
            continue;
        }
        if waiting {
            if let Err(e) = shared.broker.set_waiting(queue, &shared.worker, false) {
                log::debug!("pgbroker queue {queue:?}: unregistering as idle failed: {e}");
            }
            waiting = false;
            recheck_at = None;
        }
        let Fetched::Claimed(jobs) = fetched else {
            continue; // a batch is running them
        };
        // Guards first: a job not handed to a worker is released when its guard drops.
        let mut guards: Vec<JobGuard> = {
            let mut inflight = shared.inflight();
            jobs.into_iter()
                .map(|job| {
                    let cancelled = Arc::new(AtomicBool::new(false));
                    inflight.insert(
                        job.id,
                        Inflight {
                            attempt: job.attempt,
                            cancelled: cancelled.clone(),
                        },
                    );
                    JobGuard {
                        shared: shared.clone(),
                        id: job.id,
                        job: Some(job),
                        cancelled,
                    }
                })
                .collect()
        };
        guards.reverse();
        while let Some(guard) = guards.pop() {
            let task = Task::new(move || guard.run());
            if !ctx.submit(task) {
                break 'outer; // the rest are released as `guards` drops
            }
        }
    }
    if waiting {
        let _ = shared.broker.set_waiting(queue, &shared.worker, false);
    }
}

/// What one round of the fetch loop got.
enum Fetched {
    /// Leased jobs, to hand to the workers.
    Claimed(Vec<ClaimedJob>),
    /// How many jobs a batch took in its transaction (it runs them itself).
    Taken(usize),
}

fn heartbeat_loop(shared: &Shared, ctx: &SourceContext) {
    let every = shared.opts.heartbeat_every();
    let mut last_beat = Instant::now();
    let mut last_rescue: Option<Instant> = None;
    let mut stopped_at: Option<Instant> = None;
    let give_up = shared.broker.config().shutdown_grace() + shared.opts.lease;
    loop {
        if ctx.is_stopping() {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if shared.inflight().is_empty() || since.elapsed() > give_up {
                return;
            }
        } else if last_rescue.is_none_or(|t| t.elapsed() >= shared.opts.rescue_interval) {
            match shared.broker.rescue_jobs() {
                Ok(0) => {}
                Ok(n) => log::info!("pgbroker: rescued {n} job(s) whose lease expired"),
                Err(e) => log::warn!("pgbroker: rescuing jobs failed: {e}"),
            }
            last_rescue = Some(Instant::now());
        }
        if last_beat.elapsed() >= every {
            last_beat = Instant::now();
            beat(shared);
        }
        std::thread::sleep(every.min(Duration::from_millis(50)));
    }
}

/// Extends the leases of in-flight jobs; flags those no longer held as cancelled.
fn beat(shared: &Shared) {
    let (ids, attempts): (Vec<JobId>, Vec<i32>) = shared
        .inflight()
        .iter()
        .map(|(id, f)| (*id, f.attempt))
        .unzip();
    if ids.is_empty() {
        return;
    }
    match shared
        .broker
        .extend_leases(&ids, &attempts, shared.opts.lease)
    {
        Ok(held) => {
            let held: std::collections::HashSet<JobId> = held.into_iter().collect();
            let inflight = shared.inflight();
            for id in ids.iter().filter(|id| !held.contains(id)) {
                if let Some(f) = inflight.get(id) {
                    f.cancelled.store(true, Ordering::SeqCst);
                }
            }
        }
        Err(e) => log::warn!(
            "pgbroker queue {:?}: extending leases failed: {e}",
            shared.opts.queue
        ),
    }
}

/// Owns one claimed job from claim to outcome. Dropped without running (pool shutdown, or
/// never handed to a worker), it releases the job: available again, the attempt not counted.
struct JobGuard {
    shared: Arc<Shared>,
    id: JobId,
    job: Option<ClaimedJob>,
    cancelled: Arc<AtomicBool>,
}

impl JobGuard {
    fn run(mut self) {
        let Some(job) = self.job.take() else { return };
        let shared = self.shared.clone();
        let ctx = JobContext::new(
            job,
            shared.broker.clone(),
            self.cancelled.clone(),
            shared.opts.keep_completed,
            None,
        );
        let handler = &shared.handler;
        let (queue, id) = (&shared.opts.queue, ctx.id());
        let res = shared
            .stats
            .run_handler(&job_run(queue, id, ctx.attempt()), || handler(&ctx));
        finish(&shared, &ctx, res);
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            if let Err(e) = with_retries(|| self.shared.broker.release_job(&job).map(drop)) {
                log::warn!(
                    "pgbroker: releasing job {} failed (it is rescued when its lease expires): {e}",
                    job.id
                );
            }
        }
        self.shared.inflight().remove(&self.id);
        let _ = self.shared.permits.send(());
    }
}

/// Records the handler's outcome. A job no longer running under this claim (cancelled,
/// rescued) is left alone by the fenced SQL functions.
fn finish(shared: &Shared, ctx: &JobContext<'_>, res: std::result::Result<(), Error>) {
    let broker = &shared.broker;
    let job = ctx.claimed();
    let outcome = ctx.take_outcome();
    let succeeded = res.is_ok();
    let recorded = match (res, outcome) {
        (_, Some(Outcome::Done)) => Ok(()),
        (Ok(()), None) if shared.opts.keep_completed.is_none() => {
            shared.completions.complete(
                job.id,
                job.attempt,
                |ids, attempts| with_retries(|| broker.delete_completed(ids, attempts).map(drop)),
                |ids, e| {
                    shared.stats.count_unrecorded(ids.len() as u64);
                    log::error!(
                        "pgbroker: completing jobs {ids:?} failed (they run again when their \
                         leases expire): {e}"
                    )
                },
            );
            Ok(())
        }
        (Ok(()), None) => {
            let result = ctx.take_result();
            with_retries(|| {
                broker
                    .complete_with(
                        std::slice::from_ref(job),
                        result.as_ref(),
                        shared.opts.keep_completed,
                    )
                    .map(drop)
            })
        }
        (Ok(()), Some(Outcome::Snooze(d))) => {
            with_retries(|| broker.snooze_job(job.id, job.attempt, d).map(drop))
        }
        (Ok(()), Some(Outcome::Discard(reason))) => with_retries(|| {
            broker
                .fail_with(
                    job.id,
                    job.attempt,
                    &format!("discarded: {reason}"),
                    None,
                    true,
                )
                .map(drop)
        }),
        (Err(e), _) => {
            let text = error_text(&e);
            with_retries(|| {
                broker
                    .fail_with(job.id, job.attempt, &text, None, false)
                    .map(drop)
            })
        }
    };
    if let Err(e) = recorded {
        if succeeded {
            shared.stats.count_unrecorded(1);
        }
        log::error!(
            "pgbroker: recording the outcome of job {} failed (it runs again when its lease \
             expires): {e}",
            job.id
        );
    }
}

/// The text recorded in a job's error history for a failed handler: the handler's own error
/// when there is one (not pgbroker's wrapping of it).
pub(super) fn error_text(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// What middleware sees of a job's handler run.
pub(super) fn job_run(queue: &str, id: JobId, attempt: u32) -> crate::middleware::HandlerRun<'_> {
    crate::middleware::HandlerRun::Job { queue, id, attempt }
}

/// Runs `f`, retrying transient failures (connection lost, pool timeout) with a doubling
/// delay for about 6 s in all: long enough to ride out a server restart or a failover.
fn with_retries(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..7 {
        match f() {
            Err(e) if e.is_transient() => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
    f()
}
