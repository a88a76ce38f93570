//! The worker side of the protocol, one call per SQL function: claim a batch, extend leases,
//! complete (a batch in one statement), fail, snooze, release; cancel, retry and rescue.

use std::time::Duration;

use serde_json::Value;

use super::next_jobs::{by_size_class, next_jobs_sql, size_class};
use super::ClaimedJob;
use crate::queue::{secs, validate_queue, JobId, JobState};
use crate::trace::span;
use crate::{Broker, Error, ErrorKind, Result};

/// The statement of `pgbroker.claim()` (schema/functions/queue.sql) by size class, prepared
/// once per connection: through the SQL function, PostgreSQL would parse and plan it on every
/// call (0.25 ms, longer than claiming one job). The lease's type differs, the final sort,
/// which `claim_jobs` does itself, and [`ASYNC_COMMIT`]; a test compares the two. A job with a
/// timeout (src/queue/job_options.rs) is leased for its timeout instead of `$4`.
macro_rules! claim_sql {
    ($candidates:literal,) => {
        concat!(
            "UPDATE pgbroker.jobs j
       SET state = 'running', attempt = j.attempt + 1, worker = $2,
           lease_until = now() + coalesce(make_interval(secs => (j.details ->> 'timeout')::float8),
                                          make_interval(secs => $4))
     WHERE ",
            next_jobs_sql!(
                $candidates,
                "$3",
                "
                      AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
            ),
            "
    RETURNING j.id, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.run_at,
              j.lease_until, j.created_at, j.unique_key"
        )
    };
}
const CLAIM_SQL: [&str; 12] = by_size_class!(claim_sql!());

/// The claim's own condition (evaluated once, an init plan): its autocommitted transaction
/// commits without waiting for the WAL flush. A claim lost in a server crash loses nothing
/// at-least-once needs: the job is available again (its attempt not counted) and runs again,
/// and every later durable commit (a completion, a failure) flushes the claim with it. It
/// saves one fsync per claim, so a job costs one durable commit (its completion, grouped),
/// not two. `claim_jobs` always runs on a pooled connection in autocommit, so the setting
/// touches nothing else; the SQL function `pgbroker.claim` does not do it (it may run in the
/// caller's transaction, whose other writes must stay durable).
#[cfg(test)]
const ASYNC_COMMIT: &str =
    " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL";

/// Deletes completed jobs still running under their claim's attempt (`$2[i]` fences `$1[i]`).
///
/// Probes the primary key with `id = ANY`, not a join with `unnest($1, $2)`: as a join the
/// planner, told by the statistics that few jobs run, scanned the running jobs and rescanned
/// the unnested pairs for each, building a whole-row copy of every pair for each job (callgrind:
/// 8 million server instructions per batch of 100, three times the raw claim's DELETE). The
/// state test sits inside `coalesce` so that no partial index on `state = 'running'` can be
/// picked instead of the key: such a scan reads every running job of every queue. The ids
/// come through `ARRAY(SELECT unnest(...))`, whose length the planner cannot see, so that the
/// plan for a few ids looks no cheaper than the generic one and is reused (the worker pool
/// completes one to a few jobs per statement; planning each cost 0.3 million instructions).
pub(crate) const DELETE_SQL: &str = "DELETE FROM pgbroker.jobs j
     WHERE j.id = ANY (ARRAY(SELECT unnest($1::bigint[])))
       AND coalesce(j.state = 'running'
                    AND j.attempt = ($2::integer[])[array_position($1::bigint[], j.id)], false)";
