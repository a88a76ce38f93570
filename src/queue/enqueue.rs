//! Enqueueing: one job on a pooled connection (one round trip on a cached prepared statement),
//! in the caller's transaction, or many in one statement.

use std::time::{Instant, SystemTime};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::Transaction;

use super::job::{check_payload, Job, DEFAULT_MAX_ATTEMPTS};
use super::job_options;
use super::{secs, typed, validate_queue, JobId};
use crate::trace::span;
use crate::{Broker, Error, ErrorKind, Result, ToPayload};

// The hot path, a job due now without options on a pooled connection: a plain INSERT (same
// semantics as `pgbroker.enqueue`, whose checks were done in Rust) of a prepared statement with
// a cached plan (calling the plpgsql function costs ~40% more), with an id the broker reserved
// (src/id_blocks.rs) so that it returns nothing. Its wake-up of the queue's idle workers
// (pgbroker.wake: one NOTIFY, only while one waits) is a scalar subquery of RETURNING in
// ENQUEUE_NOW_WAKE_SQL, run only when `WakeChecks` says so (wake_checks.rs). Their parameters:
// queue, payload, priority, max_attempts, id. ENQUEUE_DEFAULTS are the same two for a job with
// the table's defaults (priority 0, max_attempts DEFAULT_MAX_ATTEMPTS: every
// `Broker::enqueue`), with parameters queue, payload, id.
const ENQUEUE_NOW_SQL: &str = "INSERT INTO pgbroker.jobs (queue, payload, priority, max_attempts,
        id)
    VALUES ($1, $2, $3, $4, $5)";

// Returns NULL when nobody waits, else whether pgbroker.wake notified.
const ENQUEUE_NOW_WAKE_SQL: &str = "INSERT INTO pgbroker.jobs (queue, payload, priority,
        max_attempts, id)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING (SELECT pgbroker.wake($1) FROM pgbroker.queue_waiters w
                WHERE w.queue = $1 LIMIT 1)";

/// Without and with the wake-up, as ENQUEUE_NOW_SQL and ENQUEUE_NOW_WAKE_SQL.
const ENQUEUE_DEFAULTS_SQL: [&str; 2] = [
    "INSERT INTO pgbroker.jobs (queue, payload, id) VALUES ($1, $2, $3)",
    "INSERT INTO pgbroker.jobs (queue, payload, id) VALUES ($1, $2, $3)
    RETURNING (SELECT pgbroker.wake($1) FROM pgbroker.queue_waiters w
                WHERE w.queue = $1 LIMIT 1)",
];

// The parameters of the other statements are, in order: queue, payload, priority,
// max_attempts, run_at, unique_key, delay, backoff_base, backoff_max (`Params::values`).
// With a time, a delay or a backoff, or in the caller's transaction (ids from the sequence, in
// the order of its statements): wakes only when the job is due now.
const ENQUEUE_SQL: &str = "INSERT INTO pgbroker.jobs AS j (queue, payload, priority, max_attempts,
        run_at, unique_key, details)
    VALUES ($1, $2, $3, $4, coalesce($5, now()) + make_interval(secs => coalesce($7::float8, 0)),
            $6, pgbroker.job_details(make_interval(secs => $8), make_interval(secs => $9)))
    RETURNING j.id, (SELECT pgbroker.wake($1) FROM pgbroker.queue_waiters w
                      WHERE j.run_at <= now() AND w.queue = $1 LIMIT 1)";

// Unique jobs: the partial unique index decides, race-free; a duplicate returns the existing id
// (xmax is 0 only for a row this statement inserted) and wakes nobody.
const ENQUEUE_UNIQUE_SQL: &str = "INSERT INTO pgbroker.jobs AS j (queue, payload, priority,
        max_attempts, run_at, unique_key, details)
    VALUES ($1, $2, $3, $4, coalesce($5, now()) + make_interval(secs => coalesce($7::float8, 0)),
            $6, pgbroker.job_details(make_interval(secs => $8), make_interval(secs => $9)))
    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL
    DO UPDATE SET unique_key = EXCLUDED.unique_key
    RETURNING j.id, (SELECT pgbroker.wake($1) FROM pgbroker.queue_waiters w
                      WHERE j.xmax = 0 AND j.run_at <= now() AND w.queue = $1 LIMIT 1)";

