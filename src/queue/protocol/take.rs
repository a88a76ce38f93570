//! The transactional side of the protocol: take jobs inside the worker's own transaction (the
//! claim *is* the delete, COMMIT completes them, ROLLBACK returns them), and write a taken job
//! back when it failed or is snoozed.

use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Row, Transaction};

use super::claimed_job::TakenRow;
use super::next_jobs::{by_size_class, next_jobs_sql, size_class};
use super::ClaimedJob;
use crate::queue::{secs, typed, validate_queue, JobState};
use crate::statement::Stmt;
use crate::trace::span;
use crate::{Broker, CachedClient, Error, ErrorKind, Result};

/// The statement of `pgbroker.take()` (schema/functions/queue.sql) by size class (see
/// `next_jobs_sql!`), prepared once per connection (through the SQL function PostgreSQL would
/// parse and plan it on every call). `$lease`: `""`, or the condition of [`TAKE_LEASED_SQL`].
/// It returns fewer columns than the SQL function (the queue is the caller's, `lease_until`
/// is NULL), in `ClaimedJob::from_taken_row`'s order; a test compares the two.
macro_rules! take_sql {
    ($candidates:literal, $lease:literal) => {
        concat!(
            "DELETE FROM pgbroker.jobs j
     WHERE ",
            next_jobs_sql!($candidates, "$2", $lease),
            "
    RETURNING j.id, j.payload, j.attempt + 1, j.max_attempts, j.priority, j.run_at,
              j.created_at, j.unique_key, j.details"
        )
    };
}

/// The take of [`CachedClient::take_jobs`] and [`Broker::take_jobs`], by size class.
const TAKE_SQL: [&str; 12] = by_size_class!(take_sql!(""));

/// The worker pool's take: also sets the transaction's `idle_in_transaction_session_timeout`
/// to `$3` (the lease of this mode), once (an uncorrelated subquery is an init plan), saving
/// the `SET LOCAL` round trip.
const TAKE_LEASED_SQL: [&str; 12] = by_size_class!(take_sql!(
    "
                      AND (SELECT set_config('idle_in_transaction_session_timeout', $3, true))
                          IS NOT NULL"
));

/// The statement for a take of at most `max` jobs.
pub(crate) fn take_sql(max: i32, leased: bool) -> &'static str {
    let statements = if leased { &TAKE_LEASED_SQL } else { &TAKE_SQL };
    statements[size_class(max)]
}

const TAKE_TYPES: [Type; 2] = [Type::TEXT, Type::INT4];

/// The taken row's columns (all but `lease_until`), in `pgbroker.take`'s order.
const ROW_ARGS: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10";
const ROW_TYPES: [Type; 10] = [
    Type::INT8,
    Type::TEXT,
    Type::JSONB,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::JSONB,
];

fn fail_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT pgbroker.fail_taken({ROW_ARGS}, $11, make_interval(secs => $12), $13, $14)")
    })
}

fn return_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT pgbroker.return_taken({ROW_ARGS}, make_interval(secs => $11))")
    })
}

impl ClaimedJob {
    /// A row of [`take_sql`]'s statement, of `queue`.
    fn from_taken_row(row: &Row, queue: &str) -> ClaimedJob {
        ClaimedJob {
            id: row.get(0),
            queue: queue.to_owned(),
            payload: row.get(1),
            attempt: row.get(2),
            max_attempts: row.get(3),
            priority: row.get(4),
            run_at: row.get(5),
            lease_until: None,
            created_at: row.get(6),
            unique_key: row.get(7),
            taken: Some(Box::new(TakenRow {
                details: row.get(8),
            })),
        }
    }

    /// True for a job taken by a transaction ([`Broker::take_jobs`]), false for a leased one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// for job in broker.take_jobs(&mut tx, "emails", 10)? {
    ///     assert!(job.is_taken() && job.lease_until.is_none());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_taken(&self) -> bool {
        self.taken.is_some()
    }

    fn taken_row(&self, what: &str) -> Result<&TakenRow> {
        self.taken.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "job {} was claimed with a lease, not taken in a transaction: {what} \
                     takes only jobs returned by take_jobs",
                    self.id
                ),
            )
        })
    }
}

impl CachedClient {
    /// Begins a transaction on this pooled connection and takes up to `max` available jobs of
    /// `queue` in it: [`Broker::take_jobs`] with its statement prepared once per connection
    /// and size class of `max` (1, 2, 4, ... 1024 jobs, more), whose plan the server reuses
    /// (no planning per call; use this on hot paths). Returns the open transaction and the
    /// jobs: commit it to complete them, drop it (rollback) to give them back. Everything
    /// said at [`Broker::take_jobs`] holds.
    ///
    /// Fails with [`ErrorKind::InvalidName`] for a bad queue name, before anything is sent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// loop {
    ///     let (mut tx, jobs) = conn.take_jobs("thumbnails", 100)?;
    ///     if jobs.is_empty() {
    ///         break;
    ///     }
    ///     for job in &jobs {
    ///         tx.execute("INSERT INTO thumbnails (job) VALUES ($1)", &[&job.id])?;
    ///     }
    ///     tx.commit()?; // jobs done and thumbnails recorded, atomically
    /// }
    /// # Ok(()) }
    /// ```
    pub fn take_jobs(
        &mut self,
        queue: &str,
        max: usize,
    ) -> Result<(Transaction<'_>, Vec<ClaimedJob>)> {
        validate_queue(queue)?;
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let stmt = self.statement(take_sql(max, false))?;
        let mut tx = self.transaction()?;
        let jobs = take_prepared(&mut tx, &stmt, queue, max, None)?;
        Ok((tx, jobs))
    }
}