const EXTEND_SQL: &str = "SELECT pgbroker.extend_leases($1, $2, make_interval(secs => $3))";
const COMPLETE_SQL: &str = "SELECT pgbroker.complete_many($1, $2, $3, make_interval(secs => $4))";
const FAIL_SQL: &str = "SELECT pgbroker.fail($1, $2, make_interval(secs => $3), $4, $5)";
const SNOOZE_SQL: &str = "SELECT pgbroker.snooze($1, make_interval(secs => $2), $3)";
const RELEASE_SQL: &str = "SELECT pgbroker.release($1, $2)";
const CANCEL_SQL: &str = "SELECT pgbroker.cancel($1)";
const RETRY_SQL: &str = "SELECT pgbroker.retry($1)";
const RESCUE_SQL: &str = "SELECT pgbroker.rescue()";
const WAIT_SQL: &str = "SELECT pgbroker.wait_for_jobs($1, $2)";
const STOP_WAIT_SQL: &str = "SELECT pgbroker.stop_waiting($1, $2)";

fn check_lease(lease: Duration) -> Result<()> {
    if lease < Duration::from_millis(10) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a lease must be at least 10 ms, got {lease:?}"),
        ));
    }
    Ok(())
}

impl Broker {
    /// Claims up to `max` available jobs of `queue` for `worker` (a name shown in the jobs
    /// table and error history) with a lease of `lease`, in (priority, run_at, id) order. Each
    /// claimed job's attempt is incremented. Jobs locked by a concurrent claimer are skipped.
    ///
    /// Finish each job with [`complete_jobs`](Self::complete_jobs),
    /// [`fail_job`](Self::fail_job), or it is rescued after its lease expires.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let jobs = broker.claim_jobs("emails", "worker-1", 100, Duration::from_secs(60))?;
    /// // ... do the work ...
    /// broker.complete_jobs(&jobs)?;
    /// # Ok(()) }
    /// ```
    pub fn claim_jobs(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        validate_queue(queue)?;
        check_lease(lease)?;
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        // Paused and limited queues: src/queue/limits.rs.
        if self.gates().is_gated(queue) {
            return self.claim_gated(queue, worker, max, lease);
        }
        let span = span!(
            "pgbroker.claim",
            queue = queue,
            max = max,
            claimed = empty,
            first_job_id = empty
        );
        let mut conn = self.conn()?;
        let stmt = conn.statement(CLAIM_SQL[size_class(max)])?;
        let rows = conn.query(&stmt, &[&queue, &worker, &max, &secs(lease)])?;
        let mut jobs: Vec<ClaimedJob> = rows.iter().map(ClaimedJob::from_row).collect();
        jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
        if jobs.is_empty() && self.gates().should_look(queue) {
            return self.claim_gated(queue, worker, max, lease);
        }
        span.record("claimed", jobs.len() as i64);
        if let Some(j) = jobs.first() {
            span.record("first_job_id", j.id);
        }
        Ok(jobs)
    }

