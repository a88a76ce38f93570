//! The transactional side of the protocol: take jobs inside the worker's own transaction (the
//! claim *is* the delete, COMMIT completes them, ROLLBACK returns them), and write a taken job
//! back when it failed or is snoozed.

use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Row, Statement, Transaction};
use serde_json::Value;

use super::{secs, validate_queue, ClaimedJob, JobState};
use crate::{Broker, CachedClient, Error, ErrorKind, Result};

/// What writing a taken job back needs besides the [`ClaimedJob`] fields: the deleted row's
/// retry settings and error history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TakenRow {
    backoff_base: Option<f64>,
    backoff_max: Option<f64>,
    errors: Option<Value>,
}

/// The statement of `pgbroker.take()` (schema/queue.sql) for a take of at most `$2` jobs,
/// prepared once per connection (through the SQL function PostgreSQL would parse and plan it
/// on every call). `$candidates` is a literal bound on the rows the inner scan may lock,
/// `$lease` an optional extra condition (see [`TAKE_LEASED_SQL`]).
///
/// Why two LIMITs: a prepared statement gets a generic plan only when that plan looks no
/// dearer than the plans made for its parameters' values. `LIMIT $2` alone is costed at 10%
/// of the queue's rows, so PostgreSQL planned the take again on every call (callgrind: 0.4
/// million of the server's 3.7 million instructions per take of 100). A literal inner limit
/// of ten times the batch's size class brings the generic estimate down to that class (10%
/// of the inner limit), so after five calls the plan is reused. The inner limit never binds:
/// the outer `LIMIT $2` stops pulling rows, and so locking them, first.
///
/// It returns fewer columns than the SQL function: the queue is the caller's and
/// `lease_until` is NULL. Sent in `ClaimedJob::from_taken_row`'s order.
macro_rules! take_sql {
    ($candidates:literal, $lease:literal) => {
        concat!(
            "DELETE FROM pgbroker.jobs j
     WHERE j.id = ANY (ARRAY(
               SELECT c.id FROM (
                   SELECT p.id FROM pgbroker.jobs p
                    WHERE p.queue = $1 AND p.state = 'available' AND p.run_at <= now()",
            $lease,
            "
                    ORDER BY p.priority, p.run_at, p.id
                    LIMIT ",
            $candidates,
            "
                    FOR UPDATE SKIP LOCKED) c
                LIMIT $2::integer))
    RETURNING j.id, j.payload, j.attempt + 1, j.max_attempts, j.priority, j.run_at,
              j.created_at, j.unique_key, extract(epoch FROM j.backoff_base)::float8,
              extract(epoch FROM j.backoff_max)::float8, j.errors"
        )
    };
}

/// One statement per size class of `max` (1, 2, 4, ... 1024, then unbounded).
macro_rules! take_statements {
    ($lease:literal) => {
        [
            take_sql!("10", $lease),
            take_sql!("20", $lease),
            take_sql!("40", $lease),
            take_sql!("80", $lease),
            take_sql!("160", $lease),
            take_sql!("320", $lease),
            take_sql!("640", $lease),
            take_sql!("1280", $lease),
            take_sql!("2560", $lease),
            take_sql!("5120", $lease),
            take_sql!("10240", $lease),
            take_sql!("ALL", $lease),
        ]
    };
}

/// The take of [`CachedClient::take_jobs`] and [`Broker::take_jobs`], by size class.
const TAKE_SQL: [&str; 12] = take_statements!("");

/// The worker pool's take: also sets the transaction's `idle_in_transaction_session_timeout`
/// to `$3` (the lease of this mode), once (an uncorrelated subquery is an init plan), saving
/// the `SET LOCAL` round trip.
const TAKE_LEASED_SQL: [&str; 12] = take_statements!(
    "
                      AND (SELECT set_config('idle_in_transaction_session_timeout', $3, true))
                          IS NOT NULL"
);

/// The statement for a take of at most `max` (at least 1) jobs: the smallest size class that
/// holds it.
pub(crate) fn take_sql(max: i32, leased: bool) -> &'static str {
    let class = (max.max(1) as u32).next_power_of_two().trailing_zeros() as usize;
    let statements = if leased { &TAKE_LEASED_SQL } else { &TAKE_SQL };
    statements[class.min(statements.len() - 1)]
}