/// The statement for `job` outside the hot path (`Params::values` are its parameters).
fn enqueue_sql(job: &Job) -> &'static str {
    if job.unique_key.is_some() {
        ENQUEUE_UNIQUE_SQL
    } else {
        ENQUEUE_SQL
    }
}

const ENQUEUE_TYPES: [Type; 9] = [
    Type::TEXT,
    Type::JSONB,
    Type::INT4,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
];

/// The parameters of the enqueue statements for a checked job.
struct Params<'a> {
    payload: &'a serde_json::Value,
    delay: Option<f64>,
    base: Option<f64>,
    max: Option<f64>,
}

/// The parameters of every job of a batch; an invalid job fails the batch, named by its index.
fn batch_params(jobs: &[Job]) -> Result<Vec<Params<'_>>> {
    jobs.iter()
        .enumerate()
        .map(|(i, job)| Params::new(job).map_err(|e| e.context(format!("job {i} of the batch"))))
        .collect()
}

impl<'a> Params<'a> {
    fn new(job: &'a Job) -> Result<Params<'a>> {
        let payload = job.checked()?;
        Ok(Params {
            payload,
            delay: job.delay.map(secs),
            base: job.backoff.map(|b| secs(b.0)),
            max: job.backoff.map(|b| secs(b.1)),
        })
    }

    fn values<'b>(&'b self, job: &'b Job, max_attempts: &'b i32) -> [&'b (dyn ToSql + Sync); 9] {
        [
            &job.queue,
            self.payload,
            &job.priority,
            max_attempts,
            &job.run_at,
            &job.unique_key,
            &self.delay,
            &self.base,
            &self.max,
        ]
    }
}

// Many jobs: inserted from `$source` in one statement. Unique jobs that exist, or repeat a key
// earlier in the batch, are skipped (DO NOTHING also covers rows of the same statement). Each
// queue with a job due now and a waiting worker is woken once.
macro_rules! batch_insert_sql {
    ($source:literal) => {
        concat!(
            "WITH ins AS (
        INSERT INTO pgbroker.jobs (queue, payload, priority, run_at, max_attempts, unique_key,
                                   details)
        SELECT queue, payload, priority,
               coalesce(run_at, now()) + make_interval(secs => coalesce(delay, 0)),
               max_attempts, unique_key,
               pgbroker.job_details(make_interval(secs => backoff_base),
                                    make_interval(secs => backoff_max))
          FROM ",
            $source,
            "
        ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL
        DO NOTHING
        RETURNING queue, run_at
    )
    SELECT count(*), (SELECT count(pgbroker.wake(q))
                        FROM (SELECT DISTINCT queue FROM ins WHERE run_at <= now()) AS w(q))
      FROM ins"
        )
    };
}

/// Up to this many jobs, a batch is one statement with their columns as arrays (one round
/// trip; prepared on a pooled connection): `enqueue_batch_100` ran at 0.33 of a raw multi-row
/// INSERT through the table below, 0.69 this way. Larger batches go through binary COPY into a
/// temporary table, faster from some thousands of jobs (10 000: 134 000 jobs/s, against
/// 107 000 as arrays).
const BATCH_ARRAYS_MAX: usize = 1_000;

/// A batch of at most `BATCH_ARRAYS_MAX` jobs; its parameters are `BatchColumns::values`,
/// arrays of `Params::values` (the batch table's columns are in the same order).
const BATCH_ARRAYS_SQL: &str = batch_insert_sql!(
    "unnest($1::text[], $2::jsonb[], $3::int4[], $4::int4[], $5::timestamptz[], $6::text[],
                      $7::float8[], $8::float8[], $9::float8[])
               AS b(queue, payload, priority, max_attempts, run_at, unique_key, delay,
                    backoff_base, backoff_max)"
);

/// `ENQUEUE_TYPES` as arrays.
const BATCH_ARRAYS_TYPES: [Type; 9] = [
    Type::TEXT_ARRAY,
    Type::JSONB_ARRAY,
    Type::INT4_ARRAY,
    Type::INT4_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TEXT_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::FLOAT8_ARRAY,
];