/// Sorts taken jobs by priority, then run time, then id: the statement returns them in id
/// order (sorting 100 rows and their payloads in the server cost more than here).
fn in_claim_order(mut jobs: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    jobs
}

/// Takes with `stmt`, `take_sql(max, lease.is_some())` prepared on `tx`'s connection; with a
/// lease, it also sets the transaction's `idle_in_transaction_session_timeout` to it.
pub(crate) fn take_prepared(
    tx: &mut Transaction<'_>,
    stmt: &Stmt,
    queue: &str,
    max: i32,
    lease: Option<Duration>,
) -> Result<Vec<ClaimedJob>> {
    if max <= 0 {
        return Ok(Vec::new());
    }
    let span = span!("pgbroker.take", queue = queue, max = max, taken = empty);
    let rows = match lease {
        None => stmt.query(tx, &[&queue, &max]),
        Some(lease) => stmt.query(tx, &[&queue, &max, &timeout_ms(lease)]),
    }
    .map_err(|e| Error::from(e).context(format!("taking jobs of {queue:?}")))?;
    span.record("taken", rows.len() as i64);
    Ok(in_claim_order(
        rows.iter()
            .map(|r| ClaimedJob::from_taken_row(r, queue))
            .collect(),
    ))
}

/// A lease as `idle_in_transaction_session_timeout` in milliseconds: the server's limit is
/// `i32::MAX` (about 24 days).
fn timeout_ms(lease: Duration) -> String {
    lease.as_millis().clamp(1, i32::MAX as u128).to_string()
}

/// The taken row's columns as parameters, in `ROW_TYPES`' order.
fn row_values<'a>(job: &'a ClaimedJob, t: &'a TakenRow) -> Vec<&'a (dyn ToSql + Sync)> {
    vec![
        &job.id,
        &job.queue,
        &job.payload,
        &job.attempt,
        &job.max_attempts,
        &job.priority,
        &job.run_at,
        &job.created_at,
        &job.unique_key,
        &t.details,
    ]
}

impl Broker {
    /// Takes up to `max` available jobs of `queue` inside the caller's transaction `tx`, in
    /// (priority, run_at, id) order: the "transactional claim". The jobs are deleted by `tx`
    /// and locked against every other worker until it ends, so **committing `tx` completes
    /// them** and rolling it back (or the connection or process dying) returns them untouched.
    /// Nothing is written for a lease: this costs about what a bare `DELETE ... SKIP LOCKED`
    /// does. Each job's `attempt` is the attempt being run (stored attempts + 1), its
    /// `lease_until` is `None`.
    ///
    /// Anything else written in `tx` commits or rolls back with the jobs: exactly-once effects
    /// for work done in this database. Record a failed job with
    /// [`fail_taken_in`](Self::fail_taken_in) in the same transaction before committing (it is
    /// written back to run again, or dead).
    ///
    /// Use it for short jobs. While `tx` is open it holds a transaction id, which holds back
    /// the durable topics' read horizon and vacuum cluster-wide; bound it with
    /// `SET LOCAL idle_in_transaction_session_timeout` (the lease of this mode: a hung worker's
    /// session is ended by the server and its jobs come back). A taken job shows as
    /// `available` (locked) to other sessions until `tx` ends; [`cancel_job`](Self::cancel_job)
    /// cannot cancel it then. A worker that crashes counts no attempt, so a job that kills its
    /// process is retried without limit: run such jobs with leases
    /// ([`claim_jobs`](Self::claim_jobs)).
    ///
    /// Fails with [`ErrorKind::InvalidName`] for a bad queue name (nothing is sent); returns
    /// no jobs for a `max` of 0. This works on any transaction, so nothing is prepared on the
    /// connection and the server parses and plans the statement on every call (one round
    /// trip); on a connection of the broker's pool, [`CachedClient::take_jobs`] begins the
    /// transaction and takes with a statement prepared once per connection, which is faster.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = '30s'")?;
    /// for job in broker.take_jobs(&mut tx, "invoices", 100)? {
    ///     let invoice = job.payload["invoice"].as_i64();
    ///     match invoice {
    ///         Some(id) => {
    ///             tx.execute("UPDATE invoices SET sent = true WHERE id = $1", &[&id])?;
    ///         }
    ///         None => {
    ///             broker.fail_taken_in(&mut tx, &job, "no invoice in payload", None)?;
    ///         }
    ///     }
    /// }
    /// tx.commit()?; // the jobs are done, the invoices sent: both or neither
    /// # Ok(()) }
    /// ```
    pub fn take_jobs(
        &self,
        tx: &mut Transaction<'_>,
        queue: &str,
        max: usize,
    ) -> Result<Vec<ClaimedJob>> {
        validate_queue(queue)?;
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let values: [&(dyn ToSql + Sync); 2] = [&queue, &max];
        let rows = tx
            .query_typed(take_sql(max, false), &typed(&values, &TAKE_TYPES))
            .map_err(|e| Error::from(e).context(format!("taking jobs of {queue:?}")))?;
        Ok(in_claim_order(
            rows.iter()
                .map(|r| ClaimedJob::from_taken_row(r, queue))
                .collect(),
        ))
    }