const TAKE_TYPES: [Type; 2] = [Type::TEXT, Type::INT4];

/// The taken row's columns (all but `lease_until`), in `pgbroker.take`'s order.
const ROW_ARGS: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9, \
    make_interval(secs => $10), make_interval(secs => $11), $12";
const ROW_TYPES: [Type; 12] = [
    Type::INT8,
    Type::TEXT,
    Type::JSONB,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::JSONB,
];

fn fail_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT pgbroker.fail_taken({ROW_ARGS}, $13, make_interval(secs => $14), $15, $16)")
    })
}

fn return_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT pgbroker.return_taken({ROW_ARGS}, make_interval(secs => $13))")
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
                backoff_base: row.get(8),
                backoff_max: row.get(9),
                errors: row.get(10),
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
    stmt: &Statement,
    queue: &str,
    max: i32,
    lease: Option<Duration>,
) -> Result<Vec<ClaimedJob>> {
    if max <= 0 {
        return Ok(Vec::new());
    }
    let rows = match lease {
        None => tx.query(stmt, &[&queue, &max]),
        Some(lease) => tx.query(stmt, &[&queue, &max, &timeout_ms(lease)]),
    }
    .map_err(|e| Error::from(e).context(format!("taking jobs of {queue:?}")))?;
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
        &t.backoff_base,
        &t.backoff_max,
        &t.errors,
    ]
}

fn typed<'a>(
    values: &[&'a (dyn ToSql + Sync)],
    types: &[Type],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    values.iter().copied().zip(types.iter().cloned()).collect()
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
    use super::{take_sql, TAKE_LEASED_SQL, TAKE_SQL};

    fn words(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The candidate rows of a take: from the scan of the jobs to `FOR UPDATE SKIP LOCKED`,
    /// the limit left out.
    fn candidates(sql: &str) -> String {
        let sql = words(sql);
        let start = sql.find("SELECT p.id FROM pgbroker.jobs p").unwrap();
        let end = sql.find(" FOR UPDATE SKIP LOCKED").unwrap();
        let part = &sql[start..end];
        part[..part.find(" LIMIT ").unwrap()].to_owned()
    }

    #[test]
    fn take_statements_pick_the_sql_functions_jobs() {
        let schema = include_str!("../../schema/queue.sql");
        let start = schema
            .find("CREATE OR REPLACE FUNCTION pgbroker.take(")
            .unwrap();
        let body = &schema[start..];
        let body = &body[..body.find("\n$$;").unwrap()];
        let theirs = candidates(body);
        let lease_clause = words(
            "AND (SELECT set_config('idle_in_transaction_session_timeout', $3, true)) IS NOT NULL",
        );
        for sql in TAKE_SQL {
            assert_eq!(candidates(sql), theirs);
        }
        for sql in TAKE_LEASED_SQL {
            let ours = candidates(sql);
            assert!(ours.contains(&lease_clause), "{ours}");
            assert_eq!(ours.replace(&format!(" {lease_clause}"), ""), theirs);
        }
    }

    #[test]
    fn the_inner_limit_is_ten_times_the_size_class() {
        let inner = |max, leased| {
            let sql = words(take_sql(max, leased));
            let at = sql
                .find("ORDER BY p.priority, p.run_at, p.id LIMIT ")
                .unwrap();
            let rest = &sql[at..];
            rest.split(' ').nth(6).unwrap().to_owned()
        };
        assert_eq!(inner(1, false), "10");
        assert_eq!(inner(2, false), "20");
        assert_eq!(inner(3, false), "40");
        assert_eq!(inner(10, true), "160");
        assert_eq!(inner(100, false), "1280");
        assert_eq!(inner(1024, false), "10240");
        assert_eq!(inner(1025, false), "ALL");
        assert_eq!(inner(i32::MAX, true), "ALL");
        assert!(take_sql(5, true).contains("set_config"));
        assert!(!take_sql(5, false).contains("set_config"));
    }
}