// A larger batch. DELETE, not TRUNCATE: the table is empty unless an earlier batch of this
// transaction filled it, and TRUNCATE gives the table new files every time. The SET first, so
// that the NOTICE of CREATE ... IF NOT EXISTS is not sent with every batch.
const BATCH_TABLE_SQL: &str = "SET LOCAL client_min_messages = warning;
    CREATE TEMP TABLE IF NOT EXISTS pgbroker_enqueue_batch (
        queue text, payload jsonb, priority int4, max_attempts int4, run_at timestamptz,
        unique_key text, delay float8, backoff_base float8, backoff_max float8
    ) ON COMMIT DELETE ROWS;
    DELETE FROM pgbroker_enqueue_batch";

const BATCH_COPY_SQL: &str = "COPY pgbroker_enqueue_batch FROM STDIN (FORMAT binary)";

// `Params::values` is what the batch statements read, as a row of the batch table or one
// element of each array (in `ENQUEUE_TYPES`' order).

const BATCH_TABLE_INSERT_SQL: &str = batch_insert_sql!("pgbroker_enqueue_batch");

/// The columns of checked jobs, as the arrays of `BATCH_ARRAYS_SQL`.
struct BatchColumns<'a> {
    queue: Vec<&'a str>,
    payload: Vec<&'a serde_json::Value>,
    priority: Vec<i32>,
    max_attempts: Vec<i32>,
    run_at: Vec<Option<SystemTime>>,
    unique_key: Vec<Option<&'a str>>,
    delay: Vec<Option<f64>>,
    backoff_base: Vec<Option<f64>>,
    backoff_max: Vec<Option<f64>>,
}

impl<'a> BatchColumns<'a> {
    fn new(jobs: &'a [Job], params: &'a [Params<'a>]) -> BatchColumns<'a> {
        BatchColumns {
            queue: jobs.iter().map(|j| j.queue.as_str()).collect(),
            payload: params.iter().map(|p| p.payload).collect(),
            priority: jobs.iter().map(|j| j.priority).collect(),
            max_attempts: jobs.iter().map(Job::max_attempts_i32).collect(),
            run_at: jobs.iter().map(|j| j.run_at).collect(),
            unique_key: jobs.iter().map(|j| j.unique_key.as_deref()).collect(),
            delay: params.iter().map(|p| p.delay).collect(),
            backoff_base: params.iter().map(|p| p.base).collect(),
            backoff_max: params.iter().map(|p| p.max).collect(),
        }
    }

    fn values(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.queue,
            &self.payload,
            &self.priority,
            &self.max_attempts,
            &self.run_at,
            &self.unique_key,
            &self.delay,
            &self.backoff_base,
            &self.backoff_max,
        ]
    }
}

/// Writes the checked `jobs` (with their `params`) into the batch table of this transaction.
fn copy_batch(tx: &mut Transaction<'_>, jobs: &[Job], params: &[Params<'_>]) -> Result<()> {
    tx.batch_execute(BATCH_TABLE_SQL)?;
    let sink = tx.copy_in(BATCH_COPY_SQL)?;
    let mut writer = BinaryCopyInWriter::new(sink, &ENQUEUE_TYPES);
    for (job, p) in jobs.iter().zip(params) {
        writer.write(&p.values(job, &job.max_attempts_i32()))?;
    }
    writer.finish()?;
    Ok(())
}

