//! [`QueueOptions`]: how a worker pool runs one queue.

use std::time::Duration;

use crate::queue::validate_queue;
use crate::{Error, ErrorKind, Result};

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
    pub(super) queue: String,
    pub(super) concurrency: usize,
    pub(super) lease: Duration,
    pub(super) heartbeat: Option<Duration>,
    pub(super) poll_interval: Duration,
    pub(super) rescue_interval: Duration,
    pub(super) keep_completed: Option<Duration>,
    pub(super) worker_name: Option<String>,
    pub(super) transactional: bool,
    pub(super) jobs_per_transaction: usize,
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
    /// (bounded prefetch). They share the pool's threads with other work. A job whose
    /// handler succeeded frees its slot before its (grouped) DELETE commits, so up to this
    /// many more (at least 64) may be completed and not yet deleted: still leased to this
    /// worker, they run again if it dies before the DELETE commits. On a
    /// [transactional](Self::transactional) queue, how many transactions run at once (each
    /// runs its jobs one after another, so still at most this many jobs at once; each holds
    /// a connection of the broker's pool). Default 1.
    ///
    /// Each claim takes up to half of it (two claims in flight: the workers run one while
    /// the next is claimed), and a claim's cost is largely per statement. For many short
    /// jobs, a higher concurrency than the pool has threads makes fewer, larger claims:
    /// measured on a durable 2-core machine with one thread and no-op handlers, 200 ran
    /// 15–55 % more jobs per second than 100 (`pgbroker bench`, `lease_batched_t1`).
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pgbroker::queue::QueueOptions::new("emails").concurrency(4);
    /// // Thousands of millisecond jobs on 4 threads: claim ahead in larger batches.
    /// let busy = pgbroker::queue::QueueOptions::new("thumbnails").concurrency(400);
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
    /// [result](crate::queue::JobContext::set_result)) for this long instead of deleting
    /// them. Default: not kept.
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
    /// [`JobContext::with_transaction`](crate::queue::JobContext::with_transaction) —
    /// exactly-once effects in this database. Each job's writes are under a savepoint of their own, so a handler that fails (error or panic) has
    /// its writes rolled back and its failed attempt recorded in the same transaction (retried
    /// with backoff, dead after the last attempt) without touching the other jobs of the batch.
    /// [`snooze`](crate::queue::JobContext::snooze) and
    /// [`discard`](crate::queue::JobContext::discard) are written back in it too. If the transaction cannot commit (the connection was lost, the timeout ended
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
    ///   ([`JobContext::is_cancelled`](crate::queue::JobContext::is_cancelled) stays false).
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

    pub(super) fn check(&self) -> Result<()> {
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

    pub(super) fn heartbeat_every(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }

    /// The most jobs one claim fetches in lease mode: half the concurrency, so that two
    /// claims are in flight (see `fetch.rs`).
    pub(super) fn claim_size(&self) -> usize {
        self.concurrency.div_ceil(2)
    }
}