    /// Records a failed attempt of a job taken in `tx` by [`take_jobs`](Self::take_jobs): in
    /// the same transaction it is written back (same id) to run again after `retry_in`
    /// (default: its backoff, as for [`fail_job`](Self::fail_job)), or as dead once its
    /// attempts are exhausted, with `error` appended to its error history. Returns the new
    /// state. Nothing is visible to others before `tx` commits; rolled back, the job is
    /// available again as if never taken.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a job that was not taken (a leased job from
    /// [`claim_jobs`](Self::claim_jobs)); nothing is written then. Call it at most once per
    /// taken job (a second call fails with a duplicate-key [`ErrorKind::Db`], which aborts
    /// `tx`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// for job in broker.take_jobs(&mut tx, "webhooks", 10)? {
    ///     let state = broker.fail_taken_in(&mut tx, &job, "503", Some(Duration::from_secs(5)))?;
    ///     println!("job {} is now {state}", job.id);
    /// }
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn fail_taken_in(
        &self,
        tx: &mut Transaction<'_>,
        job: &ClaimedJob,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<JobState> {
        self.fail_taken_with(tx, job, error, retry_in, false, None)
    }

    pub(crate) fn fail_taken_with(
        &self,
        tx: &mut Transaction<'_>,
        job: &ClaimedJob,
        error: &str,
        retry_in: Option<Duration>,
        discard: bool,
        worker: Option<&str>,
    ) -> Result<JobState> {
        let taken = job.taken_row("fail_taken_in")?;
        let error = error.replace('\0', "\u{FFFD}");
        let retry_in = retry_in.map(secs);
        let mut values = row_values(job, taken);
        values.extend_from_slice(&[&error, &retry_in, &discard, &worker]);
        let mut types = ROW_TYPES.to_vec();
        types.extend([Type::TEXT, Type::FLOAT8, Type::BOOL, Type::TEXT]);
        let rows = tx.query_typed(fail_sql(), &typed(&values, &types))?;
        rows[0].get::<_, String>(0).parse()
    }

    /// Gives a job taken in `tx` back without counting its attempt, to run after `delay`
    /// (`None`: at once, keeping its place in the queue). In the same transaction, like
    /// [`fail_taken_in`](Self::fail_taken_in), and with the same errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// for job in broker.take_jobs(&mut tx, "reports", 10)? {
    ///     broker.return_taken_in(&mut tx, &job, Some(Duration::from_secs(60)))?; // later
    /// }
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn return_taken_in(
        &self,
        tx: &mut Transaction<'_>,
        job: &ClaimedJob,
        delay: Option<Duration>,
    ) -> Result<()> {
        let taken = job.taken_row("return_taken_in")?;
        let delay = delay.map(secs);
        let mut values = row_values(job, taken);
        values.push(&delay);
        let mut types = ROW_TYPES.to_vec();
        types.push(Type::FLOAT8);
        tx.query_typed(return_sql(), &typed(&values, &types))?;
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::super::claim::test::{function_statement, parts};
    use super::{take_sql, TAKE_LEASED_SQL, TAKE_SQL};

    #[test]
    fn take_statements_are_the_sql_functions_body() {
        let [head, chosen, tail] = parts(&function_statement("take"));
        // Ours is the CTE's statement alone, without the queue (the caller's) and the NULL
        // lease_until: the rows are sorted by the client.
        let theirs = [
            head.replace("WITH taken AS ( ", ""),
            chosen,
            tail.replace(
                " ) SELECT * FROM taken t ORDER BY t.priority, t.run_at, t.id",
                "",
            )
            .replace("j.queue, ", "")
            .replace(" AS attempt", "")
            .replace("NULL::timestamptz AS lease_until, ", ""),
        ];
        let lease = " AND (SELECT set_config('idle_in_transaction_session_timeout', $3, true)) \
                     IS NOT NULL";
        for (sql, leased) in TAKE_SQL.iter().zip(TAKE_LEASED_SQL) {
            assert_eq!(parts(sql), theirs);
            let mut ours = parts(leased);
            assert!(ours[1].contains(lease), "{}", ours[1]);
            ours[1] = ours[1].replace(lease, "");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn the_size_class_picks_the_statement() {
        assert_eq!(take_sql(0, false), TAKE_SQL[0]);
        assert_eq!(take_sql(100, false), TAKE_SQL[7]);
        assert_eq!(take_sql(100, true), TAKE_LEASED_SQL[7]);
        assert_eq!(take_sql(5000, true), TAKE_LEASED_SQL[11]);
    }
}