impl Broker {
    /// Enqueues a job with default options on `queue`; returns its id. Committed when this
    /// returns. One round trip on a cached prepared statement.
    ///
    /// The id comes from a block of ids this broker reserved (after its first enqueue), so the
    /// INSERT returns nothing: ids are unique and increase for one broker, but jobs enqueued
    /// by other brokers or in SQL meanwhile may have higher or lower ones.
    ///
    /// Idle workers of the queue are woken (one NOTIFY) when one is registered as waiting. So
    /// that busy queues do not pay for asking, after an enqueue found no worker waiting, this
    /// broker's enqueues of that queue skip the question for 2 ms: a worker that went idle
    /// just then is woken by the next enqueue after that, or finds the job when it claims
    /// again 3, 10 and 50 ms after registering as waiting.
    ///
    /// Fails before writing anything with [`ErrorKind::InvalidName`](crate::ErrorKind) for a
    /// bad queue name and [`ErrorKind::Serialize`](crate::ErrorKind) for a payload that is not
    /// JSON.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let id = broker.enqueue("emails", &serde_json::json!({"to": "a@example.com"}))?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue<P: ToPayload + ?Sized>(&self, queue: &str, payload: &P) -> Result<JobId> {
        // `enqueue_job(&Job::new(queue, payload))` without building the Job, which copies the
        // payload: the same checks in the same order, the same statement.
        validate_queue(queue)?;
        let payload = payload.to_payload()?;
        let payload = payload.as_json()?;
        check_payload(&payload)?;
        self.enqueue_now(queue, &payload, 0, DEFAULT_MAX_ATTEMPTS as i32)
    }

    /// Enqueues a job due now on a pooled connection, with a reserved id; asks for waiting
    /// workers when the queue's check is due.
    fn enqueue_now(
        &self,
        queue: &str,
        payload: &serde_json::Value,
        priority: i32,
        max_attempts: i32,
    ) -> Result<JobId> {
        let span = span!("pgbroker.enqueue", queue = queue, job_id = empty);
        let check = self.wake_checks().due(queue, Instant::now());
        let mut conn = self.conn()?;
        let failed = |e| Error::from(e).context(format!("enqueueing on {queue:?}"));
        let Some(id) = self.job_ids().next(&mut conn)? else {
            // The broker's first enqueue: the general statement, with an id from the sequence.
            let stmt = conn.statement(ENQUEUE_SQL)?;
            let none = None::<f64>;
            let params: [&(dyn ToSql + Sync); 9] = [
                &queue,
                payload,
                &priority,
                &max_attempts,
                &None::<SystemTime>,
                &None::<String>,
                &none,
                &none,
                &none,
            ];
            let row = conn.query_one(&stmt, &params).map_err(failed)?;
            if row.try_get::<_, Option<bool>>(1)? == Some(true) {
                self.wake_checks().woke(queue);
            }
            let id = row.try_get(0)?;
            span.record("job_id", id);
            return Ok(id);
        };
        span.record("job_id", id);
        let all: [&(dyn ToSql + Sync); 5] = [&queue, payload, &priority, &max_attempts, &id];
        let defaults: [&(dyn ToSql + Sync); 3] = [&queue, payload, &id];
        let (params, [quiet, wake]): (&[&(dyn ToSql + Sync)], _) =
            if (priority, max_attempts) == (0, DEFAULT_MAX_ATTEMPTS as i32) {
                (&defaults, ENQUEUE_DEFAULTS_SQL)
            } else {
                (&all, [ENQUEUE_NOW_SQL, ENQUEUE_NOW_WAKE_SQL])
            };
        if check {
            let stmt = conn.statement(wake)?;
            let row = conn.query_one(&stmt, params).map_err(failed)?;
            if row.try_get::<_, Option<bool>>(0)? == Some(true) {
                self.wake_checks().woke(queue);
            }
        } else {
            let stmt = conn.statement(quiet)?;
            conn.execute(&stmt, params).map_err(failed)?;
        }
        Ok(JobId(id))
    }

    /// Enqueues `job` with its options; returns its id, or for a [unique](Job::unique_key)
    /// job that is already available or running, that job's id.
    /// A job due now without a unique key gets its id and wakes idle workers as with
    /// [`enqueue`](Self::enqueue); the others take the sequence's next id, and wake only when
    /// due now.
    ///
    /// Fails before writing anything with [`ErrorKind::InvalidName`](crate::ErrorKind),
    /// [`ErrorKind::Serialize`](crate::ErrorKind) or
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind) (`max_attempts` 0, NUL in the payload).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let a = broker.enqueue_job(&Job::new("sync", "{}").unique_key("account:7"))?;
    /// let b = broker.enqueue_job(&Job::new("sync", "{}").unique_key("account:7"))?;
    /// assert_eq!(a, b);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_job(&self, job: &Job) -> Result<JobId> {
        if job.features.is_some() {
            return self.enqueue_with_options(job); // after, timeout, group: job_options.rs
        }
        let params = Params::new(job)?;
        let max_attempts = job.max_attempts_i32();
        if job.is_plain() {
            return self.enqueue_now(&job.queue, params.payload, job.priority, max_attempts);
        }
        let span = span!(
            "pgbroker.enqueue",
            queue = job.queue.as_str(),
            job_id = empty
        );
        let mut conn = self.conn()?;
        let stmt = conn.statement(enqueue_sql(job))?;
        let row = conn
            .query_one(&stmt, &params.values(job, &max_attempts))
            .map_err(|e| Error::from(e).context(format!("enqueueing on {:?}", job.queue)))?;
        let id = row.get(0);
        span.record("job_id", id);
        Ok(id)
    }

    /// Enqueues `job` in the caller's transaction: it exists (and workers are woken) only if
    /// and when `tx` commits. Checks as [`enqueue_job`](Self::enqueue_job) does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// tx.execute("INSERT INTO users (email) VALUES ('a@example.com')", &[])?;
    /// broker.enqueue_in(&mut tx, &Job::new("welcome-email", r#"{"email":"a@example.com"}"#))?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue_in(&self, tx: &mut Transaction<'_>, job: &Job) -> Result<JobId> {
        let params = Params::new(job)?;
        job_options::check(job)?;
        let span = span!(
            "pgbroker.enqueue",
            queue = job.queue.as_str(),
            job_id = empty
        );
        let max_attempts = job.max_attempts_i32();
        let values = params.values(job, &max_attempts);
        // Always asks for waiting workers: the job is announced when `tx` commits.
        let sql = enqueue_sql(job);
        // query_typed: one round trip, nothing prepared on a connection we do not own.
        let rows = tx
            .query_typed(sql, &typed(&values, &ENQUEUE_TYPES))
            .map_err(|e| Error::from(e).context(format!("enqueueing on {:?}", job.queue)))?;
        let id = rows[0].get(0);
        span.record("job_id", id);
        job_options::apply(tx, id, job)?;
        Ok(id)
    }

    /// Enqueues many jobs atomically; returns how many were written (unique jobs that already
    /// exist, or repeat a key earlier in the batch, are skipped). All jobs are checked before
    /// anything is sent; any failure writes nothing. Up to 1 000 jobs are one statement (one
    /// round trip, their columns as arrays); more are sent with binary `COPY`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let jobs: Vec<Job> = (0..10_000)
    ///     .map(|i| Job::new("thumbnails", &serde_json::json!({"image": i})))
    ///     .collect();
    /// assert_eq!(broker.enqueue_batch(&jobs)?, 10_000);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_batch(&self, jobs: &[Job]) -> Result<u64> {
        job_options::check_batch(jobs)?;
        let _span = span!("pgbroker.enqueue_batch", jobs = jobs.len());
        let mut conn = self.conn()?;
        if jobs.len() > BATCH_ARRAYS_MAX {
            let mut tx = conn.transaction()?;
            let n = self.enqueue_batch_in(&mut tx, jobs)?;
            tx.commit()?;
            return Ok(n);
        }
        let params = batch_params(jobs)?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let stmt = conn.statement(BATCH_ARRAYS_SQL)?;
        let columns = BatchColumns::new(jobs, &params);
        Ok(conn.query_one(&stmt, &columns.values())?.get::<_, i64>(0) as u64)
    }

    /// [`enqueue_batch`](Self::enqueue_batch) in the caller's transaction.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// broker.enqueue_batch_in(&mut tx, &[Job::new("a", "1"), Job::new("b", "2")])?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue_batch_in(&self, tx: &mut Transaction<'_>, jobs: &[Job]) -> Result<u64> {
        job_options::check_batch(jobs)?;
        let params = batch_params(jobs)?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let row = if jobs.len() > BATCH_ARRAYS_MAX {
            copy_batch(tx, jobs, &params)?;
            tx.query_one(BATCH_TABLE_INSERT_SQL, &[])?
        } else {
            let columns = BatchColumns::new(jobs, &params);
            // query_typed: one round trip, nothing prepared on a connection we do not own.
            let rows = tx.query_typed(
                BATCH_ARRAYS_SQL,
                &typed(&columns.values(), &BATCH_ARRAYS_TYPES),
            )?;
            rows.into_iter()
                .next()
                .ok_or_else(|| Error::new(ErrorKind::Db, "a batch enqueue returned no row"))?
        };
        Ok(row.get::<_, i64>(0) as u64)
    }
}
