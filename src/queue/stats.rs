//! Introspection: one job, dead and stuck jobs, counts per queue and state.

use std::time::{Duration, SystemTime};

use postgres::Row;
use serde_json::Value;

use super::{secs, validate_queue, JobId, JobState};
use crate::{Broker, Result};

/// Everything stored about a job (a row of `pgbroker.jobs`).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// if let Some(job) = broker.job(pgbroker::JobId(42))? {
///     println!("{} {} attempt {}/{}", job.queue, job.state, job.attempt, job.max_attempts);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// Its payload.
    pub payload: Value,
    /// Its priority (smaller runs first).
    pub priority: i32,
    /// When it runs (or ran) next.
    pub run_at: SystemTime,
    /// Attempts so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its unique key, if any (also once it is no longer available or running, when the key
    /// no longer keeps other jobs with it out).
    pub unique_key: Option<String>,
    /// The lease's end while running; for a completed job kept with a result, when it is
    /// deleted.
    pub lease_until: Option<SystemTime>,
    /// The worker that claimed it last.
    pub worker: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Every failed attempt: a JSON array of `{"attempt", "at", "error", "worker"}`.
    pub errors: Value,
    /// The result stored at completion (kept jobs only).
    pub result: Option<Value>,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When it completed, died or was cancelled.
    pub finished_at: Option<SystemTime>,
    /// What its handler last reported with
    /// [`JobContext::set_progress`](super::JobContext::set_progress).
    pub progress: Option<Value>,
    /// The jobs it still waits for ([`Job::after`](super::Job::after)), by id; while any
    /// remain it is `available` with a `run_at` at infinity.
    pub parents: Vec<JobId>,
    /// How long one attempt may run ([`Job::timeout`](super::Job::timeout)).
    pub timeout: Option<Duration>,
    /// Its group ([`Job::group`](super::Job::group)).
    pub group: Option<String>,
}

const COLUMNS: &str = "id, queue, state::text, payload, priority, run_at, attempt, max_attempts, \
     coalesce(unique_key, details ->> 'unique_key'), lease_until, worker, last_error, \
     coalesce(details -> 'errors', '[]'::jsonb), details -> 'result', created_at, finished_at, \
     details -> 'progress', \
     CASE WHEN details ? 'waiting' THEN ARRAY(SELECT pgbroker.job_parents(id)) END, \
     (details ->> 'timeout')::float8, details ->> 'group'";

impl JobInfo {
    fn from_row(row: &Row) -> Result<JobInfo> {
        Ok(JobInfo {
            id: row.get(0),
            queue: row.get(1),
            state: row.get::<_, &str>(2).parse()?,
            payload: row.get(3),
            priority: row.get(4),
            run_at: row.get(5),
            attempt: row.get(6),
            max_attempts: row.get(7),
            unique_key: row.get(8),
            lease_until: row.get(9),
            worker: row.get(10),
            last_error: row.get(11),
            errors: row.get(12),
            result: row.get(13),
            created_at: row.get(14),
            finished_at: row.get(15),
            progress: row.get(16),
            parents: row.get::<_, Option<Vec<JobId>>>(17).unwrap_or_default(),
            timeout: row
                .get::<_, Option<f64>>(18)
                .and_then(|s| Duration::try_from_secs_f64(s).ok()),
            group: row.get(19),
        })
    }
}

/// Counts of one queue's jobs by state. See [`Broker::queue_stats`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for q in broker.queue_stats()? {
///     println!("{}: {} waiting, oldest {:?}", q.queue, q.available, q.oldest_available);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Jobs ready to run now.
    pub available: u64,
    /// Jobs waiting for their `run_at` (delayed, or retrying after a failure).
    pub scheduled: u64,
    /// Jobs claimed by a worker.
    pub running: u64,
    /// Completed jobs still kept.
    pub completed: u64,
    /// Dead jobs.
    pub dead: u64,
    /// Cancelled jobs.
    pub cancelled: u64,
    /// How long the oldest ready job has waited (queue latency); `None` when none is ready.
    pub oldest_available: Option<Duration>,
}

impl Broker {
    /// The job with this id, or `None` when there is none (completed jobs are deleted unless
    /// kept).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let id = broker.enqueue("q", "{}")?;
    /// assert_eq!(broker.job(id)?.unwrap().state, pgbroker::queue::JobState::Available);
    /// # Ok(()) }
    /// ```
    pub fn job(&self, id: JobId) -> Result<Option<JobInfo>> {
        let mut conn = self.conn()?;
        let sql = format!("SELECT {COLUMNS} FROM pgbroker.jobs WHERE id = $1");
        let rows = conn.query(sql.as_str(), &[&id])?;
        rows.first().map(JobInfo::from_row).transpose()
    }

    /// Dead jobs, newest first, of `queue` (or of all queues with `None`), at most `limit`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for job in broker.dead_jobs(Some("emails"), 20)? {
    ///     println!("{}: {:?}", job.id, job.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn dead_jobs(&self, queue: Option<&str>, limit: usize) -> Result<Vec<JobInfo>> {
        if let Some(q) = queue {
            validate_queue(q)?;
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut conn = self.conn()?;
        let sql = format!("SELECT {COLUMNS} FROM pgbroker.dead_jobs($1, $2)");
        let rows = conn.query(sql.as_str(), &[&queue, &limit])?;
        rows.iter().map(JobInfo::from_row).collect()
    }

    /// Running jobs whose lease expired more than `older_than` ago: their worker died or
    /// hangs, and [`rescue_jobs`](Self::rescue_jobs) has not run yet (the classic
    /// dead-job query of a CI service).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let stuck = broker.stuck_jobs(std::time::Duration::from_secs(3600))?;
    /// # Ok(()) }
    /// ```
    pub fn stuck_jobs(&self, older_than: Duration) -> Result<Vec<JobInfo>> {
        let mut conn = self.conn()?;
        let sql = format!("SELECT {COLUMNS} FROM pgbroker.stuck_jobs(make_interval(secs => $1))");
        let rows = conn.query(sql.as_str(), &[&secs(older_than)])?;
        rows.iter().map(JobInfo::from_row).collect()
    }

    /// Counts of jobs by queue and state, and each queue's oldest ready job's age; queues
    /// without jobs are absent. Scans the jobs table: for dashboards, not hot paths.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let backlog: u64 = broker.queue_stats()?.iter().map(|q| q.available).sum();
    /// # Ok(()) }
    /// ```
    pub fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT queue, available, scheduled, running, completed, dead, cancelled, \
             oldest_available_secs FROM pgbroker.queue_stats ORDER BY queue",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| QueueStats {
                queue: r.get(0),
                available: r.get::<_, i64>(1) as u64,
                scheduled: r.get::<_, i64>(2) as u64,
                running: r.get::<_, i64>(3) as u64,
                completed: r.get::<_, i64>(4) as u64,
                dead: r.get::<_, i64>(5) as u64,
                cancelled: r.get::<_, i64>(6) as u64,
                oldest_available: r
                    .get::<_, Option<f64>>(7)
                    .map(|s| Duration::from_secs_f64(s.max(0.0))),
            })
            .collect())
    }
}
