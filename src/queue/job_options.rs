//! Job options beyond the enqueue statements': dependencies ([`Job::after`]), a timeout per
//! attempt ([`Job::timeout`]) and a group key ([`Job::group`]). A job with any of them is
//! enqueued by the usual statement and given them by `pgbroker.set_job_options` in the same
//! transaction (schema/functions/job_options.sql); they live in the job's `details`.

use std::time::Duration;

use postgres::types::Type;
use postgres::Transaction;

use super::{input_error, secs, typed, Job, JobId};
use crate::{Broker, Error, ErrorKind, Result};

const OPTIONS_SQL: &str =
    "SELECT pgbroker.set_job_options($1, $2, $3, make_interval(secs => $4), $5)";
const OPTIONS_TYPES: [Type; 5] = [
    Type::INT8,
    Type::INT8_ARRAY,
    Type::BOOL,
    Type::FLOAT8,
    Type::TEXT,
];

/// The longest group key, in characters.
pub const MAX_GROUP_KEY_CHARS: usize = 200;

/// What a [`Job`] has beyond the enqueue statements' columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobFeatures {
    after: Vec<JobId>,
    run_if_parent_fails: bool,
    timeout: Option<Duration>,
    group: Option<String>,
}

impl Job {
    fn features_mut(&mut self) -> &mut JobFeatures {
        self.features.get_or_insert_with(Default::default)
    }

    /// Makes the job wait for other jobs (its parents): it becomes available once all of
    /// them completed. A parent that no longer exists counts as completed (completed jobs are
    /// deleted). When a parent dies or is cancelled, the job dies with the error `parent job
    /// <id> died` (or `was cancelled`), or runs anyway with
    /// [`run_if_parent_fails`](Self::run_if_parent_fails). Until then it is `available` with
    /// its `run_at` at infinity (no claim takes it) and [`JobInfo::parents`](super::JobInfo)
    /// lists the parents it still waits for. Cancelling it works as for any available job.
    /// Calling `after` again adds parents. Default: none.
    ///
    /// The first dependency ever creates two triggers on `pgbroker.jobs` (a brief table
    /// lock); from then on each finished job costs one flag test. Not available in
    /// [`enqueue_batch`](crate::Broker::enqueue_batch).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let parts: Vec<pgbroker::JobId> = (0..10)
    ///     .map(|i| broker.enqueue("render", &serde_json::json!({"part": i})))
    ///     .collect::<pgbroker::Result<_>>()?;
    /// broker.enqueue_job(&Job::new("assemble", "{}").after(&parts))?; // fan-in
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, parents: &[JobId]) -> Job {
        self.features_mut().after.extend_from_slice(parents);
        self
    }

    /// With true, a parent that dies or is cancelled counts as finished for this job (it
    /// still runs); with false (the default) the job dies with it. See [`after`](Self::after).
    ///
    /// # Examples
    ///
    /// ```
    /// let cleanup = pgbroker::queue::Job::new("cleanup", "{}")
    ///     .after(&[pgbroker::JobId(41), pgbroker::JobId(42)])
    ///     .run_if_parent_fails(true);
    /// ```
    pub fn run_if_parent_fails(mut self, yes: bool) -> Job {
        self.features_mut().run_if_parent_fails = yes;
        self
    }

    /// How long one attempt may run. The job's lease is this long from its claim (instead of
    /// the queue's lease) and heartbeats do not extend it: at the first heartbeat past it
    /// (see [`QueueOptions::heartbeat`](super::QueueOptions::heartbeat)) the handler's
    /// [`is_cancelled`](super::JobContext::is_cancelled) turns true, and an attempt that does
    /// not return is counted failed (`attempt timed out after <n> s`, retried or dead as any
    /// failure) by the next [rescue](crate::Broker::rescue_jobs). An outcome the handler
    /// returns before that rescue still counts. A worker that dies holding the job loses it
    /// after this long, not after the queue's lease. No effect in
    /// [transactional](super::QueueOptions::transactional) mode (the batch's lease bounds
    /// it). At least 1 ms. Default: none (the queue's lease, extended while the handler
    /// runs).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let job = pgbroker::queue::Job::new("thumbnails", "{}").timeout(Duration::from_secs(30));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Job {
        self.features_mut().timeout = Some(timeout);
        self
    }

    /// The job's group (e.g. a tenant id): at most the queue's group limit of jobs of one
    /// group run at once (see [`Broker::limit_queue`](crate::Broker::limit_queue)). 1 to 200
    /// printable characters. Default: none (no group limit applies).
    ///
    /// # Examples
    ///
    /// ```
    /// let job = pgbroker::queue::Job::new("exports", "{}").group("tenant-42");
    /// ```
    pub fn group(mut self, key: impl Into<String>) -> Job {
        self.features_mut().group = Some(key.into());
        self
    }
}

impl JobFeatures {
    fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidInput, msg));
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(1) {
                return bad(format!("a job's timeout must be at least 1 ms, got {t:?}"));
            }
        }
        if let Some(g) = &self.group {
            let n = g.chars().count();
            if n == 0 || n > MAX_GROUP_KEY_CHARS || g.chars().any(char::is_control) {
                return bad(format!(
                    "a group key must be 1 to {MAX_GROUP_KEY_CHARS} printable characters, \
                     got {g:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Checks a job's options before anything is sent.
pub(crate) fn check(job: &Job) -> Result<()> {
    job.features.as_ref().map_or(Ok(()), |f| f.check())
}

/// Fails for a batch with a job that has options (a batch statement cannot apply them).
pub(crate) fn check_batch(jobs: &[Job]) -> Result<()> {
    match jobs.iter().position(|j| j.features.is_some()) {
        None => Ok(()),
        Some(i) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "job {i} of the batch has after, timeout or group options, which batches do \
                 not take: enqueue it with enqueue_job or enqueue_in"
            ),
        )),
    }
}

/// Gives job `id`, just enqueued in `tx`, the options of `job`.
pub(crate) fn apply(tx: &mut Transaction<'_>, id: JobId, job: &Job) -> Result<()> {
    let Some(f) = &job.features else {
        return Ok(());
    };
    let after = (!f.after.is_empty()).then_some(&f.after);
    let timeout = f.timeout.map(secs);
    let values: [&(dyn postgres::types::ToSql + Sync); 5] =
        [&id, &after, &f.run_if_parent_fails, &timeout, &f.group];
    tx.query_typed(OPTIONS_SQL, &typed(&values, &OPTIONS_TYPES))
        .map_err(input_error)?;
    Ok(())
}

impl Broker {
    /// `enqueue_job` for a job with options: the insert and the options in one transaction.
    pub(crate) fn enqueue_with_options(&self, job: &Job) -> Result<JobId> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let id = self.enqueue_in(&mut tx, job)?;
        tx.commit()?;
        Ok(id)
    }
}