    /// Deletes completed jobs still running under the given attempts (fenced like
    /// `complete_jobs`). Returns how many were deleted.
    pub(crate) fn delete_completed(&self, ids: &[JobId], attempts: &[i32]) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(DELETE_SQL)?;
        Ok(conn.execute(&stmt, &[&ids, &attempts])?)
    }

    /// Completes claimed jobs in one statement: they are deleted. Returns how many were
    /// completed; a job no longer running under this claim (cancelled, or rescued and claimed
    /// again) is skipped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let jobs = broker.claim_jobs("q", "w", 100, std::time::Duration::from_secs(30))?;
    /// let done = broker.complete_jobs(&jobs)?;
    /// assert!(done <= jobs.len() as u64);
    /// # Ok(()) }
    /// ```
    pub fn complete_jobs(&self, jobs: &[ClaimedJob]) -> Result<u64> {
        self.complete_with(jobs, None, None)
    }

    pub(crate) fn complete_with(
        &self,
        jobs: &[ClaimedJob],
        result: Option<&Value>,
        keep: Option<Duration>,
    ) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.attempt).collect();
        if keep.is_none() {
            return self.delete_completed(&ids, &attempts);
        }
        let mut conn = self.conn()?;
        let keep = keep.map(secs);
        let stmt = conn.statement(COMPLETE_SQL)?;
        let row = conn.query_one(&stmt, &[&ids, &attempts, &result, &keep])?;
        Ok(row.get::<_, i32>(0) as u64)
    }

    /// Records a failed attempt of a claimed job: it runs again after `retry_in` (default:
    /// its backoff), or is dead once its attempts are exhausted. Returns the new state, `None`
    /// when the job is no longer running under this claim.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for job in broker.claim_jobs("q", "w", 1, std::time::Duration::from_secs(30))? {
    ///     let state = broker.fail_job(&job, "smtp timeout", None)?;
    ///     println!("now {state:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn fail_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Option<JobState>> {
        self.fail_with(job.id, job.attempt, error, retry_in, false)
    }

    pub(crate) fn fail_with(
        &self,
        id: JobId,
        attempt: i32,
        error: &str,
        retry_in: Option<Duration>,
        discard: bool,
    ) -> Result<Option<JobState>> {
        let error = error.replace('\0', "\u{FFFD}");
        let retry_in = retry_in.map(secs);
        let mut conn = self.conn()?;
        let stmt = conn.statement(FAIL_SQL)?;
        let row = conn.query_one(&stmt, &[&id, &error, &retry_in, &attempt, &discard])?;
        row.get::<_, Option<String>>(0)
            .map(|s| s.parse())
            .transpose()
    }

    pub(crate) fn snooze_job(&self, id: JobId, attempt: i32, delay: Duration) -> Result<bool> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(SNOOZE_SQL)?;
        Ok(conn
            .query_one(&stmt, &[&id, &secs(delay), &attempt])?
            .get(0))
    }

    /// Gives a claimed job back without running it: available again, the attempt not counted.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for job in broker.claim_jobs("q", "w", 5, std::time::Duration::from_secs(30))? {
    ///     broker.release_job(&job)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn release_job(&self, job: &ClaimedJob) -> Result<bool> {
        self.release_with(job.id, job.attempt)
    }

    pub(crate) fn release_with(&self, id: JobId, attempt: i32) -> Result<bool> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(RELEASE_SQL)?;
        Ok(conn.query_one(&stmt, &[&id, &attempt])?.get(0))
    }

    /// Extends the leases of running jobs; returns the ids still held by these claims (the
    /// others were cancelled or rescued).
    pub(crate) fn extend_leases(
        &self,
        ids: &[JobId],
        attempts: &[i32],
        lease: Duration,
    ) -> Result<Vec<JobId>> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(EXTEND_SQL)?;
        let rows = conn.query(&stmt, &[&ids, &attempts, &secs(lease)])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Cancels an available or running job. Returns false when it is in no such state (done,
    /// dead, already cancelled, unknown). A running handler sees it in
    /// [`JobContext::is_cancelled`](super::JobContext::is_cancelled) at the next heartbeat,
    /// and its outcome is then ignored.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let id = broker.enqueue("q", "{}")?;
    /// assert!(broker.cancel_job(id)?);
    /// # Ok(()) }
    /// ```
    pub fn cancel_job(&self, id: JobId) -> Result<bool> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(CANCEL_SQL)?;
        Ok(conn.query_one(&stmt, &[&id])?.get(0))
    }

    /// Re-drives a dead or cancelled job: available now with a fresh set of attempts (its
    /// error history is kept). Returns false when the job is in no such state.
    ///
    /// Fails with [`ErrorKind::Db`] (SQLSTATE 23505) when it is unique and another job with
    /// its key is pending.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for job in broker.dead_jobs(Some("emails"), 100)? {
    ///     broker.redrive_job(job.id)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn redrive_job(&self, id: JobId) -> Result<bool> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(RETRY_SQL)?;
        Ok(conn.query_one(&stmt, &[&id])?.get(0))
    }

    /// Rescues running jobs whose lease expired (their worker died or hangs): available again
    /// with the attempt counted, or dead when attempts are exhausted. Also deletes kept
    /// completed jobs past their retention. Returns how many jobs were rescued. Worker pools
    /// run it on a timer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let rescued = broker.rescue_jobs()?;
    /// # Ok(()) }
    /// ```
    pub fn rescue_jobs(&self) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(RESCUE_SQL)?;
        Ok(conn.query_one(&stmt, &[])?.get::<_, i32>(0) as u64)
    }

    /// Registers `waiter` as idle on `queue` (producers then send a wake-up), or unregisters.
    pub(crate) fn set_waiting(&self, queue: &str, waiter: &str, waiting: bool) -> Result<()> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(if waiting { WAIT_SQL } else { STOP_WAIT_SQL })?;
        conn.execute(&stmt, &[&queue, &waiter])?;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod test {
    use super::super::next_jobs::size_class;
    use super::CLAIM_SQL;

    fn words(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The statement of the SQL function `name` in schema/functions/queue.sql (a CTE, after the
    /// comments), whitespace folded.
    pub(in crate::queue) fn function_statement(name: &str) -> String {
        let schema = include_str!("../../../schema/functions/queue.sql");
        let start = schema
            .find(&format!("CREATE OR REPLACE FUNCTION pgbroker.{name}("))
            .unwrap();
        let body = &schema[start..];
        let body = &body[body.find("LANGUAGE sql AS $$").unwrap()..];
        let body = &body[body.find("    WITH ").unwrap()..];
        words(&body[..body.find("\n$$;").unwrap()])
    }

    /// A statement's three parts, whitespace folded: what it does to the chosen jobs (up to
    /// `WHERE`), which jobs (the inner query, its limits left out), and what it returns.
    pub(in crate::queue) fn parts(sql: &str) -> [String; 3] {
        let sql = words(sql);
        let head = &sql[..sql.find(" WHERE j.id = ANY").unwrap()];
        let chosen = &sql[sql.find("SELECT p.id FROM pgbroker.jobs p").unwrap()..];
        let chosen = &chosen[..chosen.find(" LIMIT ").unwrap()];
        let tail = &sql[sql.find(" RETURNING ").unwrap() + 1..];
        [head.into(), chosen.into(), tail.into()]
    }

    #[test]
    fn claim_statements_are_the_sql_functions_body() {
        let [head, chosen, tail] = parts(&function_statement("claim"));
        // Ours is the CTE's statement alone: claim_jobs sorts the rows itself.
        let theirs = [
            head.replace("WITH claimed AS ( ", ""),
            chosen,
            tail.replace(
                " ) SELECT * FROM claimed c ORDER BY c.priority, c.run_at, c.id",
                "",
            ),
        ];
        for sql in CLAIM_SQL {
            let mut ours = parts(sql);
            ours[0] = ours[0].replace("make_interval(secs => $4)", "$4");
            assert!(ours[1].contains(super::ASYNC_COMMIT), "{}", ours[1]);
            ours[1] = ours[1].replace(super::ASYNC_COMMIT, "");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn size_classes_hold_the_batch() {
        let classes: Vec<usize> = [0, 1, 2, 3, 4, 5, 100, 128, 129, 1024, 1025, i32::MAX]
            .into_iter()
            .map(size_class)
            .collect();
        assert_eq!(classes, [0, 0, 1, 2, 2, 3, 7, 7, 8, 10, 11, 11]);
        let limits = |sql: &str| {
            let sql = words(sql);
            let at = sql
                .find("ORDER BY p.priority, p.run_at, p.id LIMIT ")
                .unwrap();
            let inner = sql[at..].split(' ').nth(6).unwrap().to_owned();
            let at = sql.find("SKIP LOCKED) c LIMIT ").unwrap();
            let outer = sql[at..].split(' ').nth(4).unwrap().to_owned();
            (inner, outer)
        };
        assert_eq!(limits(CLAIM_SQL[0]), ("10".into(), "$3::integer))".into()));
        assert_eq!(
            limits(CLAIM_SQL[7]),
            ("1280".into(), "$3::integer))".into())
        );
        assert_eq!(
            limits(CLAIM_SQL[11]),
            ("ALL".into(), "$3::integer))".into())
        );
    }
}
